"""SSD's training augmentation: what each transform guarantees, on small hand-made samples."""

from __future__ import annotations

import numpy as np

from gfl_repro.datasets.ssd_augment import Expand, MinIoURandomCrop, PhotoMetricDistortion, _iou
from gfl_repro.datasets.pipeline import build_pipeline
from gfl_repro.datasets.transforms import MEAN_RGB


def _sample(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 50, 40], [60, 20, 110, 70], [30, 45, 70, 78]], dtype=np.float32)
    return {"img": img, "boxes": boxes, "labels": np.array([0, 1, 2]),
            "ignore_boxes": np.zeros((0, 4), np.float32), "ori_shape": (80, 120), "flip": False}


def test_expand_pastes_the_image_and_moves_the_boxes():
    for seed in range(20):
        sample = _sample()
        original, boxes = sample["img"].copy(), sample["boxes"].copy()
        out = Expand(prob=1.0)(sample, np.random.default_rng(seed))
        h, w = out["img"].shape[:2]
        assert h >= 80 and w >= 120 and h <= 320 and w <= 480
        left, top = (out["boxes"] - boxes)[0, :2].astype(int)
        assert (out["boxes"] - boxes == [left, top, left, top]).all()
        assert (out["img"][top:top + 80, left:left + 120] == original).all()
        if left > 0:
            assert (out["img"][0, 0] == np.array(MEAN_RGB, dtype=np.uint8)).all()  # the canvas is the mean colour
    untouched = Expand(prob=0.0)(_sample(), np.random.default_rng(0))
    assert untouched["img"].shape == (80, 120, 3)


def test_min_iou_crop_keeps_centred_boxes_inside_the_patch():
    crops = 0
    for seed in range(40):
        out = MinIoURandomCrop()(_sample(), np.random.default_rng(seed))
        h, w = out["img"].shape[:2]
        assert len(out["boxes"]) == len(out["labels"]) >= 1
        assert (out["boxes"] >= 0).all() and (out["boxes"][:, [0, 2]] <= w).all() and (out["boxes"][:, [1, 3]] <= h).all()
        if (h, w) != (80, 120):
            crops += 1
            assert 0.3 * 80 - 1 <= h and 0.3 * 120 - 1 <= w and 0.5 <= h / w <= 2 + 1e-6
    assert crops > 10  # most draws crop (mode 1, no crop, is one of seven)


def test_iou_of_a_patch():
    patch = np.array([0, 0, 10, 10], dtype=np.float32)
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=np.float32)
    np.testing.assert_allclose(_iou(patch, boxes), [1.0, 1 / 3, 0.0], rtol=1e-6)


def test_photometric_distortion_changes_colours_not_geometry():
    changed = 0
    for seed in range(10):
        sample = _sample()
        before = sample["img"].astype(np.float32)
        out = PhotoMetricDistortion()(sample, np.random.default_rng(seed))
        assert out["img"].dtype == np.float32 and out["img"].shape == before.shape
        assert (out["boxes"] == _sample()["boxes"]).all()
        changed += not np.allclose(out["img"], before, atol=1.0)
    assert changed >= 5


def test_ssd_pipeline_is_deterministic_per_generator_and_ends_square():
    pipe = build_pipeline(True, (64, 64), keep_ratio=False, augment="ssd")
    a = pipe(_sample(), np.random.default_rng(7))
    b = pipe(_sample(), np.random.default_rng(7))
    assert a["img"].shape == (64, 64, 3) and np.array_equal(a["img"], b["img"]) and np.array_equal(a["boxes"], b["boxes"])
    assert (a["boxes"] >= 0).all() and (a["boxes"] <= 64).all()
