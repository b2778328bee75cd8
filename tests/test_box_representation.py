"""The box representations of Table 2a (Dirac, Gaussian, General), computed by hand on a few
positives, and the heads that compose them with a quality representation."""

from __future__ import annotations

import pytest
import torch

from gfl_repro.models.box_ops import aligned_giou, delta2bbox, distance2bbox
from gfl_repro.models.box_representation import BoxNorm, build_box_representation
from gfl_repro.models.coders import DeltaCoder, DistanceCoder, Frame
from gfl_repro.models.detector import build_head
from gfl_repro.models.heads.base import HeadSpec
from gfl_repro.models.losses import kl_loss
from gfl_repro.specs.recipes import RECIPES
from gfl_repro.specs.run_config import RunConfig

D = torch.float64
EPS = torch.finfo(torch.float32).eps


def _frame() -> Frame:
    origin = torch.tensor([[4.0, 4.0], [10.0, 6.0]], dtype=D)
    distances = torch.tensor([[1.0, 2.0, 3.0, 1.5], [2.5, 0.5, 1.0, 4.0]], dtype=D)
    return Frame(target_boxes=distance2bbox(origin, distances), origin=origin, target_distances=distances)


def test_kl_loss_is_he_et_al_eq_9_and_10():
    """e^{-α}(μ-y)²/2 + α/2 inside |μ-y| < 1, e^{-α}(|μ-y| - 1/2) + α/2 outside."""
    mean = torch.tensor([1.2, 5.0], dtype=D)
    log_var = torch.tensor([0.3, -0.7], dtype=D)
    target = torch.tensor([1.0, 2.0], dtype=D)
    expected = torch.stack([
        torch.exp(-log_var[0]) * 0.2 ** 2 / 2 + log_var[0] / 2,
        torch.exp(-log_var[1]) * (3.0 - 0.5) + log_var[1] / 2,
    ])
    torch.testing.assert_close(kl_loss(mean, log_var, target), expected)
    # its minimum over α is at σ² = 2·SmoothL1 (the uncertainty follows the error)
    a = torch.linspace(-3, 3, 6001, dtype=D)
    values = kl_loss(torch.full_like(a, 1.5), a, torch.zeros_like(a))
    best = a[values.argmin()]
    assert abs(float(torch.exp(best)) - 2 * (1.5 - 0.5)) < 1e-2


def test_dirac_distance_giou_normalised_both_ways():
    frame = _frame()
    box = build_box_representation(RunConfig(box="dirac", dfl_weight=0.0, box_loss_weight=2.0), DistanceCoder(clamp=True))
    assert box.channels == 4
    reg = torch.tensor([[1.1, 2.0, 2.5, 1.5], [2.0, 0.5, 1.0, 3.0]], dtype=D)
    pred = box.decode(reg, frame)
    torch.testing.assert_close(pred, distance2bbox(frame.origin, reg))
    w = torch.tensor([0.5, 1.0], dtype=D)
    giou = 1 - aligned_giou(pred, frame.target_boxes)
    atss = box.losses(reg, pred, frame, w, BoxNorm(inside=1.0, after=1.5))
    torch.testing.assert_close(atss["loss_bbox"], 2.0 * (w * giou).sum() / (1.0 + EPS) / 1.5)
    fcos = box.losses(reg, pred, frame, w, BoxNorm(inside=1.5, after=1.0))
    torch.testing.assert_close(fcos["loss_bbox"], 2.0 * (w * giou).sum() / (1.5 + EPS))
    # FCOS keeps its distances >= 0
    assert float(box.activate(torch.tensor([[-1.0, 2.0]])).min()) == 0.0


def test_dirac_delta_decodes_from_anchors():
    box = build_box_representation(RunConfig(box="dirac", dfl_weight=0.0), DeltaCoder())
    anchors = torch.tensor([[0.0, 0.0, 32.0, 32.0]], dtype=D)
    reg = torch.tensor([[0.1, -0.2, 0.3, 0.0]], dtype=D)
    frame = Frame(target_boxes=torch.tensor([[2.0, 0.0, 30.0, 28.0]], dtype=D), anchors=anchors)
    torch.testing.assert_close(box.decode(reg, frame), delta2bbox(anchors, reg))
    assert float(box.activate(torch.tensor([[-1.0]]))) == -1.0  # deltas are signed


def test_general_integral_decode_and_dfl():
    frame = _frame()
    box = build_box_representation(RunConfig(box="general", reg_max=4.0, bin_width=1.0, dfl_weight=0.25), DeltaCoder())
    assert box.channels == 4 * 5 and box.coder.name == "distance"  # General never uses the delta coder
    reg = torch.randn(2, 20, dtype=D, generator=torch.Generator().manual_seed(0))
    probs = reg.reshape(2, 4, 5).softmax(-1)
    distances = (probs * torch.arange(5, dtype=D)).sum(-1)  # Eq. 5
    pred = box.decode(reg, frame)
    torch.testing.assert_close(pred, distance2bbox(frame.origin, distances))
    w = torch.tensor([1.0, 0.25], dtype=D)
    losses = box.losses(reg, pred, frame, w, BoxNorm(inside=1.0, after=2.0))
    assert set(losses) == {"loss_bbox", "loss_dfl"}
    y = frame.target_distances.clamp(max=4 - 0.1)
    left = y.floor().long()
    logp = reg.reshape(2, 4, 5).log_softmax(-1)
    dfl = -((left + 1 - y) * logp.gather(-1, left[..., None])[..., 0]
            + (y - left) * logp.gather(-1, (left + 1)[..., None])[..., 0])  # Eq. 6 per side
    expected = 0.25 * (w[:, None] * dfl).sum() / (4 * 1.0 + EPS) / 2.0
    torch.testing.assert_close(losses["loss_dfl"], expected)
    # without DFL only GIoU trains the distribution
    no_dfl = build_box_representation(RunConfig(box="general", reg_max=4.0, dfl_weight=0.0), DeltaCoder())
    assert set(no_dfl.losses(reg, pred, frame, w, BoxNorm(1.0, 2.0))) == {"loss_bbox"}


def test_gaussian_decodes_from_the_means_and_adds_the_kl_loss():
    frame = _frame()
    box = build_box_representation(RunConfig(box="gaussian", dfl_weight=0.0, kl_weight=0.25), DeltaCoder())
    assert box.channels == 8
    means = torch.tensor([[1.2, 1.8, 3.1, 1.0], [2.0, 1.0, 1.0, 3.0]], dtype=D)
    log_vars = torch.tensor([[0.1, -0.2, 0.0, 0.5], [1.0, 0.0, -1.0, 0.2]], dtype=D)
    reg = torch.cat([means, log_vars], 1)
    pred = box.decode(reg, frame)
    torch.testing.assert_close(pred, distance2bbox(frame.origin, means))
    w = torch.tensor([1.0, 0.5], dtype=D)
    losses = box.losses(reg, pred, frame, w, BoxNorm(inside=1.0, after=1.5))
    assert set(losses) == {"loss_bbox", "loss_kl"}
    kl = kl_loss(means, log_vars, frame.target_distances)
    torch.testing.assert_close(losses["loss_kl"], 0.25 * (w[:, None] * kl).sum() / (4 + EPS) / 1.5)
    # the means are kept >= 0, the log-variances are free
    maps = torch.tensor([-1.0, 2.0, 0.5, -3.0, -1.0, -2.0, 0.25, 4.0]).reshape(1, 8, 1, 1)
    out = box.activate(maps).reshape(-1)
    assert out[:4].tolist() == [0.0, 2.0, 0.5, 0.0] and out[4:].tolist() == [-1.0, -2.0, 0.25, 4.0]
    # test-time boxes come from the means, in pixels
    boxes = box.decode_test(reg.float(), None, torch.tensor([[8.0, 8.0], [8.0, 8.0]]), 0, 8, (64, 64))
    torch.testing.assert_close(boxes, distance2bbox(torch.tensor([[8.0, 8.0]] * 2), means.float() * 8, max_shape=(64, 64)))


ROWS = [(d, q, b) for d in ("atss", "fcos") for q, b in
        [("none", "dirac"), ("centerness", "dirac"), ("iou", "dirac"), ("centerness_guided", "dirac"),
         ("iou_guided", "dirac"), ("joint", "dirac"), ("centerness", "gaussian"), ("centerness", "general")]]


@pytest.mark.parametrize("detector,quality,box", ROWS, ids=[f"{d}-{q}-{b}" for d, q, b in ROWS])
def test_every_table1a_2a_head_has_the_losses_it_should(detector, quality, box):
    """Each head computes the loss parts its representations name, finite, with gradient to
    every output it trains; and with no GT at all every part is a finite zero-or-positive."""
    recipe = dict(RECIPES[detector], quality=quality, cls_loss="qfl" if quality == "joint" else "focal", box=box,
                  dfl_weight=0.25 if box == "general" else 0.0)
    head = build_head(RunConfig(**recipe), HeadSpec(num_classes=3, in_channels=8, feat_channels=8,
                                                    stacked_convs=1, norm_groups=4))
    gen = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, 8, s, s, generator=gen) for s in (16, 8, 4, 2, 1)]
    gt = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 50.0], [70.0, 20.0, 120.0, 100.0]]), "labels": torch.tensor([0, 2])},
          {"boxes": torch.tensor([[30.0, 30.0, 90.0, 80.0]]), "labels": torch.tensor([1])}]
    losses = head.loss(head(feats), gt)
    expected = {"loss_cls", "loss_bbox"} | ({"loss_dfl"} if box == "general" else set()) | (
        {"loss_kl"} if box == "gaussian" else set()) | ({f"loss_{quality}"} if quality in ("centerness", "iou") else set())
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert float(head.reg_out.weight.grad.abs().sum()) > 0 and float(head.cls_out.weight.grad.abs().sum()) > 0
    if head.quality_out is not None:
        assert float(head.quality_out.weight.grad.abs().sum()) > 0
    empty = head.loss(head(feats), [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2)
    assert set(empty) == expected and all(torch.isfinite(v) and float(v.detach()) >= 0 for v in empty.values())
