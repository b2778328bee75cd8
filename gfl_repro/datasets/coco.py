"""COCO-format detection dataset, batch collation and a deterministic loader (mmdet 3.3 rules).

Annotation parsing (mmdet ``CocoDataset.parse_data_info``): an annotation is skipped if it has
``ignore``, lies completely outside the image, has area <= 0 or w < 1 or h < 1, or an unknown
category; bbox [x, y, w, h] -> [x, y, x + w, y + h] (no -1, as in mmdet 3); ``iscrowd`` ones go
to ``ignore_boxes`` (never training targets).  Labels are 0..C-1 in sorted category-id order;
``label2cat`` maps back for evaluation.

Training-set filtering (mmdet ``filter_cfg=dict(filter_empty_gt=True, min_size=32)``,
``CocoDataset.filter_data``): keep an image iff it has at least one annotation of a known
category **in the raw json** (crowd or degenerate ones count, exactly as mmdet's
``cat_img_map`` rule) and min(width, height) >= min_size.  Test/val sets keep every image.

Randomness: item ``index`` in epoch ``e`` uses ``numpy.random.default_rng([seed, e, index])``,
so augmentation does not depend on worker count or scheduling.  ``dataset[i]`` means epoch 0;
the loader's ``EpochSampler`` feeds ``(index, epoch)`` keys.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import random
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from .errors import DataError
from .pipeline import build_pipeline
from .transforms import Scale, normalize_image


def load_coco(ann_file: str | os.PathLike):
    """pycocotools ``COCO`` for ``ann_file``, without its stdout chatter."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann_file))


def read_image(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB pixels of an image file; :class:`DataError` (one line naming the
    file) when it is missing, truncated or not an image."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image file missing") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: cannot decode image ({' '.join(str(err).split())[:200]})") from None


def parse_annotations(anns: Sequence[dict], width: int, height: int,
                      cat2label: dict[int, int]) -> dict[str, np.ndarray]:
    """mmdet 3 rules -> {boxes (N, 4) float32 xyxy, labels (N,) int64, ignore_boxes (M, 4)}."""
    boxes, labels, ignore = [], [], []
    for ann in anns:
        if ann.get("ignore", False):
            continue
        x1, y1, w, h = ann["bbox"]
        inter_w = max(0, min(x1 + w, width) - max(x1, 0))
        inter_h = max(0, min(y1 + h, height) - max(y1, 0))
        if inter_w * inter_h == 0:
            continue
        if ann["area"] <= 0 or w < 1 or h < 1:
            continue
        if ann["category_id"] not in cat2label:
            continue
        box = [x1, y1, x1 + w, y1 + h]
        if ann.get("iscrowd", False):
            ignore.append(box)
        else:
            boxes.append(box)
            labels.append(cat2label[ann["category_id"]])
    return {
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, dtype=np.int64),
        "ignore_boxes": np.asarray(ignore, dtype=np.float32).reshape(-1, 4),
    }


def filter_images(coco, img_ids: Sequence[int], cat_ids: Sequence[int],
                  filter_empty_gt: bool = True, min_size: int = 32) -> list[int]:
    """mmdet ``filter_data`` for training: drop images without any annotation of ``cat_ids``
    (if ``filter_empty_gt``) and images with min(width, height) < ``min_size``."""
    with_ann = set()
    for cat_id in cat_ids:
        with_ann |= set(coco.catToImgs.get(cat_id, []))
    keep = []
    for img_id in img_ids:
        info = coco.imgs[img_id]
        if filter_empty_gt and img_id not in with_ann:
            continue
        if min(info["width"], info["height"]) >= min_size:
            keep.append(img_id)
    return keep


def _normalise_multiscale(multiscale_range, scale: Scale) -> tuple[Scale, Scale] | None:
    """Accept mmdet's [(long, short_lo), (long, short_hi)] or a (short_lo, short_hi) pair of
    ints (long edge = max(scale)); return the mmdet form or None."""
    if multiscale_range is None:
        return None
    lo, hi = multiscale_range
    if isinstance(lo, (int, np.integer)) and isinstance(hi, (int, np.integer)):
        long_edge = max(scale)
        return (long_edge, int(lo)), (long_edge, int(hi))
    return (int(lo[0]), int(lo[1])), (int(hi[0]), int(hi[1]))


class CocoDetection(Dataset):
    """Detection dataset over a COCO json and an image folder.

    Item: ``(image, target)``; image is float32 (3, H, W) normalised RGB; target holds
    boxes (N, 4) float32 xyxy in resized-image pixels, labels (N,) int64 in 0..C-1,
    ignore_boxes (M, 4) float32 (crowd), image_id, file_name, ori_shape (h, w),
    img_shape (h, w), scale_factor (w_scale, h_scale), flip (bool).

    train=True: filtered as mmdet (``filter_empty_gt``, ``min_size``), resize to ``scale``
    (or multi-scale over ``multiscale_range``), flip with ``flip_prob``.  train=False: all
    images, resize to ``scale``, no flip.  Order of images = order in the json (as mmdet).
    ``keep_ratio=False`` resizes to exactly ``scale`` = (w, h) (SSD's fixed square input);
    ``augment="ssd"`` adds SSD's expansion, min-IoU crop and photometric distortion in training.
    """

    def __init__(self, image_dir: str | os.PathLike, ann_file: str | os.PathLike, train: bool,
                 scale: Scale = (1333, 800), multiscale_range=None, flip_prob: float = 0.5,
                 seed: int = 0, filter_empty_gt: bool = True, min_size: int = 32, keep_ratio: bool = True,
                 augment: str = "flip"):
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.train = train
        self.seed = int(seed)
        self.coco = load_coco(ann_file)
        self.cat_ids: list[int] = sorted(self.coco.getCatIds())
        self.cat2label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        self.label2cat = {i: cat_id for i, cat_id in enumerate(self.cat_ids)}
        self.classes = tuple(self.coco.cats[c]["name"] for c in self.cat_ids)
        img_ids = list(self.coco.getImgIds())
        if train:
            img_ids = filter_images(self.coco, img_ids, self.cat_ids, filter_empty_gt, min_size)
        self.img_ids: list[int] = img_ids
        self.multiscale = _normalise_multiscale(multiscale_range, scale) if train else None
        self.pipeline = build_pipeline(train, scale, self.multiscale, flip_prob, keep_ratio, augment)

    def __len__(self) -> int:
        return len(self.img_ids)

    def aspect_groups(self) -> list[int]:
        """Per item: 0 for a portrait image (width < height), 1 otherwise — mmdet's
        ``AspectRatioBatchSampler`` buckets, from the image sizes in the annotation file."""
        return [0 if self.coco.imgs[i]["width"] < self.coco.imgs[i]["height"] else 1 for i in self.img_ids]

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    def get_ann_info(self, index: int) -> dict[str, np.ndarray]:
        """Parsed annotations of item ``index`` in original image coordinates."""
        info = self.coco.imgs[self.img_ids[index]]
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[info["id"]]))
        return parse_annotations(anns, info["width"], info["height"], self.cat2label)

    def load_image(self, index: int) -> np.ndarray:
        """uint8 (H, W, 3) RGB of item ``index``; :class:`~gfl_repro.datasets.errors.DataError`
        naming the file when it is missing or does not decode."""
        info = self.coco.imgs[self.img_ids[index]]
        return read_image(self.image_dir / info["file_name"])

    def rng_for(self, index: int, epoch: int = 0) -> np.random.Generator:
        """The augmentation generator of item ``index`` in ``epoch``."""
        return np.random.default_rng([self.seed, int(epoch), int(index)])

    def __getitem__(self, key: int | tuple[int, int]):
        index, epoch = (key if isinstance(key, tuple) else (key, 0))
        index = int(index)
        if index < 0:
            index += len(self)
        info = self.coco.imgs[self.img_ids[index]]
        img = self.load_image(index)
        sample = {"img": img, "ori_shape": img.shape[:2], "flip": False, **self.get_ann_info(index)}
        sample = self.pipeline(sample, self.rng_for(index, epoch))
        target = {
            "boxes": torch.from_numpy(sample["boxes"]),
            "labels": torch.from_numpy(sample["labels"]),
            "ignore_boxes": torch.from_numpy(sample["ignore_boxes"]),
            "image_id": int(info["id"]),
            "file_name": info["file_name"],
            "ori_shape": tuple(int(s) for s in sample["ori_shape"]),
            "img_shape": tuple(int(s) for s in sample["img_shape"]),
            "scale_factor": tuple(float(s) for s in sample["scale_factor"]),
            "flip": bool(sample["flip"]),
        }
        return normalize_image(sample["img"]), target


def _round_up(value: int, divisor: int) -> int:
    """``value`` rounded up to a multiple of ``divisor``."""
    return -(-value // divisor) * divisor


def fixed_canvas(scale: Sequence[int], short_max: int | None = None, size_divisor: int = 32) -> tuple[int, int]:
    """(short, long) sides, rounded up to ``size_divisor``, of the largest image the resize to
    ``scale`` (and a multiscale short side up to ``short_max``) can give: the canvas every batch
    is padded to when the detector is compiled, so that it compiles for a few shapes only."""
    d = max(int(size_divisor), 1)
    short = max(min(scale), short_max or 0)
    return _round_up(short, d), _round_up(max(scale), d)


def _on_canvas(pad_h: int, pad_w: int, canvas: tuple[int, int]) -> tuple[int, int]:
    """The batch's padded (H, W) on the fixed canvas: landscape (short, long), portrait (long,
    short), a batch of both (long, long); a batch larger than the canvas keeps its own size."""
    short, long = canvas
    for h, w in ((short, long), (long, short), (long, long)):
        if pad_h <= h and pad_w <= w:
            return h, w
    return pad_h, pad_w


def collate(batch: Sequence[tuple[torch.Tensor, dict]], size_divisor: int = 32,
            pad_value: float = 0.0, canvas: tuple[int, int] | None = None) -> tuple[torch.Tensor, list[dict]]:
    """Stack normalised images, padding bottom/right with ``pad_value`` (mmdet pads normalised
    images with 0) to the batch max size rounded up to a multiple of ``size_divisor`` or, with
    a ``canvas`` (:func:`fixed_canvas`), to the canvas in the batch's orientation.

    Returns (images (B, 3, H, W), targets); each target is a copy with ``pad_shape`` (its own
    (h, w) rounded up to the divisor, as mmdet's DetDataPreprocessor records it) and
    ``batch_input_shape`` (H, W).
    """
    images = [img for img, _ in batch]
    max_h = max(img.shape[1] for img in images)
    max_w = max(img.shape[2] for img in images)
    d = max(int(size_divisor), 1)
    pad_h, pad_w = _round_up(max_h, d), _round_up(max_w, d)
    if canvas is not None:
        pad_h, pad_w = _on_canvas(pad_h, pad_w, canvas)
    out = images[0].new_full((len(images), images[0].shape[0], pad_h, pad_w), pad_value)
    targets = []
    for i, (img, target) in enumerate(batch):
        h, w = img.shape[1:]
        out[i, :, :h, :w] = img
        t = dict(target)
        t["pad_shape"] = (_round_up(h, d), _round_up(w, d))
        t["batch_input_shape"] = (pad_h, pad_w)
        targets.append(t)
    return out, targets


class EpochSampler(Sampler):
    """Yields ``(index, epoch)`` keys; the order is a permutation seeded by (seed, epoch) when
    ``shuffle``, else 0..n-1.  Each ``__iter__`` uses the current epoch, then advances it by one;
    ``set_epoch(e)`` sets the epoch of the next ``__iter__`` (e.g. on resume).  ``start``
    skips that many of this process's batches at the head of every epoch (a mid-epoch resume
    then reads no image it does not train on). With ``aspect_groups`` (one 0/1 per item) the
    order is grouped so that every global batch holds images of one orientation
    (:func:`group_by_aspect`), as mmdet's training batches are."""

    def __init__(self, num_items: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 global_batch: int = 1, start: int = 0, aspect_groups: Sequence[int] | None = None):
        self.num_items = int(num_items)
        if aspect_groups is not None and len(aspect_groups) != self.num_items:
            raise ValueError(f"{len(aspect_groups)} aspect groups for {num_items} items")
        self.aspect_groups = None if aspect_groups is None else [int(g) for g in aspect_groups]
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0
        self.rank, self.world_size, self.global_batch = int(rank), int(world_size), int(global_batch)
        self.skip = int(start) * (self.global_batch // self.world_size)  # items: whole per-process batches
        if self.world_size > 1 and self.global_batch % self.world_size:
            raise ValueError(f"batch size {global_batch} does not split over {world_size} processes")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int) -> list[int]:
        """Item order of ``epoch``."""
        if not self.shuffle:
            order = list(range(self.num_items))
        else:
            rng = np.random.default_rng([self.seed, int(epoch), 0x5EED])
            order = [int(i) for i in rng.permutation(self.num_items)]
        if self.aspect_groups is None:
            return order
        return group_by_aspect(order, self.aspect_groups, self.global_batch)

    def rank_order(self, epoch: int) -> list[int]:
        """This process's share of ``order(epoch)``: its slice of every global batch.

        With ``world_size`` processes, global batch b is ``order[b*B:(b+1)*B]`` and rank r takes
        the r-th of its ``world_size`` equal parts, so together the processes see exactly the
        batches one process would. The order is padded by wrapping around to whole global
        batches (as torch's DistributedSampler pads) so that every process steps equally often.
        """
        order = self.order(epoch)
        if self.world_size == 1:
            return order
        B, W = self.global_batch, self.world_size
        pad = (-len(order)) % B
        order = order + (order * (pad // max(len(order), 1) + 1))[:pad]
        part = B // W
        return [i for b in range(0, len(order), B) for i in order[b + self.rank * part: b + (self.rank + 1) * part]]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        self.epoch += 1
        return iter([(i, epoch) for i in self.rank_order(epoch)[self.skip:]])

    def __len__(self) -> int:
        if self.world_size == 1:
            total = self.num_items
        else:
            total = -(-self.num_items // self.global_batch) * (self.global_batch // self.world_size)
        return max(total - self.skip, 0)


def group_by_aspect(order: Sequence[int], groups: Sequence[int], batch: int) -> list[int]:
    """``order`` regrouped into batches of one aspect group each (mmdet 3.3's
    ``AspectRatioBatchSampler``): walk the order, put each item in its group's bucket, and emit
    the bucket as the next batch when it holds ``batch`` items; what is left at the end follows,
    portrait bucket first, in batches that may mix both. A permutation of ``order``; when every
    item is in one group it is ``order`` itself."""
    buckets: dict[int, list[int]] = {0: [], 1: []}
    grouped: list[int] = []
    for item in order:
        bucket = buckets[groups[item]]
        bucket.append(item)
        if len(bucket) == batch:
            grouped += bucket
            bucket.clear()
    return grouped + buckets[0] + buckets[1]


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed python/numpy/torch global RNGs from the per-worker
    torch seed (itself derived from the loader's seeded generator)."""
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def build_loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int = 0,
                 seed: int = 0, drop_last: bool = False, size_divisor: int = 32,
                 persistent_workers: bool = True, rank: int = 0, world_size: int = 1, start: int = 0,
                 pin_memory: bool = False, group_by_aspect_ratio: bool = False,
                 canvas: tuple[int, int] | None = None) -> DataLoader:
    """DataLoader with an ``EpochSampler`` (deterministic order per epoch: call
    ``loader.sampler.set_epoch(e)`` to resume), ``collate`` padding to ``size_divisor`` and
    seeded workers.  The batches depend only on (dataset, seed, epoch), not on num_workers.
    With ``world_size`` > 1, ``batch_size`` is the global batch and this process loads its
    ``batch_size / world_size`` share of each (see ``EpochSampler.rank_order``); ``start``
    skips that many batches at the head of each epoch. ``pin_memory`` (for a CUDA device) puts
    batches in page-locked memory, so their copy to the GPU overlaps the step before.
    ``group_by_aspect_ratio`` (training, as mmdet) makes every batch one orientation, using the
    dataset's ``aspect_groups()``; less padding, and the batches mmdet would form. ``canvas``
    pads every batch to a fixed size (see :func:`collate`)."""
    groups = dataset.aspect_groups() if group_by_aspect_ratio else None
    sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed, rank=rank, world_size=world_size,
                           global_batch=batch_size, start=start, aspect_groups=groups)
    batch_size = batch_size // world_size
    generator = torch.Generator()
    generator.manual_seed(int(seed))

    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        collate_fn=functools.partial(collate, size_divisor=size_divisor, canvas=canvas), drop_last=drop_last,
        worker_init_fn=seed_worker, generator=generator,
        persistent_workers=persistent_workers and num_workers > 0, pin_memory=pin_memory)
