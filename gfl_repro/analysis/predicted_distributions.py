"""Fig. 3: the General distributions a trained GFL model predicts for the four sides of a box
(the softmax over the bins, Sec. 3 before Eq. 5 — not its integral), on validation images.

For each ground-truth box of the first ``max_images`` validation images (one image per batch),
the *prediction* is the prior whose decoded box overlaps the ground truth with IoU >= 0.5 and
whose score for the ground truth's class is highest (the detection that survives NMS for that
object). Its four distributions are summarised by their entropy; the ``per_kind`` instances
with the highest mean entropy (flat distributions: ambiguous boundaries) and the ``per_kind``
with the lowest (sharp ones: clear boundaries) are kept, with an image crop around each.

Table: one row per (instance, side, bin): ``instance, kind, image_id, side, bin, distance,
probability`` (``distance`` = the bin's value y_i in stride units) and, repeated on the rows
of an instance, its ``score, iou, stride, entropy`` (of that side), ``pred_distance`` (Eq. 5's
integral) and ``gt_distance`` of that side, the prior's centre ``cx, cy`` and the ground-truth
and predicted boxes ``gt_x1 … pred_y2``, all in original-image pixels except the distances,
and the crop's origin ``crop_x0, crop_y0``. Arrays: ``crop_<instance>`` (uint8 RGB).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..datasets.coco import build_loader
from ..models.box_ops import bbox2distance, pairwise_iou
from ..models.losses import bin_values, reg_distribution
from .runs import AnalysisError, DenseRows, LoadedRun, dense_rows, loader_workers, to_device
from .tables import Table

SIDES = ("left", "top", "right", "bottom")
MAX_IMAGES = 100
PER_KIND = 3
MATCH_IOU = 0.5
CROP_MARGIN = 0.5  # of the box size, on each side


@dataclass
class Instance:
    index: int  # item of the validation set
    image_id: int
    score: float
    iou: float
    stride: float
    centre: np.ndarray  # (2,) input pixels
    gt: np.ndarray  # (4,) input pixels
    pred: np.ndarray  # (4,) input pixels
    probs: np.ndarray  # (4, bins)
    scale: np.ndarray  # (4,) input -> original pixels divisor (w, h, w, h)

    @property
    def entropy(self) -> np.ndarray:
        p = np.clip(self.probs, 1e-12, 1.0)
        return -(p * np.log(p)).sum(axis=1)


def compute(run: LoadedRun, max_images: int = MAX_IMAGES, per_kind: int = PER_KIND) -> Table:
    if run.config.box != "general":
        raise AnalysisError(f"predicted_distributions needs a General-distribution box; this run's is {run.config.box!r}")
    val = run.val_set()
    loader = build_loader(val, batch_size=1, shuffle=False, num_workers=loader_workers(run.config))
    instances: list[Instance] = []
    for index, (images, targets) in zip(range(max_images), loader):
        images, targets = to_device(images, targets, run.device)
        instances += _match(run, index, dense_rows(run.model, images, targets), targets[0])
    if not instances:
        return Table(pd.DataFrame(columns=["instance", "kind", "side", "bin", "probability"]))
    order = np.argsort([inst.entropy.mean() for inst in instances], kind="stable")
    sharp = list(order[:per_kind])
    flat = [i for i in order[::-1][:per_kind] if i not in sharp]
    frames, arrays = [], {}
    for number, (kind, i) in enumerate([("flat", i) for i in flat] + [("sharp", i) for i in sharp]):
        inst = instances[i]
        crop, origin = _crop(val.load_image(inst.index), inst)
        arrays[f"crop_{number}"] = crop
        frames.append(_rows(run, number, kind, inst, origin))
    return Table(pd.concat(frames, ignore_index=True), arrays)


def _match(run: LoadedRun, index: int, rows: DenseRows, target: dict) -> list[Instance]:
    gt_boxes, gt_labels = target["boxes"], target["labels"]
    if len(gt_boxes) == 0:
        return []
    every = torch.arange(len(rows.reg), device=rows.reg.device)
    boxes = rows.decoded_boxes(run.model, every, target["img_shape"])
    overlaps = pairwise_iou(boxes, gt_boxes.to(boxes))  # (N, G)
    score = rows.cls_prob if rows.quality is None else rows.cls_prob * rows.quality[:, None]
    bins = run.model.head.box.bins
    w_scale, h_scale = target["scale_factor"]
    found = []
    for g in range(len(gt_boxes)):
        candidates = torch.nonzero(overlaps[:, g] >= MATCH_IOU).squeeze(1)
        if len(candidates) == 0:
            continue
        best = candidates[score[candidates, gt_labels[g]].argmax()]
        prior = rows.targets.priors[best]
        found.append(Instance(
            index=index, image_id=int(target["image_id"]), score=float(score[best, gt_labels[g]]),
            iou=float(overlaps[best, g]), stride=float(rows.targets.strides[best]),
            centre=run.model.head.prior_centres(prior[None])[0].cpu().numpy(),
            gt=gt_boxes[g].cpu().numpy(), pred=boxes[best].cpu().numpy(),
            probs=reg_distribution(rows.reg[best], bins).cpu().numpy(),
            scale=np.array([w_scale, h_scale, w_scale, h_scale], dtype=np.float64)))
    return found


def _crop(image: np.ndarray, inst: Instance) -> tuple[np.ndarray, tuple[int, int]]:
    """The original image around the ground truth and the prediction, with a margin."""
    boxes = np.stack([inst.gt, inst.pred]) / inst.scale
    x1, y1 = boxes[:, :2].min(axis=0)
    x2, y2 = boxes[:, 2:].max(axis=0)
    mx, my = CROP_MARGIN * (x2 - x1), CROP_MARGIN * (y2 - y1)
    h, w = image.shape[:2]
    left, top = int(max(0, np.floor(x1 - mx))), int(max(0, np.floor(y1 - my)))
    right, bottom = int(min(w, np.ceil(x2 + mx))), int(min(h, np.ceil(y2 + my)))
    return np.ascontiguousarray(image[top:bottom, left:right]), (left, top)


def _rows(run: LoadedRun, number: int, kind: str, inst: Instance, origin: tuple[int, int]) -> pd.DataFrame:
    box = run.model.head.box
    values = bin_values(box.reg_max, box.bin_width).numpy()
    pred_distance = inst.probs @ values  # Eq. 5 per side
    centre = torch.as_tensor(inst.centre)[None] / inst.stride
    gt_distance = bbox2distance(centre, torch.as_tensor(inst.gt)[None] / inst.stride)[0].numpy()
    entropy = inst.entropy
    gt, pred = inst.gt / inst.scale, inst.pred / inst.scale
    rows = []
    for s, side in enumerate(SIDES):
        for b, value in enumerate(values):
            rows.append({
                "instance": number, "kind": kind, "image_id": inst.image_id, "side": side, "bin": b,
                "distance": float(value), "probability": float(inst.probs[s, b]),
                "pred_distance": float(pred_distance[s]), "gt_distance": float(gt_distance[s]),
                "entropy": float(entropy[s]), "score": inst.score, "iou": inst.iou, "stride": inst.stride,
                "cx": float(inst.centre[0] / inst.scale[0]), "cy": float(inst.centre[1] / inst.scale[1]),
                **{f"gt_{k}": float(v) for k, v in zip(("x1", "y1", "x2", "y2"), gt)},
                **{f"pred_{k}": float(v) for k, v in zip(("x1", "y1", "x2", "y2"), pred)},
                "crop_x0": origin[0], "crop_y0": origin[1],
            })
    return pd.DataFrame(rows)


__all__ = ["SIDES", "compute"]
