"""COCO evaluation on tiny hand-made ground truth, result conversion, speed measurement."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from gfl_repro.engines.evaluation import coco_evaluate, detections_to_coco, evaluate, measure_speed
from gfl_repro.store import COCO_STATS as STAT_NAMES

LABEL_TO_CAT = [1, 3, 7]

# image id -> list of (category id, xywh)
GT = {
    1: [(1, [10.0, 10.0, 20.0, 20.0]), (3, [50.0, 50.0, 60.0, 40.0])],  # small, medium
    2: [(7, [0.0, 0.0, 150.0, 120.0]), (1, [100.0, 150.0, 30.0, 30.0])],  # large, small
    5: [],  # an image without objects
}
SIZES = {1: (200, 200), 2: (300, 300), 5: (100, 100)}


def make_coco(gt: dict, sizes: dict, cat_ids=(1, 3, 7)) -> COCO:
    images = [{"id": i, "width": w, "height": h, "file_name": f"{i}.jpg"} for i, (h, w) in sizes.items()]
    anns = []
    for image_id, objects in gt.items():
        for cat, (x, y, w, h) in objects:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def perfect_detections(gt: dict) -> tuple[list[int], list[dict]]:
    ids, dets = [], []
    for image_id, objects in gt.items():
        boxes = [[x, y, x + w, y + h] for _, (x, y, w, h) in objects]
        labels = [LABEL_TO_CAT.index(cat) for cat, _ in objects]
        ids.append(image_id)
        dets.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                     "scores": torch.full((len(objects),), 0.9),
                     "labels": torch.tensor(labels, dtype=torch.long)})
    return ids, dets


@pytest.fixture
def coco_gt():
    return make_coco(GT, SIZES)


# --------------------------------------------------------------------------- conversion
def test_detections_to_coco_xywh_and_category_ids():
    det = {"boxes": torch.tensor([[1.1, 2.2, 3.3, 4.4], [0.0, 0.0, 10.0, 5.0]]),
           "scores": torch.tensor([0.75, 0.3]),
           "labels": torch.tensor([2, 0])}
    out = detections_to_coco([42], [det], LABEL_TO_CAT)
    f = [float(np.float32(v)) for v in (1.1, 2.2, 3.3, 4.4)]
    assert out[0] == {"image_id": 42, "category_id": 7,
                      "bbox": [f[0], f[1], f[2] - f[0], f[3] - f[1]],
                      "score": float(np.float32(0.75))}
    assert out[1] == {"image_id": 42, "category_id": 1, "bbox": [0.0, 0.0, 10.0, 5.0],
                      "score": float(np.float32(0.3))}
    json.dumps(out)  # plain Python types only
    assert all(type(v) is float for v in out[0]["bbox"]) and type(out[0]["image_id"]) is int


def test_detections_to_coco_accepts_numpy_and_empty():
    det = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0), "labels": np.zeros(0, int)}
    assert detections_to_coco([1], [det], LABEL_TO_CAT) == []


# --------------------------------------------------------------------------- COCOeval
def test_perfect_detections_give_ap_one(coco_gt, capsys):
    ids, dets = perfect_detections(GT)
    results = detections_to_coco(ids, dets, LABEL_TO_CAT)
    before = json.dumps(results)
    stats = coco_evaluate(coco_gt, results, ids)
    assert len(stats) == 12 == len(STAT_NAMES)
    assert stats == pytest.approx([1.0] * 12)
    assert json.dumps(results) == before  # loadRes got copies
    assert capsys.readouterr().out == ""  # pycocotools silenced


def test_verbose_prints_summary(coco_gt, capsys):
    ids, dets = perfect_detections(GT)
    coco_evaluate(coco_gt, detections_to_coco(ids, dets, LABEL_TO_CAT), ids, verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_no_detections_give_zero(coco_gt, capsys):
    stats = coco_evaluate(coco_gt, [], [1, 2, 5])
    assert stats == [0.0] * 12
    assert capsys.readouterr().out == ""


def test_size_range_without_gt_is_minus_one(coco_gt):
    ids, dets = perfect_detections({1: GT[1]})
    stats = coco_evaluate(coco_gt, detections_to_coco(ids, dets, LABEL_TO_CAT), image_ids=[1])
    assert stats[0] == pytest.approx(1.0)
    assert stats[STAT_NAMES.index("APl")] == -1.0
    assert coco_evaluate(coco_gt, [], image_ids=[1])[STAT_NAMES.index("APl")] == -1.0


def test_shifted_box_known_ap():
    # GT 100x100 (large); detection shifted 16 px: IoU = 84 / 116 = 0.724 -> TP at IoU
    # thresholds 0.50..0.70 (5 of 10), FP at 0.75..0.95.
    gt = {1: [(1, [0.0, 0.0, 100.0, 100.0])]}
    coco = make_coco(gt, {1: (200, 200)}, cat_ids=(1,))
    det = {"boxes": torch.tensor([[16.0, 0.0, 116.0, 100.0]]), "scores": torch.tensor([0.8]),
           "labels": torch.tensor([0])}
    stats = coco_evaluate(coco, detections_to_coco([1], [det], [1]), [1])
    expected = [0.5, 1.0, 0.0, -1.0, -1.0, 0.5, 0.5, 0.5, 0.5, -1.0, -1.0, 0.5]
    assert stats == pytest.approx(expected)


def test_false_positive_above_true_positive_halves_precision():
    # a higher-scored FP of the same class ahead of the TP: precision 0.5 at recall 1
    gt = {1: [(1, [0.0, 0.0, 100.0, 100.0])]}
    coco = make_coco(gt, {1: (300, 300)}, cat_ids=(1,))
    det = {"boxes": torch.tensor([[200.0, 200.0, 250.0, 250.0], [0.0, 0.0, 100.0, 100.0]]),
           "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 0])}
    stats = coco_evaluate(coco, detections_to_coco([1], [det], [1]), [1])
    assert stats[0] == pytest.approx(0.5)  # envelope: precision 0.5 at every recall threshold
    assert stats[STAT_NAMES.index("AR1")] == 0.0  # the top-1 detection is the FP
    assert stats[STAT_NAMES.index("AR100")] == 1.0


def test_mmdet_max_dets(coco_gt):
    ids, dets = perfect_detections(GT)
    stats = coco_evaluate(coco_gt, detections_to_coco(ids, dets, LABEL_TO_CAT), ids,
                          max_dets=(100, 300, 1000))
    assert stats == pytest.approx([1.0] * 12)


# --------------------------------------------------------------------------- evaluate / speed
class OracleModel(torch.nn.Module):
    """Returns the GT of each image (original coordinates); records its mode at predict."""

    def __init__(self, gt: dict):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.gt = gt
        self.modes, self.grad_enabled = [], []

    def predict(self, images, targets):
        self.modes.append(self.training)
        self.grad_enabled.append(torch.is_grad_enabled())
        self.conv(images)
        _, dets = perfect_detections({t["image_id"]: self.gt[t["image_id"]] for t in targets})
        return dets


def make_loader(image_ids, batch_size):
    batches = []
    for start in range(0, len(image_ids), batch_size):
        ids = image_ids[start:start + batch_size]
        targets = [{"image_id": i, "ori_shape": SIZES[i], "img_shape": (32, 32), "scale_factor": (1.0, 1.0)}
                   for i in ids]
        batches.append((torch.zeros(len(ids), 3, 32, 32), targets))
    return batches


def test_evaluate_runs_model_and_restores_mode(coco_gt, tmp_path):
    model = OracleModel(GT)
    model.train()
    out_file = tmp_path / "res" / "bbox.json"
    stats = evaluate(model, make_loader([1, 2, 5], 2), coco_gt, LABEL_TO_CAT, "cpu", progress=False,
                     results_file=out_file)
    assert stats == pytest.approx([1.0] * 12)
    assert model.modes == [False, False] and model.grad_enabled == [False, False]
    assert model.training
    saved = json.loads(out_file.read_text())
    assert len(saved) == 4 and {r["category_id"] for r in saved} == {1, 3, 7}


def test_evaluate_only_loader_images(coco_gt):
    # images the loader never yielded are not evaluated (image 2's GT would be missed)
    stats = evaluate(OracleModel(GT), make_loader([1], 1), coco_gt, LABEL_TO_CAT, "cpu", progress=False)
    assert stats[0] == pytest.approx(1.0)


def test_measure_speed_positive():
    model = OracleModel(GT)
    batches = make_loader([1, 2, 5], 1)
    out = measure_speed(model, batches, "cpu", warmup=2, iters=5)
    assert out["ms_per_img"] > 0 and out["fps"] > 0
    assert out["fps"] == pytest.approx(1000.0 / out["ms_per_img"])
    assert isinstance(out["device_name"], str) and out["device_name"]
    assert len(model.modes) == 7 and not any(model.modes)


def test_measure_speed_rejects_batches():
    with pytest.raises(ValueError):
        measure_speed(OracleModel(GT), make_loader([1, 2], 2), "cpu")
