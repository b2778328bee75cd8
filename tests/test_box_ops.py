"""Tests of gfl_repro.models.box_ops against hand-computed values."""

import math

import pytest
import torch

from gfl_repro.models.box_ops import (
    aligned_giou,
    aligned_iou,
    bbox2distance,
    box_areas,
    box_centers,
    distance2bbox,
    pairwise_iou,
)


def _random_boxes(n, gen, dtype=torch.float64, scale=50.0):
    xy = torch.rand(n, 2, generator=gen, dtype=dtype) * scale
    wh = torch.rand(n, 2, generator=gen, dtype=dtype) * scale + 0.5
    return torch.cat([xy, xy + wh], dim=1)


def test_box_centers_and_areas():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 2.0], [1.0, 3.0, 2.0, 7.0]])
    assert torch.equal(box_centers(boxes), torch.tensor([[2.0, 1.0], [1.5, 5.0]]))
    assert torch.equal(box_areas(boxes), torch.tensor([8.0, 4.0]))
    # leading batch dims are kept
    assert box_centers(boxes[None]).shape == (1, 2, 2)


def test_distance2bbox_hand_values():
    points = torch.tensor([[10.0, 20.0]])
    dist = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert torch.equal(distance2bbox(points, dist), torch.tensor([[9.0, 18.0, 13.0, 24.0]]))


def test_distance2bbox_clamps_to_image_shape():
    points = torch.tensor([[2.0, 3.0], [95.0, 45.0]])
    dist = torch.tensor([[5.0, 5.0, 1.0, 1.0], [1.0, 1.0, 10.0, 10.0]])
    # max_shape is (H, W) -> x in [0, W=100], y in [0, H=50]
    boxes = distance2bbox(points, dist, max_shape=(50, 100, 3))
    expected = torch.tensor([[0.0, 0.0, 3.0, 4.0], [94.0, 44.0, 100.0, 50.0]])
    assert torch.equal(boxes, expected)


def test_distance2bbox_batched_per_image_shapes():
    points = torch.tensor([[[5.0, 5.0]], [[5.0, 5.0]]])
    dist = torch.full((2, 1, 4), 10.0)
    boxes = distance2bbox(points, dist, max_shape=[(8, 12), (30, 6)])
    assert torch.equal(boxes[0, 0], torch.tensor([0.0, 0.0, 12.0, 8.0]))
    assert torch.equal(boxes[1, 0], torch.tensor([0.0, 0.0, 6.0, 15.0]))
    with pytest.raises(ValueError):
        distance2bbox(points[0], dist[0], max_shape=[(8, 12), (30, 6)])


def test_distance2bbox_border_keeps_gradient():
    points = torch.tensor([[5.0, 5.0]])
    dist = torch.tensor([[5.0, 1.0, 1.0, 1.0]], requires_grad=True)  # x1 exactly 0
    distance2bbox(points, dist, max_shape=(100, 100)).sum().backward()
    assert torch.equal(dist.grad, torch.tensor([[-1.0, -1.0, 1.0, 1.0]]))


def test_bbox2distance_round_trip():
    gen = torch.Generator().manual_seed(0)
    boxes = _random_boxes(200, gen)
    # points strictly inside their box
    t = torch.rand(200, 2, generator=gen, dtype=torch.float64) * 0.8 + 0.1
    points = boxes[:, :2] + t * (boxes[:, 2:] - boxes[:, :2])
    dist = bbox2distance(points, boxes)
    assert (dist > 0).all()
    torch.testing.assert_close(distance2bbox(points, dist), boxes, rtol=0, atol=1e-12)
    # and the other way round
    torch.testing.assert_close(bbox2distance(points, distance2bbox(points, dist)), dist, rtol=0, atol=1e-12)


def test_bbox2distance_clamp_like_mmdet():
    points = torch.tensor([[10.0, 10.0]])
    boxes = torch.tensor([[-20.0, 9.0, 11.0, 12.0]])  # left = 30, top = 1, right = 1, bottom = 2
    raw = bbox2distance(points, boxes)
    assert torch.equal(raw, torch.tensor([[30.0, 1.0, 1.0, 2.0]]))
    clamped = bbox2distance(points, boxes, max_dist=16)
    assert torch.allclose(clamped, torch.tensor([[16 - 0.1, 1.0, 1.0, 2.0]]))
    assert clamped[0, 0].item() == torch.tensor(16 - 0.1).item()
    # negative distances (point outside the box) are clamped at 0 only when max_dist is given
    outside = bbox2distance(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0, 2.0, 2.0]]))
    assert (outside[0, :2] < 0).all()
    assert (bbox2distance(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0, 2.0, 2.0]]), 16) >= 0).all()


def test_aligned_iou_and_giou_hand_values():
    a = torch.tensor(
        [
            [0.0, 0.0, 2.0, 2.0],  # identical
            [0.0, 0.0, 2.0, 2.0],  # partial overlap
            [0.0, 0.0, 2.0, 2.0],  # disjoint, side by side
            [0.0, 0.0, 1.0, 1.0],  # disjoint, diagonal
            [0.0, 0.0, 4.0, 4.0],  # contains b
        ],
        dtype=torch.float64,
    )
    b = torch.tensor(
        [
            [0.0, 0.0, 2.0, 2.0],
            [1.0, 1.0, 3.0, 3.0],
            [3.0, 0.0, 5.0, 2.0],
            [2.0, 2.0, 3.0, 3.0],
            [1.0, 1.0, 2.0, 2.0],
        ],
        dtype=torch.float64,
    )
    iou = aligned_iou(a, b)
    giou = aligned_giou(a, b)
    exp_iou = torch.tensor([1.0, 1 / 7, 0.0, 0.0, 1 / 16], dtype=torch.float64)
    # GIoU = IoU - (C - U) / C
    exp_giou = torch.tensor(
        [1.0, 1 / 7 - (9 - 7) / 9, 0.0 - (10 - 8) / 10, 0.0 - (9 - 2) / 9, 1 / 16],
        dtype=torch.float64,
    )
    torch.testing.assert_close(iou, exp_iou, rtol=0, atol=1e-12)
    torch.testing.assert_close(giou, exp_giou, rtol=0, atol=1e-12)
    assert math.isclose(giou[2].item(), -0.2, abs_tol=1e-12)
    assert math.isclose(giou[3].item(), -7 / 9, abs_tol=1e-12)


def test_aligned_iou_symmetric_and_bounded():
    gen = torch.Generator().manual_seed(1)
    a, b = _random_boxes(500, gen), _random_boxes(500, gen)
    iou, giou = aligned_iou(a, b), aligned_giou(a, b)
    torch.testing.assert_close(iou, aligned_iou(b, a))
    torch.testing.assert_close(giou, aligned_giou(b, a))
    assert ((iou >= 0) & (iou <= 1)).all()
    assert ((giou >= -1) & (giou <= iou + 1e-12)).all()


def test_eps_floor_gives_zero_not_nan_for_degenerate_boxes():
    # two zero-area boxes: mmdet floors union and enclosing area at eps -> 0, not 0/0
    a = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert aligned_iou(a, b).item() == 0.0
    assert aligned_giou(a, b).item() == 0.0
    assert pairwise_iou(a, b).item() == 0.0
    # tiny union: eps enters as max(union, eps), not union + eps
    c = torch.tensor([[0.0, 0.0, 1e-4, 1e-4]], dtype=torch.float64)  # area 1e-8 < eps
    assert math.isclose(aligned_iou(c, c).item(), 1e-8 / 1e-6, rel_tol=1e-9)
    d = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    assert aligned_iou(d, d).item() == 1.0  # union 1 >> eps: exactly 1


def test_aligned_empty_and_shape_checks():
    empty = torch.zeros(0, 4)
    assert aligned_iou(empty, empty).shape == (0,)
    assert aligned_giou(empty, empty).shape == (0,)
    assert aligned_iou(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)).shape == (2, 3)
    with pytest.raises(ValueError):
        aligned_iou(torch.zeros(2, 4), torch.zeros(3, 4))


def test_pairwise_iou_matches_aligned_and_torchvision():
    gen = torch.Generator().manual_seed(2)
    a, b = _random_boxes(30, gen, dtype=torch.float32), _random_boxes(40, gen, dtype=torch.float32)
    m = pairwise_iou(a, b)
    assert m.shape == (30, 40)
    # the diagonal of a square pairwise matrix equals the aligned IoU
    torch.testing.assert_close(torch.diagonal(pairwise_iou(a, b[:30])), aligned_iou(a, b[:30]))
    try:
        from torchvision.ops import box_iou
    except Exception:  # pragma: no cover - torchvision optional for this check
        pytest.skip("torchvision.ops unavailable")
    torch.testing.assert_close(m, box_iou(a, b), rtol=1e-6, atol=1e-7)


def test_pairwise_iou_empty_and_batched():
    assert pairwise_iou(torch.zeros(0, 4), torch.ones(3, 4)).shape == (0, 3)
    assert pairwise_iou(torch.ones(3, 4), torch.zeros(0, 4)).shape == (3, 0)
    gen = torch.Generator().manual_seed(3)
    a = torch.stack([_random_boxes(5, gen), _random_boxes(5, gen)])
    b = torch.stack([_random_boxes(7, gen), _random_boxes(7, gen)])
    batched = pairwise_iou(a, b)
    assert batched.shape == (2, 5, 7)
    torch.testing.assert_close(batched[1], pairwise_iou(a[1], b[1]))
