"""Box geometry shared by the assigner, the heads and the losses.

Conventions
-----------
* Boxes are ``xyxy``: ``(x1, y1, x2, y2)`` in the last dimension.
* Distances are ``ltrb``: ``(left, top, right, bottom)`` measured from a point
  (an anchor centre or a feature-map location) to the four box sides.
* Every function here follows the arithmetic of mmdetection 3.3
  (``mmdet/structures/bbox/transforms.py`` and ``bbox_overlaps.py``) so that the
  native engine is numerically interchangeable with mmdet: same eps values, same
  place where eps enters (``max(denominator, eps)``, not ``+ eps``), same clamps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .device_constants import constant

__all__ = [
    "box_centers",
    "box_areas",
    "distance2bbox",
    "bbox2distance",
    "aligned_iou",
    "aligned_giou",
    "pairwise_iou",
    "bbox2delta",
    "delta2bbox",
]


def box_centers(boxes: Tensor) -> Tensor:
    """Centres of ``xyxy`` boxes.

    Same arithmetic as mmdet's ``GFLHead.anchor_center`` / ``ATSSHead``
    (``(x2 + x1) / 2``).

    Args:
        boxes: ``(..., 4)`` boxes.

    Returns:
        ``(..., 2)`` centres ``(cx, cy)``.
    """
    cx = (boxes[..., 2] + boxes[..., 0]) / 2
    cy = (boxes[..., 3] + boxes[..., 1]) / 2
    return torch.stack([cx, cy], dim=-1)


def box_areas(boxes: Tensor) -> Tensor:
    """Areas ``(x2 - x1) * (y2 - y1)`` of ``xyxy`` boxes (not clamped).

    Args:
        boxes: ``(..., 4)``.

    Returns:
        ``(...,)`` areas.
    """
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _max_xyxy(max_shape, like: Tensor) -> Tensor:
    """Turn an image shape ``(H, W[, C])`` (or a batch of them) into the
    per-coordinate upper bounds ``(W, H, W, H)`` broadcastable to boxes."""
    if not isinstance(max_shape, Tensor):
        max_shape = torch.as_tensor(max_shape)
    hw = max_shape[..., :2].to(device=like.device, dtype=like.dtype)
    wh = hw.flip(-1)  # (..., 2) = (W, H)
    bound = torch.cat([wh, wh], dim=-1)  # (..., 4) = (W, H, W, H)
    if bound.dim() == 2:  # one shape per batch item: (B, 4) -> (B, 1, 4)
        if like.dim() != 3 or bound.size(0) != like.size(0):
            raise ValueError(
                "a batch of image shapes needs boxes of shape (B, N, 4) with the same B"
            )
        bound = bound.unsqueeze(-2)
    return bound


def distance2bbox(
    points: Tensor,
    distances: Tensor,
    max_shape: Sequence[int] | Sequence[Sequence[int]] | Tensor | None = None,
) -> Tensor:
    """Decode ``ltrb`` distances from points into ``xyxy`` boxes.

    ``x1 = px - l, y1 = py - t, x2 = px + r, y2 = py + b``. With ``max_shape``
    the coordinates are clamped to ``[0, W]`` (x) and ``[0, H]`` (y), as mmdet's
    ``distance2bbox`` / ``DistancePointBBoxCoder.decode`` (``clip_border=True``) do.

    Args:
        points: ``(N, 2)`` or ``(B, N, 2)`` points ``(x, y)``.
        distances: ``(N, 4)`` or ``(B, N, 4)`` distances ``(l, t, r, b)``, same
            units as ``points``.
        max_shape: image shape ``(H, W)`` / ``(H, W, C)``; for batched input may
            also be ``B`` such shapes (a sequence of sequences or a ``(B, 2+)``
            tensor). ``None`` disables clamping.

    Returns:
        Boxes ``(N, 4)`` or ``(B, N, 4)``.
    """
    x1 = points[..., 0] - distances[..., 0]
    y1 = points[..., 1] - distances[..., 1]
    x2 = points[..., 0] + distances[..., 2]
    y2 = points[..., 1] + distances[..., 3]
    boxes = torch.stack([x1, y1, x2, y2], dim=-1)
    if max_shape is None:
        return boxes
    upper = _max_xyxy(max_shape, boxes)
    zero = boxes.new_tensor(0)
    # torch.where (not min/max) so a coordinate exactly on a border keeps its
    # gradient, as in mmdet.
    boxes = torch.where(boxes < zero, zero, boxes)
    boxes = torch.where(boxes > upper, upper, boxes)
    return boxes


def bbox2distance(
    points: Tensor,
    boxes: Tensor,
    max_dist: float | None = None,
    eps: float = 0.1,
) -> Tensor:
    """Encode ``xyxy`` boxes as ``ltrb`` distances from points.

    With ``max_dist`` every distance is clamped to ``[0, max_dist - eps]``, as
    mmdet's ``bbox2distance`` / ``DistancePointBBoxCoder.encode`` do (GFL passes
    ``max_dist = reg_max`` with the default ``eps = 0.1`` so that a DFL target
    never reaches the last bin and ``floor(target) + 1`` stays a valid index).

    Args:
        points: ``(N, 2)`` or ``(B, N, 2)``.
        boxes: ``(N, 4)`` or ``(B, N, 4)``.
        max_dist: upper bound of the distances (exclusive by ``eps``), or ``None``
            for no clamping at all (not even at 0).
        eps: margin below ``max_dist``.

    Returns:
        ``(N, 4)`` or ``(B, N, 4)`` distances ``(l, t, r, b)``.
    """
    left = points[..., 0] - boxes[..., 0]
    top = points[..., 1] - boxes[..., 1]
    right = boxes[..., 2] - points[..., 0]
    bottom = boxes[..., 3] - points[..., 1]
    dist = torch.stack([left, top, right, bottom], dim=-1)
    if max_dist is not None:
        dist = dist.clamp(min=0, max=max_dist - eps)
    return dist


def _check_aligned(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.size(-1) != 4:
        raise ValueError(
            f"aligned boxes need equal shapes (..., N, 4), got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _aligned_overlap_union(a: Tensor, b: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Intersection and eps-floored union of paired boxes (mmdet order of ops)."""
    area_a = box_areas(a)
    area_b = box_areas(b)
    lt = torch.max(a[..., :2], b[..., :2])
    rb = torch.min(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = area_a + area_b - overlap
    union = torch.max(union, constant((eps,), union))
    return overlap, union


def aligned_iou(a: Tensor, b: Tensor, eps: float = 1e-6) -> Tensor:
    """IoU of paired boxes: ``a[i]`` with ``b[i]``.

    ``IoU = inter / max(area_a + area_b - inter, eps)`` exactly as mmdet's
    ``bbox_overlaps(a, b, mode='iou', is_aligned=True, eps=1e-6)``. Degenerate
    (zero-area) boxes therefore give 0, never NaN.

    Args:
        a: ``(..., N, 4)`` boxes.
        b: ``(..., N, 4)`` boxes.
        eps: floor of the union.

    Returns:
        ``(..., N)`` IoUs in ``[0, 1]``.
    """
    _check_aligned(a, b)
    if a.numel() == 0:
        return a.new_zeros(a.shape[:-1])
    overlap, union = _aligned_overlap_union(a, b, eps)
    return overlap / union


def aligned_giou(a: Tensor, b: Tensor, eps: float = 1e-6) -> Tensor:
    """Generalized IoU of paired boxes (Rezatofighi et al. 2019).

    ``GIoU = IoU - (C - U) / C`` with ``U = max(union, eps)`` and
    ``C = max(area of the smallest enclosing box, eps)``, as mmdet's
    ``bbox_overlaps(..., mode='giou', is_aligned=True)``. Note that mmdet uses
    the eps-floored union in both the IoU and the penalty term.

    Args:
        a: ``(..., N, 4)`` boxes.
        b: ``(..., N, 4)`` boxes.
        eps: floor of the union and of the enclosing area.

    Returns:
        ``(..., N)`` GIoUs in ``[-1, 1]``.
    """
    _check_aligned(a, b)
    if a.numel() == 0:
        return a.new_zeros(a.shape[:-1])
    overlap, union = _aligned_overlap_union(a, b, eps)
    ious = overlap / union
    enc_lt = torch.min(a[..., :2], b[..., :2])
    enc_rb = torch.max(a[..., 2:], b[..., 2:])
    enc_wh = (enc_rb - enc_lt).clamp(min=0)
    enclose = enc_wh[..., 0] * enc_wh[..., 1]
    enclose = torch.max(enclose, constant((eps,), union))
    return ious - (enclose - union) / enclose


def pairwise_iou(a: Tensor, b: Tensor, eps: float = 1e-6) -> Tensor:
    """IoU of every box in ``a`` with every box in ``b``.

    Same arithmetic as mmdet's non-aligned ``bbox_overlaps(a, b, mode='iou')``
    (used by the ATSS assigner): ``inter / max(union, eps)``.
    ``torchvision.ops.box_iou`` agrees on ordinary boxes but divides by the raw
    union (NaN for two zero-area boxes), so it is not used here.

    Args:
        a: ``(..., M, 4)`` boxes.
        b: ``(..., N, 4)`` boxes (same leading batch dims as ``a``).
        eps: floor of the union.

    Returns:
        ``(..., M, N)`` IoUs.
    """
    if a.shape[:-2] != b.shape[:-2]:
        raise ValueError("pairwise_iou needs equal batch dims")
    out_shape = a.shape[:-1] + b.shape[-2:-1]
    if a.size(-2) == 0 or b.size(-2) == 0:
        return a.new_zeros(out_shape)
    area_a = box_areas(a)
    area_b = box_areas(b)
    lt = torch.max(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.min(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = area_a[..., None] + area_b[..., None, :] - overlap
    union = torch.max(union, constant((eps,), union))
    return overlap / union


DELTA_STDS = (0.1, 0.1, 0.2, 0.2)
"""ATSS's (and SSD's) DeltaXYWHBBoxCoder normalisation (means are 0); RetinaNet's is 1."""


def bbox2delta(anchors: Tensor, boxes: Tensor, stds: Sequence[float] = DELTA_STDS) -> Tensor:
    """Encode ``xyxy`` boxes as ``(dx, dy, dw, dh)`` deltas from ``xyxy`` anchors (mmdet's
    ``bbox2delta``, means 0): ``dx = (gx - px) / pw``, ``dw = log(gw / pw)``, divided by ``stds``."""
    anchors, boxes = anchors.float(), boxes.float()
    px = (anchors[..., 0] + anchors[..., 2]) * 0.5
    py = (anchors[..., 1] + anchors[..., 3]) * 0.5
    pw = anchors[..., 2] - anchors[..., 0]
    ph = anchors[..., 3] - anchors[..., 1]
    gx = (boxes[..., 0] + boxes[..., 2]) * 0.5
    gy = (boxes[..., 1] + boxes[..., 3]) * 0.5
    gw = boxes[..., 2] - boxes[..., 0]
    gh = boxes[..., 3] - boxes[..., 1]
    deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
    return deltas.sub_(deltas.new_zeros(4)).div_(constant(stds, deltas))


def delta2bbox(
    anchors: Tensor,
    deltas: Tensor,
    stds: Sequence[float] = DELTA_STDS,
    max_shape: Sequence[int] | None = None,
    wh_ratio_clip: float = 16 / 1000,
) -> Tensor:
    """Decode ``(dx, dy, dw, dh)`` deltas relative to ``xyxy`` anchors (mmdet's ``delta2bbox``).

    ``cx = ax + aw * dx * sx``, ``w = aw * exp(clamp(dw * sw, ±|log(wh_ratio_clip)|))``, and
    the same for y/h; the box is ``(cx ∓ w/2, cy ∓ h/2)``, clamped to ``max_shape`` if given.
    This is the Dirac-delta box of the stock ATSS head.
    """
    std = constant(stds, deltas)
    d = deltas * std
    centers = (anchors[..., :2] + anchors[..., 2:]) * 0.5
    sizes = anchors[..., 2:] - anchors[..., :2]
    max_ratio = abs(math.log(wh_ratio_clip))
    dwh = d[..., 2:].clamp(min=-max_ratio, max=max_ratio)
    new_centers = centers + sizes * d[..., :2]
    new_sizes = sizes * dwh.exp()
    boxes = torch.cat([new_centers - new_sizes * 0.5, new_centers + new_sizes * 0.5], dim=-1)
    if max_shape is not None:
        h, w = max_shape[0], max_shape[1]
        boxes = torch.stack(
            [boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h), boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)],
            dim=-1,
        )
    return boxes
