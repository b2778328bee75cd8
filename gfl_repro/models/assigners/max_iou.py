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
def max_iou_assign(priors: Tensor, gt_boxes: Tensor, cfg: MaxIoUConfig) -> Tensor:
    """``assigned_gt_inds`` (N,): 0 negative, ``i + 1`` assigned to GT ``i``, -1 ignored."""
    num_priors, num_gt = len(priors), len(gt_boxes)
    if num_gt == 0:
        return priors.new_zeros(num_priors, dtype=torch.long)
    if num_priors == 0:
        return priors.new_full((0,), -1, dtype=torch.long)
    overlaps = box_overlaps(gt_boxes, priors)  # (G, N)
    assigned = overlaps.new_full((num_priors,), -1, dtype=torch.long)
    max_overlaps, argmax_overlaps = overlaps.max(dim=0)
    gt_max_overlaps, gt_argmax_overlaps = overlaps.max(dim=1)
    assigned[(max_overlaps >= 0) & (max_overlaps < cfg.neg_iou_thr)] = 0
    pos = max_overlaps >= cfg.pos_iou_thr
    assigned[pos] = argmax_overlaps[pos] + 1
    for i in range(num_gt):
        if gt_max_overlaps[i] >= cfg.min_pos_iou:
            if cfg.gt_max_assign_all:
                assigned[overlaps[i, :] == gt_max_overlaps[i]] = i + 1
            else:
                assigned[gt_argmax_overlaps[i]] = i + 1
    return assigned


__all__ = ["MaxIoUConfig", "RETINANET", "SSD", "max_iou_assign"]
