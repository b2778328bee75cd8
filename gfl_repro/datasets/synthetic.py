"""Synthetic COCO-format detection data for the ``smoke`` profile.

The generator draws simple, clearly separable shape classes on a noisy, textured background and
writes a real COCO dataset (PNG images + ``instances_{train,val}.json``) that pycocotools,
``CocoDetection`` and ``COCOeval`` read unchanged.  It is made to exercise what matters for GFL:

* all three COCO size ranges: small (area < 32²), medium, large (area > 96²) — every third
  non-empty image gets one object forced into each range, so even tiny sets contain all three;
* occlusion between objects (later objects are drawn on top; every object stays >= 50 % visible;
  the box is the full, amodal extent of the shape, not only its visible part);
* ambiguous boundaries as in the paper's Fig. 3: a fraction of objects gets a Gaussian-blurred
  edge, a drop shadow, or low contrast to the background (recorded per annotation under the
  non-standard key ``attributes``, which pycocotools ignores);
* images without objects (``index % 20 == 3``) and crowd annotations (``index % 10 == 5``:
  a cluster of small same-class objects covered by one ``iscrowd=1`` box);
* non-contiguous category ids (1, 2, 3, 5, 7, 11) to exercise the id <-> label mapping.

Determinism contract: image ``i`` of split ``s`` depends only on ``(seed, s, i, image_size)``
(numpy ``Generator`` seeded per image), so the same arguments give byte-identical files, and a
larger set extends a smaller one.  Generation is atomic: files go to a temporary sibling
directory that is renamed to ``out_dir`` only when complete (``meta.json`` is written last).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from .errors import DataError

GENERATOR_VERSION = 1
META_FILE = "meta.json"  # written last: parameters, counts and the content hash
DEFAULT_IMAGE_SIZE = (192, 160)  # (W, H): leaves room for > 96² px objects, cheap on CPU

SPLITS = {"train": 0, "val": 1}
SMALL_MAX_AREA = 32**2
LARGE_MIN_AREA = 96**2
_SUPERSAMPLE = 4
_MIN_VISIBLE = 0.5


@dataclass(frozen=True)
class Category:
    """One synthetic class: COCO id, name, base RGB colour (objects jitter around it)."""

    id: int
    name: str
    rgb: tuple[int, int, int]


CATEGORIES: tuple[Category, ...] = (
    Category(1, "rectangle", (215, 45, 40)),
    Category(2, "ellipse", (40, 85, 225)),
    Category(3, "triangle", (35, 170, 55)),
    Category(5, "cross", (235, 195, 25)),
    Category(7, "ring", (190, 45, 200)),
    Category(11, "diamond", (30, 200, 210)),
)

# Fraction of the box a shape covers: turns a target mask area into a box size.
_FILL = {"rectangle": 1.0, "ellipse": np.pi / 4, "triangle": 0.5, "cross": 0.55,
         "ring": 0.55, "diamond": 0.5}
# Target mask areas (px) per COCO size range.
_AREA_RANGE = {"small": (110.0, 900.0), "medium": (1150.0, 8600.0), "large": (9900.0, 15000.0)}
_BUCKET_P = {"small": 0.4, "medium": 0.45, "large": 0.15}


@dataclass
class _Object:
    """A placed shape: geometry (box centre/half sizes in px), rendering and annotation state."""

    category: Category
    cx: float
    cy: float
    hw: float
    hh: float
    params: dict
    coverage: np.ndarray  # (H, W) float in [0, 1], anti-aliased, unblurred
    binary: np.ndarray  # (H, W) bool, coverage >= 0.5
    iscrowd: int = 0
    effects: dict = field(default_factory=dict)
    members: list = field(default_factory=list)  # crowd: member objects

    def box_xyxy(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Full (amodal) geometric extent clipped to the image."""
        if self.members:
            boxes = np.array([m.box_xyxy(width, height) for m in self.members])
            return (boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max())
        return (max(0.0, self.cx - self.hw), max(0.0, self.cy - self.hh),
                min(float(width), self.cx + self.hw), min(float(height), self.cy + self.hh))


# --------------------------------------------------------------------------------------------
# Small numerical helpers (numpy only, deterministic)
# --------------------------------------------------------------------------------------------


def _gaussian_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a 2-D array (edge padding); identity for sigma <= 0."""
    if sigma <= 0:
        return a
    r = max(1, int(3.0 * sigma + 0.5))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-(x**2) / (2.0 * sigma**2))
    k /= k.sum()
    h, w = a.shape
    p = np.pad(a, ((r, r), (0, 0)), mode="edge")
    out = sum(k[j] * p[j:j + h] for j in range(2 * r + 1))
    p = np.pad(out, ((0, 0), (r, r)), mode="edge")
    return sum(k[j] * p[:, j:j + w] for j in range(2 * r + 1))


def _upsample_bilinear(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinearly stretch a (gh, gw, C) grid over (height, width, C), corners aligned."""
    gh, gw = grid.shape[:2]
    ys = np.linspace(0.0, gh - 1.0, height)
    xs = np.linspace(0.0, gw - 1.0, width)
    y0 = np.clip(np.floor(ys).astype(int), 0, gh - 2)
    x0 = np.clip(np.floor(xs).astype(int), 0, gw - 2)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx
            + g10 * fy * (1 - fx) + g11 * fy * fx)


def _shift(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate a 2-D array by (dx, dy) pixels, filling with zeros (no wrap-around)."""
    out = np.zeros_like(a)
    h, w = a.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


def _inside(name: str, u: np.ndarray, v: np.ndarray, params: dict) -> np.ndarray:
    """Membership test in normalised box coordinates u, v in [-1, 1] (extent exactly the box)."""
    if name == "rectangle":
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if name == "ellipse":
        return u * u + v * v <= 1
    if name == "triangle":  # apex at v = -1 (or +1 when flipped), base on the other side
        t = -v if params.get("down", False) else v
        return (t <= 1) & (np.abs(u) <= (t + 1) / 2)
    if name == "cross":
        t = params.get("arm", 0.34)
        au, av = np.abs(u), np.abs(v)
        return ((au <= t) & (av <= 1)) | ((av <= t) & (au <= 1))
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 1) & (r2 >= params.get("inner", 0.55) ** 2)
    if name == "diamond":
        return np.abs(u) + np.abs(v) <= 1
    raise ValueError(f"unknown shape {name!r}")


def _render_coverage(name: str, cx: float, cy: float, hw: float, hh: float, params: dict,
                     width: int, height: int) -> np.ndarray:
    """Anti-aliased coverage (H, W) of a shape, by 4x4 supersampling over its pixel footprint."""
    cov = np.zeros((height, width), dtype=np.float64)
    x0, x1 = max(0, int(np.floor(cx - hw))), min(width, int(np.ceil(cx + hw)))
    y0, y1 = max(0, int(np.floor(cy - hh))), min(height, int(np.ceil(cy + hh)))
    if x1 <= x0 or y1 <= y0:
        return cov
    s = _SUPERSAMPLE
    xs = x0 + (np.arange((x1 - x0) * s) + 0.5) / s
    ys = y0 + (np.arange((y1 - y0) * s) + 0.5) / s
    u = (xs[None, :] - cx) / hw
    v = (ys[:, None] - cy) / hh
    hit = _inside(name, u, v, params).astype(np.float64)
    cov[y0:y1, x0:x1] = hit.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
    return cov


def _sample_shape_params(name: str, rng: np.random.Generator) -> dict:
    """Per-object shape variation (triangle orientation, ring thickness, cross arm width)."""
    if name == "triangle":
        return {"down": bool(rng.random() < 0.5)}
    if name == "ring":
        return {"inner": float(rng.uniform(0.45, 0.6))}
    if name == "cross":
        return {"arm": float(rng.uniform(0.28, 0.4))}
    return {}


def _sample_box_size(name: str, bucket: str, rng: np.random.Generator,
                     width: int, height: int) -> tuple[float, float]:
    """Half sizes (hw, hh) for a shape whose mask area falls in ``bucket`` (log-uniform)."""
    lo, hi = _AREA_RANGE[bucket]
    area = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    aspect = float(np.exp(rng.uniform(np.log(0.65), np.log(1.55))))  # w / h
    box_area = area / _FILL[name]
    w = np.sqrt(box_area * aspect)
    h = np.sqrt(box_area / aspect)
    w = float(np.clip(w, 8.0, 0.96 * width))
    h = float(np.clip(h, 8.0, 0.96 * height))
    return w / 2.0, h / 2.0


def _sample_centre(hw: float, hh: float, rng: np.random.Generator, width: int, height: int,
                   truncate: float) -> tuple[float, float]:
    """Box centre such that at most ``truncate`` of the box width/height leaves the image."""

    def axis(half: float, size: int) -> float:
        lo = half - truncate * 2 * half
        hi = size - half + truncate * 2 * half
        if lo >= hi:
            return size / 2.0
        return float(rng.uniform(lo, hi))

    return axis(hw, width), axis(hh, height)


# --------------------------------------------------------------------------------------------
# Scene composition
# --------------------------------------------------------------------------------------------


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Noisy, textured, low-saturation background as float (H, W, 3) in [0, 255]."""
    base = rng.uniform(85, 165) + rng.uniform(-14, 14, size=3)
    gh, gw = int(rng.integers(3, 7)), int(rng.integers(4, 8))
    lum = rng.normal(0.0, 20.0, size=(gh, gw, 1))
    chroma = rng.normal(0.0, 7.0, size=(gh, gw, 3))
    img = base[None, None, :] + _upsample_bilinear(lum + chroma, height, width)
    # A faint woven texture: two random gratings.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    for _ in range(2):
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(5.0, 14.0)
        phase = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(3.0, 8.0)
        img += amp * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period
                            + phase)[..., None]
    # A few low-saturation distractor strokes.
    for _ in range(int(rng.integers(0, 4))):
        x0, x1 = rng.uniform(0, width, size=2)
        y0, y1 = rng.uniform(0, height, size=2)
        thick = rng.uniform(0.8, 2.5)
        d = _segment_distance(xx + 0.5, yy + 0.5, x0, y0, x1, y1)
        alpha = np.clip(thick - d + 0.5, 0, 1)[..., None] * rng.uniform(0.3, 0.6)
        tone = rng.uniform(60, 200) + rng.uniform(-10, 10, size=3)
        img = img * (1 - alpha) + tone * alpha
    return img


def _segment_distance(px, py, x0, y0, x1, y1):
    """Distance from points (px, py) to the segment (x0, y0)-(x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((px - x0) * dx + (py - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
    return np.hypot(px - (x0 + t * dx), py - (y0 + t * dy))


def _make_object(category: Category, bucket: str, rng: np.random.Generator, width: int,
                 height: int, truncate: float) -> _Object:
    """Sample geometry for one object and rasterise its coverage."""
    params = _sample_shape_params(category.name, rng)
    hw, hh = _sample_box_size(category.name, bucket, rng, width, height)
    cx, cy = _sample_centre(hw, hh, rng, width, height, truncate)
    cov = _render_coverage(category.name, cx, cy, hw, hh, params, width, height)
    return _Object(category, cx, cy, hw, hh, params, cov, cov >= 0.5)


def _area_bucket(area: float) -> str:
    """COCO size range of a mask area."""
    if area < SMALL_MAX_AREA:
        return "small"
    return "large" if area > LARGE_MIN_AREA else "medium"


def _fits(new: _Object, placed: list[_Object], label_map: np.ndarray,
          forbidden: list[tuple[float, float, float, float]], width: int, height: int) -> bool:
    """Placement check: every placed object stays >= 50 % visible, no overlap with crowd boxes
    or with a placed object of the same class."""
    if new.binary.sum() < 16:
        return False
    bx0, by0, bx1, by1 = new.box_xyxy(width, height)
    if bx1 - bx0 < 2 or by1 - by0 < 2:
        return False
    for fx0, fy0, fx1, fy1 in forbidden:
        if bx0 < fx1 and fx0 < bx1 and by0 < fy1 and fy0 < by1:
            return False
    for k, obj in enumerate(placed):
        if obj.category.id == new.category.id and np.logical_and(obj.binary, new.binary).any():
            return False  # same colour on same colour would be invisible, not just ambiguous
        total = obj.binary.sum()
        visible = np.logical_and(label_map == k, ~new.binary).sum()
        if visible < _MIN_VISIBLE * total:
            return False
    return True


def _place(new: _Object, placed: list[_Object], label_map: np.ndarray) -> None:
    """Commit an object on top of the scene."""
    label_map[new.binary] = len(placed)
    placed.append(new)


def _make_crowd(rng: np.random.Generator, width: int, height: int, placed: list[_Object],
                label_map: np.ndarray) -> _Object | None:
    """A cluster of 7-14 small same-class objects covered by one crowd annotation, or None."""
    category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    for _ in range(20):
        side = float(rng.uniform(34, 54))
        x0 = float(rng.uniform(0, width - side))
        y0 = float(rng.uniform(0, height - side))
        members = []
        for _ in range(int(rng.integers(7, 15))):
            s = float(rng.uniform(6, 11))
            aspect = float(rng.uniform(0.8, 1.25))
            hw, hh = s * aspect / 2, s / aspect / 2
            cx = float(rng.uniform(x0 + hw, x0 + side - hw))
            cy = float(rng.uniform(y0 + hh, y0 + side - hh))
            params = _sample_shape_params(category.name, rng)
            cov = _render_coverage(category.name, cx, cy, hw, hh, params, width, height)
            members.append(_Object(category, cx, cy, hw, hh, params, cov, cov >= 0.5))
        union = np.clip(sum(m.coverage for m in members), 0, 1)
        crowd = _Object(category, 0.0, 0.0, 0.0, 0.0, {}, union, union >= 0.5, iscrowd=1,
                        members=members)
        bx0, by0, bx1, by1 = crowd.box_xyxy(width, height)
        overlaps = any(
            bx0 < ox1 and ox0 < bx1 and by0 < oy1 and oy0 < by1
            for ox0, oy0, ox1, oy1 in (o.box_xyxy(width, height) for o in placed))
        if not overlaps and _fits(crowd, placed, label_map, [], width, height):
            return crowd
    return None


def _sample_effects(obj: _Object, rng: np.random.Generator) -> dict:
    """Ambiguous-boundary effects (paper Fig. 3): blur, drop shadow, low contrast."""
    short = 2 * min(obj.hw, obj.hh)
    effects = {}
    if rng.random() < 0.2:
        effects["blur_sigma"] = round(float(np.clip(rng.uniform(1.2, 3.2), 0.6, 0.15 * short)), 3)
    if rng.random() < 0.2:
        mag = float(np.clip(rng.uniform(0.06, 0.14) * short, 2.0, 8.0))
        ang = rng.uniform(0, 2 * np.pi)
        effects["shadow_offset"] = [int(round(mag * np.cos(ang))), int(round(mag * np.sin(ang)))]
        effects["shadow_strength"] = round(float(rng.uniform(0.35, 0.6)), 3)
    if rng.random() < 0.15:
        effects["contrast"] = round(float(rng.uniform(0.35, 0.55)), 3)
    return effects


def _draw(img: np.ndarray, obj: _Object, rng: np.random.Generator) -> None:
    """Composite one object (and its shadow) onto ``img`` in place."""
    height, width = img.shape[:2]
    parts = obj.members or [obj]
    for part in parts:
        fx = obj.effects
        if "shadow_offset" in fx:
            dx, dy = fx["shadow_offset"]
            shadow = _gaussian_blur(_shift(part.coverage, dx, dy), 1.5) * fx["shadow_strength"]
            img *= (1.0 - shadow)[..., None]
        colour = np.asarray(obj.category.rgb, dtype=np.float64) + rng.uniform(-18, 18, size=3)
        alpha = part.coverage
        if "contrast" in fx:
            w = alpha / max(alpha.sum(), 1e-9)
            bg_mean = (img * w[..., None]).sum(axis=(0, 1))
            colour = bg_mean + fx["contrast"] * (colour - bg_mean)
        if "blur_sigma" in fx:
            alpha = _gaussian_blur(alpha, fx["blur_sigma"])
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        gx, gy = rng.uniform(-1, 1, size=2) * 14.0
        shade = gx * (xx - part.cx) / max(part.hw, 1) + gy * (yy - part.cy) / max(part.hh, 1)
        fill = colour[None, None, :] + shade[..., None]
        img[:] = img * (1 - alpha[..., None]) + fill * alpha[..., None]


def _object_buckets(index: int, rng: np.random.Generator) -> list[str]:
    """Size ranges of the objects of a non-empty image: one forced by index, the rest random."""
    forced = ("large", "medium", "small")[index % 3]
    n_extra = int(rng.integers(1, 6))
    names = list(_BUCKET_P)
    extra = rng.choice(len(names), size=n_extra, p=[_BUCKET_P[n] for n in names])
    order = {"large": 0, "medium": 1, "small": 2}
    return [forced] + sorted((names[e] for e in extra), key=order.__getitem__)


def is_empty_index(index: int) -> bool:
    """Images with this index have no objects at all."""
    return index % 20 == 3


def has_crowd_index(index: int) -> bool:
    """Images with this index get one crowd annotation (unless empty)."""
    return index % 10 == 5


def render_image(seed: int, split: str, index: int,
                 image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
                 ) -> tuple[np.ndarray, list[_Object]]:
    """Render image ``index`` of ``split``: (uint8 (H, W, 3) RGB array, placed objects).

    Depends only on its arguments (a numpy Generator is seeded from (seed, split, index)).
    """
    width, height = image_size
    rng = np.random.default_rng([int(seed), SPLITS[split], int(index)])
    img = _background(rng, width, height)
    placed: list[_Object] = []
    label_map = np.full((height, width), -1, dtype=np.int32)
    if not is_empty_index(index):
        buckets = _object_buckets(index, rng)
        crowd_boxes = []
        for j, bucket in enumerate(buckets):
            forced = j == 0
            for _ in range(40 if forced else 15):
                cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
                obj = _make_object(cat, bucket, rng, width, height, 0.0 if forced else 0.3)
                if forced and _area_bucket(float(obj.binary.sum())) != bucket:
                    continue
                if _fits(obj, placed, label_map, crowd_boxes, width, height):
                    obj.effects = _sample_effects(obj, rng)
                    _place(obj, placed, label_map)
                    break
            if forced and has_crowd_index(index):
                crowd = _make_crowd(rng, width, height, placed, label_map)
                if crowd is not None:
                    _place(crowd, placed, label_map)
                    crowd_boxes.append(crowd.box_xyxy(width, height))
        for obj in placed:
            _draw(img, obj, rng)
        for k, obj in enumerate(placed):
            obj.effects["occluded_fraction"] = round(
                1.0 - float((label_map == k).sum()) / float(obj.binary.sum()), 3)
    img += rng.normal(0.0, 4.0, size=img.shape)  # sensor noise over everything
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), placed


# --------------------------------------------------------------------------------------------
# COCO writing
# --------------------------------------------------------------------------------------------


def _rle(binary: np.ndarray) -> dict:
    """Compressed COCO RLE of a boolean mask (pycocotools encoding)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(binary.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _annotations(objects: Iterable[_Object], image_id: int, first_ann_id: int, width: int,
                 height: int) -> list[dict]:
    """COCO annotation dicts: bbox [x, y, w, h] = amodal extent clipped to the image,
    area = pixel count of the (amodal) mask, segmentation = its compressed RLE."""
    anns = []
    for k, obj in enumerate(objects):
        x0, y0, x1, y1 = (round(float(c), 2) for c in obj.box_xyxy(width, height))
        anns.append({
            "id": first_ann_id + k,
            "image_id": image_id,
            "category_id": obj.category.id,
            "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
            "area": float(obj.binary.sum()),
            "iscrowd": obj.iscrowd,
            "segmentation": _rle(obj.binary),
            "attributes": dict(sorted(obj.effects.items())),
        })
    return anns


def _coco_header() -> dict:
    return {
        "info": {"description": "gfl-repro synthetic shapes", "version": str(GENERATOR_VERSION),
                 "year": 2020, "contributor": "gfl-repro", "date_created": "2020-01-01"},
        "licenses": [{"id": 1, "name": "CC0", "url": ""}],
        "categories": [{"id": c.id, "name": c.name, "supercategory": "shape"}
                       for c in CATEGORIES],
    }


def _save_png(img: np.ndarray, path: Path) -> None:
    """Write an RGB uint8 array as PNG with fixed options (no metadata, fixed compression)."""
    Image.fromarray(img, mode="RGB").save(path, format="PNG", compress_level=6)


def _write_split(root: Path, split: str, num: int, seed: int, image_size: tuple[int, int],
                 bar) -> dict:
    """Render and write one split; returns counts for meta.json."""
    width, height = image_size
    (root / split).mkdir(parents=True)
    coco = _coco_header()
    coco["images"], coco["annotations"] = [], []
    for index in range(num):
        img, objects = render_image(seed, split, index, image_size)
        image_id = index + 1
        file_name = f"{image_id:012d}.png"
        _save_png(img, root / split / file_name)
        coco["images"].append({"id": image_id, "file_name": file_name, "width": width,
                               "height": height, "license": 1})
        coco["annotations"] += _annotations(objects, image_id, len(coco["annotations"]) + 1,
                                            width, height)
        bar.update(1)
    text = json.dumps({k: coco[k] for k in ("info", "licenses", "images", "annotations",
                                            "categories")}, separators=(",", ":"))
    (root / "annotations" / f"instances_{split}.json").write_text(text)
    return {"images": num, "annotations": len(coco["annotations"])}


def _params(num_train: int, num_val: int, seed: int, image_size) -> dict:
    return {"num_train": int(num_train), "num_val": int(num_val), "seed": int(seed),
            "image_size": [int(image_size[0]), int(image_size[1])],
            "version": GENERATOR_VERSION}


def generate(out_dir: str | os.PathLike, num_train: int = 256, num_val: int = 64, seed: int = 0,
             image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE, progress: bool = True,
             overwrite: bool = False) -> Path:
    """Generate the synthetic COCO dataset into ``out_dir`` and return it as a Path.

    Layout: ``train/*.png``, ``val/*.png``, ``annotations/instances_{train,val}.json``,
    ``meta.json`` (parameters + counts, written last).  Same arguments -> byte-identical files.
    ``out_dir`` appears only complete (temp dir + rename); if it exists, FileExistsError
    unless ``overwrite``.  ``image_size`` is (W, H); both must be >= 64.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    width, height = (int(image_size[0]), int(image_size[1]))
    if min(width, height) < 64:
        raise ValueError(f"image_size {image_size} too small (need W, H >= 64)")
    if num_train < 0 or num_val < 0:
        raise ValueError("num_train and num_val must be >= 0")
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        (tmp / "annotations").mkdir(parents=True)
        counts = {}
        with tqdm(total=num_train + num_val, desc="synthetic COCO", unit="img",
                  disable=not progress) as bar:
            for split, num in (("train", num_train), ("val", num_val)):
                counts[split] = _write_split(tmp, split, num, seed, (width, height), bar)
        meta = {"generator": "gfl_repro.datasets.synthetic",
                "params": _params(num_train, num_val, seed, (width, height)),
                "counts": counts,
                "categories": {c.id: c.name for c in CATEGORIES},
                "content_sha256": content_hash(tmp)}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
        _install(tmp, out_dir, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _install(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Move a complete dataset from ``tmp`` to ``out_dir`` (rename; old one removed after)."""
    if out_dir.exists() and overwrite:
        trash = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out_dir, trash)
        os.rename(tmp, out_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, out_dir)


def content_hash(root: str | os.PathLike) -> str:
    """SHA-256 over every file of a dataset but ``meta.json``: relative paths, sizes and bytes,
    in sorted path order (what ``meta.json`` records to detect a damaged copy)."""
    root = Path(root)
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != META_FILE)
    for path in files:
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def read_meta(path: str | os.PathLike) -> dict | None:
    """The dataset's ``meta.json``, or None when it is absent or unreadable."""
    try:
        meta = json.loads((Path(path) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def is_complete(path: str | os.PathLike) -> bool:
    """True if ``path`` holds a finished dataset (``meta.json`` exists; it is written last)."""
    return (Path(path) / META_FILE).is_file()


def entry_problem(path: str | os.PathLike, params: dict) -> str:
    """Why the dataset at ``path`` is not an intact copy generated with ``params`` ("" if it is).

    Intact: ``meta.json`` parses, holds these parameters and a content hash that the files
    match. A copy written before meta.json held a hash is checked once image by image
    (:func:`gfl_repro.datasets.check.check_split`) and, if intact, gets its hash recorded.
    """
    path = Path(path)
    if not path.exists():
        return "missing"
    if not path.is_dir():
        return "not a directory"
    meta = read_meta(path)
    if meta is None:
        return "no readable meta.json (generation interrupted?)"
    if meta.get("params") != params:
        return f"meta.json holds other parameters ({meta.get('params')})"
    recorded = meta.get("content_sha256")
    if recorded is None:
        return _adopt_unhashed(path, meta)
    return "" if content_hash(path) == recorded else "files differ from meta.json's content hash (damaged copy)"


def _adopt_unhashed(path: Path, meta: dict) -> str:
    """Check a copy without a content hash file by file; record its hash when intact."""
    from ..store import atomic_write_text
    from .check import check_split

    for split in SPLITS:
        report = check_split(path / split, path / "annotations" / f"instances_{split}.json", split,
                             sample=10**9)
        expected = meta.get("counts", {}).get(split, {}).get("images")
        if report.errors or report.images != expected:
            return (report.errors or [f"{split}: {report.images} images, meta.json says {expected}"])[0]
    try:
        atomic_write_text(path / META_FILE, json.dumps({**meta, "content_sha256": content_hash(path)}, indent=1,
                                                       sort_keys=True))
    except OSError:
        pass  # a read-only shared cache: intact all the same
    return ""


def cache_key(num_train: int = 256, num_val: int = 64, seed: int = 0,
              image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> str:
    """Short hash of the generation parameters (and GENERATOR_VERSION)."""
    blob = json.dumps(_params(num_train, num_val, seed, image_size), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def ensure_synthetic(cache_dir: str | os.PathLike, num_train: int = 256, num_val: int = 64,
                     seed: int = 0, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
                     progress: bool = True) -> Path:
    """Return ``cache_dir/synthetic-<key>``, generating it first if no intact copy exists.

    The key hashes (num_train, num_val, seed, image_size, GENERATOR_VERSION). A copy that is
    incomplete or damaged (:func:`entry_problem`) is set aside with a warning and generated
    again. Safe against concurrent callers: whoever renames first wins, the others reuse the
    result. :class:`~gfl_repro.datasets.errors.DataError` (one line) when the cache cannot be
    written.
    """
    cache = Path(cache_dir)
    if cache.exists() and not cache.is_dir():
        raise DataError(f"synthetic data cache {cache} is a file, not a directory (set GFL_REPRO_CACHE to a directory)")
    params = _params(num_train, num_val, seed, image_size)
    target = cache / f"synthetic-{cache_key(num_train, num_val, seed, image_size)}"
    problem = entry_problem(target, params)
    if not problem:
        return target
    if problem != "missing":
        warnings.warn(f"{target}: {problem}; generating it again")
        _set_aside(target)
    try:
        generate(target, num_train=num_train, num_val=num_val, seed=seed, image_size=image_size, progress=progress)
    except OSError as err:  # FileExistsError or a non-empty target: another process finished first
        if entry_problem(target, params):
            raise DataError(f"cannot write the synthetic data cache {cache}: {err.strerror or err} "
                            "(set GFL_REPRO_CACHE to a writable directory)") from None
    problem = entry_problem(target, params)
    if problem:
        raise DataError(f"{target}: {problem} right after generating it")
    return target


def _set_aside(target: Path) -> None:
    """Remove a damaged cache entry: renamed first (readers never see half of it), then deleted."""
    trash = target.parent / f".{target.name}.damaged-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(target, trash)
    except FileNotFoundError:
        return  # another process set it aside first
    except OSError as err:
        raise DataError(f"cannot replace the damaged synthetic data {target}: {err.strerror}") from None
    if trash.is_dir() and not trash.is_symlink():
        shutil.rmtree(trash, ignore_errors=True)
    else:
        trash.unlink(missing_ok=True)
