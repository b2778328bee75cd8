"""Backbones (ResNet/ResNeXt, DCNv2) and FPN: shapes, freezing, BN, DCN, weights, layout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from gfl_repro.models.backbone import (
    BACKBONE_SPECS,
    ModulatedDeformConv2d,
    build_backbone,
    load_pretrained,
)
from gfl_repro.models.fpn import FPN

NAMES = ("r50", "r101", "x101_32x4d")
FULL_CHANNELS = [512, 1024, 2048]
TINY_CHANNELS = [128, 256, 512]


def _halve(n: int, times: int) -> int:
    """Size after ``times`` stride-2 steps (3x3 pad 1, 7x7 pad 3, maxpool 3/2/1): ceil(n/2)."""
    for _ in range(times):
        n = math.ceil(n / 2)
    return n


def _expected_sizes(h: int, w: int, strides=(8, 16, 32, 64, 128)) -> list[tuple[int, int]]:
    return [(_halve(h, int(math.log2(s))), _halve(w, int(math.log2(s)))) for s in strides]


_FULL_CACHE: dict[str, nn.Module] = {}


def full_backbone(name: str) -> nn.Module:
    """Full-size backbones are built once per session (R-101 / X-101 are slow to init)."""
    if name not in _FULL_CACHE:
        torch.manual_seed(0)
        _FULL_CACHE[name] = build_backbone(name, "full")
    return _FULL_CACHE[name]


# --------------------------------------------------------------------------- shapes / layout


@pytest.mark.parametrize("name", NAMES)
def test_full_shapes_and_torchvision_layout(name):
    bb = full_backbone(name)
    assert bb.out_channels == FULL_CHANNELS and bb.strides == [8, 16, 32]
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(1, c, 64 // s, 64 // s) for c, s in zip(FULL_CHANNELS, (8, 16, 32))]
    # same keys and shapes as torchvision's definition without the classifier (built on meta: free)
    with torch.device("meta"):
        ref = {
            "r50": lambda: torchvision.models.resnet50(weights=None),
            "r101": lambda: torchvision.models.resnet101(weights=None),
            "x101_32x4d": lambda: torchvision.models.resnet.ResNet(
                torchvision.models.resnet.Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=4
            ),
        }[name]()
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in bb.state_dict().items()} == ref_shapes
    if name == "x101_32x4d":
        assert bb.layer1[0].conv2.groups == 32 and bb.layer1[0].conv2.out_channels == 128
        assert bb.layer4[0].conv2.out_channels == 1024


@pytest.mark.parametrize("name", NAMES)
def test_tiny_shapes_and_distinct_configs(name):
    bb = build_backbone(name, "tiny")
    assert bb.out_channels == TINY_CHANNELS
    x = torch.randn(2, 3, 160, 192)
    feats = bb(x)
    exp = _expected_sizes(160, 192)[:3]
    assert [tuple(f.shape) for f in feats] == [(2, c, h, w) for c, (h, w) in zip(TINY_CHANNELS, exp)]
    assert len({BACKBONE_SPECS[(n, "tiny")] for n in NAMES}) == 3
    assert BACKBONE_SPECS[(name, "tiny")].layers[2] >= BACKBONE_SPECS[("r50", "tiny")].layers[2]


def test_strided_conv_is_the_3x3_pytorch_style():
    bb = build_backbone("r50", "tiny")
    for layer in (bb.layer2, bb.layer3, bb.layer4):
        assert layer[0].conv1.stride == (1, 1) and layer[0].conv2.stride == (2, 2)
        assert layer[0].downsample[0].stride == (2, 2)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg16", "full")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("r50", "small")


def test_matches_torchvision_forward():
    """Tiny R-50 with the weights copied into torchvision's ResNet gives the same C5."""
    bb = build_backbone("r50", "tiny").eval()
    spec = BACKBONE_SPECS[("r50", "tiny")]
    ref = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, list(spec.layers))
    # torchvision hard-codes 64 base channels; rebuild its stages at our width
    ref.inplanes = spec.base_channels
    ref.conv1 = nn.Conv2d(3, spec.base_channels, 7, 2, 3, bias=False)
    ref.bn1 = nn.BatchNorm2d(spec.base_channels)
    for i, mult in enumerate((1, 2, 4, 8)):
        setattr(ref, f"layer{i + 1}", ref._make_layer(ref.layer1[0].__class__, spec.base_channels * mult,
                                                       spec.layers[i], stride=1 if i == 0 else 2))
    ref.fc = nn.Identity()
    ref.load_state_dict(bb.state_dict())
    ref.eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        c5 = bb(x)[-1]
        r = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        r = ref.layer4(ref.layer3(ref.layer2(ref.layer1(r))))
    torch.testing.assert_close(c5, r)


# --------------------------------------------------------------------------- freezing / BN


@pytest.mark.parametrize("dcn", [False, True])
def test_frozen_stem_and_stage1(dcn):
    bb = build_backbone("x101_32x4d", "tiny", dcn=dcn)
    frozen = [p for m in (bb.conv1, bb.bn1, bb.layer1) for p in m.parameters()]
    assert frozen and all(not p.requires_grad for p in frozen)
    trainable = [p for m in (bb.layer2, bb.layer3, bb.layer4) for p in m.parameters()]
    assert all(p.requires_grad for p in trainable)  # incl. BN affine, as mmdet's requires_grad=True
    assert sum(p.requires_grad for p in bb.parameters()) == len(trainable)
    sum(f.float().mean() for f in bb(torch.randn(2, 3, 64, 64))).backward()
    assert all(p.grad is None for p in frozen)
    assert all(p.grad is not None for p in trainable)


def test_bn_statistics_frozen_in_train_mode():
    bb = build_backbone("r50", "tiny")
    # non-trivial statistics, so that a train-mode BN would visibly move them
    for m in bb.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    bb.train()
    assert bb.training and bb.layer2.training
    assert all(not m.training for m in bb.modules() if isinstance(m, nn.BatchNorm2d))
    assert not bb.layer1.training
    before = {k: v.clone() for k, v in bb.state_dict().items() if "running" in k or "num_batches" in k}
    x = torch.randn(2, 3, 64, 96) * 3 + 1
    out_train = bb(x)
    after = bb.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    with torch.no_grad():
        out_eval = bb.eval()(x)
    for a, b in zip(out_train, out_eval):
        torch.testing.assert_close(a.detach(), b)
    bb.train()
    assert all(not m.training for m in bb.modules() if isinstance(m, nn.BatchNorm2d))


# --------------------------------------------------------------------------- DCN


@pytest.mark.parametrize("stride,dilation,groups", [(1, 1, 1), (2, 1, 1), (1, 2, 4), (2, 1, 8)])
def test_dcn_zero_init_is_half_the_plain_conv(stride, dilation, groups):
    """mmcv zero-inits conv_offset: offsets 0 and mask = sigmoid(0) = 0.5."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups, bias=False)
    dcn = ModulatedDeformConv2d.from_conv(conv, copy_weight=True)
    assert dcn.conv_offset.out_channels == 27
    assert torch.count_nonzero(dcn.conv_offset.weight) == 0 and torch.count_nonzero(dcn.conv_offset.bias) == 0
    x = torch.randn(2, 16, 13, 11)
    offset, mask = dcn.offset_and_mask(x)
    assert offset.shape[1] == 18 and mask.shape[1] == 9
    assert torch.all(offset == 0) and torch.all(mask == 0.5)
    torch.testing.assert_close(dcn(x), 0.5 * conv(x), rtol=1e-5, atol=1e-5)


def test_dcn_offset_layout_dy_dx():
    """conv_offset channels [0, 18) are (dy, dx) per tap, [18, 27) mask logits (mmcv's split)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    dcn = ModulatedDeformConv2d.from_conv(conv, copy_weight=True)
    x = torch.randn(1, 4, 9, 10)
    with torch.no_grad():
        dcn.conv_offset.bias[1:18:2] = 1.0  # dx = +1 for all 9 taps, dy = 0
        out = dcn(x)
        # sample x at (h + i - 1, w + j - 1 + 1): pad left 1 / right 2, drop the first column
        ref = F.conv2d(F.pad(x, (1, 2, 1, 1))[..., 1:], conv.weight)
    torch.testing.assert_close(out, 0.5 * ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        dcn.conv_offset.bias.zero_()
        dcn.conv_offset.bias[0:18:2] = -1.0  # dy = -1
        dcn.conv_offset.bias[18:] = 2.0  # mask logits
        out = dcn(x)
        ref = F.conv2d(F.pad(x, (1, 1, 2, 1))[..., :-1, :], conv.weight)
    torch.testing.assert_close(out, torch.sigmoid(torch.tensor(2.0)) * ref, rtol=1e-5, atol=1e-5)


def test_dcn_placement_in_backbone():
    bb = build_backbone("x101_32x4d", "tiny", dcn=True)
    assert all(isinstance(b.conv2, nn.Conv2d) for b in bb.layer1)
    for layer in (bb.layer2, bb.layer3, bb.layer4):
        for i, b in enumerate(layer):
            assert isinstance(b.conv2, ModulatedDeformConv2d)
            assert b.conv2.groups == 8 and b.conv2.stride == ((2, 2) if i == 0 else (1, 1))
            assert b.conv2.bias is None and b.conv2.conv_offset.in_channels == b.conv2.in_channels
    assert "layer2.0.conv2.conv_offset.weight" in bb.state_dict()
    with torch.no_grad():  # undo zero_init_residual so gradients reach conv2
        for layer in (bb.layer2, bb.layer3, bb.layer4):
            for b in layer:
                b.bn3.weight.fill_(1.0)
    feats = bb(torch.randn(2, 3, 160, 192))
    assert [f.shape[1] for f in feats] == TINY_CHANNELS
    sum((f**2).mean() for f in feats).backward()
    for layer in (bb.layer2, bb.layer3, bb.layer4):
        assert layer[0].conv2.conv_offset.weight.grad.abs().sum() > 0
        assert layer[0].conv2.weight.grad.abs().sum() > 0


def test_dcn_under_bf16_autocast():
    """No bf16 CPU kernel for deform_conv2d: it runs in float32 and returns the input dtype."""
    torch.manual_seed(0)
    dcn = ModulatedDeformConv2d(8, 8, 3, padding=1)
    x = torch.randn(1, 8, 6, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = dcn(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), dcn(x), rtol=0.05, atol=0.05)


# --------------------------------------------------------------------------- pretrained weights


def test_load_pretrained_round_trip(tmp_path):
    torch.manual_seed(1)
    src = build_backbone("r101", "tiny")
    state = dict(src.state_dict())
    state["fc.weight"] = torch.zeros(1000, 512)
    state["fc.bias"] = torch.zeros(1000)
    path = tmp_path / "imagenet.pth"
    torch.save(state, path)

    torch.manual_seed(2)
    dst = build_backbone("r101", "tiny", pretrained=path)
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k
    assert not dst.layer1[0].conv1.weight.requires_grad  # still frozen after loading

    # DCN: conv2 weights come from the plain conv, conv_offset stays zero (absent from ImageNet)
    dcn = build_backbone("r101", "tiny", dcn=True)
    left = load_pretrained(dcn, path)
    assert left and all(".conv_offset." in k for k in left)
    torch.testing.assert_close(dcn.layer3[1].conv2.weight, src.layer3[1].conv2.weight)
    assert torch.count_nonzero(dcn.layer3[1].conv2.conv_offset.weight) == 0


def test_load_pretrained_errors(tmp_path):
    bb = build_backbone("r50", "tiny")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_pretrained(bb, tmp_path / "missing.pth")
    wrong = dict(build_backbone("r101", "tiny").state_dict())  # extra block in layer3
    torch.save(wrong, tmp_path / "r101.pth")
    with pytest.raises(RuntimeError, match="unexpected"):
        load_pretrained(bb, tmp_path / "r101.pth")
    partial = {k: v for k, v in bb.state_dict().items() if not k.startswith("layer4")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match="missing"):
        load_pretrained(bb, tmp_path / "partial.pth")
    other = dict(bb.state_dict())
    other["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    torch.save({"state_dict": other}, tmp_path / "shape.pth")
    with pytest.raises(RuntimeError, match="shape"):
        load_pretrained(bb, tmp_path / "shape.pth")


# --------------------------------------------------------------------------- FPN


@pytest.mark.parametrize("size", [(160, 192), (100, 130)])
def test_fpn_shapes_and_strides(size):
    bb = build_backbone("r50", "tiny")
    fpn = FPN(bb.out_channels, out_channels=32)
    outs = fpn(bb(torch.randn(2, 3, *size)))
    assert len(outs) == 5
    assert [tuple(o.shape) for o in outs] == [(2, 32, h, w) for h, w in _expected_sizes(*size)]


def test_fpn_full_r50_small_input():
    bb = full_backbone("r50")
    fpn = FPN(bb.out_channels)
    with torch.no_grad():
        outs = fpn(bb(torch.randn(1, 3, 64, 64)))
    assert [tuple(o.shape) for o in outs] == [(1, 256, h, w) for h, w in _expected_sizes(64, 64)]


def _nearest(x: torch.Tensor, size) -> torch.Tensor:
    """Nearest resize by explicit indexing: source index floor(dst * in / out) (PyTorch 'nearest')."""
    hi = (torch.arange(size[0]) * x.shape[-2]) // size[0]
    wi = (torch.arange(size[1]) * x.shape[-1]) // size[1]
    return x[..., hi[:, None], wi[None, :]]


def test_fpn_top_down_and_extra_levels_with_odd_sizes():
    """Identity convs expose the computation: P_l = lateral_l + up(P_{l+1}); P6/P7 on outputs."""
    c = 4
    fpn = FPN([c, c, c], out_channels=c)
    with torch.no_grad():
        for seq in list(fpn.lateral_convs) + list(fpn.fpn_convs):
            conv = seq.conv
            conv.weight.zero_()
            k = conv.kernel_size[0] // 2
            conv.weight[:, :, k, k] = torch.eye(c)
    feats = [torch.randn(2, c, 13, 17), torch.randn(2, c, 7, 9), torch.randn(2, c, 4, 5)]
    outs = fpn(feats)
    p5 = feats[2]
    p4 = feats[1] + _nearest(p5, (7, 9))
    p3 = feats[0] + _nearest(p4, (13, 17))
    p6 = p5[..., ::2, ::2]  # 3x3 stride 2 pad 1 with a centre-only kernel
    p7 = p6[..., ::2, ::2]
    for got, exp in zip(outs, [p3, p4, p5, p6, p7]):
        torch.testing.assert_close(got, exp)


def test_fpn_relu_before_extra_convs_reaches_p7_only():
    """mmdet's FCOS neck: P6 = conv(P5), P7 = conv(relu(P6)); without the flag P7 = conv(P6)."""
    torch.manual_seed(0)
    plain, fcos = FPN([8, 16, 32], 8), FPN([8, 16, 32], 8, relu_before_extra_convs=True)
    fcos.load_state_dict(plain.state_dict())
    feats = [torch.randn(1, 8, 16, 16), torch.randn(1, 16, 8, 8), torch.randn(1, 32, 4, 4)]
    a, b = plain(feats), fcos(feats)
    for level in range(4):
        torch.testing.assert_close(a[level], b[level])
    torch.testing.assert_close(b[4], fcos.fpn_convs[4](torch.relu(b[3])))
    assert not torch.allclose(a[4], b[4])


def test_fpn_layout_and_init():
    fpn = FPN([512, 1024, 2048], 256)
    keys = list(fpn.state_dict())
    assert keys == [f"lateral_convs.{i}.conv.{p}" for i in range(3) for p in ("weight", "bias")] + [
        f"fpn_convs.{i}.conv.{p}" for i in range(5) for p in ("weight", "bias")
    ]
    for i, seq in enumerate(fpn.fpn_convs):
        assert seq.conv.stride == ((2, 2) if i >= 3 else (1, 1)) and seq.conv.in_channels == 256
    for m in fpn.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert torch.all(m.bias == 0) and m.weight.abs().max() <= bound
            assert m.weight.abs().max() > 0.9 * bound


# --------------------------------------------------------------------------- SSD's VGG and neck


def _ssd_config(profile: str):
    from gfl_repro.specs.catalogue import load_catalogue
    from gfl_repro.specs.profiles import PROFILES

    table1b = load_catalogue()["table1b"]
    return table1b.resolve(table1b.row("SSD512"), PROFILES[profile])


def test_toy_ssd_levels_norm_and_l2_scale():
    """The smoke profile's toy SSD: VGG16 at 1/16 width with one conv per stage and BatchNorm
    before each ReLU, the extra layers at 1/4 (64 channels, as the tiny FPN), L2Norm scaled so
    that conv4_3's elements keep the size they have at 512 channels; seven levels at 288 px."""
    from gfl_repro.models.detector import build_detector

    config = _ssd_config("smoke")
    detector = build_detector(config, num_classes=6)
    convs = [m for m in detector.backbone.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8, 16, 32, 32, 64, 64]  # 5 stages, fc6, fc7
    assert detector.backbone.out_indices == (10, 18)
    assert detector.neck.out_channels == (32, 64, 128, 64, 64, 64, 64)
    assert detector.head.level_channels == detector.neck.out_channels
    kinds = {type(m) for m in detector.modules()}
    assert nn.BatchNorm2d in kinds and nn.GroupNorm not in kinds
    assert torch.equal(detector.neck.l2_norm.weight, torch.full((32,), 5.0))
    with torch.no_grad():
        feats = detector.neck(detector.backbone(torch.randn(2, 3, *config.image_scale)))
    assert [tuple(f.shape[1:]) for f in feats] == [(c, s, s) for c, s in zip(detector.neck.out_channels,
                                                                               (36, 18, 9, 5, 3, 2, 1))]
    # the L2-normalised level has the elements' size of the paper's: sqrt(mean(x^2)) = 5 / sqrt(32)
    assert float(feats[0].pow(2).mean().sqrt()) == pytest.approx(20 / math.sqrt(512), rel=1e-4)


def test_paper_ssd_keeps_vgg16_without_norm():
    from gfl_repro.models.ssd_neck import SSDNeck, l2norm_scale
    from gfl_repro.models.vgg import SSDVGG

    assert l2norm_scale(512) == 20.0 and l2norm_scale(32) == 5.0
    neck = SSDNeck((512, 1024))
    assert neck.out_channels == (512, 1024, 512, 256, 256, 256, 256)
    assert torch.equal(neck.l2_norm.weight, torch.full((512,), 20.0))
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in neck.modules())
    vgg = SSDVGG(16)  # width only: VGG16's depths, no norm unless asked
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in vgg.modules())
    assert SSDVGG().out_indices == vgg.out_indices == (22, 34)  # mmdet's out_feature_indices
    assert sum(isinstance(m, nn.Conv2d) for m in vgg.modules()) == 15
    with pytest.raises(ValueError, match="depths must give"):
        SSDVGG(16, depths=(1, 1, 0, 1, 1))
    gn = SSDVGG(16, norm="gn")
    assert sum(isinstance(m, nn.GroupNorm) for m in gn.modules()) == 15  # 13 convs + fc6 + fc7
    with pytest.raises(ValueError, match="unknown norm 'ln'"):
        SSDVGG(16, norm="ln")


def test_norm_bn_is_the_toy_ssds_only():
    from gfl_repro.models.detector import build_detector
    from gfl_repro.models.registry import check_supported

    retinanet = _ssd_config("smoke").replace(detector="retinanet", backbone="r50", norm="bn", box_loss="l1")
    with pytest.raises(ValueError, match="retinanet with norm = 'bn' is not in the native engine"):
        check_supported(retinanet)
    with pytest.raises(ValueError, match="norm = 'bn'"):
        build_detector(retinanet, num_classes=3)
