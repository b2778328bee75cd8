"""Data transforms equivalent to mmdetection 3.3's detection pipeline, without OpenCV.

A *sample* is a plain dict, as in mmdet's ``results``:

``img``            np.uint8 (H, W, 3), RGB (mmdet loads BGR and its data preprocessor swaps to
                   RGB before normalising; the numbers are the same)
``boxes``          np.float32 (N, 4) x1, y1, x2, y2 in pixels of the current ``img``
``ignore_boxes``   np.float32 (M, 4) crowd boxes, transformed exactly like ``boxes``
``ori_shape``      (h, w) of the loaded image
``img_shape``      (h, w) after resizing (set by Resize)
``scale``          the (long, short) or (w, h) target scale used (set by Resize)
``scale_factor``   (w_scale, h_scale) = new size / old size, as mmdet stores it
``flip``           bool (set by RandomFlip)

Every random transform takes an explicit ``numpy.random.Generator``; the same generator state
gives the same output.  Facts replicated from mmcv 2.x / mmdet 3.3:

* ``Resize(keep_ratio=True)``: mmcv ``rescale_size``: factor = min(max(scale) / max(h, w),
  min(scale) / min(h, w)); new size = (int(w * factor + 0.5), int(h * factor + 0.5)); the stored
  scale_factor is the *realised* (new_w / w, new_h / h), boxes are multiplied by it and clipped
  to the new image (``clip_object_border=True``).  Images use cv2's INTER_LINEAR arithmetic
  re-implemented in integer numpy (see ``resize_image``).
* ``RandomResize(scale=[(1333, 480), (1333, 800)], keep_ratio=True)``: mmcv ``_random_sample``
  draws edge_0 = randint(min(1333, 1333), max + 1) then edge_1 = randint(480, 800 + 1) (both ends
  inclusive, two draws, in that order) and keep-ratio-resizes to (edge_0, edge_1): the short
  side becomes <= edge_1 with the long side <= edge_0.
* ``RandomFlip(prob=0.5)`` horizontal: x1' = W - x2, x2' = W - x1 (mmdet ``HorizontalBoxes``).
* Normalisation: (img - mean) / std in RGB with mean (123.675, 116.28, 103.53),
  std (58.395, 57.12, 57.375); output float32 (3, H, W) tensor.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)
BOX_KEYS = ("boxes", "ignore_boxes")

Scale = tuple[int, int]


# --------------------------------------------------------------------------------------------
# Pure functions (size arithmetic, image and box operations)
# --------------------------------------------------------------------------------------------


def scale_size(size_wh: tuple[int, int], factor: float | tuple[float, float]) -> tuple[int, int]:
    """mmcv ``_scale_size``: (int(w * fx + 0.5), int(h * fy + 0.5))."""
    fx, fy = (factor, factor) if isinstance(factor, (int, float)) else factor
    w, h = size_wh
    return int(w * float(fx) + 0.5), int(h * float(fy) + 0.5)


def keep_ratio_factor(size_wh: tuple[int, int], scale: float | Scale) -> float:
    """mmcv ``rescale_size`` factor: a number is the factor itself; a (long, short) tuple (either
    order) gives min(long / max(h, w), short / min(h, w)), the largest fit within the scale."""
    w, h = size_wh
    if isinstance(scale, (int, float)):
        if scale <= 0:
            raise ValueError(f"invalid scale {scale}, must be positive")
        return float(scale)
    long_edge, short_edge = max(scale), min(scale)
    return min(long_edge / max(h, w), short_edge / min(h, w))


def rescale_size(size_wh: tuple[int, int], scale: float | Scale) -> tuple[int, int]:
    """mmcv ``rescale_size``: the (new_w, new_h) of a keep-ratio resize of ``size_wh``."""
    return scale_size(size_wh, keep_ratio_factor(size_wh, scale))


_COEF_BITS = 11  # cv2 INTER_RESIZE_COEF_BITS
_COEF_SCALE = 1 << _COEF_BITS


def _linear_taps(src_len: int, dst_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv2 INTER_LINEAR taps for one axis: (left index, right index, left weight * 2048).

    Half-pixel centres, fx = float32((d + 0.5) * src/dst - 0.5); out-of-range taps collapse
    onto the border pixel with full weight; weights rounded to 11-bit fixed point as cv2 does.
    """
    f = ((np.arange(dst_len, dtype=np.float64) + 0.5) * (src_len / dst_len) - 0.5)
    f = f.astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    frac = (f - i0.astype(np.float32)).astype(np.float32)
    low = i0 < 0
    high = i0 >= src_len - 1
    frac[low | high] = 0.0
    i0[low] = 0
    i0[high] = src_len - 1
    i1 = np.minimum(i0 + 1, src_len - 1)
    w0 = np.rint((np.float32(1.0) - frac) * np.float32(_COEF_SCALE)).astype(np.int32)
    return i0, i1, w0


def resize_image(img: np.ndarray, new_wh: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 (H, W, C) image to (new_w, new_h); returns uint8 (H', W', C).

    Integer re-implementation of cv2.resize(INTER_LINEAR) on uint8 (11-bit fixed-point weights,
    horizontal pass then vertical pass with round-half-up >> 22): equal to cv2's scalar path,
    within +-1 of its SIMD path, and independent of thread count (unlike float interpolation,
    whose rounding to uint8 varied with torch's threading).  cv2's special case of an exact 2x
    downscale (which it routes to INTER_AREA) is not replicated.
    """
    new_w, new_h = int(new_wh[0]), int(new_wh[1])
    if new_w <= 0 or new_h <= 0:
        raise ValueError(f"invalid target size {new_wh}")
    if img.shape[:2] == (new_h, new_w):
        return img.copy()
    h, w = img.shape[:2]
    src = img.reshape(h, w, -1).astype(np.int32)
    x0, x1, wx = _linear_taps(w, new_w)
    y0, y1, wy = _linear_taps(h, new_h)
    # in place, np.take rather than fancy indexing: the same integers, half the time
    wx = wx[None, :, None]
    rows = np.take(src, x0, axis=1)  # (h, new_w, C), scale 2^11
    rows *= wx
    right = np.take(src, x1, axis=1)
    right *= _COEF_SCALE - wx
    rows += right
    wy = wy[:, None, None]
    out = np.take(rows, y0, axis=0)  # (new_h, new_w, C), scale 2^22, < 2^31
    out *= wy
    below = np.take(rows, y1, axis=0)
    below *= _COEF_SCALE - wy
    out += below
    out += 1 << (2 * _COEF_BITS - 1)
    out >>= 2 * _COEF_BITS  # weights >= 0 summing to 2^11 per pass: already within [0, 255]
    return out.astype(np.uint8).reshape(new_h, new_w, *img.shape[2:])


def rescale_boxes(boxes: np.ndarray, scale_factor: tuple[float, float]) -> np.ndarray:
    """Multiply x coordinates by w_scale and y coordinates by h_scale; (N, 4) float32."""
    w_scale, h_scale = scale_factor
    factor = np.array([w_scale, h_scale, w_scale, h_scale], dtype=np.float32)
    return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * factor).astype(np.float32)


def clip_boxes(boxes: np.ndarray, img_shape: tuple[int, int]) -> np.ndarray:
    """Clamp x to [0, W] and y to [0, H] (mmdet ``HorizontalBoxes.clip_``)."""
    h, w = img_shape
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    return out


def flip_boxes(boxes: np.ndarray, img_shape: tuple[int, int]) -> np.ndarray:
    """Horizontal flip within an image of shape (h, w): x1' = w - x2, x2' = w - x1."""
    w = img_shape[1]
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    out = b.copy()
    out[:, 0] = w - b[:, 2]
    out[:, 2] = w - b[:, 0]
    return out


def hflip_image(img: np.ndarray) -> np.ndarray:
    """Mirror an (H, W, C) image left-right (column x -> W - 1 - x)."""
    return np.ascontiguousarray(img[:, ::-1])


def normalize_image(img: np.ndarray, mean: Sequence[float] = MEAN_RGB,
                    std: Sequence[float] = STD_RGB) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> float32 (3, H, W) tensor (img - mean) / std."""
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).to(torch.float32)
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return t.sub_(m).div_(s)  # ``t`` is a new float tensor: in place, the same values


def sample_random_scale(scales: Sequence[Scale], rng: np.random.Generator) -> Scale:
    """mmcv ``RandomResize._random_sample``: edge_0 uniform over the first components, then
    edge_1 uniform over the second components, both ends inclusive (integers)."""
    if len(scales) != 2:
        raise ValueError(f"need exactly two scales (lower, upper), got {scales}")
    first = (scales[0][0], scales[1][0])
    second = (scales[0][1], scales[1][1])
    edge_0 = int(rng.integers(min(first), max(first) + 1))
    edge_1 = int(rng.integers(min(second), max(second) + 1))
    return edge_0, edge_1


# --------------------------------------------------------------------------------------------
# Transforms on sample dicts
# --------------------------------------------------------------------------------------------


def apply_resize(sample: dict, scale: Scale, keep_ratio: bool = True,
                 clip_object_border: bool = True) -> dict:
    """Resize ``sample`` in place to ``scale`` (mmdet ``Resize``) and return it.

    keep_ratio: fit within (long, short) = scale; else ``scale`` is the exact (w, h).
    Sets img_shape, scale, scale_factor (realised new/old ratio per axis), keep_ratio.
    """
    h, w = sample["img"].shape[:2]
    new_wh = rescale_size((w, h), scale) if keep_ratio else (int(scale[0]), int(scale[1]))
    img = resize_image(sample["img"], new_wh)
    new_h, new_w = img.shape[:2]
    factor = (new_w / w, new_h / h)
    sample["img"] = img
    sample["img_shape"] = (new_h, new_w)
    sample["scale"] = tuple(int(s) for s in scale)
    sample["scale_factor"] = factor
    sample["keep_ratio"] = keep_ratio
    for key in BOX_KEYS:
        if key in sample:
            boxes = rescale_boxes(sample[key], factor)
            sample[key] = clip_boxes(boxes, (new_h, new_w)) if clip_object_border else boxes
    return sample


def apply_hflip(sample: dict) -> dict:
    """Flip image and boxes of ``sample`` horizontally in place; returns it."""
    sample["img"] = hflip_image(sample["img"])
    shape = sample["img"].shape[:2]
    for key in BOX_KEYS:
        if key in sample:
            sample[key] = flip_boxes(sample[key], shape)
    return sample


class Resize:
    """Deterministic resize to one scale (mmdet ``Resize(scale, keep_ratio)``)."""

    def __init__(self, scale: Scale = (1333, 800), keep_ratio: bool = True,
                 clip_object_border: bool = True):
        self.scale = (int(scale[0]), int(scale[1]))
        self.keep_ratio = keep_ratio
        self.clip_object_border = clip_object_border

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        return apply_resize(sample, self.scale, self.keep_ratio, self.clip_object_border)

    def __repr__(self) -> str:
        return f"Resize(scale={self.scale}, keep_ratio={self.keep_ratio})"


class RandomResize:
    """Multi-scale resize (mmdet ``RandomResize(scale=[lower, upper], keep_ratio)``).

    Uses two ``rng.integers`` draws per call (see ``sample_random_scale``).
    """

    def __init__(self, scales: Sequence[Scale] = ((1333, 480), (1333, 800)),
                 keep_ratio: bool = True, clip_object_border: bool = True):
        if len(scales) != 2:
            raise ValueError(f"need exactly two scales, got {scales}")
        self.scales = tuple((int(s[0]), int(s[1])) for s in scales)
        self.keep_ratio = keep_ratio
        self.clip_object_border = clip_object_border

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        scale = sample_random_scale(self.scales, rng)
        return apply_resize(sample, scale, self.keep_ratio, self.clip_object_border)

    def __repr__(self) -> str:
        return f"RandomResize(scales={self.scales}, keep_ratio={self.keep_ratio})"


class RandomFlip:
    """Horizontal flip with probability ``prob``; always consumes one ``rng.random()`` draw."""

    def __init__(self, prob: float = 0.5):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob = prob

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        flip = bool(rng.random() < self.prob)
        sample["flip"] = flip
        sample["flip_direction"] = "horizontal" if flip else None
        return apply_hflip(sample) if flip else sample

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob})"


class Compose:
    """Apply transforms in order with one shared generator."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(map(repr, self.transforms)) + ")"
