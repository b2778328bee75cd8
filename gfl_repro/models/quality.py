"""How localization quality is represented: the axis of Table 1(a) (paper Sec. 3, Fig. 1, Fig. 6).

Each representation says four things: the targets it needs (IoU of the decoded prediction with
its GT, or the geometric centerness of the prior in its GT), the classification loss, the
weights of the box losses of each positive, and the score the detections are ranked by at
test time.

====================  ==================================  ===================  =================
quality               classification loss                 box-loss weights     test score
====================  ==================================  ===================  =================
``none``              FL (Eq. 1)                          1                    σ
``centerness``        FL + BCE centerness branch          centerness target    σ × branch
``iou``               FL + BCE IoU branch (refs [12, 29]) IoU target           σ × branch
``centerness_guided`` FL, positives' GT class weighted    1                    σ
                      by centerness (ref. [28])
``iou_guided``        FL, positives' GT class weighted    1                    σ
                      by IoU (ref. [28])
``joint``             QFL (Eq. 2) on the joint            max class score      σ (Fig. 1b)
                      classification-IoU score            (detached)
====================  ==================================  ===================  =================

``none`` with ``cls_loss = "softmax_ce"`` is SSD's classification: softmax over the classes and
a background column, with 3:1 hard negative mining; its test score is the softmax.

A branch is one 3×3 conv on the regression tower with one output per prior, trained on the
positives with binary cross-entropy against the detached target and normalised by the number
of positives (mmdet's ATSS centerness branch; its PAA head predicts IoU the same way). The
IoU target is IoU(decoded prediction (detached), GT), for QFL's joint score as for the IoU
branch. Choices where the paper is silent are listed in ``docs/choices.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .losses import (centerness_loss, focal_loss, iou_balanced_weights, quality_focal_loss,
                     softmax_hard_negative_loss, weight_reduce)

QUALITIES = ("none", "centerness", "iou", "centerness_guided", "iou_guided", "joint")


@dataclass(frozen=True)
class QualityTargets:
    """Localization quality of each positive, computed by the head before the losses."""

    iou: Tensor  # (P,) IoU(decoded prediction (detached), its GT), >= 0
    centerness: Tensor  # (P,) geometric centerness of the prior inside its GT


@dataclass(frozen=True)
class ClsLossInputs:
    """What every classification loss reads (flattened over images, levels and priors)."""

    logits: Tensor  # (N, C)
    labels: Tensor  # (N,) class index, C = background
    label_weights: Tensor | None  # (N,) 0 for ignored priors; None: every prior counts
    pos: Tensor  # (P,) indices of the positives
    num_pos: float | Tensor  # normaliser (number of positives, averaged over processes, >= 1)
    num_images: int = 1


class Quality:
    """Base: no branch, focal loss, unit box weights, the class probability as score."""

    name = "none"
    branch: str | None = None  # "centerness" / "iou": the target of a separate branch
    softmax = False  # class scores are a softmax over the classes and a background column

    def __init__(self, focal_gamma: float = 2.0, focal_alpha: float = 0.25) -> None:
        self.gamma, self.alpha = focal_gamma, focal_alpha

    def cls_loss(self, x: ClsLossInputs, q: QualityTargets) -> Tensor:
        """Focal Loss (Eq. 1, with RetinaNet's α) over every prior and class."""
        return focal_loss(x.logits, x.labels, gamma=self.gamma, alpha=self.alpha, weight=x.label_weights,
                          reduction="mean", avg_factor=x.num_pos)

    def box_weights(self, x: ClsLossInputs, q: QualityTargets) -> Tensor:
        """Weight of each positive's box losses (Eq. 11's "quality scores to weight L_B, L_D")."""
        return q.iou.new_ones(len(x.pos))

    def branch_target(self, q: QualityTargets) -> Tensor:
        raise NotImplementedError(f"quality {self.name!r} has no branch")

    def branch_loss(self, branch_logits: Tensor, x: ClsLossInputs, q: QualityTargets) -> Tensor:
        """BCE of the branch against its (detached) target on the positives, / number of positives."""
        if len(x.pos) == 0:
            return branch_logits.sum() * 0
        return centerness_loss(branch_logits[x.pos], self.branch_target(q), reduction="mean", avg_factor=x.num_pos)

    @property
    def branch_loss_name(self) -> str:
        return f"loss_{self.branch}"


class SeparateBranch(Quality):
    """A separate branch predicts the quality; the test score multiplies it in (Fig. 1a)."""

    def __init__(self, target: str, **focal) -> None:
        super().__init__(**focal)
        self.name = self.branch = target

    def box_weights(self, x: ClsLossInputs, q: QualityTargets) -> Tensor:
        """ATSS/FCOS weight the box loss by the centerness target; the IoU branch by the IoU target."""
        return self.branch_target(q)

    def branch_target(self, q: QualityTargets) -> Tensor:
        return q.centerness if self.branch == "centerness" else q.iou


class Guided(Quality):
    """Implicit quality (ref. [28], IoU-balanced loss): no branch; the quality re-weights the
    classification loss of each positive at its GT class (:func:`iou_balanced_weights`)."""

    def __init__(self, target: str, eta: float = 1.5, **focal) -> None:
        super().__init__(**focal)
        self.name, self.target, self.eta = f"{target}_guided", target, eta

    def cls_loss(self, x: ClsLossInputs, q: QualityTargets) -> Tensor:
        loss = focal_loss(x.logits, x.labels, gamma=self.gamma, alpha=self.alpha, reduction="none")  # (N, C)
        weights = torch.ones_like(loss) if x.label_weights is None else x.label_weights[:, None].expand_as(loss).clone()
        if len(x.pos):
            gt = x.labels[x.pos]
            quality = q.centerness if self.target == "centerness" else q.iou
            weights[x.pos, gt] = weights[x.pos, gt] * iou_balanced_weights(loss[x.pos, gt], quality, self.eta)
        return weight_reduce(loss, weights, reduction="mean", avg_factor=x.num_pos)


class SoftmaxHardNegatives(Quality):
    """No quality, SSD's classification: softmax cross-entropy over the classes and a
    background column, on the positives and the hardest negatives (3 per positive, per image)."""

    softmax = True

    def __init__(self, neg_pos_ratio: int = 3, **focal) -> None:
        super().__init__(**focal)
        self.neg_pos_ratio = neg_pos_ratio

    def cls_loss(self, x: ClsLossInputs, q: QualityTargets) -> Tensor:
        return softmax_hard_negative_loss(x.logits, x.labels, x.num_images, x.num_pos, self.neg_pos_ratio)


class Joint(Quality):
    """The classification-IoU joint representation trained with QFL (Eq. 2): the score at the
    GT class is the IoU target for positives, 0 everywhere else (Fig. 1b)."""

    name = "joint"

    def __init__(self, beta: float = 2.0, **focal) -> None:
        super().__init__(**focal)
        self.beta = beta

    def cls_loss(self, x: ClsLossInputs, q: QualityTargets) -> Tensor:
        score = x.logits.new_zeros(len(x.logits))
        score[x.pos] = q.iou
        return quality_focal_loss(x.logits, x.labels, score, beta=self.beta, weight=x.label_weights,
                                  reduction="mean", avg_factor=x.num_pos)

    def box_weights(self, x: ClsLossInputs, q: QualityTargets) -> Tensor:
        """GFLHead: the positive's largest class score, detached (taken over the whole score map,
        then gathered: the form whose float rounding the engine's results were produced with)."""
        return x.logits.detach().sigmoid().max(dim=1).values[x.pos]


def build_quality(config) -> Quality:
    """The quality representation a run config names (``config.quality``)."""
    focal = dict(focal_gamma=config.focal_gamma, focal_alpha=config.focal_alpha)
    if config.quality == "none":
        return SoftmaxHardNegatives(**focal) if config.cls_loss == "softmax_ce" else Quality(**focal)
    if config.quality in ("centerness", "iou"):
        return SeparateBranch(config.quality, **focal)
    if config.quality in ("centerness_guided", "iou_guided"):
        return Guided(config.quality.removesuffix("_guided"), eta=config.guided_eta, **focal)
    if config.quality == "joint":
        return Joint(beta=config.qfl_beta, **focal)
    raise ValueError(f"unknown quality {config.quality!r}; choose from {', '.join(QUALITIES)}")


__all__ = ["ClsLossInputs", "Guided", "Joint", "QUALITIES", "Quality", "QualityTargets", "SeparateBranch",
           "SoftmaxHardNegatives", "build_quality"]
