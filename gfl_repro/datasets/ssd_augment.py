"""SSD's training augmentation (Liu et al., 2016), as mmdetection 3.3's ``ssd512_coco`` applies it:
``Expand`` → ``MinIoURandomCrop`` → resize to the fixed square → flip → ``PhotoMetricDistortion``.

Each transform takes the sample dict of :mod:`gfl_repro.datasets.transforms` and an explicit
``numpy.random.Generator`` (the same state gives the same output). Semantics follow mmdet's
``mmdet/datasets/transforms/transforms.py``; the draws come from numpy's ``Generator`` instead of
its legacy global state, and hue/saturation work through matplotlib's HSV conversion instead of
OpenCV's (the same colour model, values in [0, 1]).
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

from .transforms import BOX_KEYS, MEAN_RGB


class Expand:
    """With probability ``prob``, paste the image at a random place of a canvas ``ratio`` times
    larger (``ratio`` uniform in ``ratio_range``) filled with the mean colour; boxes follow."""

    def __init__(self, mean=MEAN_RGB, ratio_range=(1.0, 4.0), prob: float = 0.5) -> None:
        self.mean, self.ratio_range, self.prob = mean, ratio_range, prob

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if rng.uniform(0, 1) > self.prob:
            return sample
        img = sample["img"]
        h, w, c = img.shape
        ratio = rng.uniform(*self.ratio_range)
        canvas = np.full((int(h * ratio), int(w * ratio), c), self.mean, dtype=img.dtype)
        left, top = int(rng.uniform(0, w * ratio - w)), int(rng.uniform(0, h * ratio - h))
        canvas[top:top + h, left:left + w] = img
        sample["img"] = canvas
        shift = np.array([left, top, left, top], dtype=np.float32)
        for key in BOX_KEYS:
            if key in sample:
                sample[key] = sample[key] + shift
        return sample


def _iou(patch: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(patch[:2], boxes[:, :2])
    rb = np.minimum(patch[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(np.prod(patch[2:] - patch[:2]) + areas - inter, 1e-6)


class MinIoURandomCrop:
    """Crop a random patch (each side at least ``min_crop_size`` of the image, aspect in
    [1/2, 2]) whose IoU with every GT is at least a threshold drawn from ``min_ious`` (or keep the
    whole image); GTs whose centre leaves the patch are dropped, the others clipped to it."""

    def __init__(self, min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size: float = 0.3, trials: int = 50) -> None:
        self.modes = (1, *min_ious, 0)
        self.min_crop_size, self.trials = min_crop_size, trials

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        img, boxes = sample["img"], sample["boxes"]
        h, w = img.shape[:2]
        while True:
            mode = self.modes[int(rng.integers(len(self.modes)))]
            if mode == 1:
                return sample
            for _ in range(self.trials):
                new_w, new_h = rng.uniform(self.min_crop_size * w, w), rng.uniform(self.min_crop_size * h, h)
                if not 0.5 <= new_h / new_w <= 2:
                    continue
                left, top = rng.uniform(0, w - new_w), rng.uniform(0, h - new_h)
                patch = np.array([int(left), int(top), int(left + new_w), int(top + new_h)], dtype=np.float32)
                if patch[2] == patch[0] or patch[3] == patch[1]:
                    continue
                if len(boxes) and _iou(patch, boxes).min() < mode:
                    continue
                centres = (boxes[:, :2] + boxes[:, 2:]) / 2
                keep = ((centres[:, 0] > patch[0]) & (centres[:, 1] > patch[1]) & (centres[:, 0] < patch[2])
                        & (centres[:, 1] < patch[3]))
                if len(boxes) and not keep.any():
                    continue
                return self._crop(sample, patch, keep)

    @staticmethod
    def _crop(sample: dict, patch: np.ndarray, keep: np.ndarray) -> dict:
        x1, y1, x2, y2 = (int(v) for v in patch)
        sample["img"] = np.ascontiguousarray(sample["img"][y1:y2, x1:x2])
        for key, values in (("boxes", sample["boxes"][keep]), ("labels", sample["labels"][keep])):
            sample[key] = values
        limit = np.array([x2 - x1, y2 - y1, x2 - x1, y2 - y1], dtype=np.float32)
        shift = np.array([x1, y1, x1, y1], dtype=np.float32)
        for key in BOX_KEYS:
            if key in sample:
                sample[key] = np.clip(sample[key] - shift, 0, limit).astype(np.float32)
        return sample


class PhotoMetricDistortion:
    """Random brightness, contrast (before or after the colour changes), saturation and hue, and
    a random channel permutation, each applied with probability 1/2; the image becomes float32."""

    def __init__(self, brightness_delta: int = 32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                 hue_delta: int = 18) -> None:
        self.brightness_delta, self.contrast_range = brightness_delta, contrast_range
        self.saturation_range, self.hue_delta = saturation_range, hue_delta

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        img = sample["img"].astype(np.float32)
        if rng.integers(2):
            img += rng.uniform(-self.brightness_delta, self.brightness_delta)
        contrast_first = bool(rng.integers(2))
        if contrast_first and rng.integers(2):
            img *= rng.uniform(*self.contrast_range)
        hsv = rgb_to_hsv(np.clip(img, 0, 255) / 255.0)
        if rng.integers(2):
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*self.saturation_range), 0, 1)
        if rng.integers(2):
            hsv[..., 0] = (hsv[..., 0] * 360 + rng.uniform(-self.hue_delta, self.hue_delta)) % 360 / 360
        img = (hsv_to_rgb(hsv) * 255.0).astype(np.float32)
        if not contrast_first and rng.integers(2):
            img *= rng.uniform(*self.contrast_range)
        if rng.integers(2):
            img = img[..., rng.permutation(3)]
        sample["img"] = np.ascontiguousarray(img)
        return sample


__all__ = ["Expand", "MinIoURandomCrop", "PhotoMetricDistortion"]
