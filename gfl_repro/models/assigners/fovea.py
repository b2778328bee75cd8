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

from ..device_constants import constant

BASE_EDGES = (16, 32, 64, 128, 256)
SCALE_RANGES = ((1, 64), (32, 128), (64, 256), (128, 512), (256, 2048))
SIGMA = 0.4


@torch.no_grad()
def fovea_assign(level_points: Sequence[Tensor], featmap_sizes: Sequence[tuple[int, int]], strides: Sequence[int],
                 gt_boxes: Tensor, gt_labels: Tensor, num_classes: int, base_edges: Sequence[float] = BASE_EDGES,
                 scale_ranges: Sequence[tuple[float, float]] = SCALE_RANGES, sigma: float = SIGMA
                 ) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per level ``(labels (H*W,), log targets (H*W, 4), assigned GT box (H*W, 4))`` of one image.

    Which GTs each level takes, their scales and the cells of their foveas are computed for all
    levels at once on the GTs' device and read to the host in one transfer (painting slices the
    grid there); the painting order among GTs of equal scale is ``torch.sort``'s on the level's
    scales, as mmdet sorts them, on the CPU."""
    num_gt = len(gt_boxes)
    gt_areas = torch.sqrt((gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1]))
    if num_gt:
        ranges = constant(scale_ranges, gt_boxes)[: len(strides)]  # (L, 2)
        in_range = (gt_areas >= ranges[:, :1]) & (gt_areas <= ranges[:, 1:])  # (L, G)
        gt = gt_boxes[None] / constant(strides, gt_boxes)[:, None, None]  # (L, G, 4) in cells
        half_w, half_h = 0.5 * (gt[..., 2] - gt[..., 0]), 0.5 * (gt[..., 3] - gt[..., 1])
        last_col = constant([w - 1 for _, w in featmap_sizes], gt_boxes, torch.long)[:, None]
        last_row = constant([h - 1 for h, _ in featmap_sizes], gt_boxes, torch.long)[:, None]
        cells = torch.stack([
            torch.minimum(torch.ceil(gt[..., 0] + (1 - sigma) * half_w - 0.5).long().clamp(min=0), last_col),
            torch.minimum(torch.ceil(gt[..., 1] + (1 - sigma) * half_h - 0.5).long().clamp(min=0), last_row),
            torch.minimum(torch.floor(gt[..., 0] + (1 + sigma) * half_w - 0.5).long().clamp(min=0), last_col),
            torch.minimum(torch.floor(gt[..., 1] + (1 + sigma) * half_h - 0.5).long().clamp(min=0), last_row),
        ], -1)  # (L, G, 4): left, top, right, down
        L = len(strides)
        host = torch.cat([in_range.double().flatten(), cells.double().flatten(), gt_areas.double()]).tolist()
        n = L * num_gt
        in_range_host, cells_host, areas_host = host[:n], host[n:5 * n], host[5 * n:]
        hits = [[g for g in range(num_gt) if in_range_host[lv * num_gt + g]] for lv in range(L)]
        bounds = [[int(v) for v in cells_host[4 * i:4 * i + 4]] for i in range(L * num_gt)]  # level-major, (lv, g)
        areas = torch.tensor(areas_host, dtype=gt_boxes.dtype)
    out = []
    for lv, (points, (h, w), base_len) in enumerate(zip(level_points, featmap_sizes, base_edges)):
        points = points.view(h, w, 2)
        x, y = points[..., 0], points[..., 1]
        labels = gt_labels.new_full((h, w), num_classes)
        targets = gt_boxes.new_ones(h, w, 4)
        boxes = gt_boxes.new_zeros(h, w, 4)
        hit = hits[lv] if num_gt else []
        if hit:  # painted from the largest GT to the smallest: the smallest wins a shared cell
            _, order = torch.sort(-areas[hit])
            for g in (hit[i] for i in order.tolist()):
                x1, y1, x2, y2 = bounds[lv * num_gt + g]
                cell = (slice(y1, y2 + 1), slice(x1, x2 + 1))
                box = gt_boxes[g]
                labels[cell] = gt_labels[g]
                targets[cell + (0,)] = (x[cell] - box[0]) / base_len
                targets[cell + (1,)] = (y[cell] - box[1]) / base_len
                targets[cell + (2,)] = (box[2] - x[cell]) / base_len
                targets[cell + (3,)] = (box[3] - y[cell]) / base_len
                boxes[cell] = box
            targets = targets.clamp(min=1.0 / 16, max=16.0)
        out.append((labels.view(-1), torch.log(targets).view(-1, 4), boxes.view(-1, 4)))
    return out


__all__ = ["BASE_EDGES", "SCALE_RANGES", "SIGMA", "fovea_assign"]
