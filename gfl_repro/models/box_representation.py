r"""How a box is represented: the axis of Table 2(a) (paper Sec. 3, Eqs. 3-6).

Every representation regresses, per prior, the four sides of its box and says how to turn its
outputs into boxes and which losses train it:

==============  ==================================  ===========================================
box             outputs per prior                   losses (besides GIoU on the decoded box)
==============  ==================================  ===========================================
``dirac``       4: one value per side (Eq. 3)       none
``gaussian``    8: a mean and a log-variance        KL loss of ref. [10] per side
                per side (ref. [10])                (:func:`~gfl_repro.models.losses.kl_loss`)
``general``     4 × (n + 1): a distribution over    DFL (Eq. 6) when ``dfl_weight > 0``
                the bins of each side (Eq. 5)
==============  ==================================  ===========================================

Distances are in stride units, measured from the prior's centre (the point of a point prior).
A Dirac box on an anchor-based head (ATSS) is instead encoded as mmdet's ATSS does, as
``(dx, dy, dw, dh)`` deltas from the anchor (``coder = "delta"``). A Gaussian box is decoded
from its means; its variances only enter the KL loss.

The box losses of the positives are weighted per positive (the quality's box weights) and
normalised by :class:`BoxNorm`: GIoU with weight λ0 (Eq. 11), DFL with λ1 averaged over the
four sides (Eq. 11), the KL loss with ``kl_weight`` averaged over the four sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .box_ops import delta2bbox, distance2bbox
from .losses import distribution_focal_loss, dfl_target, giou_loss, integral, kl_loss, num_bins

BOXES = ("dirac", "gaussian", "general")
SIDES = 4


@dataclass(frozen=True)
class Frame:
    """Where the positives' boxes live while their losses are computed.

    ``anchors`` for the delta coder; otherwise ``origin``, the points distances are measured
    from, with the targets as distances (stride units) and as boxes in the same frame.
    """

    target_boxes: Tensor  # (P, 4)
    origin: Tensor | None = None  # (P, 2)
    target_distances: Tensor | None = None  # (P, 4)
    anchors: Tensor | None = None  # (P, 4), delta coder only


@dataclass(frozen=True)
class BoxNorm:
    """How a head normalises its weighted box losses: ``λ · loss(avg_factor=inside) / after``.

    mmdet's two conventions: ATSS/GFL pass ``avg_factor = 1`` and divide the weighted sum by
    the (process-averaged) sum of the weights afterwards, clamped at 1; FCOS passes that sum,
    clamped at 1e-6, as the ``avg_factor``.
    """

    inside: float
    after: float


class BoxRepresentation:
    """Dirac delta (Eq. 3): one regressed value per side."""

    name = "dirac"

    def __init__(self, coder: str = "distance", box_loss_weight: float = 2.0, clamp_distances: bool = False) -> None:
        if coder not in ("distance", "delta"):
            raise ValueError(f"unknown box coder {coder!r}")
        self.coder = coder
        self.box_loss_weight = box_loss_weight
        self.clamp_distances = clamp_distances  # FCOS keeps distances >= 0 (mmdet's norm_on_bbox)

    @property
    def channels(self) -> int:
        """Regression outputs per prior."""
        return SIDES

    def activate(self, reg: Tensor) -> Tensor:
        """The head's regression output after its per-level scale (float32)."""
        return reg.clamp(min=0) if self.clamp_distances else reg

    def distances(self, reg: Tensor) -> Tensor:
        """``(..., 4)`` distances in stride units (``l, t, r, b``)."""
        return reg

    def decode(self, reg: Tensor, frame: Frame) -> Tensor:
        """The positives' predicted boxes in the frame of the targets."""
        if self.coder == "delta":
            return delta2bbox(frame.anchors, reg)
        return distance2bbox(frame.origin, self.distances(reg))

    def decode_test(self, reg: Tensor, priors: Tensor, centres: Tensor, stride: int, img_shape) -> Tensor:
        """Boxes in input-image pixels, clipped to ``img_shape``, for priors of one level."""
        if self.coder == "delta":
            return delta2bbox(priors, reg, max_shape=img_shape)
        return distance2bbox(centres, self.distances(reg) * stride, max_shape=img_shape)

    def losses(self, reg: Tensor, pred_boxes: Tensor, frame: Frame, weights: Tensor, norm: BoxNorm) -> dict[str, Tensor]:
        """``loss_bbox`` (GIoU, λ0) and the representation's own loss, for the positives."""
        return {"loss_bbox": self.box_loss_weight * giou_loss(
            pred_boxes, frame.target_boxes, weight=weights, reduction="mean", avg_factor=norm.inside) / norm.after}

    def loss_names(self) -> tuple[str, ...]:
        return ("loss_bbox",)


class General(BoxRepresentation):
    """The General distribution (Eq. 5): a softmax over ``n + 1`` bins per side, its integral
    the distance; trained with GIoU and, when ``dfl_weight > 0``, DFL (Eq. 6)."""

    name = "general"

    def __init__(self, reg_max: float = 16.0, bin_width: float = 1.0, dfl_weight: float = 0.25, **kwargs) -> None:
        super().__init__(coder="distance", **kwargs)
        self.reg_max, self.bin_width, self.dfl_weight = reg_max, bin_width, dfl_weight
        self.bins = num_bins(reg_max, bin_width)

    @property
    def channels(self) -> int:
        return SIDES * self.bins

    def activate(self, reg: Tensor) -> Tensor:
        return reg  # logits of the distribution

    def distances(self, reg: Tensor) -> Tensor:
        return integral(reg, self.reg_max, self.bin_width)

    def losses(self, reg: Tensor, pred_boxes: Tensor, frame: Frame, weights: Tensor, norm: BoxNorm) -> dict[str, Tensor]:
        losses = super().losses(reg, pred_boxes, frame, weights, norm)
        if self.dfl_weight > 0:
            targets = dfl_target(frame.target_distances, self.reg_max, self.bin_width).reshape(-1)
            losses["loss_dfl"] = self.dfl_weight * distribution_focal_loss(
                reg.reshape(-1, self.bins), targets, weight=weights[:, None].expand(-1, SIDES).reshape(-1),
                reduction="mean", avg_factor=SIDES * norm.inside) / norm.after
        return losses

    def loss_names(self) -> tuple[str, ...]:
        return ("loss_bbox", "loss_dfl") if self.dfl_weight > 0 else ("loss_bbox",)


class Gaussian(BoxRepresentation):
    """A Gaussian per side (ref. [10]): outputs ``(μ_l, μ_t, μ_r, μ_b, α_l, α_t, α_r, α_b)``
    with ``α = log σ²``; decoded from the means (kept >= 0 like FCOS's distances); trained
    with GIoU on the mean box and the KL loss of each side."""

    name = "gaussian"

    def __init__(self, kl_weight: float = 0.25, **kwargs) -> None:
        super().__init__(coder="distance", **kwargs)
        self.kl_weight = kl_weight

    @property
    def channels(self) -> int:
        return 2 * SIDES

    def activate(self, reg: Tensor) -> Tensor:
        means, log_vars = reg.split(SIDES, dim=1)  # (B, 8, H, W) maps: means first
        return torch.cat([means.clamp(min=0), log_vars], dim=1)

    def distances(self, reg: Tensor) -> Tensor:
        return reg[..., :SIDES]

    def losses(self, reg: Tensor, pred_boxes: Tensor, frame: Frame, weights: Tensor, norm: BoxNorm) -> dict[str, Tensor]:
        losses = super().losses(reg, pred_boxes, frame, weights, norm)
        losses["loss_kl"] = self.kl_weight * kl_loss(
            reg[:, :SIDES], reg[:, SIDES:], frame.target_distances, weight=weights[:, None].expand(-1, SIDES),
            reduction="mean", avg_factor=SIDES * norm.inside) / norm.after
        return losses

    def loss_names(self) -> tuple[str, ...]:
        return ("loss_bbox", "loss_kl")


def build_box_representation(config, dirac_coder: str, clamp_distances: bool) -> BoxRepresentation:
    """The box representation a run config names (``config.box``) on a head whose Dirac box uses
    ``dirac_coder`` ("delta" from anchors, or "distance") and whose distances are clamped at 0
    (``clamp_distances``, FCOS)."""
    if config.box == "dirac":
        return BoxRepresentation(coder=dirac_coder, box_loss_weight=config.box_loss_weight,
                                 clamp_distances=clamp_distances)
    if config.box == "general":
        return General(config.reg_max, config.bin_width, config.dfl_weight, box_loss_weight=config.box_loss_weight)
    if config.box == "gaussian":
        return Gaussian(config.kl_weight, box_loss_weight=config.box_loss_weight)
    raise ValueError(f"unknown box representation {config.box!r}; choose from {', '.join(BOXES)}")


__all__ = ["BOXES", "BoxNorm", "BoxRepresentation", "Frame", "Gaussian", "General", "build_box_representation"]
