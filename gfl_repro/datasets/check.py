"""Is a COCO-format dataset fit to train and evaluate on? (`gfl-repro data check`, and the
engines before any training starts.)

Per split, the annotation file must parse as a JSON object with ``images``, ``annotations``
and ``categories`` lists (at least one category); every entry must be well formed (integer
ids, a file name and a positive size per image, a bbox of four finite numbers and an area per
annotation, ``iscrowd`` in the validation set, which COCOeval reads); every image the file
names must exist, and they must decode: all of them for sets of up to :data:`SAMPLE_IMAGES`
images, a seeded random sample of that many for larger ones (COCO's 118k), which the report
says. Then the boxes a run would use are counted with the training code's own rules
(:func:`gfl_repro.datasets.coco.parse_annotations`, :func:`~gfl_repro.datasets.coco.filter_images`):
a training set without a usable box, or a validation set without a box, is refused, and the
two splits must have the same categories.

Problems are grouped by class: one line per class with the count and the first example.
*Errors* stop a run; *warnings* name what mmdet's rules skip (unknown categories, boxes under
one pixel or outside the image, annotations of images that are not listed).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .coco import filter_images, parse_annotations, read_image
from .errors import DataError

SAMPLE_IMAGES = 500
"""Images decoded per split: all of a set this small, else a random sample of this many."""

REQUIRED_LISTS = ("images", "annotations", "categories")


class DataWarning(UserWarning):
    """Something in a dataset that the training rules skip (one line)."""


@dataclass
class SplitReport:
    """What :func:`check_split` found in one split (``train`` or ``val``)."""

    split: str
    annotation_file: Path
    image_dir: Path
    images: int = 0
    annotations: int = 0
    category_ids: tuple[int, ...] = ()
    boxes: int = 0  # boxes a run uses (train: on the images the training filter keeps)
    decoded: int = 0
    sampled: bool = False  # True: `decoded` is a random sample of the images
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        """One line: counts and how many images were decoded."""
        decoded = (f"decoded a random sample of {self.decoded} of {self.images} images" if self.sampled
                   else f"decoded all {self.decoded} images")
        usable = "usable boxes" if self.split == "train" else "boxes"
        return (f"{self.split}: {self.annotation_file}: {self.images} images, {self.annotations} annotations, "
                f"{len(self.category_ids)} categories, {self.boxes} {usable}; {decoded}")


class _Tally:
    """Counts per class of problem and the first example of each, in the order first met."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.first: dict[str, str] = {}

    def add(self, what: str, example: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        self.first.setdefault(what, example)

    def lines(self, prefix: str) -> list[str]:
        return [f"{prefix}: {n} {what} (first: {self.first[what]})" for what, n in self.counts.items()]


def check_split(image_dir: str | os.PathLike, annotation_file: str | os.PathLike, split: str,
                sample: int = SAMPLE_IMAGES, seed: int = 0) -> SplitReport:
    """Check one split; never raises for a bad dataset (the report holds the problems)."""
    report = SplitReport(split, Path(annotation_file), Path(image_dir))
    data, problem = _read_json(report.annotation_file)
    if problem:
        report.errors.append(problem)
        return report
    errors, warnings = _Tally(), _Tally()
    categories = _check_categories(data["categories"], errors)
    images = _check_images(data["images"], errors)
    annotations = _check_annotations(data["annotations"], images, categories, split, errors, warnings)
    report.images, report.annotations = len(data["images"]), len(data["annotations"])
    report.category_ids = tuple(sorted(categories))
    _check_files(report, images, sample, seed, errors, warnings)
    if not errors.counts:
        report.boxes = _usable_boxes(data, images, annotations, categories, split)
    name = report.annotation_file
    report.errors += errors.lines(str(name))
    report.warnings += warnings.lines(str(name))
    if not errors.counts and report.boxes == 0:
        counts = f"{report.annotations} annotations, {report.images} images"
        report.errors.append(f"{name}: no usable training box ({counts}): a run would train on nothing"
                             if split == "train" else
                             f"{name}: the validation set has no box ({counts}): AP would be undefined")
    return report


def check_dataset(train_images: Path, train_annotations: Path, val_images: Path, val_annotations: Path,
                  sample: int = SAMPLE_IMAGES, seed: int = 0) -> list[SplitReport]:
    """Both splits, and that they share their categories (else labels would not match)."""
    reports = [check_split(train_images, train_annotations, "train", sample, seed),
               check_split(val_images, val_annotations, "val", sample, seed)]
    train, val = reports
    if train.category_ids and val.category_ids and train.category_ids != val.category_ids:
        only_train = sorted(set(train.category_ids) - set(val.category_ids))
        only_val = sorted(set(val.category_ids) - set(train.category_ids))
        val.errors.append(f"{val.annotation_file}: categories differ from {train.annotation_file} "
                          f"(only in train: {only_train}, only in val: {only_val}, or in another order)")
    return reports


def require_usable(reports: list[SplitReport]) -> None:
    """Raise :class:`DataError` (one line: the first problem, how many more) when any split has
    an error."""
    errors = [line for report in reports for line in report.errors]
    if errors:
        more = f"; and {len(errors) - 1} more problem(s)" if len(errors) > 1 else ""
        raise DataError(f"{errors[0]}{more} (gfl-repro data check lists them all)")


# ------------------------------------------------------------------------------- the checks


def _read_json(path: Path) -> tuple[dict[str, Any], str]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}, f"{path}: annotation file missing"
    except OSError as err:
        return {}, f"{path}: cannot read ({err.strerror})"
    except UnicodeDecodeError as err:
        return {}, f"{path}: not UTF-8 text (byte {err.start})"
    except json.JSONDecodeError as err:
        return {}, f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno}; truncated?)"
    if not isinstance(data, dict):
        return {}, f"{path}: not a COCO annotation file (a JSON {type(data).__name__}, not an object)"
    for key in REQUIRED_LISTS:
        if not isinstance(data.get(key), list):
            problem = "missing" if key not in data else f"not a list ({type(data[key]).__name__})"
            return {}, f"{path}: '{key}' {problem}; a COCO annotation file has images, annotations and categories"
    if not data["categories"]:
        return {}, f"{path}: 'categories' is empty"
    return data, ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_categories(entries: list, errors: _Tally) -> set[int]:
    ids: set[int] = set()
    for i, cat in enumerate(entries):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            errors.add("malformed category entries (need an integer id and a name)", f"categories[{i}] = {cat!r:.80}")
        elif cat["id"] in ids:
            errors.add("duplicate category ids", f"id {cat['id']}")
        else:
            ids.add(cat["id"])
    return ids


def _check_images(entries: list, errors: _Tally) -> dict[int, dict]:
    images: dict[int, dict] = {}
    for i, img in enumerate(entries):
        if not (isinstance(img, dict) and _is_int(img.get("id")) and isinstance(img.get("file_name"), str)
                and img["file_name"] and _is_int(img.get("width")) and _is_int(img.get("height"))
                and img["width"] > 0 and img["height"] > 0):
            errors.add("malformed image entries (need an integer id, a file_name and a positive width and height)",
                       f"images[{i}] = {img!r:.100}")
        elif img["id"] in images:
            errors.add("duplicate image ids", f"id {img['id']}")
        else:
            images[img["id"]] = img
    return images


def _check_annotations(entries: list, images: dict[int, dict], categories: set[int], split: str,
                       errors: _Tally, warnings: _Tally) -> list[dict]:
    """The well-formed annotations; tallies the malformed (errors) and the skipped (warnings)."""
    good = []
    for i, ann in enumerate(entries):
        problem = _annotation_problem(ann, split)
        if problem:
            errors.add(f"malformed annotations ({problem})", f"annotations[{i}] = {ann!r:.100}")
            continue
        good.append(ann)
        where = f"annotation {ann['id']}"
        x, y, w, h = ann["bbox"]
        image = images.get(ann["image_id"])
        if image is None:
            warnings.add("annotations of an image not in 'images' (never used)", f"{where}, image_id {ann['image_id']}")
        elif ann["category_id"] not in categories:
            warnings.add("annotations with an unknown category_id (skipped)", f"{where}, category_id {ann['category_id']}")
        elif ann["area"] <= 0 or w < 1 or h < 1:
            warnings.add("annotations with a box under 1 px or no area (skipped)", f"{where}, bbox {ann['bbox']}")
        elif min(x + w, image["width"]) <= max(x, 0) or min(y + h, image["height"]) <= max(y, 0):
            warnings.add("annotations with a box outside their image (skipped)", f"{where}, bbox {ann['bbox']}")
    return good


def _annotation_problem(ann: Any, split: str) -> str:
    if not isinstance(ann, dict):
        return "not an object"
    for key in ("id", "image_id", "category_id"):
        if not _is_int(ann.get(key)):
            return f"{key} missing or not an integer"
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        return "bbox must be [x, y, width, height] numbers"
    if not _is_number(ann.get("area")):
        return "area missing or not a number"
    if split == "val" and ann.get("iscrowd") not in (0, 1, True, False):
        return "iscrowd missing (COCOeval reads it)"
    return ""


def _check_files(report: SplitReport, images: dict[int, dict], sample: int, seed: int,
                 errors: _Tally, warnings: _Tally) -> None:
    """Every listed image exists; all of them (or a random sample of ``sample``) decode."""
    try:
        present = set(os.listdir(report.image_dir))
    except OSError as err:
        errors.add(f"image folder unreadable ({err.strerror})", str(report.image_dir))
        return
    existing = []
    for img in images.values():
        name = img["file_name"]
        if name in present or ("/" in name and (report.image_dir / name).is_file()):
            existing.append(img)
        else:
            errors.add("image files missing", str(report.image_dir / name))
    report.sampled = len(existing) > sample
    chosen = random.Random(seed).sample(existing, sample) if report.sampled else existing
    for img in chosen:
        path = report.image_dir / img["file_name"]
        try:
            pixels = read_image(path)
        except DataError as err:
            errors.add("image files that do not decode", str(err))
            continue
        report.decoded += 1
        if pixels.shape[:2] != (img["height"], img["width"]):
            warnings.add("images whose size differs from their entry", f"{path}: {pixels.shape[1]}x{pixels.shape[0]} "
                         f"on disk, {img['width']}x{img['height']} in the file")


def _usable_boxes(data: dict, images: dict[int, dict], annotations: list[dict], categories: set[int],
                  split: str) -> int:
    """Boxes a run uses, by the training code's rules (train: on the images its filter keeps)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"images": list(images.values()), "annotations": annotations,
                    "categories": [c for c in data["categories"] if isinstance(c, dict) and c.get("id") in categories]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    cat_ids = sorted(categories)
    cat2label = {cat: i for i, cat in enumerate(cat_ids)}
    img_ids = list(images)
    if split == "train":
        img_ids = filter_images(coco, img_ids, cat_ids)
    total = 0
    for img_id in img_ids:
        info = coco.imgs[img_id]
        parsed = parse_annotations(coco.imgToAnns.get(img_id, []), info["width"], info["height"], cat2label)
        total += len(parsed["boxes"])
    return total


__all__ = ["DataWarning", "SAMPLE_IMAGES", "SplitReport", "check_dataset", "check_split", "require_usable"]
