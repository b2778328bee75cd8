r"""How a box is represented: the axis of Table 2(a) (paper Sec. 3, Eqs. 3-6).

Every representation regresses, per prior, the four sides of its box and says how to turn its
outputs into boxes and which losses train it:

==============  ==================================  ===========================================
box             outputs per prior                   losses
==============  ==================================  ===========================================
``dirac``       4: one value per side (Eq. 3),      the detector's box loss: GIoU on the decoded
                encoded by the detector's coder     box (ATSS, FCOS), L1 (RetinaNet) or Smooth L1
                (:mod:`gfl_repro.models.coders`)    (FoveaBox, SSD) on the encoded target
``gaussian``    8: a mean and a log-variance        GIoU on the mean box + the KL loss of ref.
                per side (ref. [10])                [10] per side (:func:`~.losses.kl_loss`)
``general``     4 × (n + 1): a distribution over    GIoU on the integral's box + DFL (Eq. 6)
                the bins of each side (Eq. 5)       when ``dfl_weight > 0``
==============  ==================================  ===========================================

The Gaussian and General boxes are distances from the prior's centre in stride units; the
Gaussian box is decoded from its means (kept >= 0, like FCOS's distances), its variances only
enter the KL loss. The box losses of the positives are weighted per positive (the quality's box
weights) and normalised by :class:`BoxNorm`: the box loss with weight λ0 (Eq. 11), DFL with λ1
averaged over the four sides (Eq. 11), the KL loss with ``kl_weight`` averaged over the sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .box_ops import distance2bbox
from .coders import Coder, DistanceCoder, Frame
from .losses import (distribution_focal_loss, dfl_target, giou_loss, integral, kl_loss, l1_loss, num_bins,
                     smooth_l1_loss)

BOXES = ("dirac", "gaussian", "general")
BOX_LOSSES = ("giou", "l1", "smooth_l1")
SIDES = 4


@dataclass(frozen=True)
class BoxNorm:
    """How a head normalises its weighted box losses: ``λ · loss(avg_factor=inside) / after``.

    mmdet's conventions: ATSS/GFL pass ``avg_factor = 1`` and divide the weighted sum by the
    (process-averaged) sum of the weights afterwards, clamped at 1; FCOS passes that sum,
    clamped at 1e-6, as the ``avg_factor``; RetinaNet, FoveaBox and SSD pass their number of
    positives.
    """

    inside: float | Tensor  # a 0-dim tensor when computed from the batch (it stays on the device)
    after: float | Tensor


class BoxRepresentation:
    """Dirac delta (Eq. 3): one regressed value per side, encoded by the detector's coder."""

    name = "dirac"

    def __init__(self, coder: Coder, box_loss: str = "giou", box_loss_weight: float = 2.0,
                 smooth_l1_beta: float = 1.0) -> None:
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"unknown box loss {box_loss!r}; choose from {', '.join(BOX_LOSSES)}")
        self.coder, self.box_loss, self.box_loss_weight, self.beta = coder, box_loss, box_loss_weight, smooth_l1_beta

    @property
    def channels(self) -> int:
        """Regression outputs per prior."""
        return SIDES

    def activate(self, reg: Tensor) -> Tensor:
        """A level's regression maps after the per-level scale (float32)."""
        return self.coder.activate(reg)

    def decode(self, reg: Tensor, frame: Frame) -> Tensor:
        """The positives' predicted boxes in the frame of the targets."""
        return self.coder.decode(reg, frame)

    def decode_test(self, reg: Tensor, priors: Tensor, centres: Tensor, level: int, stride: float, img_shape) -> Tensor:
        """Boxes in input-image pixels, clipped to ``img_shape``, for priors of one level."""
        return self.coder.decode_test(reg, priors, centres, level, stride, img_shape)

    def losses(self, reg: Tensor, pred_boxes: Tensor, frame: Frame, weights: Tensor, norm: BoxNorm) -> dict[str, Tensor]:
        """``loss_bbox`` (λ0) and the representation's own loss, for the positives."""
        if self.box_loss == "giou":
            loss = giou_loss(pred_boxes, frame.target_boxes, weight=weights, reduction="mean", avg_factor=norm.inside)
        else:
            side_weights = weights[:, None].expand(-1, SIDES)
            if self.box_loss == "l1":
                loss = l1_loss(reg, self.coder.encode(frame), weight=side_weights, reduction="mean",
                               avg_factor=norm.inside)
            else:
                loss = smooth_l1_loss(reg, self.coder.encode(frame), beta=self.beta, weight=side_weights,
                                      reduction="mean", avg_factor=norm.inside)
        return {"loss_bbox": self.box_loss_weight * loss / norm.after}

    def loss_names(self) -> tuple[str, ...]:
        return ("loss_bbox",)


class SideDistances(BoxRepresentation):
    """A box whose outputs give, per side, a distance from the prior's centre in stride units
    (:meth:`distances`); decoded like FCOS's distances, trained with GIoU on the decoded box."""

    def distances(self, reg: Tensor) -> Tensor:
        """``(..., 4)`` distances of the sides from the prior's outputs ``reg``."""
        raise NotImplementedError

    def decode(self, reg: Tensor, frame: Frame) -> Tensor:
        return distance2bbox(frame.origin, self.distances(reg))

    def decode_test(self, reg: Tensor, priors: Tensor, centres: Tensor, level: int, stride: float, img_shape) -> Tensor:
        return distance2bbox(centres, self.distances(reg) * stride, max_shape=img_shape)


class General(SideDistances):
    """The General distribution (Eq. 5): a softmax over ``n + 1`` bins per side, its integral
    the distance; trained with GIoU and, when ``dfl_weight > 0``, DFL (Eq. 6)."""

    name = "general"

    def __init__(self, reg_max: float = 16.0, bin_width: float = 1.0, dfl_weight: float = 0.25,
                 box_loss_weight: float = 2.0) -> None:
        super().__init__(DistanceCoder(), "giou", box_loss_weight)
        self.reg_max, self.bin_width, self.dfl_weight = reg_max, bin_width, dfl_weight
        self.bins = num_bins(reg_max, bin_width)

    @property
    def channels(self) -> int:
        return SIDES * self.bins

    def activate(self, reg: Tensor) -> Tensor:
        return reg  # logits of the distribution

    def distances(self, reg: Tensor) -> Tensor:
        """Eq. 5: the expected distance of each side, in stride units."""
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


class Gaussian(SideDistances):
    """A Gaussian per side (ref. [10]): outputs ``(μ_l, μ_t, μ_r, μ_b, α_l, α_t, α_r, α_b)``
    with ``α = log σ²``; decoded from the means; trained with GIoU on the mean box and the KL
    loss of each side."""

    name = "gaussian"

    def __init__(self, kl_weight: float = 0.25, box_loss_weight: float = 2.0) -> None:
        super().__init__(DistanceCoder(), "giou", box_loss_weight)
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


def build_box_representation(config, coder: Coder, smooth_l1_beta: float = 1.0) -> BoxRepresentation:
    """The box representation ``config.box`` names, on a head whose Dirac box uses ``coder``."""
    if config.box == "dirac":
        return BoxRepresentation(coder, config.box_loss, config.box_loss_weight, smooth_l1_beta)
    if config.box == "general":
        return General(config.reg_max, config.bin_width, config.dfl_weight, box_loss_weight=config.box_loss_weight)
    if config.box == "gaussian":
        return Gaussian(config.kl_weight, box_loss_weight=config.box_loss_weight)
    raise ValueError(f"unknown box representation {config.box!r}; choose from {', '.join(BOXES)}")


__all__ = ["BOXES", "BOX_LOSSES", "BoxNorm", "BoxRepresentation", "Frame", "Gaussian", "General",
           "build_box_representation"]
