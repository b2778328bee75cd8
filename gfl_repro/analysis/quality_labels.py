"""Fig. 9: the IoU labels and the centerness labels of every positive training sample of a
trained model (the paper: GFL, ResNet-50, on COCO).

The labels are what the head's own training code computes for its positives
(:meth:`~gfl_repro.models.heads.base.DenseHead.loss`): the head's assignment, then

- IoU label: IoU(decoded prediction, its ground truth), the target QFL and the IoU branch use;
- centerness label: the geometric centerness of the prior inside its ground truth
  (:meth:`~gfl_repro.models.heads.base.DenseHead.centerness`, ATSS: of the anchor centre).

The training set is read in order, without shuffling, with the augmentation of epoch 0, in
batches of the run's batch size. Table: one row per positive, ``stride, iou, centerness``.
"""

from __future__ import annotations

import pandas as pd
import torch

from ..datasets.coco import build_loader
from ..models.box_ops import aligned_iou
from .runs import LoadedRun, dense_rows, loader_workers, to_device
from .tables import Table

COLUMNS = ("stride", "iou", "centerness")
LOW_CENTERNESS = 0.4
HIGH_IOU = 0.4


@torch.no_grad()
def labels_of_batch(run: LoadedRun, images, targets) -> pd.DataFrame:
    """The positives' IoU and centerness labels of one batch, as the head computes them."""
    head = run.model.head
    rows = dense_rows(run.model, images, targets)
    t, pos = rows.targets, rows.pos
    frame = head.frame(t, pos)
    predicted = head.box.decode(rows.reg[pos], frame)
    iou = aligned_iou(predicted, frame.target_boxes).clamp(min=0)
    centerness = head.centerness(t, pos, frame) if len(pos) else iou.new_zeros(0)
    return pd.DataFrame({"stride": t.strides[pos].cpu().numpy(), "iou": iou.cpu().numpy(),
                         "centerness": centerness.cpu().numpy()})


def compute(run: LoadedRun, batch_size: int | None = None) -> Table:
    loader = build_loader(run.train_set(), batch_size=batch_size or run.config.batch_size, shuffle=False,
                          num_workers=loader_workers(run.config))
    loader.sampler.set_epoch(0)
    parts = []
    for images, targets in loader:
        images, targets = to_device(images, targets, run.device)
        parts.append(labels_of_batch(run, images, targets))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({c: [] for c in COLUMNS})
    return Table(frame[list(COLUMNS)])


def shares(frame: pd.DataFrame) -> dict[str, float]:
    """The two numbers the paper reads off Fig. 9: the share of centerness labels below 0.4 and
    of IoU labels above 0.4."""
    n = max(len(frame), 1)
    return {"centerness_below_0.4": float((frame["centerness"] < LOW_CENTERNESS).sum() / n),
            "iou_above_0.4": float((frame["iou"] > HIGH_IOU).sum() / n)}


__all__ = ["COLUMNS", "compute", "labels_of_batch", "shares"]
