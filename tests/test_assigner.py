"""Tests for the priors (mmdet AnchorGenerator / MlvlPointGenerator) and the ATSS assigner.

The assigner is checked three ways: invariants on constructed cases, mmdet's documented
edge cases (ties, empty inputs, std convention, ignore boxes), and a large random
comparison against a slow reference written below with explicit Python loops over GTs
and levels, in float64.  Random GTs have continuous coordinates, so equidistant priors
(where torch.topk's tie choice is implementation-defined) do not occur there.
"""

from __future__ import annotations

import math
import random
import warnings

import pytest
import torch

from gfl_repro.models import priors as P
from gfl_repro.models.assigners.atss import (
    CENTER_EPS,
    INF,
    atss_assign,
    box_overlaps,
    iou_threshold,
    select_candidates,
)

STRIDES = P.GFL_STRIDES


def featmap_sizes_for(h: int, w: int, strides=STRIDES):
    return [(math.ceil(h / s), math.ceil(w / s)) for s in strides]


def flat_anchors(h: int, w: int):
    sizes = featmap_sizes_for(h, w)
    mlvl = P.grid_anchors(sizes, STRIDES)
    return torch.cat(mlvl), [a.shape[0] for a in mlvl]


# --------------------------------------------------------------------------- priors


def test_grid_anchors_count_order_centres_sizes():
    sizes = [(4, 6), (2, 3), (1, 2), (1, 1), (1, 1)]
    mlvl = P.grid_anchors(sizes, STRIDES)
    assert [a.shape for a in mlvl] == [torch.Size([h * w, 4]) for h, w in sizes]
    for (h, w), s, a in zip(sizes, STRIDES, mlvl):
        assert a.dtype == torch.float32
        c = P.anchor_centers(a)
        # row-major, x fastest; centre at the cell's top-left corner (center_offset 0)
        exp = torch.tensor([[j * s, i * s] for i in range(h) for j in range(w)], dtype=torch.float32)
        assert torch.equal(c, exp)
        assert torch.equal(a[:, 2] - a[:, 0], torch.full((h * w,), 8.0 * s))
        assert torch.equal(a[:, 3] - a[:, 1], torch.full((h * w,), 8.0 * s))
    assert mlvl[0][0].tolist() == [-32.0, -32.0, 32.0, 32.0]
    assert mlvl[0][1].tolist() == [-24.0, -32.0, 40.0, 32.0]
    assert mlvl[0][6].tolist() == [-32.0, -24.0, 32.0, 40.0]
    assert mlvl[1][0].tolist() == [-64.0, -64.0, 64.0, 64.0]


def test_valid_flags_from_pad_shape():
    # batch input 80x112 -> stride-8 map 10x14; this image padded to 64x96 -> 8x12 valid
    sizes = featmap_sizes_for(80, 112)
    flags = P.valid_flags(sizes, (64, 96, 3), STRIDES)
    f0 = flags[0].view(10, 14)
    assert f0[:8, :12].all() and not f0[8:, :].any() and not f0[:, 12:].any()
    # stride 128: ceil(64/128) = 1 row, 1 col valid out of 1x1
    assert flags[4].tolist() == [True]
    # stride 16: 5x7 map, valid ceil(64/16)=4 x ceil(96/16)=6
    f1 = flags[1].view(5, 7)
    assert f1.sum() == 24 and f1[:4, :6].all()


def test_inside_flags_allowed_border():
    sizes = featmap_sizes_for(64, 64)
    mlvl = P.grid_anchors(sizes, STRIDES)
    anchors = torch.cat(mlvl)
    valid = torch.cat(P.valid_flags(sizes, (64, 64), STRIDES))
    valid[3] = False
    # GFL/ATSS: allowed_border = -1 -> the valid flags unchanged
    assert torch.equal(P.inside_flags(anchors, valid, (60, 64), -1), valid)
    ins = P.inside_flags(anchors, valid, (60, 64), 0)
    exp = valid & (anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] < 64) & (anchors[:, 3] < 60)
    assert torch.equal(ins, exp)
    # anchors are 8*stride wide, so in a 64x64 image none fits with b = 0; with b = 32 the
    # stride-8 ones centred at x, y in [0, 64) fit (8x8 minus the invalidated index 3)
    assert not ins.any()
    ins32 = P.inside_flags(anchors, valid, (64, 64), 32)
    counts = P.num_level_inside([a.shape[0] for a in mlvl], ins32)
    assert counts == [63, 0, 0, 0, 0]


def test_points_offset_half():
    pts = P.points([(2, 3), (1, 2)], (8, 16))
    assert pts[0].tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert pts[1].tolist() == [[8, 8], [24, 8]]
    p0 = P.points([(2, 3)], (8,), offset=0.0)[0]
    assert torch.equal(p0, P.anchor_centers(P.grid_anchors([(2, 3)], (8,))[0]))
    ws = P.points([(1, 2)], (16,), with_stride=True)[0]
    assert ws.tolist() == [[8, 8, 16, 16], [24, 8, 16, 16]]


# --------------------------------------------------------------- reference assigner


def _iou64(a, g):
    iw = max(0.0, min(a[2], g[2]) - max(a[0], g[0]))
    ih = max(0.0, min(a[3], g[3]) - max(a[1], g[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
    return inter / max(union, 1e-6)


def reference_atss(anchors, num_level, gts, topk=9, tol=1e-5):
    """Slow ATSS: loops over GTs, levels and priors, in float64.

    Returns ``(gt_inds, ambiguous)``: the assigned 1-based GT index per prior and the set
    of priors whose outcome hinges on a float32-vs-float64 rounding (a candidate IoU
    within ``tol`` of its GT's threshold, a centre margin within ``tol`` of 0.01, or two
    claiming GTs whose IoUs differ by less than ``tol``).  A typical case: all candidate
    IoUs of a GT are equal, so std = 0 and ``IoU >= mean`` is decided by the last bit of
    the float32 mean -- mmdet's answer is whatever its float32 reduction gives.
    """
    A = anchors.double().tolist()
    Gs = gts.double().tolist()
    n = len(A)
    gt_inds = [0] * n
    ambiguous = set()
    if not Gs or n == 0:
        return gt_inds, ambiguous
    claims = [[] for _ in range(n)]  # (iou, gt index) of the GTs for which prior is positive
    centres = [((a[0] + a[2]) / 2, (a[1] + a[3]) / 2) for a in A]
    for gi, g in enumerate(Gs):
        gcx, gcy = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2
        cands = []
        start = 0
        for nl in num_level:  # per level: the k prior centres nearest to the GT centre
            idx = list(range(start, start + nl))
            idx.sort(key=lambda i: math.hypot(centres[i][0] - gcx, centres[i][1] - gcy))
            cands += idx[: min(topk, nl)]
            start += nl
        ious = [_iou64(A[i], g) for i in cands]
        mean = sum(ious) / len(ious)
        if len(ious) > 1:  # unbiased (N - 1) standard deviation, as torch.std
            std = math.sqrt(sum((v - mean) ** 2 for v in ious) / (len(ious) - 1))
        else:
            std = float("nan")
        thr = mean + std
        for i, v in zip(cands, ious):
            cx, cy = centres[i]
            margin = min(cx - g[0], cy - g[1], g[2] - cx, g[3] - cy)
            if abs(v - thr) < tol or abs(margin - 0.01) < tol:
                ambiguous.add(i)
            if v >= thr and margin > 0.01:
                claims[i].append((v, gi))
    for i, cl in enumerate(claims):
        best_v, best_g = None, None
        for v, gi in cl:  # GTs in increasing index: strictly larger IoU replaces
            if best_v is None or v > best_v:
                best_v, best_g = v, gi
        if best_g is not None:
            gt_inds[i] = best_g + 1
            if any(gi != best_g and abs(v - best_v) < tol for v, gi in cl):
                ambiguous.add(i)
    return gt_inds, ambiguous


def random_gts(rng: random.Random, h: int, w: int, n: int) -> torch.Tensor:
    boxes = []
    for _ in range(n):
        bw = math.exp(rng.uniform(math.log(2.0), math.log(0.9 * w)))
        bh = math.exp(rng.uniform(math.log(2.0), math.log(0.9 * h)))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        x1, y1 = max(0.0, cx - bw / 2), max(0.0, cy - bh / 2)
        x2, y2 = min(float(w), cx + bw / 2), min(float(h), cy + bh / 2)
        if x2 - x1 < 1 or y2 - y1 < 1:
            x1, y1, x2, y2 = cx - 1, cy - 1, cx + 1, cy + 1
        boxes.append([x1, y1, x2, y2])
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def random_case(rng: random.Random):
    h, w = rng.randint(40, 330), rng.randint(40, 330)
    pad_h, pad_w = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
    sizes = featmap_sizes_for(pad_h, pad_w)
    mlvl = P.grid_anchors(sizes, STRIDES)
    anchors = torch.cat(mlvl)
    valid = torch.cat(P.valid_flags(sizes, (pad_h, pad_w), STRIDES))
    border = rng.choice([-1, -1, 0, 16])
    ins = P.inside_flags(anchors, valid, (h, w), border)
    num_level = P.num_level_inside([a.shape[0] for a in mlvl], ins)
    gts = random_gts(rng, h, w, rng.randint(1, 12))
    labels = torch.tensor([rng.randrange(80) for _ in range(gts.shape[0])], dtype=torch.long)
    return anchors[ins], num_level, gts, labels, border


def test_matches_slow_reference_on_random_cases():
    rng = random.Random(0)
    n_pos = n_multi = n_amb_diff = n_all = 0
    for _ in range(300):
        anchors, num_level, gts, labels, border = random_case(rng)
        if anchors.shape[0] == 0:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # std of a single candidate
            res = atss_assign(anchors, num_level, gts, labels)
        ref, ambiguous = reference_atss(anchors, num_level, gts)
        got = res.assigned_gt_inds.tolist()
        if border < 0:
            # GFL's setting (all priors of all levels): no float-ambiguous prior at all
            assert not ambiguous and got == ref
        else:
            # border-filtered priors can leave a single small level, where all candidate
            # IoUs of a GT may be equal (std = 0): compare only unambiguous priors
            assert [g for i, g in enumerate(got) if i not in ambiguous] == \
                [r for i, r in enumerate(ref) if i not in ambiguous]
        n_amb_diff += sum(got[i] != ref[i] for i in ambiguous)
        n_all += len(got)
        pos = res.assigned_gt_inds > 0
        n_pos += int(pos.sum())
        assert torch.equal(res.assigned_labels[pos], labels[res.assigned_gt_inds[pos] - 1])
        assert (res.assigned_labels[~pos] == -1).all()
        ious = box_overlaps(anchors, gts)
        assert torch.equal(res.max_overlaps[pos], ious[pos, res.assigned_gt_inds[pos] - 1])
        assert (res.max_overlaps[~pos] == -INF).all()
        # priors that are candidates of more than one GT (exercise the max-IoU rule)
        cand = select_candidates(
            torch.cdist(P.anchor_centers(anchors), P.anchor_centers(gts)), num_level, 9)
        n_multi += int((torch.bincount(cand.flatten(), minlength=anchors.shape[0]) > 1).sum())
    assert n_pos > 500 and n_multi > 50
    assert n_amb_diff < 1e-3 * n_all


# ------------------------------------------------------------------------ invariants


def test_invariants_centre_inside_and_topk_per_level():
    rng = random.Random(1)
    for _ in range(20):
        anchors, num_level, gts, labels, border = random_case(rng)
        if anchors.shape[0] == 0:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = atss_assign(anchors, num_level, gts, labels, topk=9)
        inds = res.assigned_gt_inds
        assert ((inds >= 0) & (inds <= gts.shape[0])).all()
        pos = torch.nonzero(inds > 0).flatten()
        c = P.anchor_centers(anchors[pos])
        g = gts[inds[pos] - 1]
        margin = torch.stack([c[:, 0] - g[:, 0], c[:, 1] - g[:, 1], g[:, 2] - c[:, 0], g[:, 3] - c[:, 1]], 1)
        assert (margin.min(1).values > CENTER_EPS).all()
        level_of = torch.repeat_interleave(torch.arange(len(num_level)), torch.tensor(num_level))
        for gi in range(gts.shape[0]):
            lv = level_of[inds == gi + 1]
            assert (torch.bincount(lv, minlength=len(num_level)) <= 9).all()


def test_positive_threshold_is_mean_plus_unbiased_std():
    anchors, num_level = flat_anchors(256, 256)
    gts = torch.tensor([[30.5, 41.2, 150.7, 130.1]])
    res = atss_assign(anchors, num_level, gts, torch.tensor([3]))
    d = torch.cdist(P.anchor_centers(anchors), P.anchor_centers(gts))
    cand = select_candidates(d, num_level, 9)[:, 0]
    assert cand.numel() == 9 * 4 + 4  # levels 32x32, 16x16, 8x8, 4x4 (k=9) and 2x2 (k=4)
    ious = box_overlaps(anchors, gts)[cand, 0]
    thr = ious.mean() + ious.std(unbiased=True)
    assert torch.allclose(iou_threshold(ious[:, None]), thr[None])
    assert not torch.allclose(thr, ious.mean() + ious.std(unbiased=False))
    c = P.anchor_centers(anchors[cand])
    inside = (c[:, 0] > gts[0, 0] + 0.01) & (c[:, 0] < gts[0, 2] - 0.01) & \
             (c[:, 1] > gts[0, 1] + 0.01) & (c[:, 1] < gts[0, 3] - 0.01)
    exp = set(cand[(ious >= thr) & inside].tolist())
    got = set(torch.nonzero(res.assigned_gt_inds == 1).flatten().tolist())
    assert got == exp and len(got) > 0
    assert (res.assigned_labels[list(got)] == 3).all()


def test_centre_margin_is_strict_001():
    # one level, 3x3 anchors of side 64 centred at x, y in {0, 8, 16}; the GT's left edge
    # is 8 - e.  Anchors at x = 8 and x = 16 fully contain the GT's width (equal IoU);
    # the one at x = 8 is positive only while its margin e exceeds mmdet's 0.01.
    anchors = P.grid_anchors([(3, 3)], (8,))[0]
    for e, expect in [(2 ** -6, [0, 1, 1]), (2 ** -7, [0, 0, 1])]:  # 0.0156 / 0.0078
        gt = torch.tensor([[8.0 - e, -24.0, 40.0, 40.0]])
        res = atss_assign(anchors, [9], gt, torch.tensor([0]), topk=9)
        grid = res.assigned_gt_inds.view(3, 3)
        assert grid[1].tolist() == expect
        assert grid[0].sum() == 0 and grid[2].sum() == 0


# --------------------------------------------------------------------------- ties


def test_tie_between_identical_gts_goes_to_lower_index():
    anchors, num_level = flat_anchors(128, 128)
    box = [20.3, 30.7, 90.1, 100.9]
    gts = torch.tensor([box, box, [0.0, 0.0, 10.0, 10.0]])
    res = atss_assign(anchors, num_level, gts, torch.tensor([5, 6, 7]))
    inds = res.assigned_gt_inds
    assert (inds == 1).sum() > 0
    assert (inds == 2).sum() == 0
    assert (res.assigned_labels[inds == 1] == 5).all()


def test_tie_between_mirrored_gts_goes_to_lower_index():
    # anchor at (64, 64), side 64 (stride 8); two GTs mirrored about x = 64 have equal IoU
    anchors = P.grid_anchors([(16, 16)], (8,))[0]
    k = 8 * 16 + 8
    assert P.anchor_centers(anchors[k]).tolist() == [64.0, 64.0]
    g0 = [36.0, 32.0, 100.0, 96.0]
    g1 = [28.0, 32.0, 92.0, 96.0]  # mirror image of g0 about x = 64
    gts = torch.tensor([g0, g1])
    ious = box_overlaps(anchors, gts)
    assert ious[k, 0] == ious[k, 1]
    res = atss_assign(anchors, [anchors.shape[0]], gts, torch.tensor([1, 2]))
    assert res.assigned_gt_inds[k] == 1
    gts_swapped = torch.tensor([g1, g0])
    res2 = atss_assign(anchors, [anchors.shape[0]], gts_swapped, torch.tensor([2, 1]))
    assert res2.assigned_gt_inds[k] == 1


def test_higher_iou_wins_over_lower_index():
    anchors = P.grid_anchors([(16, 16)], (8,))[0]
    k = 8 * 16 + 8  # anchor [32, 32, 96, 96]
    gts = torch.tensor([[50.0, 50.0, 80.0, 80.0], [34.0, 34.0, 94.0, 94.0]])
    res = atss_assign(anchors, [anchors.shape[0]], gts, torch.tensor([0, 1]))
    assert res.assigned_gt_inds[k] == 2


# --------------------------------------------------------------------- edge cases


def test_no_gt_all_negative():
    anchors, num_level = flat_anchors(96, 64)
    res = atss_assign(anchors, num_level, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    n = anchors.shape[0]
    assert res.num_gts == 0
    assert torch.equal(res.assigned_gt_inds, torch.zeros(n, dtype=torch.long))
    assert torch.equal(res.max_overlaps, torch.zeros(n))
    assert torch.equal(res.assigned_labels, torch.full((n,), -1))
    assert res.num_pos == 0 and res.neg_mask.all()


def test_no_anchor_empty_result():
    res = atss_assign(torch.zeros(0, 4), [0, 0], torch.tensor([[0.0, 0.0, 5.0, 5.0]]), torch.tensor([1]))
    assert res.assigned_gt_inds.shape == (0,) and res.max_overlaps.shape == (0,)
    assert res.assigned_labels.shape == (0,)


def test_single_candidate_std_nan_no_positive():
    anchors = P.grid_anchors([(1, 1)], (8,))[0]
    gts = torch.tensor([[-10.0, -10.0, 10.0, 10.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = atss_assign(anchors, [1], gts, torch.tensor([0]))
    assert res.assigned_gt_inds.tolist() == [0]


def test_empty_levels_are_skipped():
    rng = random.Random(5)
    anchors, num_level = flat_anchors(128, 160)
    # drop the two coarsest levels entirely, keep the counts consistent
    keep = sum(num_level[:3])
    gts = random_gts(rng, 128, 160, 5)
    labels = torch.arange(5)
    res = atss_assign(anchors[:keep], num_level[:3] + [0, 0], gts, labels)
    ref, ambiguous = reference_atss(anchors[:keep], num_level[:3] + [0, 0], gts)
    assert not ambiguous and res.assigned_gt_inds.tolist() == ref


def test_crowd_boxes_ignored_by_default_like_gfl_config():
    anchors, num_level = flat_anchors(128, 128)
    gts = torch.tensor([[10.3, 12.1, 60.2, 70.9]])
    crowd = torch.tensor([[64.0, 64.0, 128.0, 128.0]])
    base = atss_assign(anchors, num_level, gts, torch.tensor([0]))
    with_crowd = atss_assign(anchors, num_level, gts, torch.tensor([0]), gt_ignore_boxes=crowd)
    assert torch.equal(base.assigned_gt_inds, with_crowd.assigned_gt_inds)
    assert (with_crowd.assigned_gt_inds >= 0).all()


def test_ignore_iof_thr_marks_priors_like_mmdet():
    anchors, num_level = flat_anchors(128, 128)
    gts = torch.tensor([[10.3, 12.1, 60.2, 70.9]])
    crowd = torch.tensor([[64.0, 64.0, 200.0, 200.0]])
    res = atss_assign(anchors, num_level, gts, torch.tensor([0]), gt_ignore_boxes=crowd,
                      ignore_iof_thr=0.5)
    iof = box_overlaps(anchors, crowd, mode="iof")[:, 0]
    ign = iof > 0.5
    assert ign.any()
    inds = res.assigned_gt_inds
    # ignored priors are -1 unless they became positive; the rest are 0 or positive
    assert ((inds[ign] == -1) | (inds[ign] > 0)).all()
    assert (inds[~ign] >= 0).all()
    assert res.neg_mask.sum() + res.pos_mask.sum() + (inds == -1).sum() == anchors.shape[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype):
    anchors, num_level = flat_anchors(96, 96)
    gts = torch.tensor([[10.3, 12.1, 60.2, 70.9]], dtype=dtype)
    res = atss_assign(anchors.to(dtype), num_level, gts, torch.tensor([4]))
    assert res.max_overlaps.dtype == dtype and res.num_pos > 0


# ------------------------------------------------------------------------ max-IoU


def reference_max_iou(priors: torch.Tensor, gts: torch.Tensor, cfg) -> list[int]:
    """mmdet MaxIoUAssigner's steps written out with loops (IoUs from the same function)."""
    n, g = len(priors), len(gts)
    if g == 0 or n == 0:
        return [0] * n
    ious = box_overlaps(gts, priors).tolist()  # (G, N)
    assigned = [-1] * n
    for j in range(n):
        column = [ious[i][j] for i in range(g)]
        best = max(column)
        if 0 <= best < cfg.neg_iou_thr:
            assigned[j] = 0
        if best >= cfg.pos_iou_thr:
            assigned[j] = column.index(best) + 1
    for i in range(g):  # GT by GT: a later GT overwrites an earlier one
        best = max(ious[i])
        if best >= cfg.min_pos_iou:
            if cfg.gt_max_assign_all:
                for j in range(n):
                    if ious[i][j] == best:
                        assigned[j] = i + 1
            else:
                assigned[ious[i].index(best)] = i + 1
    return assigned


def test_max_iou_matches_the_sequential_reference_with_ties_and_valid_priors():
    """Boxes on a coarse grid, so that equal IoUs (the ties of steps 3 and 4) are frequent."""
    from gfl_repro.models.assigners.max_iou import RETINANET, SSD, MaxIoUConfig, max_iou_assign
    g = torch.Generator().manual_seed(0)

    def boxes(k):
        xy = torch.randint(0, 8, (k, 2), generator=g).float() * 4
        return torch.cat([xy, xy + torch.randint(1, 5, (k, 2), generator=g).float() * 4], 1)

    configs = (RETINANET, SSD, MaxIoUConfig(0.5, 0.4, 0.3, True), MaxIoUConfig(0.5, 0.4, 0.3, False))
    ties = 0
    for _ in range(400):
        priors, gts = boxes(int(torch.randint(1, 50, (1,), generator=g))), boxes(int(torch.randint(0, 6, (1,), generator=g)))
        valid = torch.rand(len(priors), generator=g) > 0.3
        if len(gts):
            ious = box_overlaps(gts, priors)
            ties += int(((ious == ious.max(dim=1, keepdim=True).values).sum(1) > 1).sum())
        for cfg in configs:
            assert max_iou_assign(priors, gts, cfg).tolist() == reference_max_iou(priors, gts, cfg)
            # only the valid priors take part; the others stay ignored
            expected = torch.full((len(priors),), -1)
            expected[valid] = torch.tensor(reference_max_iou(priors[valid], gts, cfg), dtype=torch.long)
            assert torch.equal(max_iou_assign(priors, gts, cfg, valid=valid), expected)
    assert ties > 100
