"""Fig. 5(c): the histogram of ATSS's bounding-box regression targets over all positive
samples of the training set — the assignment only, no model and no training.

Each training image (epoch-0 augmentation, one image per batch) gets the anchors of its
pyramid levels over the image padded to a multiple of 32, exactly as the detector lays them
out (one square anchor of side 8 × stride per location). The head's ATSS assignment
(:meth:`gfl_repro.models.heads.atss.ATSSHead.assign`) picks the positives; a target is the
distance from a positive anchor's centre to each of the four sides of its ground truth, in
units of the anchor's stride (what GFL's General distribution regresses, Eq. 5, before the
clamp to ``[0, n − 0.1]``).

Table: counts per side and per bin of width 1 stride, ``side, bin_low, bin_high, count``,
the last bin ``[MAX_DISTANCE, inf)`` collecting the rest.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..datasets.coco import build_loader
from ..engines.environment import DataPaths
from ..models.box_ops import bbox2distance
from ..models.detector import build_head
from ..models.heads.base import HeadSpec
from ..models.priors import anchor_centers, grid_anchors
from ..specs.run_config import RunConfig
from .runs import AnalysisError, loader_workers, train_set
from .tables import Table

SIDES = ("left", "top", "right", "bottom")
MAX_DISTANCE = 32
EDGES = np.append(np.arange(MAX_DISTANCE + 1, dtype=np.float64), np.inf)


def level_sizes(pad_shape, strides) -> list[tuple[int, int]]:
    """Feature-map size of each pyramid level for an input of ``pad_shape`` (H, W), a multiple of
    32: ``ceil(H / stride)`` (strides 8-32 divide it; P6 and P7 are stride-2 3×3 convolutions
    with padding 1, which round up)."""
    h, w = pad_shape
    return [(math.ceil(h / s), math.ceil(w / s)) for s in strides]


def positive_distances(head, images_shape, targets: list[dict]) -> torch.Tensor:
    """(P, 4) distances (stride units) of the positives of one batch, as the head assigns them."""
    anchors = grid_anchors(level_sizes(images_shape[-2:], head.strides), head.strides, head.anchor_scale)
    t = head.assign(anchors, targets)
    pos = torch.nonzero((t.labels >= 0) & (t.labels < head.num_classes)).squeeze(1)
    strides = t.strides[pos][:, None]
    return bbox2distance(anchor_centers(t.priors[pos]) / strides, t.boxes[pos] / strides)


def histogram(distances: np.ndarray) -> pd.DataFrame:
    """Counts per side of ``(P, 4)`` distances in the bins of :data:`EDGES`."""
    rows = []
    for s, side in enumerate(SIDES):
        counts, _ = np.histogram(distances[:, s], bins=EDGES)
        rows += [{"side": side, "bin_low": EDGES[i], "bin_high": EDGES[i + 1], "count": int(c)}
                 for i, c in enumerate(counts)]
    return pd.DataFrame(rows)


def compute(config: RunConfig, data: DataPaths) -> Table:
    if config.detector != "atss":
        raise AnalysisError(f"regression_targets follows ATSS's assignment; this config's detector is {config.detector!r}")
    dataset = train_set(config, data)
    head = build_head(config, HeadSpec(num_classes=dataset.num_classes, in_channels=8, feat_channels=8,
                                       stacked_convs=0, norm_groups=1))
    parts = [np.zeros((0, 4))]
    for images, targets in build_loader(dataset, batch_size=1, shuffle=False, num_workers=loader_workers(config)):
        parts.append(positive_distances(head, images.shape, targets).numpy())
    return Table(histogram(np.concatenate(parts)))


__all__ = ["EDGES", "MAX_DISTANCE", "SIDES", "compute", "histogram", "level_sizes", "positive_distances"]
