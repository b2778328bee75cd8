"""ResNet / ResNeXt backbones (optionally with modulated DCN) returning C3, C4, C5.

Built from torchvision's ``ResNet._make_layer`` and ``Bottleneck`` (``weights=None``;
nothing is ever downloaded) and configured as mmdetection 3.3's ``ResNet`` /
``ResNeXt`` in ``gfl_r50_fpn_1x_coco`` and the Table 4 configs::

    ResNet(depth=50, num_stages=4, out_indices=(1, 2, 3), frozen_stages=1,
           norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
           style='pytorch')        # the FPN then uses start_level=1 -> C3..C5 only

Facts replicated from mmdet (``mmdet/models/backbones/resnet.py``, ``resnext.py``):

* ``style='pytorch'``: the stride of a stage's first Bottleneck sits on the 3x3 conv
  (``conv2``), the downsample branch is ``1x1 conv (stride) + BN`` -- exactly torchvision's
  Bottleneck ("ResNet v1.5").
* ResNeXt width: ``width = floor(planes * base_width / 64) * groups`` for groups > 1 (the
  same formula as torchvision's ``width_per_group``): X-101-32x4d has conv2 widths
  128 / 256 / 512 / 1024 with 32 groups.
* ``frozen_stages=1``: stem (``conv1``, ``bn1``) and ``layer1`` get ``requires_grad=False``
  and are put in eval mode on every ``train()`` call.
* ``norm_eval=True``: *every* BatchNorm stays in eval mode during training, so running
  statistics never change. As in mmdet (``norm_cfg.requires_grad=True``) the BN affine
  parameters of stages 2-4 stay trainable; only stem/layer1 are fully frozen.
  **Choice:** we keep ``nn.BatchNorm2d`` (eps 1e-5, mmdet's BN default) held in eval mode
  by :meth:`ResNetBackbone.train` rather than swapping in ``FrozenBatchNorm2d``, because
  FrozenBatchNorm2d would also freeze the affine parameters that mmdet trains.
* Scratch init (only used without a pretrained file, e.g. the smoke profile): Kaiming
  normal (fan_out, relu) for convs, BN weight 1 / bias 0, and ``zero_init_residual=True``
  (``bn3.weight = 0``) as mmdet's ResNet default. DCN weights use mmcv's own
  ``uniform(+-1/sqrt(in_channels * k * k))``, its offset/mask conv is zero.

DCN (Table 4): mmdet's stock GFL DCN configs use DCN v1 (``type='DCN'``) on c3-c5 for
R-101 and c4-c5 for X-101; the GFL authors used modulated DCN (v2) on c3-c5 for both.
**Choice:** ``dcn=True`` puts :class:`ModulatedDeformConv2d` (== mmcv's
``ModulatedDeformConv2dPack`` / ``type='DCNv2'``, ``deform_groups=1``,
``fallback_on_stride=False``) in place of ``conv2`` of every Bottleneck in
``layer2``-``layer4`` (c3-c5), keeping stride, padding, dilation and groups. mmdet model-zoo
DCN v1 checkpoints therefore do not load (their ``conv_offset`` has 18, not 27 channels).

State-dict keys equal torchvision's ``resnet*`` / ``resnext*`` keys without ``fc.*`` and
mmdet's ``backbone.*`` keys (mmdet names its norms ``bn1``/``bn2``/``bn3`` and the
downsample ``downsample.0``/``downsample.1`` too), e.g. ``layer3.5.conv2.weight``; with DCN
add ``layerK.i.conv2.conv_offset.{weight,bias}`` (mmcv's names). Import of an mmdet
checkpoint is ``{k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.ops import deform_conv2d

__all__ = [
    "BACKBONE_SPECS",
    "BackboneSpec",
    "ModulatedDeformConv2d",
    "ResNetBackbone",
    "build_backbone",
    "load_pretrained",
]


@dataclass(frozen=True)
class BackboneSpec:
    """One ResNet(-like) configuration: Bottleneck blocks per stage and widths."""

    layers: tuple[int, int, int, int]  # Bottleneck blocks in layer1..layer4
    base_channels: int = 64  # planes of layer1 (doubles per stage); stem has this many channels
    groups: int = 1  # ResNeXt cardinality of the 3x3 convs
    width_per_group: int = 64  # torchvision's formula: width = int(planes * wpg / 64) * groups


BACKBONE_SPECS: dict[tuple[str, str], BackboneSpec] = {
    # paper scale (torchvision / mmdet definitions)
    ("r50", "full"): BackboneSpec((3, 4, 6, 3)),
    ("r101", "full"): BackboneSpec((3, 4, 23, 3)),
    ("x101_32x4d", "full"): BackboneSpec((3, 4, 23, 3), groups=32, width_per_group=4),
    # toy scale for the CPU smoke profile: same family, base width 16 (C3..C5 = 128/256/512).
    # r101 is deeper than r50 in stage c4, as the real ones; x101 uses grouped 3x3 convs with
    # 4 channels per group at layer1 (like 32x4d) and twice r101's bottleneck width.
    ("r50", "tiny"): BackboneSpec((1, 1, 1, 1), base_channels=16),
    ("r101", "tiny"): BackboneSpec((1, 1, 2, 1), base_channels=16),
    ("x101_32x4d", "tiny"): BackboneSpec((1, 1, 2, 1), base_channels=16, groups=8, width_per_group=16),
}
"""(name, scale) -> configuration. Names: r50, r101, x101_32x4d; scales: full, tiny."""


class ModulatedDeformConv2d(nn.Module):
    """Modulated deformable conv (DCNv2), a drop-in for ``nn.Conv2d``; == mmcv's
    ``ModulatedDeformConv2dPack``.

    ``conv_offset`` (a plain conv with this conv's kernel/stride/padding/dilation, no groups,
    bias) predicts ``deform_groups * 3 * k*k`` channels, split as in mmcv::

        o1, o2, m = out.chunk(3, dim=1); offset = cat(o1, o2); mask = sigmoid(m)

    i.e. channels ``[0, 2kk)`` are offsets, interleaved ``(dy, dx)`` per kernel tap (the
    layout of both mmcv's kernel and ``torchvision.ops.deform_conv2d``), and channels
    ``[2kk, 3kk)`` are mask logits. ``conv_offset`` is initialised to zero (mmcv), so at
    init offsets are 0 and the mask is ``sigmoid(0) = 0.5``: the layer equals the plain conv
    with the same weight times 0.5 (plus bias).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deform_groups = deform_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        kk = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset = nn.Conv2d(
            in_channels, deform_groups * 3 * kk, self.kernel_size, self.stride, self.padding, self.dilation, bias=True
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmcv's init: weight ~ U(+-1/sqrt(in_channels*kh*kw)), bias 0, conv_offset all 0."""
        stdv = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -stdv, stdv)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, copy_weight: bool = False) -> ModulatedDeformConv2d:
        """A DCN with ``conv``'s geometry (kernel, stride, padding, dilation, groups, bias)."""
        dcn = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, bias=conv.bias is not None,
        )
        if copy_weight:
            with torch.no_grad():
                dcn.weight.copy_(conv.weight)
                if conv.bias is not None:
                    dcn.bias.copy_(conv.bias)
        return dcn.to(device=conv.weight.device, dtype=conv.weight.dtype)

    def offset_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Offsets ``(N, 2*dg*kk, H', W')`` and sigmoid mask ``(N, dg*kk, H', W')``."""
        out = self.conv_offset(x)
        o1, o2, mask = torch.chunk(out, 3, dim=1)
        return torch.cat((o1, o2), dim=1), torch.sigmoid(mask)

    def forward(self, x: Tensor) -> Tensor:
        offset, mask = self.offset_and_mask(x)
        # deform_conv2d wants one dtype and has no bf16 CPU kernel: under autocast / half
        # inputs it runs in float32 (as torchvision's own CUDA autocast rule does) and the
        # result is cast back to the input dtype.
        dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = deform_conv2d(
                x.to(dtype), offset.to(dtype), self.weight.to(dtype),
                None if self.bias is None else self.bias.to(dtype),
                stride=self.stride, padding=self.padding, dilation=self.dilation, mask=mask.to(dtype),
            )
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"deform_groups={self.deform_groups}, bias={self.bias is not None}"
        )


class ResNetBackbone(nn.Module):
    """ResNet/ResNeXt trunk: ``forward(x) -> [C3, C4, C5]`` (strides 8, 16, 32).

    Modules ``conv1, bn1, relu, maxpool, layer1..layer4`` exactly as torchvision's ResNet
    (no ``avgpool``/``fc``). Attributes: ``out_channels`` (C3..C5 channels), ``strides``
    ``[8, 16, 32]``, ``frozen_stages`` (1: stem + layer1), ``norm_eval`` (True), ``dcn``.
    """

    # torchvision's stage builder; uses self.inplanes/_norm_layer/groups/base_width/dilation
    _make_layer = ResNet._make_layer

    def __init__(
        self,
        spec: BackboneSpec,
        dcn: bool = False,
        frozen_stages: int = 1,
        norm_eval: bool = True,
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in [-1, 4], got {frozen_stages}")
        self.spec = spec
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.dcn = dcn
        base = spec.base_channels
        # attributes read by torchvision's ResNet._make_layer
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = base
        self.dilation = 1
        self.groups = spec.groups
        self.base_width = spec.width_per_group

        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(Bottleneck, base, spec.layers[0])
        self.layer2 = self._make_layer(Bottleneck, base * 2, spec.layers[1], stride=2)
        self.layer3 = self._make_layer(Bottleneck, base * 4, spec.layers[2], stride=2)
        self.layer4 = self._make_layer(Bottleneck, base * 8, spec.layers[3], stride=2)
        self.out_channels: list[int] = [base * m * Bottleneck.expansion for m in (2, 4, 8)]
        self.strides: list[int] = [8, 16, 32]

        # scratch init as torchvision's ResNet(zero_init_residual=True) == mmdet's ResNet default
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)

        if dcn:  # c3-c5 = layer2..layer4; mmcv init for the DCN (offset conv zero)
            for layer in (self.layer2, self.layer3, self.layer4):
                for block in layer:
                    block.conv2 = ModulatedDeformConv2d.from_conv(block.conv2)

        self._freeze_stages()

    def _freeze_stages(self) -> None:
        """mmdet's ``ResNet._freeze_stages``: no grad + eval for stem and layer1..frozen_stages."""
        if self.frozen_stages >= 0:
            self.bn1.eval()
            for m in (self.conv1, self.bn1):
                for p in m.parameters():
                    p.requires_grad_(False)
        for i in range(1, self.frozen_stages + 1):
            layer = getattr(self, f"layer{i}")
            layer.eval()
            for p in layer.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNetBackbone:
        """As mmdet: frozen stages stay in eval; with ``norm_eval`` every BN stays in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]


def build_backbone(
    name: str, scale: str = "full", dcn: bool = False, pretrained: str | Path | None = None
) -> ResNetBackbone:
    """Build ``name`` in {r50, r101, x101_32x4d} at ``scale`` in {full, tiny}; optionally
    with DCNv2 in c3-c5 and ImageNet weights from a local file (see :func:`load_pretrained`).

    Returns a :class:`ResNetBackbone` in train mode with stem + layer1 frozen and BN in eval.
    """
    try:
        spec = BACKBONE_SPECS[(name, scale)]
    except KeyError:
        names = sorted({n for n, _ in BACKBONE_SPECS})
        scales = sorted({s for _, s in BACKBONE_SPECS})
        raise ValueError(f"unknown backbone {name!r} / scale {scale!r}; names {names}, scales {scales}") from None
    backbone = ResNetBackbone(spec, dcn=dcn)
    if pretrained is not None:
        load_pretrained(backbone, pretrained)
    backbone.train()
    return backbone


def load_pretrained(backbone: ResNetBackbone, path: str | Path) -> list[str]:
    """Load a local ImageNet state dict (torchvision key layout) into ``backbone``.

    The file is read with ``torch.load(weights_only=True)``; a ``{"state_dict": ...}`` or
    ``{"model": ...}`` wrapper and a ``module.`` prefix are accepted. ``fc.*`` keys are
    ignored. Loading is strict on the backbone's keys (shapes too) except for keys the
    ImageNet classifier cannot have: DCN ``conv_offset.*`` (kept at their zero init, as
    mmdet does) and BN ``num_batches_tracked``. Returns those keys left untouched.
    Never downloads: a missing file raises ``FileNotFoundError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained backbone weights not found: {path}. Nothing is downloaded; save an ImageNet "
            "state dict there first, e.g. torch.save(torchvision.models.resnet50(weights='IMAGENET1K_V1')"
            ".state_dict(), path) on a machine with network access."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise TypeError(f"{path} does not hold a state dict (got {type(state).__name__})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    allowed = [k for k in own if k not in state and (".conv_offset." in k or k.endswith("num_batches_tracked"))]
    missing = [k for k in own if k not in state and k not in allowed]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or mismatched:

        def show(keys: list[str]) -> str:
            return f"{keys[:8]}{' ...' if len(keys) > 8 else ''} ({len(keys)})"

        raise RuntimeError(
            f"pretrained weights {path} do not match the backbone: missing {show(missing)}, "
            f"unexpected {show(unexpected)}, shape mismatch {show(mismatched)}"
        )
    backbone.load_state_dict(state, strict=False)
    return allowed
