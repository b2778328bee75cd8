"""FCOS's point assignment (mmdetection 3.3 ``FCOSHead.get_targets`` with center sampling).

A point is positive for a GT when it lies inside the GT's centre region of radius
``radius × stride`` (clipped to the box) and the largest of its distances to the box sides
falls in its level's regress range; among several such GTs the one of smallest area wins
(the first on ties). Everything else is background (label ``num_classes``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..device_constants import constant

INF = 1e8
REGRESS_RANGES: tuple[tuple[float, float], ...] = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, INF))
"""Per-level range of a positive point's largest side distance, in pixels (mmdet's default)."""


@torch.no_grad()
def fcos_assign(points: Tensor, num_level_points: Sequence[int], strides: Sequence[int], gt_boxes: Tensor,
                gt_labels: Tensor, num_classes: int, regress_ranges: Sequence[tuple[float, float]] = REGRESS_RANGES,
                radius: float = 1.5) -> tuple[Tensor, Tensor]:
    """(labels (P,), ltrb distances to the assigned GT in pixels (P, 4)) for the points of one image.

    Args:
        points: ``(P, 2)`` point priors of every level, concatenated finest first.
        num_level_points: points per level.
        strides: stride of each level.
        gt_boxes, gt_labels: the image's GT boxes ``(G, 4)`` xyxy and labels ``(G,)``.
        num_classes: the background label.
        regress_ranges: per level ``(low, high)``.
        radius: centre-sampling radius in strides.
    """
    P, G = len(points), len(gt_boxes)
    if G == 0:
        return torch.full((P,), num_classes, dtype=torch.long, device=points.device), points.new_zeros(P, 4)
    level_strides = torch.cat([points.new_full((n,), float(s)) for n, s in zip(num_level_points, strides)])
    ranges = torch.cat([constant(r, points).expand(n, 2) for n, r in zip(num_level_points, regress_ranges)])
    xs, ys = points[:, 0, None], points[:, 1, None]
    boxes = gt_boxes[None].expand(P, G, 4)
    ltrb = torch.stack([xs - boxes[..., 0], ys - boxes[..., 1], boxes[..., 2] - xs, boxes[..., 3] - ys], -1)
    # centre sampling: the region of ±radius·stride around the GT centre, clipped to the GT
    cx, cy = (boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2
    r = (level_strides * radius)[:, None]
    x0 = torch.where(cx - r > boxes[..., 0], cx - r, boxes[..., 0])
    y0 = torch.where(cy - r > boxes[..., 1], cy - r, boxes[..., 1])
    x1 = torch.where(cx + r > boxes[..., 2], boxes[..., 2], cx + r)
    y1 = torch.where(cy + r > boxes[..., 3], boxes[..., 3], cy + r)
    inside = torch.stack([xs - x0, ys - y0, x1 - xs, y1 - ys], -1).min(-1).values > 0
    reach = ltrb.max(-1).values
    in_range = (reach >= ranges[:, None, 0]) & (reach <= ranges[:, None, 1])
    areas = ((gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1]))[None].repeat(P, 1)
    areas = areas.masked_fill_(~inside, INF).masked_fill_(~in_range, INF)  # masks, not boolean indexing:
    min_area, index = areas.min(dim=1)  # nothing here waits for the device
    labels = gt_labels[index].masked_fill(min_area == INF, num_classes)
    return labels, ltrb[torch.arange(P, device=points.device), index]


__all__ = ["INF", "REGRESS_RANGES", "fcos_assign"]
