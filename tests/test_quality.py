"""The quality representations of Table 1a, each computed by hand on a few priors."""

from __future__ import annotations

import math

import pytest
import torch

from gfl_repro.models.heads.base import HeadSpec
from gfl_repro.models.detector import build_head
from gfl_repro.models.losses import iou_balanced_weights
from gfl_repro.models.postprocess import PostprocessConfig
from gfl_repro.models.quality import ClsLossInputs, QualityTargets, build_quality
from gfl_repro.specs.recipes import RECIPES
from gfl_repro.specs.run_config import RunConfig

D = torch.float64


def _inputs():
    """Four priors, three classes; priors 0 and 2 positive (classes 1 and 0), prior 3 ignored."""
    logits = torch.tensor([[0.2, -0.5, 0.1], [-1.0, 0.3, -2.0], [0.7, 0.0, -0.4], [1.5, 1.5, 1.5]], dtype=D)
    labels = torch.tensor([1, 3, 0, 3])
    x = ClsLossInputs(logits, labels, torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=D), torch.tensor([0, 2]), num_pos=2.0)
    q = QualityTargets(iou=torch.tensor([0.8, 0.3], dtype=D), centerness=torch.tensor([0.5, 0.1], dtype=D))
    return x, q


def _focal(p: torch.Tensor, y: float, gamma=2.0, alpha=0.25) -> torch.Tensor:
    """Eq. 1 with α, one element, written out."""
    pt = p if y == 1 else 1 - p
    at = alpha if y == 1 else 1 - alpha
    return -at * (1 - pt) ** gamma * torch.log(pt)


def _config(quality: str, **changes) -> RunConfig:
    cls_loss = "qfl" if quality == "joint" else "focal"
    return RunConfig(quality=quality, cls_loss=cls_loss, box="dirac", dfl_weight=0.0, **changes)


def _hand_focal_terms(x):
    p = x.logits.sigmoid()
    terms = torch.zeros_like(p)
    for i in range(len(p)):
        for c in range(p.shape[1]):
            terms[i, c] = _focal(p[i, c], 1.0 if x.labels[i] == c else 0.0)
    return terms * x.label_weights[:, None]


def test_none_is_focal_loss_with_unit_box_weights():
    x, q = _inputs()
    quality = build_quality(_config("none"))
    expected = _hand_focal_terms(x).sum() / (2.0 + torch.finfo(torch.float32).eps)
    torch.testing.assert_close(quality.cls_loss(x, q), expected)
    assert torch.equal(quality.box_weights(x, q), torch.ones(2, dtype=D))
    assert quality.branch is None


@pytest.mark.parametrize("kind", ["centerness", "iou"])
def test_separate_branch_targets_weights_and_bce(kind):
    x, q = _inputs()
    quality = build_quality(_config(kind))
    target = q.centerness if kind == "centerness" else q.iou
    assert quality.branch == kind and quality.branch_loss_name == f"loss_{kind}"
    torch.testing.assert_close(quality.box_weights(x, q), target)
    branch = torch.tensor([0.4, -3.0, 1.2, 0.0], dtype=D)
    s = branch[[0, 2]].sigmoid()
    bce = -(target * torch.log(s) + (1 - target) * torch.log(1 - s))
    torch.testing.assert_close(quality.branch_loss(branch, x, q), bce.sum() / (2.0 + torch.finfo(torch.float32).eps))
    # the classification loss is plain focal loss
    torch.testing.assert_close(quality.cls_loss(x, q), build_quality(_config("none")).cls_loss(x, q))


@pytest.mark.parametrize("kind", ["centerness_guided", "iou_guided"])
def test_guided_reweights_the_gt_class_of_positives(kind):
    """Ref. [28]: w_i = q_i^η Σ L / Σ q^η L at the GT class of each positive, 1 elsewhere."""
    x, q = _inputs()
    eta = 1.5
    quality = build_quality(_config(kind, guided_eta=eta))
    terms = _hand_focal_terms(x)
    gt = torch.tensor([terms[0, 1], terms[2, 0]])
    quals = q.centerness if kind.startswith("centerness") else q.iou
    w = quals ** eta * gt.sum() / ((quals ** eta * gt).sum() + 1e-6)
    weighted = terms.clone()
    weighted[0, 1] *= w[0]
    weighted[2, 0] *= w[1]
    expected = weighted.sum() / (2.0 + torch.finfo(torch.float32).eps)
    torch.testing.assert_close(quality.cls_loss(x, q), expected)
    # the positives' total GT-class loss is unchanged, the better-localised one gets more of it
    torch.testing.assert_close((w * gt).sum(), gt.sum(), rtol=1e-4, atol=1e-5)  # up to the 1e-6 eps
    assert w[0] > w[1]
    assert quality.branch is None and torch.equal(quality.box_weights(x, q), torch.ones(2, dtype=D))
    # the weights carry no gradient
    logits = x.logits.clone().requires_grad_(True)
    weights = iou_balanced_weights(logits[[0, 2], [1, 0]], quals.clone().requires_grad_(True), eta)
    assert not weights.requires_grad


def test_joint_is_qfl_on_the_iou_score_and_weights_boxes_by_max_score():
    x, q = _inputs()
    beta = 2.0
    quality = build_quality(_config("joint", qfl_beta=beta))
    p = x.logits.sigmoid()
    y = torch.zeros_like(p)
    y[0, 1], y[2, 0] = q.iou[0], q.iou[1]
    qfl = -(y - p).abs() ** beta * ((1 - y) * torch.log(1 - p) + y * torch.log(p))  # Eq. 2
    expected = (qfl.sum(1) * x.label_weights).sum() / (2.0 + torch.finfo(torch.float32).eps)
    torch.testing.assert_close(quality.cls_loss(x, q), expected)
    torch.testing.assert_close(quality.box_weights(x, q), p.max(1).values[[0, 2]])
    assert quality.branch is None


@pytest.mark.parametrize("quality,detector", [(q, d) for q in ("none", "centerness", "iou", "iou_guided", "joint")
                                              for d in ("atss", "fcos")])
def test_test_score_multiplies_the_branch_in(quality, detector):
    """Every prior scores σ(cls) (× σ(branch) for a separate branch) at test time."""
    recipe = dict(RECIPES[detector])
    recipe.update(quality=quality, cls_loss="qfl" if quality == "joint" else "focal")
    head = build_head(RunConfig(**recipe), HeadSpec(num_classes=2, in_channels=8, feat_channels=8,
                                                    stacked_convs=1, norm_groups=4)).eval()
    for conv in (head.cls_out, head.reg_out, head.quality_out):
        if conv is not None:
            torch.nn.init.zeros_(conv.weight)
    torch.nn.init.constant_(head.cls_out.bias, math.log(0.6 / 0.4))  # σ = 0.6
    torch.nn.init.constant_(head.reg_out.bias, 1.0)
    if head.quality_out is not None:
        torch.nn.init.zeros_(head.quality_out.bias)  # σ = 0.5
    feats = [torch.randn(1, 8, s, s) for s in (8, 4, 2, 1, 1)]
    dets = head.predict(head(feats), [{"img_shape": (64, 64), "scale_factor": (1.0, 1.0)}],
                        PostprocessConfig(score_thr=0.05, nms_iou=1.0, max_per_img=5))[0]
    expected = 0.6 * (0.5 if quality in ("centerness", "iou") else 1.0)
    torch.testing.assert_close(dets["scores"], torch.full((5,), expected), rtol=1e-5, atol=1e-6)


def test_qfl_targets_are_iou_of_the_detached_prediction():
    """The joint score's target is IoU(decoded prediction, GT) with no gradient through it."""
    recipe = dict(RECIPES["atss"], quality="joint", cls_loss="qfl")
    head = build_head(RunConfig(**recipe), HeadSpec(num_classes=2, in_channels=8, feat_channels=8,
                                                    stacked_convs=1, norm_groups=4))
    feats = [torch.randn(1, 8, s, s) for s in (8, 4, 2, 1, 1)]
    gt = [{"boxes": torch.tensor([[10.0, 12.0, 40.0, 44.0]]), "labels": torch.tensor([1])}]
    out = head(feats)
    losses = head.loss(out, gt)
    assert set(losses) == {"loss_cls", "loss_bbox"}
    # gradient of the classification loss reaches the class logits only (the IoU target is detached)
    head.zero_grad()
    losses["loss_cls"].backward()
    assert head.reg_out.weight.grad is None or float(head.reg_out.weight.grad.abs().sum()) == 0.0
    assert float(head.cls_out.weight.grad.abs().sum()) > 0


def test_unknown_quality_is_refused():
    with pytest.raises(ValueError, match="unknown quality"):
        build_quality(RunConfig().replace(quality="nope"))


def test_focal_helper_matches_library():
    """The hand formula above is the library's focal loss (guards the reference itself)."""
    from gfl_repro.models.losses import focal_loss

    logits = torch.tensor([[0.3, -1.2]], dtype=D)
    lib = focal_loss(logits, torch.tensor([0]))
    hand = torch.stack([_focal(logits[0, 0].sigmoid(), 1.0), _focal(logits[0, 1].sigmoid(), 0.0)])
    torch.testing.assert_close(lib[0], hand)
