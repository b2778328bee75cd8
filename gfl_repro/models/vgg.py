"""VGG16 as SSD uses it (mmdetection 3.3 ``SSDVGG(depth=16, with_last_pool=False,
ceil_mode=True, out_feature_indices=(22, 34))``).

``features`` is one ``nn.Sequential`` with torchvision's / mmdet's indices: five stages of
3×3 convs (with bias) + ReLU, 2×2 max-pools with ``ceil_mode`` between them (the last pool
dropped), then SSD's ``MaxPool(3, 1, 1)``, ``fc6`` as a 3×3 conv with dilation 6 (index 31) and
``fc7`` as a 1×1 conv (index 33). The outputs are conv4_3 after its ReLU (index 22, stride 8)
and fc7 after its ReLU (index 34, stride 16). ``width`` divides every channel count (1 at
paper scale, 16 for the smoke profile's toy VGG); ``depths`` sets the number of 3×3 convs per
stage (VGG16's 2, 2, 3, 3, 3 at paper scale; one per stage in the toy VGG, as the tiny ResNets
keep one block per stage), and the output indices follow it. Nothing is frozen; there is no
norm, unless ``norm``: GroupNorm (``"gn"``) or BatchNorm in training mode (``"bn"``) before each
ReLU (the smoke profile's toy SSD, which trains from scratch).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (channels, 3x3 convs) of VGG16
VGG16_DEPTHS = tuple(convs for _, convs in STAGES)
FC_CHANNELS = 1024


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The norm the toy SSD puts before a ReLU: ``"gn"`` GroupNorm (8 groups, at most one per
    channel) or ``"bn"`` BatchNorm in training mode."""
    if norm == "gn":
        return nn.GroupNorm(min(8, channels), channels)
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown norm {norm!r} (have: gn, bn)")


def _relu(channels: int, norm: str | None) -> nn.Module:
    """ReLU, or the ``norm`` layer then ReLU."""
    if norm is None:
        return nn.ReLU(inplace=True)
    return nn.Sequential(norm_layer(norm, channels), nn.ReLU(inplace=True))


class SSDVGG(nn.Module):
    def __init__(self, width: int = 1, norm: str | None = None, depths: tuple[int, ...] = VGG16_DEPTHS) -> None:
        super().__init__()
        if len(depths) != len(STAGES) or min(depths) < 1:
            raise ValueError(f"depths must give 1 or more convs to each of the {len(STAGES)} stages, got {depths}")
        layers: list[nn.Module] = []
        in_channels = 3
        for stage, ((channels, _), convs) in enumerate(zip(STAGES, depths)):
            channels //= width
            for _ in range(convs):
                layers += [nn.Conv2d(in_channels, channels, 3, padding=1), _relu(channels, norm)]
                in_channels = channels
            if stage == 3:
                conv4_out = len(layers) - 1  # conv4_3 (the last conv of stage 4) after its ReLU
            if stage < len(STAGES) - 1:
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        fc = FC_CHANNELS // width
        layers += [nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(in_channels, fc, 3, padding=6, dilation=6),
                   _relu(fc, norm), nn.Conv2d(fc, fc, 1), _relu(fc, norm)]
        self.features = nn.Sequential(*layers)
        self.out_indices = (conv4_out, len(layers) - 1)
        self.out_channels = (STAGES[3][0] // width, fc)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # mmdet's VGG init: kaiming for convs, bias 0
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.out_indices:
                outs.append(x)
        return outs


def load_vgg_pretrained(vgg: SSDVGG, path: str | Path) -> list[str]:
    """Load a local ImageNet VGG16 state dict (torchvision layout, ``features.*``; read with
    ``weights_only=True``) into the convs it has; fc6/fc7 keep their init unless the file holds
    SSD's convolutional fc6/fc7 (``features.31`` / ``features.33``). Returns the keys kept at init."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    own = vgg.state_dict()
    usable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    missing = [k for k in own if k not in usable]
    if any(not k.startswith(("features.31.", "features.33.")) for k in missing):
        raise RuntimeError(f"pretrained weights {path} do not fit VGG16: missing {missing[:6]}")
    vgg.load_state_dict(usable, strict=False)
    return missing


__all__ = ["SSDVGG", "load_vgg_pretrained"]
