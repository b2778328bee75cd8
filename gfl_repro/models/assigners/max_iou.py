"""Max-IoU assignment (mmdetection 3.3 ``MaxIoUAssigner``), RetinaNet's and SSD's.

Steps, in mmdet's order (IoU = :func:`~gfl_repro.models.assigners.atss.box_overlaps`, GT × prior):

1. every prior starts ignored (-1);
2. a prior whose best IoU is in ``[0, neg_iou_thr)`` is negative (0);
3. a prior whose best IoU is ``>= pos_iou_thr`` goes to that GT (the first one on ties);
4. low-quality matches, GT by GT in order (a later GT overwrites an earlier one): when the
   GT's best IoU is ``>= min_pos_iou``, the prior(s) reaching it go to the GT — every prior
   tied at that IoU with ``gt_max_assign_all`` (RetinaNet), the first one otherwise (SSD).

With no GT every prior is negative. Crowd boxes are not used (mmdet's ``ignore_iof_thr = -1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .atss import box_overlaps


@dataclass(frozen=True)
class MaxIoUConfig:
    pos_iou_thr: float
    neg_iou_thr: float
    min_pos_iou: float = 0.0
    gt_max_assign_all: bool = True


RETINANET = MaxIoUConfig(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0, gt_max_assign_all=True)
SSD = MaxIoUConfig(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0, gt_max_assign_all=False)


@torch.no_grad()
def max_iou_assign(priors: Tensor, gt_boxes: Tensor, cfg: MaxIoUConfig, valid: Tensor | None = None) -> Tensor:
    """``assigned_gt_inds`` (N,): 0 negative, ``i + 1`` assigned to GT ``i``, -1 ignored.

    ``valid`` (N,) bool: only these priors take part (mmdet assigns the anchors inside the
    image's padded area, the others stay -1); the result is that of assigning the valid
    priors alone. Built from masks and ``where`` (no boolean indexing, nothing read back to
    the host), so on a GPU it does not wait for the device.
    """
    num_priors, num_gt = len(priors), len(gt_boxes)
    if num_gt == 0:
        zeros = priors.new_zeros(num_priors, dtype=torch.long)
        return zeros if valid is None else zeros.masked_fill(~valid, -1)
    if num_priors == 0:
        return priors.new_full((0,), -1, dtype=torch.long)
    overlaps = box_overlaps(gt_boxes, priors)  # (G, N)
    if valid is not None:  # below every IoU: never negative, never positive, never a GT's best
        overlaps = overlaps.masked_fill(~valid[None, :], -1.0)
    assigned = overlaps.new_full((num_priors,), -1, dtype=torch.long)
    max_overlaps, argmax_overlaps = overlaps.max(dim=0)
    gt_max_overlaps, gt_argmax_overlaps = overlaps.max(dim=1)
    assigned.masked_fill_((max_overlaps >= 0) & (max_overlaps < cfg.neg_iou_thr), 0)
    assigned = torch.where(max_overlaps >= cfg.pos_iou_thr, argmax_overlaps + 1, assigned)
    # step 4 for all GTs at once: the (G, N) priors each GT claims; a later GT overwrites an
    # earlier one, so a prior goes to the last GT claiming it
    eligible = gt_max_overlaps >= cfg.min_pos_iou
    if cfg.gt_max_assign_all:
        claims = (overlaps == gt_max_overlaps[:, None]) & eligible[:, None]
    else:
        claims = torch.zeros_like(overlaps, dtype=torch.bool)
        claims.scatter_(1, gt_argmax_overlaps[:, None], eligible[:, None])
    last_claim = num_gt - 1 - claims.flip(0).to(torch.uint8).argmax(dim=0)  # argmax: the first maximum
    return torch.where(claims.any(dim=0), last_claim + 1, assigned)


__all__ = ["MaxIoUConfig", "RETINANET", "SSD", "max_iou_assign"]
