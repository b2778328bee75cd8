"""Tests for the synthetic COCO generator, the mmdet-equivalent transforms and the dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import unwritable
from gfl_repro.datasets import synthetic
from gfl_repro.datasets.coco import (CocoDetection, EpochSampler, build_loader, collate,
                                     load_coco, parse_annotations)
from gfl_repro.datasets.transforms import (MEAN_RGB, STD_RGB, RandomFlip, RandomResize, Resize,
                                           flip_boxes, hflip_image,
                                           keep_ratio_factor, normalize_image, rescale_size,
                                           resize_image, sample_random_scale)

NUM_TRAIN, NUM_VAL = 12, 6


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return synthetic.generate(tmp_path_factory.mktemp("syn") / "ds", num_train=NUM_TRAIN,
                              num_val=NUM_VAL, seed=0, progress=False)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _coco(dataset_dir: Path, split: str):
    return load_coco(dataset_dir / "annotations" / f"instances_{split}.json")


# ------------------------------------------------------------------------------------------
# Generator
# ------------------------------------------------------------------------------------------


def test_generate_is_deterministic(dataset_dir, tmp_path):
    again = synthetic.generate(tmp_path / "again", num_train=NUM_TRAIN, num_val=NUM_VAL, seed=0,
                               progress=False)
    assert _tree_bytes(dataset_dir) == _tree_bytes(again)


def test_images_do_not_depend_on_set_size_or_order():
    a, _ = synthetic.render_image(0, "train", 7)
    for i in range(3):  # other images rendered in between must not matter
        synthetic.render_image(0, "train", i)
    b, _ = synthetic.render_image(0, "train", 7)
    c, _ = synthetic.render_image(1, "train", 7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_layout_and_meta(dataset_dir):
    assert len(list((dataset_dir / "train").glob("*.png"))) == NUM_TRAIN
    assert len(list((dataset_dir / "val").glob("*.png"))) == NUM_VAL
    meta = json.loads((dataset_dir / "meta.json").read_text())
    assert meta["params"]["num_train"] == NUM_TRAIN
    assert meta["params"]["image_size"] == list(synthetic.DEFAULT_IMAGE_SIZE)
    assert not list(dataset_dir.parent.glob(".*tmp*"))  # no temp dir left behind


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2
@pytest.mark.parametrize("split,num", [("train", NUM_TRAIN), ("val", NUM_VAL)])
def test_coco_json_is_valid_and_covers_cases(dataset_dir, split, num):
    coco = _coco(dataset_dir, split)
    assert len(coco.imgs) == num
    cat_ids = sorted(coco.getCatIds())
    assert cat_ids != list(range(1, len(cat_ids) + 1)), "category ids must be non-contiguous"
    assert 5 <= len(cat_ids) <= 6
    anns = list(coco.anns.values())
    assert len({a["id"] for a in anns}) == len(anns)
    buckets = set()
    for a in anns:
        img = coco.imgs[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert a["category_id"] in coco.cats
        assert 0 <= x and 0 <= y and x + w <= img["width"] + 1e-6 and y + h <= img["height"] + 1e-6
        assert w >= 1 and h >= 1 and a["area"] > 0
        assert a["area"] == coco.annToMask(a).sum()  # RLE segmentation is consistent
        if not a["iscrowd"]:
            buckets.add(synthetic._area_bucket(a["area"]))
    assert buckets == {"small", "medium", "large"}
    assert any(a["iscrowd"] for a in anns)
    assert len(set(coco.imgs) - {a["image_id"] for a in anns}) >= 1  # empty images
    w, h = synthetic.DEFAULT_IMAGE_SIZE
    assert all((i["width"], i["height"]) == (w, h) for i in coco.imgs.values())


def test_ambiguity_effects_and_occlusion_recorded(dataset_dir):
    anns = list(_coco(dataset_dir, "train").anns.values())
    keys = set().union(*(a["attributes"] for a in anns))
    assert {"blur_sigma", "shadow_offset", "contrast", "occluded_fraction"} <= keys
    assert any(a["attributes"]["occluded_fraction"] > 0.05 for a in anns)
    assert all(a["attributes"]["occluded_fraction"] <= 0.5 + 1e-6 for a in anns)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_save = synthetic._save_png

    def failing_save(img, path):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        real_save(img, path)

    monkeypatch.setattr(synthetic, "_save_png", failing_save)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate(tmp_path / "ds", num_train=4, num_val=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_generate_refuses_to_clobber(dataset_dir):
    with pytest.raises(FileExistsError):
        synthetic.generate(dataset_dir, num_train=1, num_val=1, progress=False)


def test_ensure_synthetic_generates_once(tmp_path, monkeypatch):
    params = dict(num_train=2, num_val=1, seed=3, progress=False)
    first = synthetic.ensure_synthetic(tmp_path, **params)
    assert synthetic.is_complete(first)

    def boom(*a, **k):
        raise AssertionError("must reuse the cache")

    monkeypatch.setattr(synthetic, "generate", boom)
    assert synthetic.ensure_synthetic(tmp_path, **params) == first
    assert first.name == f"synthetic-{synthetic.cache_key(num_train=2, num_val=1, seed=3)}"
    assert synthetic.cache_key(num_train=2, num_val=1, seed=4) != synthetic.cache_key(
        num_train=2, num_val=1, seed=3)


def _damage_entry(entry: Path, how: str) -> None:
    if how == "no meta.json":
        (entry / "meta.json").unlink()
    elif how == "truncated json":
        path = entry / "annotations" / "instances_train.json"
        path.write_bytes(path.read_bytes()[:100])
    elif how == "missing image":
        (entry / "val" / "000000000001.png").unlink()
    elif how == "empty image":
        (entry / "train" / "000000000002.png").write_bytes(b"")
    elif how == "meta.json not json":
        (entry / "meta.json").write_text("{")
    elif how == "entry is a file":
        shutil.rmtree(entry)
        entry.write_text("oops")


@pytest.mark.parametrize("how", ["no meta.json", "truncated json", "missing image", "empty image",
                                 "meta.json not json", "entry is a file"])
def test_a_damaged_cache_entry_is_generated_again(tmp_path, how):
    params = dict(num_train=3, num_val=2, seed=0, progress=False)
    entry = synthetic.ensure_synthetic(tmp_path / "cache", **params)
    intact = _tree_bytes(entry)
    _damage_entry(entry, how)
    with pytest.warns(UserWarning, match="generating it again") as caught:
        again = synthetic.ensure_synthetic(tmp_path / "cache", **params)
    assert again == entry and _tree_bytes(entry) == intact
    assert all("overwrite" not in str(w.message) for w in caught)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [entry.name]  # the damaged copy is gone


def test_a_copy_without_content_hash_is_checked_once_and_adopted(tmp_path, monkeypatch):
    entry = synthetic.ensure_synthetic(tmp_path, num_train=2, num_val=2, seed=0, progress=False)
    meta = json.loads((entry / "meta.json").read_text())
    recorded = meta.pop("content_sha256")
    (entry / "meta.json").write_text(json.dumps(meta))  # as older versions wrote it
    monkeypatch.setattr(synthetic, "generate", lambda *a, **k: pytest.fail("an intact copy must be kept"))
    assert synthetic.ensure_synthetic(tmp_path, num_train=2, num_val=2, seed=0, progress=False) == entry
    assert json.loads((entry / "meta.json").read_text())["content_sha256"] == recorded


def test_unusable_cache_locations_are_one_line(tmp_path):
    from gfl_repro.datasets.errors import DataError

    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="synthetic data cache .*file is a file, not a directory"):
        synthetic.ensure_synthetic(tmp_path / "file", num_train=1, num_val=1, progress=False)
    with pytest.raises(DataError, match="cannot write the synthetic data cache .*GFL_REPRO_CACHE"):
        synthetic.ensure_synthetic(unwritable(tmp_path), num_train=1, num_val=1, progress=False)
    with pytest.raises(FileExistsError) as err:
        synthetic.generate(tmp_path / "file", num_train=1, num_val=1, progress=False)
    assert "overwrite" not in str(err.value)


# ------------------------------------------------------------------------------------------
# Transforms (hand-computed cases following mmcv's rescale_size / mmdet's Resize)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size_wh,scale,expected", [
    ((640, 480), (1333, 800), (1067, 800)),   # factor 800/480; 640*1.6667 = 1066.67 -> 1067
    ((480, 640), (1333, 800), (800, 1067)),   # portrait: same factor
    ((1000, 200), (1333, 800), (1333, 267)),  # long edge binds: 200*1.333 = 266.6 -> 267
    ((500, 375), (800, 1333), (1067, 800)),   # scale order does not matter (max/min)
    ((192, 160), (1333, 800), (960, 800)),    # factor 5
    ((192, 160), (320, 256), (307, 256)),     # factor 1.6: 192*1.6 = 307.2 -> 307
    ((101, 99), 0.5, (51, 50)),               # numeric factor: int(50.5+0.5), int(49.5+0.5)
])
def test_rescale_size_matches_mmcv(size_wh, scale, expected):
    assert rescale_size(size_wh, scale) == expected


def test_keep_ratio_factor():
    assert keep_ratio_factor((640, 480), (1333, 800)) == pytest.approx(800 / 480)
    assert keep_ratio_factor((1000, 200), (1333, 800)) == pytest.approx(1.333)


def test_resize_sets_realised_scale_factor_and_clips_boxes():
    img = np.zeros((480, 640, 3), np.uint8)
    sample = {"img": img, "boxes": np.array([[10, 20, 640, 480], [600, 0, 700, 10]], np.float32),
              "ignore_boxes": np.array([[0, 0, 64, 48]], np.float32)}
    out = Resize((1333, 800))(sample)
    assert out["img"].shape == (800, 1067, 3)
    assert out["img_shape"] == (800, 1067)
    w_scale, h_scale = out["scale_factor"]
    assert w_scale == 1067 / 640 and h_scale == 800 / 480  # realised ratios, not the factor
    np.testing.assert_allclose(out["boxes"][0], [10 * w_scale, 20 * h_scale, 1067, 800],
                               rtol=1e-6)
    assert out["boxes"][1, 2] == 1067  # 700 * w_scale clipped to the image width
    np.testing.assert_allclose(out["ignore_boxes"][0], [0, 0, 64 * w_scale, 48 * h_scale],
                               rtol=1e-6)


def test_resize_image_bilinear_values():
    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    assert np.array_equal(resize_image(img, (6, 4)), img)
    up = resize_image(np.array([[[0], [100]]], np.uint8).repeat(2, 0), (4, 2))
    # half-pixel centres: sample x = 0.25 * (2j + 1) - 0.5 -> 0, 25, 75, 100
    assert up[0, :, 0].tolist() == [0, 25, 75, 100]


def test_resize_image_is_the_fixed_point_bilinear_formula():
    """Every output pixel is cv2's 11-bit fixed-point bilinear sum, rounded half up (>> 22),
    written here pixel by pixel in int64, for up- and downscales, colour and grey images."""
    from gfl_repro.datasets.transforms import _linear_taps
    rng = np.random.default_rng(3)
    for shape, (new_w, new_h) in [((40, 48, 3), (72, 72)), ((40, 48, 3), (38, 32)),
                                  ((7, 5, 3), (3, 11)), ((5, 4), (9, 2)), ((1, 9, 3), (4, 1))]:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        src = img.reshape(shape[0], shape[1], -1).astype(np.int64)
        x0, x1, wx = _linear_taps(shape[1], new_w)
        y0, y1, wy = _linear_taps(shape[0], new_h)
        expected = np.empty((new_h, new_w, src.shape[2]), np.int64)
        for i in range(new_h):
            for j in range(new_w):
                top = src[y0[i], x0[j]] * wx[j] + src[y0[i], x1[j]] * (2048 - wx[j])
                bottom = src[y1[i], x0[j]] * wx[j] + src[y1[i], x1[j]] * (2048 - wx[j])
                expected[i, j] = (top * wy[i] + bottom * (2048 - wy[i]) + (1 << 21)) >> 22
        out = resize_image(img, (new_w, new_h))
        assert out.dtype == np.uint8 and out.shape == (new_h, new_w, *shape[2:])
        assert np.array_equal(out.reshape(new_h, new_w, -1), expected)


def test_random_resize_samples_like_mmcv():
    rng = np.random.default_rng(0)
    scales = [sample_random_scale([(1333, 480), (1333, 800)], rng) for _ in range(3000)]
    longs = {s[0] for s in scales}
    shorts = [s[1] for s in scales]
    assert longs == {1333}
    assert min(shorts) == 480 and max(shorts) == 800  # both ends inclusive
    # two integer draws per call, in mmcv's order (first edge, then second)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert sample_random_scale([(1333, 480), (1333, 800)], rng_a) == (
        int(rng_b.integers(1333, 1334)), int(rng_b.integers(480, 801)))


def test_random_resize_keeps_short_side_in_range():
    rng = np.random.default_rng(1)
    t = RandomResize([(1333, 480), (1333, 800)])
    for _ in range(20):
        out = t({"img": np.zeros((160, 192, 3), np.uint8),
                 "boxes": np.zeros((0, 4), np.float32)}, rng)
        h, w = out["img_shape"]
        assert 480 <= min(h, w) <= 800 and max(h, w) <= 1333


def test_flip_boxes_mmdet_convention():
    boxes = np.array([[10, 20, 30, 40], [0, 0, 100, 50]], np.float32)
    flipped = flip_boxes(boxes, (50, 100))
    np.testing.assert_array_equal(flipped, [[70, 20, 90, 40], [0, 0, 100, 50]])
    np.testing.assert_array_equal(flip_boxes(flipped, (50, 100)), boxes)


def test_random_flip_moves_pixels_with_boxes():
    img = np.zeros((10, 20, 3), np.uint8)
    img[2:4, 1:5] = 255  # object occupying x in [1, 5)
    sample = {"img": img, "boxes": np.array([[1, 2, 5, 4]], np.float32),
              "ignore_boxes": np.zeros((0, 4), np.float32)}
    out = RandomFlip(prob=1.0)(sample, np.random.default_rng(0))
    assert out["flip"]
    x1, y1, x2, y2 = out["boxes"][0].astype(int)
    assert (x1, x2) == (15, 19)
    assert out["img"][2:4, x1:x2].min() == 255 and out["img"].sum() == 255 * 3 * 8
    assert np.array_equal(hflip_image(out["img"]), img)
    assert not RandomFlip(prob=0.0)({"img": img}, np.random.default_rng(0))["flip"]


def test_random_flip_probability():
    rng = np.random.default_rng(0)
    flips = [RandomFlip(0.5)({"img": np.zeros((2, 2, 3), np.uint8)}, rng)["flip"]
             for _ in range(2000)]
    assert 0.45 < np.mean(flips) < 0.55


def test_normalize_mean_std():
    img = np.empty((2, 3, 3), np.uint8)
    img[...] = [124, 116, 104]
    out = normalize_image(img)
    assert out.shape == (3, 2, 3) and out.dtype == torch.float32
    expected = [(v - m) / s for v, m, s in zip([124, 116, 104], MEAN_RGB, STD_RGB)]
    np.testing.assert_allclose(out[:, 0, 0].numpy(), expected, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------
# Dataset, collate, loader
# ------------------------------------------------------------------------------------------


def _split_paths(root: Path, split: str):
    return root / split, root / "annotations" / f"instances_{split}.json"


def test_label_mapping_is_contiguous_and_invertible(dataset_dir):
    ds = CocoDetection(*_split_paths(dataset_dir, "val"), train=False, scale=(1333, 800))
    assert ds.cat_ids == [c.id for c in synthetic.CATEGORIES]
    assert list(ds.label2cat) == list(range(ds.num_classes))
    assert all(ds.cat2label[ds.label2cat[i]] == i for i in range(ds.num_classes))
    assert ds.classes[0] == "rectangle"
    coco = ds.coco
    for i in range(len(ds)):
        _, target = ds[i]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[target["image_id"]], iscrowd=False))
        got = sorted(ds.label2cat[int(l)] for l in target["labels"])
        assert got == sorted(a["category_id"] for a in anns)


def test_empty_images_filtered_in_train_kept_in_val(dataset_dir):
    train = CocoDetection(*_split_paths(dataset_dir, "train"), train=True, scale=(320, 256))
    val = CocoDetection(*_split_paths(dataset_dir, "val"), train=False, scale=(320, 256))
    coco_train = _coco(dataset_dir, "train")
    empty = {i for i in coco_train.imgs if not coco_train.getAnnIds(imgIds=[i])}
    assert empty and len(train) == NUM_TRAIN - len(empty)
    assert not empty & set(train.img_ids)
    assert len(val) == NUM_VAL
    empty_val = [k for k, i in enumerate(val.img_ids) if not val.coco.getAnnIds(imgIds=[i])]
    assert empty_val
    _, target = val[empty_val[0]]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_crowd_becomes_ignore_boxes(dataset_dir):
    ds = CocoDetection(*_split_paths(dataset_dir, "train"), train=True, scale=(192, 160),
                       flip_prob=0.0)
    coco = ds.coco
    crowd_imgs = {a["image_id"] for a in coco.anns.values() if a["iscrowd"]}
    assert crowd_imgs
    for k, img_id in enumerate(ds.img_ids):
        _, target = ds[k]
        crowd = coco.loadAnns(coco.getAnnIds(imgIds=[img_id], iscrowd=True))
        normal = coco.loadAnns(coco.getAnnIds(imgIds=[img_id], iscrowd=False))
        crowd = [a for a in crowd if a["iscrowd"]]
        assert target["ignore_boxes"].shape == (len(crowd), 4)
        assert target["boxes"].shape == (len(normal), 4)
        for box, a in zip(target["ignore_boxes"], crowd):  # scale 1: xyxy == xywh + corner
            x, y, w, h = a["bbox"]
            np.testing.assert_allclose(box.numpy(), [x, y, x + w, y + h], rtol=1e-6)


def test_parse_annotations_skips_like_mmdet():
    anns = [
        {"bbox": [1, 1, 10, 10], "area": 100, "category_id": 7, "iscrowd": 0},
        {"bbox": [1, 1, 0.5, 10], "area": 5, "category_id": 7, "iscrowd": 0},   # w < 1
        {"bbox": [1, 1, 10, 10], "area": 0, "category_id": 7, "iscrowd": 0},     # area 0
        {"bbox": [200, 1, 10, 10], "area": 100, "category_id": 7, "iscrowd": 0},  # outside
        {"bbox": [1, 1, 10, 10], "area": 100, "category_id": 99, "iscrowd": 0},  # unknown
        {"bbox": [1, 1, 10, 10], "area": 100, "category_id": 7, "ignore": 1},
        {"bbox": [2, 3, 4, 5], "area": 20, "category_id": 3, "iscrowd": 1},
    ]
    out = parse_annotations(anns, width=100, height=100, cat2label={3: 0, 7: 1})
    np.testing.assert_array_equal(out["boxes"], [[1, 1, 11, 11]])
    np.testing.assert_array_equal(out["labels"], [1])
    np.testing.assert_array_equal(out["ignore_boxes"], [[2, 3, 6, 8]])
    assert out["boxes"].dtype == np.float32 and out["labels"].dtype == np.int64


def test_filter_rule_matches_mmdet(tmp_path):
    """mmdet keeps an image with any annotation of a known category (even only crowd) and drops
    images smaller than min_size; test mode keeps everything."""
    from PIL import Image

    images = [{"id": 1, "file_name": "a.png", "width": 64, "height": 64},
              {"id": 2, "file_name": "a.png", "width": 64, "height": 64},
              {"id": 3, "file_name": "a.png", "width": 64, "height": 20},
              {"id": 4, "file_name": "a.png", "width": 64, "height": 64}]
    anns = [{"id": 1, "image_id": 1, "bbox": [1, 1, 10, 10], "area": 100, "category_id": 4,
             "iscrowd": 0},
            {"id": 2, "image_id": 2, "bbox": [1, 1, 10, 10], "area": 100, "category_id": 4,
             "iscrowd": 1},
            {"id": 3, "image_id": 3, "bbox": [1, 1, 10, 10], "area": 100, "category_id": 4,
             "iscrowd": 0}]
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns,
                                    "categories": [{"id": 4, "name": "x"}]}))
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    train = CocoDetection(tmp_path, ann_file, train=True, scale=(64, 64))
    test = CocoDetection(tmp_path, ann_file, train=False, scale=(64, 64))
    assert train.img_ids == [1, 2]
    assert test.img_ids == [1, 2, 3, 4]
    _, target = train[1]
    assert target["boxes"].shape == (0, 4) and target["ignore_boxes"].shape == (1, 4)


def test_item_fields_and_boxes_follow_resize_and_flip(dataset_dir):
    ds = CocoDetection(*_split_paths(dataset_dir, "train"), train=True, scale=(384, 320),
                       flip_prob=1.0)
    img, target = ds[0]
    assert img.shape == (3, 320, 384) and img.dtype == torch.float32
    assert target["ori_shape"] == (160, 192) and target["img_shape"] == (320, 384)
    assert target["scale_factor"] == (2.0, 2.0) and target["flip"]
    raw = ds.get_ann_info(0)["boxes"]
    np.testing.assert_allclose(target["boxes"].numpy(), flip_boxes(raw * 2, (320, 384)),
                               rtol=1e-6)
    assert target["labels"].dtype == torch.int64 and target["boxes"].dtype == torch.float32


def test_multiscale_dataset(dataset_dir):
    ds = CocoDetection(*_split_paths(dataset_dir, "train"), train=True, scale=(320, 256),
                       multiscale_range=(160, 256))
    assert ds.multiscale == ((320, 160), (320, 256))
    shapes = {ds[(0, e)][1]["img_shape"] for e in range(8)}
    assert len(shapes) > 1
    assert all(160 <= min(s) <= 256 and max(s) <= 320 for s in shapes)


def test_collate_pads_to_multiple_of_32():
    a = torch.ones(3, 100, 150)
    b = torch.full((3, 120, 90), 2.0)
    ta = {"image_id": 1}
    images, targets = collate([(a, ta), (b, {"image_id": 2})])
    assert images.shape == (2, 3, 128, 160)
    assert torch.equal(images[0, :, :100, :150], a) and images[0, :, 100:].abs().sum() == 0
    assert images[0, :, :, 150:].abs().sum() == 0
    assert torch.equal(images[1, :, :120, :90], b) and images[1, :, :, 90:].abs().sum() == 0
    assert targets[0]["pad_shape"] == (128, 160) and targets[1]["pad_shape"] == (128, 96)
    assert all(t["batch_input_shape"] == (128, 160) for t in targets)
    assert "pad_shape" not in ta  # inputs untouched
    images, _ = collate([(torch.zeros(3, 64, 96), {})])
    assert images.shape == (1, 3, 64, 96)  # already a multiple: no extra padding


def test_a_compiled_run_pads_every_batch_to_one_canvas_per_orientation():
    from gfl_repro.datasets.coco import fixed_canvas
    from gfl_repro.engines.native.run import compile_canvas
    from gfl_repro.specs.run_config import RunConfig

    assert fixed_canvas((1333, 800)) == (800, 1344)
    assert fixed_canvas((1333, 800), short_max=900) == (928, 1344)  # a multiscale short side above the scale's
    canvas = (800, 1344)
    sizes = [(800, 1333), (800, 1067), (750, 1333), (1333, 800), (1200, 800), (427, 640)]  # keep-ratio results
    shapes = set()
    for first in sizes:
        for second in sizes:
            a, b = torch.ones(3, *first), torch.full((3, *second), 2.0)
            images, targets = collate([(a, {}), (b, {})], canvas=canvas)
            shapes.add(tuple(images.shape[-2:]))
            assert torch.equal(images[0, :, :first[0], :first[1]], a) and torch.equal(images[1, :, :second[0], :second[1]], b)
            assert images.abs().sum() == a.sum() + b.sum()  # the rest is padding
            assert targets[0]["pad_shape"] == (-(-first[0] // 32) * 32, -(-first[1] // 32) * 32)  # mmdet's, per image
            assert targets[1]["batch_input_shape"] == tuple(images.shape[-2:])
    assert shapes == {(800, 1344), (1344, 800), (1344, 1344)}
    # larger than the canvas (never from the resize): its own size, never cropped
    assert collate([(torch.ones(3, 900, 1400), {})], canvas=canvas)[0].shape[-2:] == (928, 1408)

    paper = RunConfig(image_scale=(1333, 800))
    assert compile_canvas(paper) is None  # plain runs pad as mmdet does
    assert compile_canvas(paper.replace(compile=True)) == (800, 1344)
    assert compile_canvas(paper.replace(compile=True, multiscale=True, multiscale_short=(480, 960))) == (960, 1344)


def test_sampler_is_seeded_per_epoch():
    s = EpochSampler(10, shuffle=True, seed=3)
    e0, e1 = list(s), list(s)
    assert [k[1] for k in e0] == [0] * 10 and [k[1] for k in e1] == [1] * 10
    assert sorted(k[0] for k in e0) == list(range(10)) and e0 != e1
    s.set_epoch(0)
    assert list(s) == e0
    assert [k[0] for k in EpochSampler(5, shuffle=False)] == list(range(5))


def test_loader_deterministic_and_worker_independent(dataset_dir):
    ds = CocoDetection(*_split_paths(dataset_dir, "train"), train=True, scale=(192, 160),
                       multiscale_range=(128, 160), seed=1)

    def epochs(num_workers):
        loader = build_loader(ds, batch_size=4, shuffle=True, num_workers=num_workers, seed=7)
        return [[(imgs, [(t["image_id"], t["flip"], t["img_shape"]) for t in tg])
                 for imgs, tg in loader] for _ in range(2)]

    a, b = epochs(0), epochs(2)
    for ea, eb in zip(a, b):
        for (ia, ta), (ib, tb) in zip(ea, eb):
            assert ta == tb and torch.equal(ia, ib)
    assert [t for _, t in a[0]] != [t for _, t in a[1]]  # a new order/augmentation per epoch
    assert all(imgs.shape[-1] % 32 == 0 and imgs.shape[-2] % 32 == 0 for imgs, _ in a[0])


def test_group_by_aspect_makes_one_orientation_per_batch():
    from gfl_repro.datasets.coco import group_by_aspect

    groups = [0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 0]
    order = [3, 0, 9, 1, 7, 2, 10, 4, 8, 5, 6]
    grouped = group_by_aspect(order, groups, batch=2)
    assert sorted(grouped) == list(range(11))
    # buckets emitted as they fill: (3, 0) portrait, (9, 1), (7, 10), (2, 4), (5, 6); 8 is left
    assert grouped == [3, 0, 9, 1, 7, 10, 2, 4, 5, 6, 8]
    batches = [grouped[i:i + 2] for i in range(0, 10, 2)]
    assert all(len({groups[i] for i in b}) == 1 for b in batches)
    assert group_by_aspect(order, [1] * 11, batch=2) == order  # one orientation: the order itself


def test_sampler_groups_every_global_batch_and_resumes_inside_an_epoch():
    groups = [i % 3 == 0 for i in range(23)]  # a third portrait
    single = EpochSampler(23, shuffle=True, seed=5, global_batch=4, aspect_groups=groups)
    order = single.order(2)
    full = [order[i:i + 4] for i in range(0, len(order) - len(order) % 4, 4)]
    assert sorted(order) == list(range(23)) and order != EpochSampler(23, shuffle=True, seed=5).order(2)
    assert sum(len({groups[i] for i in b}) == 1 for b in full) >= len(full) - 1  # only the tail mixes
    ranks = [EpochSampler(23, shuffle=True, seed=5, rank=r, world_size=2, global_batch=4, aspect_groups=groups)
             for r in range(2)]
    for r, sampler in enumerate(ranks):
        mine = sampler.rank_order(2)
        assert mine[:2 * len(full)] == [i for b in full for i in b[2 * r:2 * r + 2]]
    resumed = EpochSampler(23, shuffle=True, seed=5, global_batch=4, start=3, aspect_groups=groups)
    resumed.set_epoch(2)
    assert [i for i, _ in resumed] == order[12:]


def test_the_training_loader_batches_one_orientation(tmp_path):
    """A dataset of portrait and landscape images: with grouping every batch pads to one
    orientation (what mmdet's AspectRatioBatchSampler gives), and the grouping changes nothing
    where all images share one (the synthetic smoke data)."""
    from PIL import Image

    root = tmp_path / "mixed"
    (root / "img").mkdir(parents=True)
    images, anns = [], []
    for i in range(1, 13):
        size = (96, 64) if i % 3 else (64, 96)  # every third portrait
        Image.new("RGB", size, (10 * i, 90, 40)).save(root / "img" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": size[0], "height": size[1]})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 30, 30], "area": 900.0, "iscrowd": 0})
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                               "categories": [{"id": 1, "name": "thing"}]}))
    ds = CocoDetection(root / "img", root / "ann.json", train=True, scale=(96, 64), flip_prob=0.0, min_size=8)
    assert ds.aspect_groups() == [0 if i % 3 == 0 else 1 for i in range(1, 13)]
    def padded_shapes(group: bool) -> list[tuple[int, int]]:
        return [tuple(imgs.shape[-2:]) for _ in range(3)
                for imgs, _ in build_loader(ds, batch_size=2, shuffle=True, seed=1, group_by_aspect_ratio=group)]

    # mixed batches pad a portrait and a landscape image to 96 x 96; grouped ones never mix
    assert (96, 96) in padded_shapes(False)
    grouped = padded_shapes(True)
    assert set(grouped) == {(64, 96), (96, 64)}


def test_grouping_leaves_the_smoke_order_alone(dataset_dir):
    ds = CocoDetection(*_split_paths(dataset_dir, "train"), train=True, scale=(192, 160))
    assert set(ds.aspect_groups()) == {1}
    plain = EpochSampler(len(ds), shuffle=True, seed=7, global_batch=4).order(3)
    assert EpochSampler(len(ds), shuffle=True, seed=7, global_batch=4, aspect_groups=ds.aspect_groups()).order(3) == plain
