"""Which detectors the native engine builds, and from what: one entry per detector.

An entry names the head class (one file per detector under :mod:`gfl_repro.models.heads`),
how its Dirac box is encoded, the neck it sits on, and which quality and box representations
it accepts. :func:`gfl_repro.models.detector.build_detector` reads it; nothing else decides
what a detector is made of.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .assigners.fovea import BASE_EDGES
from .box_representation import BOXES
from .coders import Coder, DeltaCoder, DistanceCoder, FoveaCoder
from .heads.atss import ATSSHead
from .heads.base import DenseHead
from .heads.fcos import FCOSHead
from .heads.foveabox import FoveaBoxHead
from .heads.retinanet import RetinaNetHead
from .heads.ssd import SSDHead
from .quality import QUALITIES

JOINT_OR_NONE = ("none", "joint")  # Table 1(b): the detector as it is, and "+ joint w/ QFL"


@dataclass(frozen=True)
class DetectorEntry:
    head: type[DenseHead]
    coder: Callable[[], Coder]  # how its Dirac box is encoded (:mod:`gfl_repro.models.coders`)
    neck: str = "fpn"  # "fpn": P3-P7, P6 from the P5 output; "fpn_on_input": P6 from C5; "ssd"
    relu_before_extra_convs: bool = False  # FPN: ReLU before the P6 -> P7 conv (mmdet's FCOS neck)
    qualities: tuple[str, ...] = QUALITIES
    boxes: tuple[str, ...] = BOXES
    box_losses: tuple[str, ...] = ("giou",)
    smooth_l1_beta: float = 1.0
    min_bbox_size: float | None = 0  # test: boxes this small or smaller are dropped (None: none)
    keep_ratio: bool = True  # images resized keeping their aspect ratio (SSD: to a fixed square)
    norms: tuple[str, ...] = ("stock", "gn")  # what ``norm`` may add where the stock detector has none


DETECTORS: dict[str, DetectorEntry] = {
    "atss": DetectorEntry(ATSSHead, coder=DeltaCoder),
    "fcos": DetectorEntry(FCOSHead, coder=lambda: DistanceCoder(clamp=True), relu_before_extra_convs=True),
    "retinanet": DetectorEntry(RetinaNetHead, coder=lambda: DeltaCoder((1.0, 1.0, 1.0, 1.0)), neck="fpn_on_input",
                               qualities=JOINT_OR_NONE, boxes=("dirac",), box_losses=("l1",)),
    "foveabox": DetectorEntry(FoveaBoxHead, coder=lambda: FoveaCoder(BASE_EDGES), neck="fpn_on_input",
                              qualities=JOINT_OR_NONE, boxes=("dirac",), box_losses=("smooth_l1",),
                              smooth_l1_beta=0.11, min_bbox_size=None),
    "ssd512": DetectorEntry(SSDHead, coder=DeltaCoder, neck="ssd", qualities=JOINT_OR_NONE, boxes=("dirac",),
                            box_losses=("smooth_l1",), keep_ratio=False, norms=("stock", "gn", "bn")),
}


def check_supported(config) -> None:
    """Raise ValueError naming what the native engine cannot build for ``config``."""
    entry = DETECTORS.get(config.detector)
    if entry is None:
        raise ValueError(f"detector {config.detector!r} is not in the native engine yet (it has: {', '.join(DETECTORS)})")
    for field, allowed in (("quality", entry.qualities), ("box", entry.boxes), ("box_loss", entry.box_losses),
                           ("norm", entry.norms)):
        value = getattr(config, field)
        if value not in allowed:
            raise ValueError(f"{config.detector} with {field} = {value!r} is not in the native engine yet "
                             f"(it has: {', '.join(allowed)})")


__all__ = ["DETECTORS", "DetectorEntry", "check_supported"]
