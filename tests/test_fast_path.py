"""The fast path (``--channels-last``, ``--compile``) computes what the plain engine computes:
for every detector, the same losses, gradients and detections in fp32 on identical weights and
inputs, and checkpoints that load across layouts."""

from __future__ import annotations

import pytest
import torch

from gfl_repro.models.detector import build_detector, use_channels_last
from gfl_repro.specs.catalogue import load_catalogue
from gfl_repro.specs.profiles import PROFILES

# (experiment, group, row): one row per detector the native engine builds
DETECTORS = [("table3", None, "ATSS + QFL + DFL"), ("table1a", "FCOS", "centerness-branch"),
             ("table1b", None, "RetinaNet"), ("table1b", None, "FoveaBox + joint w/ QFL"), ("table1b", None, "SSD512")]
RTOL = 1e-5


def smoke_config(experiment: str, group: str | None, label: str):
    exp = load_catalogue()[experiment]
    # untrained heads score about their prior (0.01): a low threshold keeps detections to compare
    return exp.resolve(exp.row(label, group), PROFILES["smoke"]).replace(score_thr=0.005)


def batch(config, seed: int = 0):
    """Two random images (the second without objects) at the config's input size."""
    g = torch.Generator().manual_seed(seed)
    width, height = config.image_scale if config.detector == "ssd512" else (192, 160)
    images = torch.randn(2, 3, height, width, generator=g)
    boxes = torch.tensor([[10.0, 12.0, 90.0, 100.0], [60.0, 30.0, 150.0, 140.0], [5.0, 70.0, 40.0, 110.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([0, 1, 2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    for t in targets:
        t.update(img_shape=(height, width), ori_shape=(height, width), scale_factor=(1.0, 1.0))
    return images, targets


def losses_and_grads(model, images, targets):
    model.zero_grad()
    losses = model.loss(images, targets)
    sum(losses.values()).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


def assert_same(ours: dict, reference: dict, rtol: float, atol: float = 0.0) -> None:
    assert ours.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(ours[key], reference[key], rtol=rtol, atol=atol, msg=key)


@pytest.mark.parametrize("experiment,group,label", DETECTORS, ids=[lab for _, _, lab in DETECTORS])
def test_channels_last_trains_and_detects_as_the_plain_layout(experiment, group, label):
    config = smoke_config(experiment, group, label)
    torch.manual_seed(0)
    plain = build_detector(config, num_classes=6)
    torch.manual_seed(0)
    fast = build_detector(config.replace(channels_last=True), num_classes=6)
    assert fast.memory_format == torch.channels_last
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in fast.parameters())
    images, targets = batch(config)
    reference_losses, _ = losses_and_grads(plain, images, targets)
    losses, _ = losses_and_grads(fast, images, targets)
    assert_same(losses, reference_losses, RTOL)
    plain.eval(), fast.eval()
    with torch.no_grad():
        ours, reference = fast(images), plain(images)
    for field in ("cls", "reg"):
        for level, (a, b) in enumerate(zip(getattr(ours, field), getattr(reference, field))):
            assert a.shape == b.shape
            # to 5e-4 of the map's scale: the toy SSD's BatchNorm over small batches and its
            # L2Norm amplify rounding; a wrong layout differs by the scale itself
            torch.testing.assert_close(a, b, rtol=RTOL, atol=5e-4 * float(b.abs().max()), msg=f"{field} {level}")
    # detections: the same post-processing of those outputs; an untrained head's near-equal
    # scores may swap places, so the sorted scores are compared
    for ours, reference in zip(fast.predict(images, targets), plain.predict(images, targets)):
        assert len(ours["scores"]) == len(reference["scores"]) > 0
        torch.testing.assert_close(ours["scores"].sort().values, reference["scores"].sort().values, rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("experiment,group,label", DETECTORS, ids=[lab for _, _, lab in DETECTORS])
def test_channels_last_gives_the_plain_layouts_gradient(experiment, group, label):
    """The gradient as one vector (what SGD steps along), compared in float64. In float32 the
    two layouts' gradients differ by rounding alone: 7e-7 to 1e-6 of the norm for the FPN
    detectors, but 8.0e-6 for the untrained toy SSD, whose backward pass (L2Norm of small
    conv4_3 activations, BatchNorm over four-channel maps) amplifies it (5.7e-3 for the deeper
    toy VGG of before), above the 1e-6 asked here. In float64 the rounding is
    gone: 1.5e-15 for the FPN detectors, 2.3e-8 for SSD512 (measured)."""
    config = smoke_config(experiment, group, label)
    torch.manual_seed(0)
    plain = build_detector(config, num_classes=6).double()
    torch.manual_seed(0)
    fast = build_detector(config.replace(channels_last=True), num_classes=6).double()
    use_channels_last(fast)  # .double() keeps the layout; say it again to be sure
    images, targets = batch(config)
    for t in targets:
        t["boxes"] = t["boxes"].double()
    _, reference_grads = losses_and_grads(plain, images.double(), targets)
    _, grads = losses_and_grads(fast, images.double(), targets)
    names = sorted(reference_grads)
    assert names == sorted(grads)
    reference = torch.cat([reference_grads[n].flatten() for n in names])
    difference = torch.cat([(grads[n] - reference_grads[n]).flatten() for n in names])
    assert float(difference.norm() / reference.norm()) < 1e-6


def test_a_checkpoint_loads_across_layouts():
    config = smoke_config("table3", None, "ATSS + QFL + DFL")
    torch.manual_seed(0)
    fast = build_detector(config.replace(channels_last=True), num_classes=6)
    plain = build_detector(config, num_classes=6)
    plain.load_state_dict(fast.state_dict())
    assert set(plain.state_dict()) == set(fast.state_dict())
    for name, value in fast.state_dict().items():
        assert torch.equal(plain.state_dict()[name], value), name
    use_channels_last(plain)
    images, targets = batch(config)
    assert_same(plain.loss(images, targets), fast.loss(images, targets), rtol=0.0)


def test_compiled_detector_keeps_its_parameter_names_and_computes_the_same_losses(monkeypatch):
    """The run's code path through ``torch.compile``: dynamo traces backbone, neck and head.
    The backend is swapped for ``aot_eager`` (the same graphs, no C++ code generation) to keep
    the test at seconds; the benchmark times the real inductor backend."""
    real = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: real(self, **{**kw, "backend": "aot_eager"}))
    config = smoke_config("table3", None, "ATSS + QFL + DFL")
    torch.manual_seed(0)
    plain = build_detector(config, num_classes=6)
    torch.manual_seed(0)
    compiled = build_detector(config.replace(compile=True), num_classes=6)
    assert set(compiled.state_dict()) == set(plain.state_dict())
    assert all(getattr(part, "_compiled_call_impl", None) is not None
               for part in (compiled.backbone, compiled.neck, compiled.head))
    images, targets = batch(config)
    reference_losses, _ = losses_and_grads(plain, images, targets)
    losses, _ = losses_and_grads(compiled, images, targets)
    assert_same(losses, reference_losses, RTOL)


# every distinct head of the catalogue: Table 1a's qualities and Table 2a's boxes on FCOS and
# ATSS, GFL, and Table 1b's detectors with and without QFL
HEADS = [("table1a", g, label) for g in ("FCOS", "ATSS") for label in (
    "w/o quality branch", "centerness-branch", "IoU-branch", "centerness-guided", "IoU-guided", "joint w/ QFL (ours)")]
HEADS += [("table2a", g, label) for g in ("FCOS", "ATSS") for label in ("Gaussian", "General w/ DFL (ours)")]
HEADS += [("table3", None, "ATSS + QFL + DFL")]
HEADS += [("table1b", None, f"{d}{qfl}") for d in ("RetinaNet", "FoveaBox", "SSD512") for qfl in ("", " + joint w/ QFL")]


@pytest.mark.parametrize("experiment,group,label", HEADS, ids=[f"{g or e}-{lab}" for e, g, lab in HEADS])
def test_bf16_training_keeps_the_losses_in_float32(experiment, group, label):
    """``--precision bf16``: the forward pass under bfloat16 autocast, the head's targets and
    losses in float32 (as the loop runs a step); the losses stay within bfloat16's rounding of
    the fp32 ones and every trainable parameter gets a finite gradient."""
    config = smoke_config(experiment, group, label)
    torch.manual_seed(0)
    model = build_detector(config, num_classes=6)
    images, targets = batch(config)
    reference, _ = losses_and_grads(model, images, targets)
    model.zero_grad()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        losses = model.loss(images, targets)
    assert losses.keys() == reference.keys()
    assert all(v.dtype == torch.float32 for v in losses.values())
    for name, value in losses.items():
        torch.testing.assert_close(value.detach(), reference[name], rtol=0.1, atol=0.02, msg=name)
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
