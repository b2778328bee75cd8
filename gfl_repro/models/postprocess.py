"""Test-time post-processing of dense detectors: from per-level class probabilities to the
final detections of one image, exactly as mmdetection 3.3 / mmcv 2.1 compute them.

Pipeline of :func:`postprocess_image` (mmdet ``BaseDenseHead._predict_by_feat_single`` /
``GFLHead._predict_by_feat_single`` + ``_bbox_post_process`` with ``rescale=True``,
``with_nms=True``):

1. per level, :func:`select_per_level` (``filter_scores_and_topk``): keep the
   ``(prior, class)`` pairs whose probability is ``> score_thr`` (strictly), then the
   ``nms_pre`` highest of them. A prior may be kept several times, once per class;
2. per level, decode the boxes of the kept priors only, in the network-input frame
   (clipped to ``img_shape`` by the decoder, as mmdet's bbox coders do with ``max_shape``);
   gather the score factors (centerness / IoU branch) of the kept priors;
3. concatenate the levels (level order, then descending score inside a level);
4. rescale the boxes to the original image: ``boxes * [1/w_scale, 1/h_scale, 1/w_scale,
   1/h_scale]`` (mmdet multiplies by the reciprocal computed in Python doubles, not divides);
5. ``scores = scores * score_factors``: the factor is applied AFTER the threshold and the
   top-k, so a pair whose class probability passes ``score_thr`` is kept even when its
   product would not (mmdet behaviour; the NMS ranks by the product);
6. drop boxes with ``w <= min_bbox_size`` or ``h <= min_bbox_size`` (mmdet's test configs of
   GFL/ATSS/FCOS/RetinaNet/SSD set ``min_bbox_size=0``: degenerate boxes go);
7. class-wise NMS (:func:`batched_nms`: mmcv's coordinate-offset trick) and the first
   ``max_per_img`` of the NMS output, which is sorted by descending score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import nms as _tv_nms

__all__ = [
    "PostprocessConfig",
    "select_per_level",
    "batched_nms",
    "multiclass_nms",
    "rescale_boxes",
    "postprocess_image",
]


@dataclass(frozen=True)
class PostprocessConfig:
    """mmdet ``test_cfg`` of a dense head. Defaults: ``gfl_r50_fpn_1x_coco``.

    Attributes:
        nms_pre: candidates kept per level after the score threshold (``None`` or ``<= 0``:
            no limit; mmdet's own ``-1`` default would drop the last candidate, a quirk no
            config of this suite relies on).
        score_thr: class-probability threshold, strict (``p > score_thr``).
        nms_iou: IoU threshold of the NMS; a box is suppressed when IoU ``>`` it.
        max_per_img: detections kept per image after NMS (``None``: all).
        min_bbox_size: boxes with width or height ``<=`` it are dropped before NMS
            (``None`` or negative: no filter, as mmdet's ``-1``).
    """

    nms_pre: int | None = 1000
    score_thr: float = 0.05
    nms_iou: float = 0.6
    max_per_img: int | None = 100
    min_bbox_size: float | None = 0

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> "PostprocessConfig":
        """Read ``nms_pre``, ``score_thr``, ``nms_iou``, ``max_per_img`` (and
        ``min_bbox_size`` if present) from any object that has them, e.g. a ``RunConfig``."""
        values = {}
        for name in ("nms_pre", "score_thr", "nms_iou", "max_per_img", "min_bbox_size"):
            if hasattr(config, name):
                values[name] = getattr(config, name)
        values.update(overrides)
        return cls(**values)


def select_per_level(scores: Tensor, score_thr: float, nms_pre: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """Score threshold then top-k over the ``(prior, class)`` pairs of one level.

    Same semantics as mmdet's ``filter_scores_and_topk``: the pairs are enumerated in
    row-major order of ``scores`` (prior-major, class-minor), those with
    ``score > score_thr`` (strict) are kept, sorted by descending score with the very same
    ``Tensor.sort(descending=True)`` call (so ties break as in mmdet on the same device), and
    the first ``nms_pre`` are returned.

    Args:
        scores: ``(P, C)`` class probabilities of the ``P`` priors of a level (sigmoid, or
            softmax without the background column).
        score_thr: strict threshold.
        nms_pre: maximum number of pairs returned; ``None`` or ``<= 0``: no limit.

    Returns:
        ``(scores (K,), labels (K,) int64 in 0..C-1, prior_idx (K,) int64 in 0..P-1)``, sorted
        by descending score. ``K = min(nms_pre, #pairs above threshold)``.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (P, C), got shape {tuple(scores.shape)}")
    valid_mask = scores > score_thr
    kept = scores[valid_mask]
    valid_idxs = torch.nonzero(valid_mask)  # (M, 2): (prior, class), same order as `kept`
    num = valid_idxs.size(0)
    if nms_pre is not None and nms_pre > 0:
        num = min(int(nms_pre), num)
    kept, order = kept.sort(descending=True)
    kept = kept[:num]
    top_idxs = valid_idxs[order[:num]]
    prior_idx, labels = top_idxs.unbind(dim=1)
    return kept, labels, prior_idx


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_thr: float,
                split_thr: int = 10000) -> Tensor:
    """Class-wise NMS, mmcv 2.1 ``batched_nms`` with ``nms_cfg=dict(type='nms', ...)``.

    Boxes of different groups are moved apart by ``idxs * (boxes.max() + 1)`` (the offset is
    computed in the boxes' dtype) and one :func:`torchvision.ops.nms` runs over all of them;
    torchvision's CPU kernel is the same algorithm and arithmetic as mmcv's
    (``inter / (area_i + area_j - inter) > iou_thr`` suppresses, offset 0, candidates ranked
    by ``scores.sort(descending)``), given the float32-rounded threshold (see below). (mmcv's
    CUDA kernel tests ``inter > thr * union`` instead: on GPU the two can disagree by one ulp
    at the threshold.) With ``N >= split_thr`` boxes mmcv runs one NMS per group on the
    offset boxes and re-sorts the union by score; that branch is reproduced too.

    Args:
        boxes: ``(N, 4)`` ``xyxy``.
        scores: ``(N,)``.
        idxs: ``(N,)`` group (class) index of each box.
        iou_thr: IoU threshold.
        split_thr: mmcv's ``split_thr``.

    Returns:
        ``keep``: ``(M,)`` int64 indices into the inputs, sorted by descending score.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    # mmcv's kernels take the threshold as a C float and compare ``float ovr > float thr``;
    # torchvision's CPU kernel takes a double and compares ``float ovr > double thr``. The two
    # differ when the IoU is exactly float32(thr) (e.g. 0.6f > 0.6 but not > 0.6f). Passing
    # the float32-rounded threshold gives mmcv's decision for every float IoU.
    iou_thr = float(np.float32(iou_thr))
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    boxes_for_nms = boxes + offsets[:, None]
    if boxes_for_nms.shape[0] < split_thr:
        return _tv_nms(boxes_for_nms, scores, iou_thr)
    total_mask = scores.new_zeros(scores.size(), dtype=torch.bool)
    for group in torch.unique(idxs):
        mask = (idxs == group).nonzero(as_tuple=False).view(-1)
        keep = _tv_nms(boxes_for_nms[mask], scores[mask], iou_thr)
        total_mask[mask[keep]] = True
    keep = total_mask.nonzero(as_tuple=False).view(-1)
    _, order = scores[keep].sort(descending=True)
    return keep[order]


def multiclass_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_thr: float = 0.6,
                   max_per_img: int | None = 100, split_thr: int = 10000) -> tuple[Tensor, Tensor, Tensor]:
    """Class-wise NMS then the ``max_per_img`` best (mmdet ``_bbox_post_process`` tail).

    Args:
        boxes: ``(N, 4)`` ``xyxy``; scores ``(N,)``; labels ``(N,)`` int64.
        iou_thr: NMS IoU threshold (strict ``>`` suppresses).
        max_per_img: number of detections kept (``None``: all).
        split_thr: see :func:`batched_nms`.

    Returns:
        ``(boxes (M, 4), scores (M,), labels (M,))`` sorted by descending score,
        ``M <= max_per_img``. Boxes that overlap but carry different labels never suppress
        each other.
    """
    keep = batched_nms(boxes, scores, labels, iou_thr, split_thr=split_thr)
    if max_per_img is not None and max_per_img >= 0:
        keep = keep[:max_per_img]
    return boxes[keep], scores[keep], labels[keep]


def rescale_boxes(boxes: Tensor, scale_factor: Sequence[float]) -> Tensor:
    """Map ``xyxy`` boxes from the network-input frame back to the original image.

    ``scale_factor = (w_scale, h_scale)`` as recorded by the resize transform
    (``resized = original * scale``). Same arithmetic as mmdet's
    ``scale_boxes(boxes, [1 / s for s in scale_factor])``: the reciprocals are computed in
    Python doubles, cast to the boxes' dtype, and multiplied in.
    """
    if len(scale_factor) != 2:
        raise ValueError(f"scale_factor must be (w_scale, h_scale), got {scale_factor!r}")
    inv = boxes.new_tensor([1 / float(s) for s in scale_factor]).repeat((1, 2))
    return boxes * inv


BoxDecoder = Callable[[int, Tensor], Tensor]


def postprocess_image(
    mlvl_scores: Sequence[Tensor],
    decode: BoxDecoder | Sequence[Tensor],
    score_factors: Sequence[Tensor] | None = None,
    scale_factor: Sequence[float] | None = None,
    cfg: PostprocessConfig | None = None,
) -> dict[str, Tensor]:
    """Final detections of ONE image from its per-level dense predictions.

    Contract (all tensors of one image, on one device; levels in the same order everywhere):

    Args:
        mlvl_scores: per level ``l`` a ``(P_l, C)`` tensor of class probabilities (already
            sigmoid-ed; for softmax heads drop the background column first). Row ``i`` is
            prior ``i`` of the level in the head's flattening order (mmdet: ``(H, W, A)``
            row-major, i.e. ``permute(1, 2, 0).reshape(-1, C)`` of a ``(A*C, H, W)`` map).
        decode: how to get the boxes of the kept priors, either
            * a callable ``decode(level: int, prior_idx: LongTensor (K,)) -> (K, 4)``
              returning ``xyxy`` boxes in the network-input frame (the resized image,
              before padding), ALREADY CLIPPED to ``img_shape`` exactly as the mmdet coder
              does with ``max_shape=img_shape`` (e.g. ``box_ops.distance2bbox(centres[idx],
              dists[idx] * stride, max_shape=img_shape)``). It is called once per level, also
              with ``K = 0``; only kept priors are decoded; or
            * a sequence of per-level ``(P_l, 4)`` decoded (and clipped) boxes, indexed here.
        score_factors: ``None``, or per level a ``(P_l,)`` tensor of probabilities
            (centerness / IoU branch, already sigmoid-ed) multiplied into the kept scores
            after the threshold and the top-k, just before NMS.
        scale_factor: ``(w_scale, h_scale)`` of the test resize; the boxes are mapped back to
            the original image with :func:`rescale_boxes`. ``None``: boxes stay in the
            network-input frame (mmdet ``rescale=False``).
        cfg: :class:`PostprocessConfig` (default: GFL's ``test_cfg``).

    Returns:
        ``dict(boxes=(M, 4) float, scores=(M,) float, labels=(M,) int64)`` with
        ``M <= cfg.max_per_img``, sorted by descending (factor-multiplied) score, boxes
        ``xyxy`` in original-image coordinates when ``scale_factor`` is given, labels in
        ``0..C-1``.
    """
    cfg = PostprocessConfig() if cfg is None else cfg
    if len(mlvl_scores) == 0:
        raise ValueError("mlvl_scores is empty")
    if score_factors is not None and len(score_factors) != len(mlvl_scores):
        raise ValueError("score_factors must have one tensor per level")
    if not callable(decode) and len(decode) != len(mlvl_scores):
        raise ValueError("decoded boxes must have one tensor per level")

    all_boxes, all_scores, all_labels, all_factors = [], [], [], []
    for level, level_scores in enumerate(mlvl_scores):
        scores, labels, prior_idx = select_per_level(level_scores, cfg.score_thr, cfg.nms_pre)
        boxes = decode(level, prior_idx) if callable(decode) else decode[level][prior_idx]
        if boxes.shape != (prior_idx.numel(), 4):
            raise ValueError(
                f"level {level}: decoder returned boxes of shape {tuple(boxes.shape)}, "
                f"expected ({prior_idx.numel()}, 4)"
            )
        all_boxes.append(boxes)
        all_scores.append(scores)
        all_labels.append(labels)
        if score_factors is not None:
            all_factors.append(score_factors[level].reshape(-1)[prior_idx])

    boxes = torch.cat(all_boxes)
    scores = torch.cat(all_scores)
    labels = torch.cat(all_labels)
    if scale_factor is not None:
        boxes = rescale_boxes(boxes, scale_factor)
    if score_factors is not None:
        scores = scores * torch.cat(all_factors)
    if cfg.min_bbox_size is not None and cfg.min_bbox_size >= 0:
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        valid = (w > cfg.min_bbox_size) & (h > cfg.min_bbox_size)
        if not bool(valid.all()):
            boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
    if boxes.numel() > 0:
        boxes, scores, labels = multiclass_nms(boxes, scores, labels, cfg.nms_iou, cfg.max_per_img)
    return {"boxes": boxes, "scores": scores, "labels": labels}
