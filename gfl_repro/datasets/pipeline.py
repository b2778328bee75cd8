"""The training and test pipelines of a dataset: which transforms, in which order."""

from __future__ import annotations

from typing import Sequence

from .ssd_augment import Expand, MinIoURandomCrop, PhotoMetricDistortion
from .transforms import Compose, RandomFlip, RandomResize, Resize, Scale


def build_pipeline(train: bool, scale: Scale = (1333, 800),
                   multiscale: Sequence[Scale] | None = None, flip_prob: float = 0.5,
                   keep_ratio: bool = True, augment: str = "flip") -> Compose:
    """mmdet's pipelines. train: [RandomResize(multiscale) or Resize(scale), RandomFlip]; with
    ``augment="ssd"`` SSD's: [Expand, MinIoURandomCrop, Resize, RandomFlip, PhotoMetricDistortion]
    (:mod:`gfl_repro.datasets.ssd_augment`); test: [Resize(scale)]. Normalisation happens after
    (``normalize_image``)."""
    if not train:
        return Compose([Resize(scale, keep_ratio)])
    resize = RandomResize(multiscale, keep_ratio) if multiscale is not None else Resize(scale, keep_ratio)
    if augment == "ssd":
        return Compose([Expand(), MinIoURandomCrop(), resize, RandomFlip(flip_prob), PhotoMetricDistortion()])
    return Compose([resize, RandomFlip(flip_prob)])
