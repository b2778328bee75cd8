"""Fig. 9: the IoU labels and the centerness labels of every positive training sample of a
trained model (the paper: GFL, ResNet-50, on COCO).

The labels are what the head's own training code computes for its positives
(:meth:`~gfl_repro.models.heads.base.DenseHead.loss`): the head's assignment, then

- IoU label: IoU(decoded prediction, its ground truth), the target QFL and the IoU branch use;
- centerness label: the geometric centerness of the prior inside its ground truth
  (:meth:`~gfl_repro.models.heads.base.DenseHead.centerness`, ATSS: of the anchor centre).

The training set is read in order, without shuffling, with the augmentation of epoch 0, in
batches of the run's batch size. COCO has millions of positives, so the table holds their
histogram at a resolution of 0.001: ``label`` ("iou" / "centerness"), ``bin_low``,
``bin_high``, ``count`` (bins closed on the left; the last one also holds 1.0). The shares the
paper reads off the figure are exact at 0.4, a bin edge.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..datasets.coco import build_loader
from ..models.box_ops import aligned_iou
from .runs import LoadedRun, dense_rows, loader_workers, to_device
from .tables import Table

LABELS = ("iou", "centerness")
EDGES = np.arange(1001) / 1000  # exact multiples of 0.001 (0.4 included)
LOW_CENTERNESS = 0.4
HIGH_IOU = 0.4


@torch.no_grad()
def labels_of_batch(run: LoadedRun, images, targets) -> pd.DataFrame:
    """The positives' labels of one batch, as the head computes them: ``stride, iou, centerness``."""
    head = run.model.head
    rows = dense_rows(run.model, images, targets)
    t, pos = rows.targets, rows.pos
    frame = head.frame(t, pos)
    predicted = head.box.decode(rows.reg[pos], frame)
    iou = aligned_iou(predicted, frame.target_boxes).clamp(min=0)
    centerness = head.centerness(t, pos, frame) if len(pos) else iou.new_zeros(0)
    return pd.DataFrame({"stride": t.strides[pos].cpu().numpy(), "iou": iou.cpu().numpy(),
                         "centerness": centerness.cpu().numpy()})


def histogram(counts: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame([{"label": label, "bin_low": EDGES[i], "bin_high": EDGES[i + 1], "count": int(c)}
                         for label in LABELS for i, c in enumerate(counts[label])])


def count(labels: pd.DataFrame) -> dict[str, np.ndarray]:
    """Counts of each label in the bins of :data:`EDGES`."""
    return {label: np.histogram(labels[label].clip(0, 1), bins=EDGES)[0] for label in LABELS}


def compute(run: LoadedRun, batch_size: int | None = None) -> Table:
    loader = build_loader(run.train_set(), batch_size=batch_size or run.config.batch_size, shuffle=False,
                          num_workers=loader_workers(run.config))
    totals = {label: np.zeros(len(EDGES) - 1, dtype=np.int64) for label in LABELS}
    for images, targets in loader:
        images, targets = to_device(images, targets, run.device)
        for label, counts in count(labels_of_batch(run, images, targets)).items():
            totals[label] += counts
    return Table(histogram(totals))


def shares(table: pd.DataFrame) -> dict[str, float]:
    """The two numbers the paper reads off Fig. 9: the share of centerness labels below 0.4 and
    of IoU labels above 0.4 (at or above, for the measure-zero labels equal to 0.4)."""
    iou, centerness = table[table["label"] == "iou"], table[table["label"] == "centerness"]
    below = centerness.loc[centerness["bin_high"] <= LOW_CENTERNESS, "count"].sum()
    above = iou.loc[iou["bin_low"] >= HIGH_IOU, "count"].sum()
    return {"centerness_below_0.4": float(below / max(centerness["count"].sum(), 1)),
            "iou_above_0.4": float(above / max(iou["count"].sum(), 1))}


def positives(table: pd.DataFrame) -> int:
    return int(table.loc[table["label"] == "iou", "count"].sum())


__all__ = ["EDGES", "LABELS", "compute", "count", "histogram", "labels_of_batch", "positives", "shares"]
