"""How a Dirac-delta box (Eq. 3) is encoded against its prior, per detector.

=================  ==========================================================================
coder              regression target of a positive
=================  ==========================================================================
``DeltaCoder``     ``(dx, dy, dw, dh)`` from the anchor, divided by ``stds`` (mmdet's
                   ``DeltaXYWHBBoxCoder``): ATSS and SSD (0.1, 0.1, 0.2, 0.2), RetinaNet 1
``DistanceCoder``  distances to the four sides from the point, in stride units, kept >= 0
                   (FCOS with ``norm_on_bbox``)
``FoveaCoder``     log of the distances in units of the level's base edge (FoveaBox)
=================  ==========================================================================

``decode`` gives the boxes the losses compare (in the frame of :class:`Frame`), ``encode`` the
target of an L1-type loss, ``decode_test`` the boxes in input-image pixels clipped as the
detector's mmdet head clips them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .box_ops import DELTA_STDS, bbox2delta, delta2bbox, distance2bbox


@dataclass(frozen=True)
class Frame:
    """The positives of a batch while their box losses are computed.

    ``target_boxes`` are the GT boxes in the frame the losses compare boxes in; ``anchors``
    (delta coder), ``origin`` (the points distances start from), ``target_distances`` (stride
    units), ``scales`` (FoveaBox's base edge per positive) and ``target_encoded`` (a target the
    assigner already encoded) are filled by the head as its coder needs them.
    """

    target_boxes: Tensor
    origin: Tensor | None = None
    target_distances: Tensor | None = None
    anchors: Tensor | None = None
    scales: Tensor | None = None
    target_encoded: Tensor | None = None


class DeltaCoder:
    name = "delta"

    def __init__(self, stds: Sequence[float] = DELTA_STDS) -> None:
        self.stds = tuple(stds)

    def activate(self, reg: Tensor) -> Tensor:
        return reg

    def decode(self, reg: Tensor, frame: Frame) -> Tensor:
        return delta2bbox(frame.anchors, reg, self.stds)

    def encode(self, frame: Frame) -> Tensor:
        return bbox2delta(frame.anchors, frame.target_boxes, self.stds)

    def decode_test(self, reg: Tensor, priors: Tensor, centres: Tensor, level: int, stride: float,
                    img_shape) -> Tensor:
        return delta2bbox(priors, reg, self.stds, max_shape=img_shape)


class DistanceCoder:
    name = "distance"

    def __init__(self, clamp: bool = False) -> None:
        self.clamp = clamp  # FCOS keeps distances >= 0 (mmdet's norm_on_bbox)

    def activate(self, reg: Tensor) -> Tensor:
        return reg.clamp(min=0) if self.clamp else reg

    def decode(self, reg: Tensor, frame: Frame) -> Tensor:
        return distance2bbox(frame.origin, reg)

    def encode(self, frame: Frame) -> Tensor:
        return frame.target_distances

    def decode_test(self, reg: Tensor, priors: Tensor, centres: Tensor, level: int, stride: float,
                    img_shape) -> Tensor:
        return distance2bbox(centres, reg * stride, max_shape=img_shape)


class FoveaCoder:
    """``t = log(clamp(d / base_edge, 1/16, 16))`` per side; decoded ``d = base_edge · exp(t)``
    and, at test time, clipped to ``[0, W - 1] × [0, H - 1]`` (mmdet ``FoveaHead._bbox_decode``)."""

    name = "fovea"

    def __init__(self, base_edges: Sequence[float]) -> None:
        self.base_edges = tuple(base_edges)

    def activate(self, reg: Tensor) -> Tensor:
        return reg

    def decode(self, reg: Tensor, frame: Frame) -> Tensor:
        return _fovea_boxes(frame.origin, frame.scales[:, None] * reg.exp())

    def encode(self, frame: Frame) -> Tensor:
        return frame.target_encoded

    def decode_test(self, reg: Tensor, priors: Tensor, centres: Tensor, level: int, stride: float,
                    img_shape) -> Tensor:
        h, w = img_shape[0], img_shape[1]
        p = reg.exp()
        base = self.base_edges[level]
        x, y = centres[:, 0], centres[:, 1]
        x1 = (x - base * p[:, 0]).clamp(min=0, max=w - 1)
        y1 = (y - base * p[:, 1]).clamp(min=0, max=h - 1)
        x2 = (x + base * p[:, 2]).clamp(min=0, max=w - 1)
        y2 = (y + base * p[:, 3]).clamp(min=0, max=h - 1)
        return torch.stack([x1, y1, x2, y2], -1)


def _fovea_boxes(points: Tensor, distances: Tensor) -> Tensor:
    return torch.stack([points[:, 0] - distances[:, 0], points[:, 1] - distances[:, 1],
                        points[:, 0] + distances[:, 2], points[:, 1] + distances[:, 3]], -1)


Coder = DeltaCoder | DistanceCoder | FoveaCoder

__all__ = ["Coder", "DeltaCoder", "DistanceCoder", "FoveaCoder", "Frame"]
