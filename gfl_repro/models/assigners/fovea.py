"""FoveaBox's assignment (Kong et al., the paper's ref. [13]; mmdetection 3.3 ``FoveaHead``).

Per level, a GT whose scale ``sqrt(w · h)`` lies in the level's range (both ends inclusive;
the ranges of neighbouring levels overlap by a factor 2) paints its *fovea* — the central
part of the box shrunk by ``sigma`` (0.4) — on the level's grid: those cells take its label
and its box target. GTs are painted from the largest to the smallest, so the smallest GT wins
a cell claimed by several. Targets are the log distances from the cell's point to the four
sides in units of the level's base edge, clamped to ``[1/16, 16]`` before the log; cells no GT
paints are background.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

BASE_EDGES = (16, 32, 64, 128, 256)
SCALE_RANGES = ((1, 64), (32, 128), (64, 256), (128, 512), (256, 2048))
SIGMA = 0.4


@torch.no_grad()
def fovea_assign(level_points: Sequence[Tensor], featmap_sizes: Sequence[tuple[int, int]], strides: Sequence[int],
                 gt_boxes: Tensor, gt_labels: Tensor, num_classes: int, base_edges: Sequence[float] = BASE_EDGES,
                 scale_ranges: Sequence[tuple[float, float]] = SCALE_RANGES, sigma: float = SIGMA
                 ) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per level ``(labels (H*W,), log targets (H*W, 4), assigned GT box (H*W, 4))`` of one image."""
    gt_areas = torch.sqrt((gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1]))
    out = []
    for points, (h, w), stride, base_len, (lower, upper) in zip(level_points, featmap_sizes, strides, base_edges,
                                                               scale_ranges):
        points = points.view(h, w, 2)
        x, y = points[..., 0], points[..., 1]
        labels = gt_labels.new_full((h, w), num_classes)
        targets = gt_boxes.new_ones(h, w, 4)
        boxes = gt_boxes.new_zeros(h, w, 4)
        hit = ((gt_areas >= lower) & (gt_areas <= upper)).nonzero().flatten()
        if len(hit) == 0:
            out.append((labels.view(-1), torch.log(targets).view(-1, 4), boxes.view(-1, 4)))
            continue
        _, order = torch.sort(-gt_areas[hit])
        hit = hit[order]
        raw = gt_boxes[hit]
        gt = raw / stride
        half_w, half_h = 0.5 * (gt[:, 2] - gt[:, 0]), 0.5 * (gt[:, 3] - gt[:, 1])
        left = torch.ceil(gt[:, 0] + (1 - sigma) * half_w - 0.5).long().clamp(0, w - 1)
        right = torch.floor(gt[:, 0] + (1 + sigma) * half_w - 0.5).long().clamp(0, w - 1)
        top = torch.ceil(gt[:, 1] + (1 - sigma) * half_h - 0.5).long().clamp(0, h - 1)
        down = torch.floor(gt[:, 1] + (1 + sigma) * half_h - 0.5).long().clamp(0, h - 1)
        for x1, y1, x2, y2, label, box in zip(left, top, right, down, gt_labels[hit], raw):
            cells = (slice(int(y1), int(y2) + 1), slice(int(x1), int(x2) + 1))
            labels[cells] = label
            targets[cells + (0,)] = (x[cells] - box[0]) / base_len
            targets[cells + (1,)] = (y[cells] - box[1]) / base_len
            targets[cells + (2,)] = (box[2] - x[cells]) / base_len
            targets[cells + (3,)] = (box[3] - y[cells]) / base_len
            boxes[cells] = box
        targets = targets.clamp(min=1.0 / 16, max=16.0)
        out.append((labels.view(-1), torch.log(targets).view(-1, 4), boxes.view(-1, 4)))
    return out


__all__ = ["BASE_EDGES", "SCALE_RANGES", "SIGMA", "fovea_assign"]
