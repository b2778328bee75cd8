"""Priors (anchors and points) on the FPN grid, bit-identical to mmdetection 3.3.

GFL (and ATSS) place **one square anchor per feature-map location**; the anchor is
only used by the ATSS assigner (paper Sec. 4, "ATSS as the baseline").
mmdet configures it as::

    AnchorGenerator(ratios=[1.0], octave_base_scale=8, scales_per_octave=1,
                    strides=[8, 16, 32, 64, 128])            # center_offset = 0

so the anchor of level ``l`` at grid cell ``(i, j)`` (row ``i``, column ``j``) is the
box of side ``8 * stride_l`` centred on ``(j * stride_l, i * stride_l)``.  Note the
centre is the *top-left corner* of the cell (center_offset 0), not the cell centre.

Conventions copied from mmdet (``mmdet/models/task_modules/prior_generators``):

* order inside a level is row-major: index ``i * W + j`` (x varies fastest);
* levels are returned as a list, finest (stride 8) first; the head concatenates them;
* ``valid_flags`` marks cells whose position lies inside the image's *padded* shape
  (relevant when a batch pads images to a common size);
* ``inside_flags`` additionally drops anchors crossing the image border unless
  ``allowed_border < 0``; GFL/ATSS use ``allowed_border=-1`` (nothing dropped).

Point priors for anchor-free heads (FCOS, FoveaBox): mmdet 3.3's ``AnchorFreeHead``
builds ``MlvlPointGenerator(strides)`` whose default ``offset`` is 0.5, i.e. the point
of cell ``(i, j)`` is ``((j + 0.5) * s, (i + 0.5) * s)`` -- the cell centre (mmdet 1.x
/ early 2.x used ``j * s + s // 2`` instead, which equals it for even strides).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

GFL_STRIDES: tuple[int, ...] = (8, 16, 32, 64, 128)
"""FPN strides P3..P7 used by GFL / ATSS / FCOS in mmdet."""

FeatSize = Sequence[int]  # (H, W); torch.Size is accepted too


def _meshgrid_row_major(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Flattened mesh grid in mmdet's order: ``xx[i*W + j] = x[j]``, ``yy[i*W + j] = y[i]``.

    Shapes: ``x`` (W,), ``y`` (H,) -> two tensors of shape (H*W,).
    """
    xx = x.repeat(y.shape[0])
    yy = y.view(-1, 1).repeat(1, x.shape[0]).view(-1)
    return xx, yy


def base_anchor(stride: int, base_size_factor: float = 8, dtype: torch.dtype = torch.float32) -> Tensor:
    """The single square anchor of one level centred at the origin, shape (1, 4) xyxy.

    Mirrors mmdet ``AnchorGenerator.gen_single_level_base_anchors`` with ratio 1.0, one
    scale ``octave_base_scale * 2**0 = base_size_factor``, base size = stride and
    ``center_offset = 0``: ``[-s*f/2, -s*f/2, s*f/2, s*f/2]``.  The arithmetic follows
    mmdet step by step (float32 scales/ratios) so results are bit-identical.
    """
    ratios = torch.tensor([1.0], dtype=torch.float32)
    scales = torch.tensor([float(base_size_factor) * 2 ** 0], dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    w = h = stride  # base size = stride (square strides)
    ws = (w * w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (h * h_ratios[:, None] * scales[None, :]).view(-1)
    x_center = 0.0 * w
    y_center = 0.0 * h
    base = torch.stack([x_center - 0.5 * ws, y_center - 0.5 * hs,
                        x_center + 0.5 * ws, y_center + 0.5 * hs], dim=-1)
    return base.to(dtype)


def grid_anchors_single(featmap_size: FeatSize, stride: int, base_size_factor: float = 8,
                        device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32) -> Tensor:
    """Anchors of one level, shape (H*W, 4) xyxy, row-major (mmdet ``single_level_grid_priors``)."""
    feat_h, feat_w = int(featmap_size[0]), int(featmap_size[1])
    base = base_anchor(stride, base_size_factor).to(device).to(dtype)
    shift_x = torch.arange(0, feat_w, device=device).to(dtype) * stride
    shift_y = torch.arange(0, feat_h, device=device).to(dtype) * stride
    shift_xx, shift_yy = _meshgrid_row_major(shift_x, shift_y)
    shifts = torch.stack([shift_xx, shift_yy, shift_xx, shift_yy], dim=-1)
    return (base[None, :, :] + shifts[:, None, :]).view(-1, 4)


def grid_anchors(featmap_sizes: Sequence[FeatSize], strides: Sequence[int] = GFL_STRIDES,
                 base_size_factor: float = 8, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """One square anchor (side ``base_size_factor * stride``) per location, per level.

    Args:
        featmap_sizes: ``[(H_l, W_l)]`` per level, finest first.
        strides: stride of each level (default 8..128).
        base_size_factor: mmdet's ``octave_base_scale`` (8 for GFL/ATSS).
    Returns:
        list of (H_l*W_l, 4) xyxy tensors, identical to mmdet ``AnchorGenerator.grid_priors``.
    """
    assert len(featmap_sizes) == len(strides), (featmap_sizes, strides)
    return [grid_anchors_single(fs, s, base_size_factor, device=device, dtype=dtype)
            for fs, s in zip(featmap_sizes, strides)]


def anchor_centers(anchors: Tensor) -> Tensor:
    """Box centres ``((x1 + x2) / 2, (y1 + y2) / 2)``: (..., 4) -> (..., 2).

    Same formula as mmdet ``GFLHead.anchor_center``; the point from which GFL's
    integral distances (l, t, r, b) are decoded.
    """
    cx = (anchors[..., 2] + anchors[..., 0]) / 2
    cy = (anchors[..., 3] + anchors[..., 1]) / 2
    return torch.stack([cx, cy], dim=-1)


def valid_flags_single(featmap_size: FeatSize, valid_size: FeatSize,
                       device: torch.device | str = "cpu") -> Tensor:
    """Bool (H*W,) flags: True for cells with row < valid_h and column < valid_w."""
    feat_h, feat_w = int(featmap_size[0]), int(featmap_size[1])
    valid_h, valid_w = valid_size
    assert valid_h <= feat_h and valid_w <= feat_w
    valid_x = torch.zeros(feat_w, dtype=torch.bool, device=device)
    valid_y = torch.zeros(feat_h, dtype=torch.bool, device=device)
    valid_x[:valid_w] = True
    valid_y[:valid_h] = True
    xx, yy = _meshgrid_row_major(valid_x, valid_y)
    return xx & yy


def valid_flags(featmap_sizes: Sequence[FeatSize], pad_shape: Sequence[int],
                strides: Sequence[int] = GFL_STRIDES,
                device: torch.device | str = "cpu") -> list[Tensor]:
    """Per-level bool (H_l*W_l,) flags of priors lying inside the image's padded area.

    As mmdet ``AnchorGenerator.valid_flags`` (one prior per location):
    ``valid_h = min(ceil(pad_h / stride), H_l)``, ``valid_w = min(ceil(pad_w / stride), W_l)``.
    ``pad_shape`` is this image's ``img_meta['pad_shape']`` (h, w, ...); the feature maps
    come from the batch input, which may be larger.
    """
    assert len(featmap_sizes) == len(strides)
    h, w = pad_shape[:2]
    flags = []
    for fs, s in zip(featmap_sizes, strides):
        feat_h, feat_w = int(fs[0]), int(fs[1])
        valid_h = min(int(math.ceil(h / s)), feat_h)
        valid_w = min(int(math.ceil(w / s)), feat_w)
        flags.append(valid_flags_single((feat_h, feat_w), (valid_h, valid_w), device=device))
    return flags


def inside_flags(anchors: Tensor, valid: Tensor, img_shape: Sequence[int],
                 allowed_border: float = -1) -> Tensor:
    """mmdet ``anchor_inside_flags``: flat (N, 4) anchors + (N,) valid -> (N,) bool.

    With ``allowed_border >= 0`` an anchor must also satisfy ``x1 >= -b``, ``y1 >= -b``,
    ``x2 < img_w + b``, ``y2 < img_h + b`` (``img_shape`` = (h, w, ...), the unpadded
    resized image).  With ``allowed_border < 0`` (GFL/ATSS: -1) the valid flags are
    returned unchanged.  mmdet's GFLHead raises if no anchor survives.
    """
    img_h, img_w = img_shape[:2]
    if allowed_border >= 0:
        return (valid
                & (anchors[:, 0] >= -allowed_border)
                & (anchors[:, 1] >= -allowed_border)
                & (anchors[:, 2] < img_w + allowed_border)
                & (anchors[:, 3] < img_h + allowed_border))
    return valid


def num_level_inside(num_level_priors: Sequence[int], inside: Tensor) -> list[int]:
    """Per-level counts of kept priors (mmdet ``get_num_level_anchors_inside``).

    The ATSS assigner receives only the kept priors (``priors[inside]``) and these counts.
    """
    return [int(f.sum()) for f in torch.split(inside, list(num_level_priors))]


def points_single(featmap_size: FeatSize, stride: int, offset: float = 0.5,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  with_stride: bool = False) -> Tensor:
    """Point priors of one level, (H*W, 2) ``(x, y)`` or (H*W, 4) ``(x, y, s, s)``.

    As mmdet ``MlvlPointGenerator.single_level_grid_priors``:
    ``x = (j + offset) * stride``, ``y = (i + offset) * stride``, row-major.
    """
    feat_h, feat_w = int(featmap_size[0]), int(featmap_size[1])
    shift_x = ((torch.arange(0, feat_w, device=device) + offset) * stride).to(dtype)
    shift_y = ((torch.arange(0, feat_h, device=device) + offset) * stride).to(dtype)
    xx, yy = _meshgrid_row_major(shift_x, shift_y)
    if not with_stride:
        return torch.stack([xx, yy], dim=-1)
    s = xx.new_full((xx.shape[0],), stride).to(dtype)
    return torch.stack([xx, yy, s, s], dim=-1)


def points(featmap_sizes: Sequence[FeatSize], strides: Sequence[int] = GFL_STRIDES,
           offset: float = 0.5, device: torch.device | str = "cpu",
           dtype: torch.dtype = torch.float32, with_stride: bool = False) -> list[Tensor]:
    """Per-level point priors for point-based heads (FCOS / FoveaBox).

    mmdet 3.3 ``AnchorFreeHead`` uses ``MlvlPointGenerator(strides)`` with its default
    ``offset=0.5`` (cell centres), so that is the default here.
    """
    assert len(featmap_sizes) == len(strides)
    return [points_single(fs, s, offset, device=device, dtype=dtype, with_stride=with_stride)
            for fs, s in zip(featmap_sizes, strides)]


# ------------------------------------------------------------------------------------------
# several anchors per location: RetinaNet's and SSD's generators


def base_anchors(base_size: float, scales: Tensor, ratios: Tensor, scale_major: bool = True,
                 center: tuple[float, float] | None = None) -> Tensor:
    """The anchors of one location centred at ``center`` (default the origin), ``(A, 4)`` xyxy.

    mmdet ``AnchorGenerator.gen_single_level_base_anchors``: ``ratio = h / w``,
    ``h_ratios = sqrt(ratios)``, ``w_ratios = 1 / h_ratios``; with ``scale_major`` the anchors
    are ordered ratio-major (all scales of the first ratio first), otherwise scale-major.
    """
    w = h = base_size
    x_center, y_center = (0.0 * w, 0.0 * h) if center is None else center
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    if scale_major:
        ws = (w * w_ratios[:, None] * scales[None, :]).view(-1)
        hs = (h * h_ratios[:, None] * scales[None, :]).view(-1)
    else:
        ws = (w * scales[:, None] * w_ratios[None, :]).view(-1)
        hs = (h * scales[:, None] * h_ratios[None, :]).view(-1)
    return torch.stack([x_center - 0.5 * ws, y_center - 0.5 * hs, x_center + 0.5 * ws, y_center + 0.5 * hs], dim=-1)


def shift_anchors(base: Tensor, featmap_size: FeatSize, stride: float, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """``base`` anchors replicated over a grid, ``(H*W*A, 4)`` ordered (y, x, anchor) as mmdet's
    ``single_level_grid_priors``; the grid cell ``(i, j)`` shifts by ``(j, i) * stride``."""
    feat_h, feat_w = int(featmap_size[0]), int(featmap_size[1])
    base = base.to(device).to(dtype)
    shift_x = torch.arange(0, feat_w, device=device).to(dtype) * stride
    shift_y = torch.arange(0, feat_h, device=device).to(dtype) * stride
    shift_xx, shift_yy = _meshgrid_row_major(shift_x, shift_y)
    shifts = torch.stack([shift_xx, shift_yy, shift_xx, shift_yy], dim=-1)
    return (base[None, :, :] + shifts[:, None, :]).view(-1, 4)


RETINA_RATIOS = (0.5, 1.0, 2.0)


def retina_base_anchors(stride: int, octave_base_scale: float = 4.0, scales_per_octave: int = 3,
                        ratios: Sequence[float] = RETINA_RATIOS) -> Tensor:
    """RetinaNet's 9 anchors of one level (mmdet ``AnchorGenerator(octave_base_scale=4,
    scales_per_octave=3, ratios=[0.5, 1, 2])``, base size = stride, centre offset 0)."""
    import numpy as np

    scales = torch.Tensor(np.array([2 ** (i / scales_per_octave) for i in range(scales_per_octave)]) * octave_base_scale)
    return base_anchors(stride, scales, torch.Tensor(list(ratios)), scale_major=True)


SSD_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,))


def ssd_sizes(input_size: int, num_levels: int = 7, basesize_ratio_range: tuple[float, float] = (0.1, 0.9)
              ) -> tuple[list[int], list[int]]:
    """(min sizes, max sizes) of SSD's anchors per level (mmdet ``SSDAnchorGenerator``, COCO
    rule: the first level's sizes are 4 % and 10 % of the input)."""
    min_ratio, max_ratio = int(basesize_ratio_range[0] * 100), int(basesize_ratio_range[1] * 100)
    step = int((max_ratio - min_ratio) // (num_levels - 2))
    min_sizes, max_sizes = [], []
    for ratio in range(min_ratio, max_ratio + 1, step):
        min_sizes.append(int(input_size * ratio / 100))
        max_sizes.append(int(input_size * (ratio + step) / 100))
    min_sizes.insert(0, int(input_size * 4 / 100))
    max_sizes.insert(0, int(input_size * 10 / 100))
    return min_sizes, max_sizes


def ssd_base_anchors(level: int, stride: float, input_size: int, ratios=SSD_RATIOS) -> Tensor:
    """SSD's 4 or 6 anchors of one level, centred at the cell centre ``(stride/2, stride/2)``:
    ``(s=1, r=1)``, ``(s=sqrt(max/min), r=1)``, then ``s=1`` with ``r = 1/2, 2[, 1/3, 3]``."""
    import numpy as np

    min_sizes, max_sizes = ssd_sizes(input_size, len(ratios))
    scales = torch.Tensor([1.0, np.sqrt(max_sizes[level] / min_sizes[level])])
    anchor_ratio = [1.0]
    for r in ratios[level]:
        anchor_ratio += [1 / r, r]
    base = base_anchors(min_sizes[level], scales, torch.Tensor(anchor_ratio), scale_major=False,
                        center=(stride / 2.0, stride / 2.0))
    indices = list(range(len(anchor_ratio)))
    indices.insert(1, len(indices))
    return torch.index_select(base, 0, torch.LongTensor(indices))


__all__ = [
    "RETINA_RATIOS", "SSD_RATIOS", "base_anchors", "retina_base_anchors", "shift_anchors", "ssd_base_anchors",
    "ssd_sizes",
    "GFL_STRIDES", "base_anchor", "grid_anchors_single", "grid_anchors", "anchor_centers",
    "valid_flags_single", "valid_flags", "inside_flags", "num_level_inside",
    "points_single", "points",
]
