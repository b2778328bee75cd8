"""Post-processing: mmdet's filter_scores_and_topk, mmcv's batched_nms, _bbox_post_process."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gfl_repro.models.box_ops import distance2bbox
from gfl_repro.models.postprocess import (
    PostprocessConfig,
    batched_nms,
    multiclass_nms,
    postprocess_image,
    rescale_boxes,
    select_per_level,
)

NO_LIMITS = PostprocessConfig(nms_pre=1000, score_thr=0.05, nms_iou=0.6, max_per_img=100, min_bbox_size=0)


# --------------------------------------------------------------------------- select_per_level
def test_score_threshold_is_strict():
    scores = torch.tensor([[0.5, 0.6], [0.4, 0.5000001]])
    kept, labels, prior = select_per_level(scores, 0.5, 1000)
    assert kept.tolist() == pytest.approx([0.6, 0.5000001])
    assert labels.tolist() == [1, 1]
    assert prior.tolist() == [0, 1]


def test_score_threshold_compares_in_float32_like_mmdet():
    # float32(0.05) is not > 0.05 when the comparison is done in the tensor's dtype.
    kept, _, _ = select_per_level(torch.tensor([[0.05, 0.0501]]), 0.05, 1000)
    assert kept.numel() == 1


def test_topk_keeps_highest_prior_class_pairs_sorted():
    scores = torch.tensor([
        [0.10, 0.90, 0.20],
        [0.80, 0.05, 0.70],
        [0.30, 0.60, 0.95],
    ])
    kept, labels, prior = select_per_level(scores, 0.05, 4)
    assert kept.tolist() == pytest.approx([0.95, 0.90, 0.80, 0.70])
    assert prior.tolist() == [2, 0, 1, 1]  # prior 1 kept twice, once per class
    assert labels.tolist() == [2, 1, 0, 2]


def test_select_matches_bruteforce_reference():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(500, 7, generator=g) ** 3
    kept, labels, prior = select_per_level(scores, 0.05, 100)
    pairs = [(float(scores[p, c]), p, c) for p in range(500) for c in range(7) if scores[p, c] > 0.05]
    pairs.sort(key=lambda t: -t[0])
    ref = pairs[:100]
    assert kept.tolist() == [t[0] for t in ref]
    assert prior.tolist() == [t[1] for t in ref]
    assert labels.tolist() == [t[2] for t in ref]


def test_select_nothing_above_threshold():
    kept, labels, prior = select_per_level(torch.full((4, 3), 0.01), 0.05, 10)
    assert kept.shape == labels.shape == prior.shape == (0,)
    assert labels.dtype == prior.dtype == torch.long


def test_nms_pre_none_keeps_all():
    kept, _, _ = select_per_level(torch.rand(20, 3) * 0.5 + 0.5, 0.05, None)
    assert kept.numel() == 60


# --------------------------------------------------------------------------- NMS
BOX_A = [10.0, 10.0, 50.0, 50.0]
BOX_B = [12.0, 12.0, 52.0, 52.0]  # IoU(A, B) ~ 0.82


def test_overlapping_same_class_one_kept():
    boxes = torch.tensor([BOX_A, BOX_B])
    b, s, l = multiclass_nms(boxes, torch.tensor([0.7, 0.9]), torch.tensor([3, 3]))
    assert b.tolist() == [BOX_B] and s.tolist() == pytest.approx([0.9]) and l.tolist() == [3]


def test_overlapping_different_classes_both_kept():
    boxes = torch.tensor([BOX_A, BOX_B])
    b, s, l = multiclass_nms(boxes, torch.tensor([0.7, 0.9]), torch.tensor([0, 1]))
    assert l.tolist() == [1, 0]
    assert s.tolist() == pytest.approx([0.9, 0.7])
    assert b.tolist() == [BOX_B, BOX_A]


def test_nms_iou_threshold_is_strict_in_float32_like_mmcv():
    # IoU = 60 / 100 = float32(0.6) exactly: mmcv (float compare) keeps both boxes.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 6.0]])
    keep = batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 0]), 0.6)
    assert keep.tolist() == [0, 1]
    keep = batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 0]), 0.59)
    assert keep.tolist() == [0]


def test_max_per_img_cut_and_sorted():
    n = 30
    x = torch.arange(n, dtype=torch.float32) * 100  # disjoint boxes
    boxes = torch.stack([x, x * 0, x + 50, x * 0 + 50], 1)
    scores = torch.rand(n, generator=torch.Generator().manual_seed(1))
    b, s, l = multiclass_nms(boxes, scores, torch.zeros(n, dtype=torch.long), 0.6, max_per_img=7)
    assert s.numel() == 7
    assert s.tolist() == sorted(scores.tolist(), reverse=True)[:7]
    assert torch.equal(b, boxes[scores.argsort(descending=True)[:7]])


def test_split_branch_equals_offset_branch():
    g = torch.Generator().manual_seed(2)
    xy = torch.rand(300, 2, generator=g) * 100
    wh = torch.rand(300, 2, generator=g) * 40 + 5
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(300, generator=g)
    labels = torch.randint(0, 4, (300,), generator=g)
    a = batched_nms(boxes, scores, labels, 0.5)
    b = batched_nms(boxes, scores, labels, 0.5, split_thr=10)
    assert a.tolist() == b.tolist()
    assert torch.all(scores[a][:-1] >= scores[a][1:])


def test_nms_empty():
    b, s, l = multiclass_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert b.shape == (0, 4) and s.shape == (0,) and l.shape == (0,)


# --------------------------------------------------------------------------- postprocess_image
def test_rescale_multiplies_by_reciprocal():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    out = rescale_boxes(boxes, (2.0, 0.5))
    assert out.tolist() == [[5.0, 40.0, 15.0, 80.0]]
    sf = (1.3370000123977661, 0.777)
    ref = boxes * torch.tensor([1 / sf[0], 1 / sf[1], 1 / sf[0], 1 / sf[1]], dtype=torch.float32)
    assert torch.equal(rescale_boxes(boxes, sf), ref)


def test_postprocess_rescales_to_original_image():
    scores = [torch.tensor([[0.9, 0.0]])]
    boxes = [torch.tensor([[10.0, 20.0, 50.0, 60.0]])]
    out = postprocess_image(scores, boxes, scale_factor=(2.0, 4.0), cfg=NO_LIMITS)
    assert out["boxes"].tolist() == [[5.0, 5.0, 25.0, 15.0]]
    assert out["labels"].tolist() == [0]
    assert out["scores"].tolist() == pytest.approx([0.9])


def test_score_factor_applied_after_threshold():
    # cls 0.1 passes score_thr 0.05; cls * factor = 0.02 would not, yet it is kept (mmdet).
    scores = [torch.tensor([[0.1], [0.04]])]
    boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])]
    factors = [torch.tensor([0.2, 1.0])]
    out = postprocess_image(scores, boxes, score_factors=factors, cfg=NO_LIMITS)
    assert out["scores"].tolist() == pytest.approx([0.02])
    assert out["boxes"].tolist() == [[0.0, 0.0, 10.0, 10.0]]


def test_score_factor_does_not_change_topk_but_changes_nms_rank():
    # Two same-class overlapping priors; topk/threshold see cls scores, NMS sees the products.
    scores = [torch.tensor([[0.9], [0.8]])]
    boxes = [torch.tensor([BOX_A, BOX_B])]
    factors = [torch.tensor([0.1, 0.9])]
    cfg = PostprocessConfig(nms_pre=2, score_thr=0.05, nms_iou=0.6, max_per_img=100)
    out = postprocess_image(scores, boxes, score_factors=factors, cfg=cfg)
    assert out["boxes"].tolist() == [BOX_B]
    assert out["scores"].tolist() == pytest.approx([0.72])
    # nms_pre=1 keeps the prior with the best cls score, whatever its factor.
    cfg1 = PostprocessConfig(nms_pre=1, score_thr=0.05, nms_iou=0.6, max_per_img=100)
    out = postprocess_image(scores, boxes, score_factors=factors, cfg=cfg1)
    assert out["boxes"].tolist() == [BOX_A]
    assert out["scores"].tolist() == pytest.approx([0.09])


def test_decode_callable_gets_only_kept_priors_per_level():
    calls = []
    all_boxes = [torch.tensor([[0.0, 0, 10, 10], [100, 100, 110, 110], [200, 200, 210, 210]]),
                 torch.tensor([[300.0, 300, 320, 320]])]

    def decode(level, idx):
        calls.append((level, idx.tolist()))
        return all_boxes[level][idx]

    scores = [torch.tensor([[0.01, 0.6], [0.3, 0.02], [0.01, 0.01]]), torch.tensor([[0.0, 0.01]])]
    out = postprocess_image(scores, decode, cfg=NO_LIMITS)
    assert calls == [(0, [0, 1]), (1, [])]
    assert out["labels"].tolist() == [1, 0]
    assert out["scores"].tolist() == pytest.approx([0.6, 0.3])


def test_min_bbox_size_drops_degenerate_boxes():
    scores = [torch.tensor([[0.9], [0.8]])]
    boxes = [torch.tensor([[0.0, 0.0, 0.0, 10.0], [0.0, 0.0, 5.0, 5.0]])]  # first has w = 0
    out = postprocess_image(scores, boxes, cfg=NO_LIMITS)
    assert out["boxes"].tolist() == [[0.0, 0.0, 5.0, 5.0]]
    keep_all = PostprocessConfig(min_bbox_size=None)
    assert postprocess_image(scores, boxes, cfg=keep_all)["scores"].numel() == 2


def test_levels_concatenate_and_max_per_img():
    g = torch.Generator().manual_seed(3)
    scores, boxes = [], []
    for level in range(3):
        n = 40
        x = (torch.arange(n, dtype=torch.float32) + level * n) * 100
        boxes.append(torch.stack([x, x * 0, x + 50, x * 0 + 50], 1))
        scores.append(torch.rand(n, 2, generator=g))
    cfg = PostprocessConfig(nms_pre=10, score_thr=0.05, nms_iou=0.6, max_per_img=25)
    out = postprocess_image(scores, boxes, cfg=cfg)
    assert out["scores"].numel() == 25
    top_per_level = sorted(
        (v for s in scores for v in sorted(s[s > 0.05].tolist(), reverse=True)[:10]), reverse=True
    )
    # disjoint priors; a prior kept for two classes is not suppressed (different labels)
    assert out["scores"].tolist() == pytest.approx(top_per_level[:25])


def test_empty_image():
    out = postprocess_image([torch.zeros(5, 3)], [torch.zeros(5, 4)], cfg=NO_LIMITS)
    assert out["boxes"].shape == (0, 4) and out["scores"].shape == (0,) and out["labels"].shape == (0,)


def test_gfl_style_decode_against_reference_pipeline():
    """A GFL-like head's post-processing written out the mmdet way, step by step."""
    g = torch.Generator().manual_seed(4)
    img_shape, scale_factor = (120, 160), (1.6, 1.5)
    strides, sizes = [8, 16], [(15, 20), (8, 10)]
    mlvl_scores, mlvl_dists, mlvl_centres = [], [], []
    for stride, (h, w) in zip(strides, sizes):
        ys, xs = torch.meshgrid(torch.arange(h) * stride, torch.arange(w) * stride, indexing="ij")
        mlvl_centres.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], 1).float())
        mlvl_scores.append(torch.rand(h * w, 5, generator=g) ** 4)
        mlvl_dists.append(torch.rand(h * w, 4, generator=g) * 6 * stride)
    cfg = PostprocessConfig(nms_pre=50, score_thr=0.05, nms_iou=0.6, max_per_img=30)

    def decode(level, idx):
        return distance2bbox(mlvl_centres[level][idx], mlvl_dists[level][idx], max_shape=img_shape)

    out = postprocess_image(mlvl_scores, decode, scale_factor=scale_factor, cfg=cfg)

    # reference: mmdet order of operations with plain code
    bb, ss, ll = [], [], []
    for s, d, c in zip(mlvl_scores, mlvl_dists, mlvl_centres):
        mask = s > cfg.score_thr
        vals = s[mask]
        ids = torch.nonzero(mask)
        vals, order = vals.sort(descending=True)
        ids = ids[order[: cfg.nms_pre]]
        ss.append(vals[: cfg.nms_pre])
        ll.append(ids[:, 1])
        bb.append(distance2bbox(c[ids[:, 0]], d[ids[:, 0]], max_shape=img_shape))
    boxes = torch.cat(bb) * torch.tensor([1 / 1.6, 1 / 1.5, 1 / 1.6, 1 / 1.5])
    scores, labels = torch.cat(ss), torch.cat(ll)
    valid = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
    boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
    keep = []
    for i in scores.argsort(descending=True).tolist():  # naive class-wise greedy NMS
        ok = True
        for j in keep:
            if labels[i] != labels[j]:
                continue
            a, b = boxes[i], boxes[j]
            iw = (torch.min(a[2], b[2]) - torch.max(a[0], b[0])).clamp(min=0)
            ih = (torch.min(a[3], b[3]) - torch.max(a[1], b[1])).clamp(min=0)
            inter = iw * ih
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            if inter / union > np.float32(0.6):
                ok = False
                break
        if ok:
            keep.append(i)
    keep = torch.tensor(keep[: cfg.max_per_img])
    assert torch.allclose(out["boxes"], boxes[keep], atol=1e-5)
    assert torch.equal(out["scores"], scores[keep])
    assert torch.equal(out["labels"], labels[keep])


def test_config_from_run_config():
    from gfl_repro.specs.run_config import RunConfig

    cfg = PostprocessConfig.from_config(RunConfig(nms_iou=0.45, max_per_img=200))
    assert cfg == PostprocessConfig(nms_pre=1000, score_thr=0.05, nms_iou=0.45, max_per_img=200, min_bbox_size=0)
