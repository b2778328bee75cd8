"""Fig. 2(b): predicted classification score against predicted IoU, for randomly sampled
validation instances, background included.

An instance is a prior of a validation image whose largest class probability passes the run's
test score threshold (``score_thr``: the candidates that reach NMS). For each it records

- ``cls_score``: the largest class probability σ (the classification score);
- ``pred_iou``: the predicted IoU — the IoU branch's probability for an IoU-branch model; for
  the joint representation (QFL) the classification score itself, which *is* the IoU
  estimate by construction (Fig. 1b);
- ``true_iou``: the IoU of the decoded box with the closest ground-truth box of the image;
- ``is_background``: the head's own assignment (ATSS) calls the prior a negative.

Up to ``max_points`` instances are drawn uniformly at random (fixed seed) from the first
``max_images`` validation images, one image per batch (the anchors of each image then cover
that image padded to a multiple of 32).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..datasets.coco import build_loader
from ..models.box_ops import pairwise_iou
from .runs import AnalysisError, LoadedRun, dense_rows, loader_workers, to_device
from .tables import Table

COLUMNS = ("image_id", "pred_iou", "cls_score", "true_iou", "is_background")
MAX_IMAGES = 200
MAX_POINTS = 2000
SEED = 0


def predicted_iou(run: LoadedRun) -> str:
    """Where this run's IoU estimate comes from: "branch" or "joint" (AnalysisError otherwise)."""
    quality = run.config.quality
    if quality == "iou":
        return "branch"
    if quality == "joint":
        return "joint"
    raise AnalysisError(f"score_vs_iou needs an IoU-branch or a joint (QFL) model; this run's quality is {quality!r}")


def compute(run: LoadedRun, max_images: int = MAX_IMAGES, max_points: int = MAX_POINTS, seed: int = SEED) -> Table:
    source = predicted_iou(run)
    loader = build_loader(run.val_set(), batch_size=1, shuffle=False, num_workers=loader_workers(run.config))
    parts = []
    for _, (images, targets) in zip(range(max_images), loader):
        images, targets = to_device(images, targets, run.device)
        rows = dense_rows(run.model, images, targets)
        cls_score = rows.cls_prob.max(dim=1).values
        keep = torch.nonzero(cls_score > run.config.score_thr).squeeze(1)
        if len(keep) == 0:
            continue
        pred_iou = rows.quality[keep] if source == "branch" else cls_score[keep]
        boxes = rows.decoded_boxes(run.model, keep, targets[0]["img_shape"])
        gt = targets[0]["boxes"].to(boxes)
        true_iou = pairwise_iou(boxes, gt).max(dim=1).values if len(gt) else boxes.new_zeros(len(keep))
        background = rows.targets.labels[keep] == run.model.head.num_classes
        parts.append(pd.DataFrame({
            "image_id": targets[0]["image_id"],
            "pred_iou": pred_iou.cpu().numpy(),
            "cls_score": cls_score[keep].cpu().numpy(),
            "true_iou": true_iou.cpu().numpy(),
            "is_background": background.cpu().numpy(),
        }))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({c: [] for c in COLUMNS})
    if len(frame) > max_points:
        chosen = np.sort(np.random.default_rng(seed).choice(len(frame), size=max_points, replace=False))
        frame = frame.iloc[chosen].reset_index(drop=True)
    return Table(frame[list(COLUMNS)])


def correlation(frame: pd.DataFrame) -> float:
    """Pearson correlation of the predicted IoU and the classification score (NaN under 2 points)."""
    if len(frame) < 2:
        return float("nan")
    return float(np.corrcoef(frame["pred_iou"], frame["cls_score"])[0, 1])


__all__ = ["COLUMNS", "compute", "correlation", "predicted_iou"]
