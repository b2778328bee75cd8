"""ATSS label assignment (Zhang et al., CVPR 2020), as used by GFL.

GFL keeps ATSS's assignment unchanged (paper Sec. 4: "we adopt ATSS as the baseline"): one square anchor per location, ``topk = 9`` candidates per pyramid level
per GT by centre distance, IoU threshold ``mean + std`` of the candidates' IoUs, and the
candidate's centre must lie inside the GT.

This module reproduces mmdetection 3.3 ``ATSSAssigner.assign`` (``alpha=None``,
``BboxOverlaps2D``) exactly -- same float operations in the same order, so that the
assigned GT index of every prior is identical:

* IoU: mmdet ``bbox_overlaps`` (union clamped below by ``eps = 1e-6``).
* Centre distance: Euclidean between box centres ``(x1 + x2) / 2.0``.
* Candidates: per level ``Tensor.topk(min(topk, n_level), dim=0, largest=False)`` on the
  (n_level, G) distance block -- the *same call* as mmdet, because topk's choice among
  equidistant priors is implementation-defined (it is not "lowest index first" on CPU),
  and grid anchors are equidistant from a GT centre very often.
* Threshold: ``mean(0) + std(0)`` over the ``sum_l min(k, n_l)`` candidates, with
  ``torch.std``'s default *unbiased* (Bessel, N-1) estimator.  With a single candidate
  the std is NaN and nothing is positive (as in mmdet).
* Positive: ``IoU >= threshold`` and ``min(cx - x1, cy - y1, x2 - cx, y2 - cy) > 0.01``
  (centre strictly inside the GT with mmdet's 0.01 margin).
* Several GTs claiming one prior: the largest IoU wins; exact ties go to the **lower GT
  index** (``max`` over a ``-INF``-filled (N, G) matrix returns the first maximum).
* ``max_overlaps``: the winning IoU for positives and ``-INF = -1e8`` for every other
  prior (mmdet returns the filled matrix's max, not the best IoU); all zeros when there
  are no GTs or no priors.
* No GT or no prior: everything negative (``assigned_gt_inds = 0``, labels ``-1``).

Ignored (crowd) boxes.  mmdet 3.3's ``PackDetInputs`` moves COCO ``iscrowd`` instances
into ``ignored_instances``; ``GFLHead.loss_by_feat -> get_targets -> _get_targets_single``
forwards them to the assigner as ``gt_instances_ignore``.  ATSSAssigner only uses them if
``ignore_iof_thr > 0``; its default is ``-1`` and the GFL / ATSS configs
(``assigner=dict(type='ATSSAssigner', topk=9)``) do not set it, so **crowd boxes have no
effect**: priors on a crowd region are ordinary negatives.  ``ignore_iof_thr`` is exposed
here with mmdet's semantics for completeness: priors whose IoF (intersection over the
prior's area) with any ignore box exceeds the threshold get ``assigned_gt_inds = -1`` and
their centre distances are set to ``INF = 1e8`` before candidate selection (they can still
become positive, overriding the -1, exactly as in mmdet).

Inputs are the priors *after* ``inside_flags`` filtering, concatenated over levels, with
the per-level counts of the kept priors (see ``priors.num_level_inside``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..device_constants import constant

INF = 100000000
"""mmdet's INF in ATSSAssigner (1e8, exactly representable in float32)."""

CENTER_EPS = 0.01
"""A positive prior's centre must be farther than this from every GT side (mmdet)."""

IOU_EPS = 1e-6
"""Lower clamp of the union in mmdet ``bbox_overlaps``."""


@dataclass
class AssignResult:
    """Result of assigning GTs to N priors (mmdet ``AssignResult`` conventions).

    Attributes:
        num_gts: number of GT boxes G.
        assigned_gt_inds: (N,) long; ``0`` negative, ``i + 1`` assigned to GT ``i``,
            ``-1`` ignored.
        max_overlaps: (N,) float; IoU with the assigned GT for positives, ``-INF``
            otherwise (zeros when G == 0 or N == 0).
        assigned_labels: (N,) long; class of the assigned GT, ``-1`` where not positive.
    """

    num_gts: int
    assigned_gt_inds: Tensor
    max_overlaps: Tensor
    assigned_labels: Tensor

    @property
    def pos_mask(self) -> Tensor:
        """(N,) bool, priors assigned to some GT."""
        return self.assigned_gt_inds > 0

    @property
    def neg_mask(self) -> Tensor:
        """(N,) bool, background priors (ignored priors are neither pos nor neg)."""
        return self.assigned_gt_inds == 0

    @property
    def num_pos(self) -> int:
        return int(self.pos_mask.sum())


def box_overlaps(boxes1: Tensor, boxes2: Tensor, mode: str = "iou", eps: float = IOU_EPS) -> Tensor:
    """Pairwise IoU or IoF, (M, 4) x (K, 4) xyxy -> (M, K); mmdet ``bbox_overlaps``.

    ``iou``: inter / max(area1 + area2 - inter, eps); ``iof``: inter / max(area1, eps)
    (area of the *first* argument).  Same operation order as mmdet for bitwise parity.
    """
    assert mode in ("iou", "iof"), mode
    rows, cols = boxes1.size(0), boxes2.size(0)
    if rows * cols == 0:
        return boxes1.new_zeros((rows, cols))
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    if mode == "iou":
        union = area1[:, None] + area2[None, :] - overlap
    else:
        union = area1[:, None]
    union = torch.max(union, constant((eps,), union))
    return overlap / union


def box_centers(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """``((x1 + x2) / 2.0, (y1 + y2) / 2.0)`` of (N, 4) boxes -> two (N,) tensors."""
    return (boxes[:, 0] + boxes[:, 2]) / 2.0, (boxes[:, 1] + boxes[:, 3]) / 2.0


def center_distances(priors: Tensor, gt_boxes: Tensor) -> Tensor:
    """(N, G) Euclidean distances between prior centres and GT centres (ATSS step 2)."""
    pcx, pcy = box_centers(priors)
    gcx, gcy = box_centers(gt_boxes)
    p = torch.stack((pcx, pcy), dim=1)
    g = torch.stack((gcx, gcy), dim=1)
    return (p[:, None, :] - g[None, :, :]).pow(2).sum(-1).sqrt()


def select_candidates(distances: Tensor, num_level_priors: Sequence[int], topk: int) -> Tensor:
    """ATSS step 3: per level, the ``min(topk, n_l)`` priors closest to each GT centre.

    Args:
        distances: (N, G) with N = sum(num_level_priors), levels concatenated.
    Returns:
        (K, G) long indices into the N priors, K = sum_l min(topk, n_l); level blocks in
        order, each sorted by increasing distance (mmdet's layout, which fixes the
        summation order of the mean/std below).

    The loop runs over the <= 5 levels only; each level is one ``topk`` call over all GTs
    at once, kept per level (rather than padded into one batched call) so that the choice
    among equidistant priors is exactly mmdet's.
    """
    out = []
    start = 0
    for n in num_level_priors:
        n = int(n)
        k = min(topk, n)
        _, idx = distances[start:start + n, :].topk(k, dim=0, largest=False)
        out.append(idx + start)
        start += n
    return torch.cat(out, dim=0)


def iou_threshold(candidate_overlaps: Tensor) -> Tensor:
    """ATSS step 4: per-GT threshold ``mean + std`` of the (K, G) candidate IoUs -> (G,).

    ``torch.std`` default (unbiased, N-1), as mmdet; NaN when K == 1.
    """
    return candidate_overlaps.mean(0) + candidate_overlaps.std(0)


def centers_inside(priors: Tensor, candidate_idxs: Tensor, gt_boxes: Tensor,
                   eps: float = CENTER_EPS) -> Tensor:
    """ATSS step 6: (K, G) bool, candidate prior centre strictly inside its GT (margin eps).

    ``min(cx - x1, cy - y1, x2 - cx, y2 - cy) > eps`` with the candidate of column g
    tested against GT g.
    """
    pcx, pcy = box_centers(priors)
    cx = pcx[candidate_idxs]  # (K, G)
    cy = pcy[candidate_idxs]
    l_ = cx - gt_boxes[:, 0]
    t_ = cy - gt_boxes[:, 1]
    r_ = gt_boxes[:, 2] - cx
    b_ = gt_boxes[:, 3] - cy
    return torch.stack([l_, t_, r_, b_], dim=1).min(dim=1)[0] > eps


def resolve_multiple(overlaps: Tensor, candidate_idxs: Tensor, is_pos: Tensor) -> tuple[Tensor, Tensor]:
    """Pick one GT per prior among the GTs for which it is positive (max IoU, first on ties).

    Args:
        overlaps: (N, G) IoUs; candidate_idxs, is_pos: (K, G).
    Returns:
        ``(max_overlaps, argmax)`` both (N,); ``max_overlaps == -INF`` where no GT claims
        the prior.  Built as mmdet does: a (G, N) ``-INF`` matrix filled at the positive
        (gt, prior) pairs, transposed, ``max(dim=1)``.
    """
    num_gt = overlaps.size(1)
    filled = torch.full_like(overlaps, -INF).t().contiguous()  # (G, N)
    candidate_overlaps = overlaps[candidate_idxs, torch.arange(num_gt, device=overlaps.device)]  # (K, G)
    # a GT's candidates are distinct priors, so each (gt, prior) cell is written once; the
    # candidates that are not positive write the -INF already there (no boolean indexing:
    # nothing here waits for the device)
    filled.scatter_(1, candidate_idxs.t(), torch.where(is_pos, candidate_overlaps, -INF).t())
    return filled.t().max(dim=1)


def ignored_priors(priors: Tensor, gt_ignore_boxes: Tensor | None, ignore_iof_thr: float) -> Tensor | None:
    """(N,) bool of priors whose max IoF with an ignore box exceeds ``ignore_iof_thr``.

    ``None`` when the mechanism is off (mmdet: ``ignore_iof_thr <= 0``, no or empty
    ignore boxes) -- the GFL / ATSS default.
    """
    if (ignore_iof_thr > 0 and gt_ignore_boxes is not None
            and gt_ignore_boxes.numel() > 0 and priors.numel() > 0):
        iof = box_overlaps(priors, gt_ignore_boxes[:, :4], mode="iof")
        return iof.max(dim=1)[0] > ignore_iof_thr
    return None


def atss_assign(anchors: Tensor, num_level_anchors: Sequence[int], gt_boxes: Tensor,
                gt_labels: Tensor, gt_ignore_boxes: Tensor | None = None, topk: int = 9,
                ignore_iof_thr: float = -1.0) -> AssignResult:
    """Assign GTs to priors with ATSS, identical to mmdet 3.3 ``ATSSAssigner(topk)``.

    Args:
        anchors: (N, 4) xyxy priors of all levels concatenated (after inside filtering).
        num_level_anchors: priors per level, ``sum == N``.
        gt_boxes: (G, 4) xyxy GT boxes; gt_labels: (G,) long class indices.
        gt_ignore_boxes: (I, 4) crowd/ignore boxes; unused unless ``ignore_iof_thr > 0``.
        topk: candidates per level per GT (9).
        ignore_iof_thr: mmdet's ``ignore_iof_thr`` (default -1: ignore boxes unused).
    Returns:
        AssignResult with ``assigned_gt_inds`` (0 neg, i+1 -> GT i, -1 ignored),
        ``max_overlaps`` and ``assigned_labels`` (-1 where not positive).

    Vectorised over GTs; only the candidate selection loops over the pyramid levels. Nothing
    waits for the device (no boolean indexing, no values read back to the host), so on a GPU
    the assignment of a batch queues behind the forward pass without stalling it.
    """
    priors = anchors[:, :4]
    num_gt, num_priors = gt_boxes.size(0), priors.size(0)
    assert sum(int(n) for n in num_level_anchors) == num_priors, (num_level_anchors, num_priors)

    # step 1: IoU between all priors and GTs
    overlaps = box_overlaps(priors, gt_boxes)  # (N, G)
    assigned_gt_inds = overlaps.new_full((num_priors,), 0, dtype=torch.long)

    if num_gt == 0 or num_priors == 0:
        return AssignResult(num_gt, assigned_gt_inds, overlaps.new_zeros((num_priors,)),
                            overlaps.new_full((num_priors,), -1, dtype=torch.long))

    # step 2: centre distances; ignored priors are pushed away (only if enabled)
    distances = center_distances(priors, gt_boxes)  # (N, G)
    ignore = ignored_priors(priors, gt_ignore_boxes, ignore_iof_thr)
    if ignore is not None:
        distances.masked_fill_(ignore[:, None], INF)
        assigned_gt_inds.masked_fill_(ignore, -1)

    # step 3-5: candidates, adaptive threshold, IoU test
    candidate_idxs = select_candidates(distances, num_level_anchors, topk)  # (K, G)
    candidate_overlaps = overlaps[candidate_idxs, torch.arange(num_gt, device=overlaps.device)]
    is_pos = candidate_overlaps >= iou_threshold(candidate_overlaps)[None, :]

    # step 6: centre strictly inside the GT
    is_pos = is_pos & centers_inside(priors, candidate_idxs, gt_boxes)

    # one GT per prior: highest IoU, first index on ties
    max_overlaps, argmax = resolve_multiple(overlaps, candidate_idxs, is_pos)
    assigned_gt_inds = torch.where(max_overlaps != -INF, argmax + 1, assigned_gt_inds)
    pos = assigned_gt_inds > 0
    gt_of_prior = gt_labels.to(assigned_gt_inds.dtype)[(assigned_gt_inds - 1).clamp(min=0)]
    assigned_labels = torch.where(pos, gt_of_prior, -1)
    return AssignResult(num_gt, assigned_gt_inds, max_overlaps, assigned_labels)


__all__ = [
    "INF", "CENTER_EPS", "IOU_EPS", "AssignResult", "box_overlaps", "box_centers",
    "center_distances", "select_candidates", "iou_threshold", "centers_inside",
    "resolve_multiple", "ignored_priors", "atss_assign",
]
