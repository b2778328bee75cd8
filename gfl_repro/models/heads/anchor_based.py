"""What heads with anchors as priors share (ATSS, RetinaNet, SSD512).

A positive's box is compared with its GT as ``(dx, dy, dw, dh)`` deltas from its anchor (a
Dirac box, mmdet's ``DeltaXYWHBBoxCoder``) or, for the General and Gaussian boxes, as distances
from the anchor's centre in stride units (GFLHead); its centerness is that of the anchor's
centre inside the GT. :class:`MaxIoUHead` adds mmdet ``AnchorHead``'s normalisers.
"""

from __future__ import annotations

from torch import Tensor

from ..box_ops import bbox2distance
from ..box_representation import BoxNorm
from ..coders import Frame
from ..losses import centerness_target
from ..priors import anchor_centers
from .base import DenseHead, Targets


class AnchorBasedHead(DenseHead):
    def frame(self, t: Targets, pos: Tensor) -> Frame:
        anchors, gt = t.priors[pos], t.boxes[pos]
        if self.box.coder.name == "delta":
            return Frame(target_boxes=gt, anchors=anchors)
        strides = t.strides[pos][:, None]
        origin = anchor_centers(anchors) / strides
        target_boxes = gt / strides
        return Frame(target_boxes=target_boxes, origin=origin, target_distances=bbox2distance(origin, target_boxes))

    def centerness(self, t: Targets, pos: Tensor, frame: Frame) -> Tensor:
        """Centerness of the anchor centre in its GT box, in pixels (mmdet ``ATSSHead.centerness_target``)."""
        return centerness_target(t.priors[pos], t.boxes[pos])

    def prior_centres(self, priors: Tensor) -> Tensor:
        return anchor_centers(priors)


class MaxIoUHead(AnchorBasedHead):
    """mmdet ``AnchorHead``'s normalisers (RetinaNet, SSD): the classification and the box losses
    are divided by Σ over images of max(#positives, 1), not averaged over processes."""

    def cls_avg_factor(self, t: Targets) -> Tensor:
        return t.cls_normaliser.float()

    def box_norm(self, weights: Tensor, t: Targets, x) -> BoxNorm:
        return BoxNorm(inside=x.num_pos, after=1.0)


__all__ = ["AnchorBasedHead", "MaxIoUHead"]
