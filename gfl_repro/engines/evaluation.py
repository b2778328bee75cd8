"""COCO box evaluation and speed measurement.

* :func:`detections_to_coco` turns per-image detections into COCO result dicts exactly as
  mmdet 3.3's ``CocoMetric.results2json`` does (``xyxy`` -> ``xywh`` without ``+1``, computed
  from the float32 coordinates converted to Python floats; score ``float(float32)``;
  contiguous label -> category id).
* :func:`coco_evaluate` runs pycocotools' ``COCOeval`` (bbox) and returns its 12 stats
  ``[AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl]`` (-1 where a size range
  has no GT). Zero detections are evaluated, not crashed on (``COCO.loadRes([])`` raises
  ``IndexError``): AP/AR are 0 wherever there is GT.
* :func:`evaluate` runs a model over a loader and evaluates it.
* :func:`measure_speed` times batch-1 inference (ms per image, FPS).

Note on ``maxDets``: mmdet's ``CocoMetric`` sets ``params.maxDets = [100, 300, 1000]`` so its
stats 6-8 are AR@100/300/1000; the pycocotools / COCO-server default ``[1, 10, 100]`` is used
here (stats 6-8 = AR1/AR10/AR100). With at most 100 detections per image the AP stats (0-5)
are identical either way; pass ``max_dets=(100, 300, 1000)`` to get mmdet's AR numbers.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..store import atomic_write_text
from .environment import device_name

__all__ = ["detections_to_coco", "coco_evaluate", "evaluate", "measure_speed", "predict_coco", "time_per_call"]


def _to_numpy(x: Any, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu")
        if x.is_floating_point():
            x = x.to(torch.float32)
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def detections_to_coco(image_ids: Sequence[int], detections: Sequence[dict],
                       label_to_cat_id: Sequence[int]) -> list[dict]:
    """COCO result dicts of a list of per-image detections.

    Args:
        image_ids: COCO image id of each entry of ``detections``.
        detections: per image ``dict(boxes (N, 4) xyxy in original-image coordinates,
            scores (N,), labels (N,) contiguous 0..C-1)``; tensors (any device) or arrays.
        label_to_cat_id: COCO category id of each contiguous label.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]`` in image order,
        then detection order; plain Python ints/floats (JSON-able). ``w = x2 - x1`` and
        ``h = y2 - y1`` are computed in double precision from the float32 coordinates, as
        mmdet's ``xyxy2xywh`` (``bbox.tolist()`` then subtract) does.
    """
    if len(image_ids) != len(detections):
        raise ValueError(f"{len(image_ids)} image ids for {len(detections)} detection sets")
    results = []
    for image_id, det in zip(image_ids, detections):
        boxes = _to_numpy(det["boxes"], np.float32).reshape(-1, 4)
        scores = _to_numpy(det["scores"], np.float32).reshape(-1)
        labels = _to_numpy(det["labels"], np.int64).reshape(-1)
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError(f"image {image_id}: boxes, scores and labels differ in length")
        for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
            results.append({
                "image_id": int(image_id),
                "category_id": int(label_to_cat_id[label]),
                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                "score": float(score),
            })
    return results


def _empty_results(coco_gt: COCO) -> COCO:
    """A result COCO with no annotation (what ``loadRes`` would build from ``[]``)."""
    res = COCO()
    res.dataset = {
        "info": copy.deepcopy(coco_gt.dataset.get("info", {})),
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
        "annotations": [],
    }
    res.createIndex()
    return res


def coco_evaluate(coco_gt: COCO, results: list[dict], image_ids: Iterable[int] | None = None,
                  verbose: bool = False, max_dets: Sequence[int] = (1, 10, 100),
                  cat_ids: Sequence[int] | None = None) -> list[float]:
    """The 12 ``COCOeval`` bbox stats of ``results`` against ``coco_gt``.

    Args:
        coco_gt: the ground truth.
        results: COCO result dicts (:func:`detections_to_coco`); not modified.
        image_ids: images evaluated (``params.imgIds``); ``None``: every image of ``coco_gt``.
        verbose: let pycocotools print (its loading messages and the summary table).
        max_dets: ``params.maxDets`` (default pycocotools'; mmdet uses ``(100, 300, 1000)``).
        cat_ids: ``params.catIds``; ``None``: every category of ``coco_gt``.

    Returns:
        ``[AP, AP50, AP75, APs, APm, APl, AR@m0, AR@m1, AR@m2, ARs, ARm, ARl]`` as floats
        (``m = max_dets``), -1 where a size range holds no GT. With no detections: 0 wherever
        there is GT (COCOeval on an empty result set).
    """
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        if len(results) == 0:
            coco_dt = _empty_results(coco_gt)
        else:
            # loadRes writes area/id/iscrowd/segmentation into the dicts: give it copies.
            coco_dt = coco_gt.loadRes([dict(r, bbox=list(r["bbox"])) for r in results])
        coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            coco_eval.params.imgIds = sorted({int(i) for i in image_ids})
        if cat_ids is not None:
            coco_eval.params.catIds = [int(c) for c in cat_ids]
        coco_eval.params.maxDets = [int(m) for m in max_dets]
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return [float(s) for s in coco_eval.stats]


def _move_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return images.to(device, non_blocking=True)


def evaluate(model: torch.nn.Module, loader: Iterable, coco_gt: COCO, label_to_cat_id: Sequence[int],
             device: torch.device | str, progress: bool = True, verbose: bool = False,
             results_file: str | os.PathLike | None = None,
             max_dets: Sequence[int] = (1, 10, 100)) -> list[float]:
    """COCO bbox stats of ``model`` on the images of ``loader``.

    Model contract: ``model.predict(images, targets)`` takes a ``(B, 3, H, W)`` batch on
    ``device`` and the loader's list of target dicts (keys ``image_id``, ``ori_shape``,
    ``img_shape``, ``scale_factor``, ...) and returns one ``dict(boxes, scores, labels)`` per
    image, boxes ``xyxy`` in ORIGINAL-image coordinates, labels contiguous ``0..C-1``.

    Runs under ``torch.no_grad()`` with ``model.eval()`` (the previous train/eval mode is
    restored afterwards). The evaluated image set is the set of images the loader yielded.

    Args:
        loader: iterable of ``(images, targets)`` batches.
        coco_gt: ground truth of those images.
        label_to_cat_id: COCO category id of each contiguous label.
        device: where the images are moved.
        progress: show a tqdm progress bar.
        verbose: let pycocotools print its summary.
        results_file: if given, the COCO result dicts are also written there as JSON
            (atomically; the format of the COCO test-dev server).
        max_dets: see :func:`coco_evaluate`.

    Returns:
        The 12 COCOeval stats (see :func:`coco_evaluate`).
    """
    image_ids, results = predict_coco(model, loader, label_to_cat_id, device, progress)
    if results_file is not None:
        atomic_write_text(Path(results_file), json.dumps(results))
    return coco_evaluate(coco_gt, results, image_ids, verbose=verbose, max_dets=max_dets)


def predict_coco(model: torch.nn.Module, loader: Iterable, label_to_cat_id: Sequence[int], device: torch.device | str,
                 progress: bool = True) -> tuple[list[int], list[dict]]:
    """(image ids, COCO result dicts) of ``model`` over ``loader`` (see :func:`evaluate` for the
    model contract); what the COCO test-dev server takes, as JSON."""
    from tqdm.auto import tqdm

    device = torch.device(device)
    was_training = model.training
    model.eval()
    image_ids: list[int] = []
    results: list[dict] = []
    try:
        total = len(loader) if hasattr(loader, "__len__") else None
        with torch.no_grad():
            for images, targets in tqdm(loader, total=total, desc="eval", disable=not progress,
                                        dynamic_ncols=True):
                preds = model.predict(_move_images(images, device), targets)
                if len(preds) != len(targets):
                    raise RuntimeError(f"predict returned {len(preds)} results for {len(targets)} images")
                ids = [int(t["image_id"]) for t in targets]
                image_ids.extend(ids)
                results.extend(detections_to_coco(ids, preds, label_to_cat_id))
    finally:
        model.train(was_training)
    return image_ids, results


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_call(step: Callable[[Any], Any], items: Sequence[Any], device: torch.device | str, warmup: int = 5,
                  iters: int | None = None) -> float:
    """Mean seconds of ``step(item)`` over ``iters`` timed calls (items cycled) after ``warmup``
    untimed ones, each bracketed by ``torch.cuda.synchronize`` on GPU, under ``torch.no_grad()``."""
    device = torch.device(device)
    iters = len(items) if iters is None else int(iters)
    if iters <= 0:
        raise ValueError("iters must be positive")
    total = 0.0
    with torch.no_grad():
        for index in range(warmup + iters):
            item = items[index % len(items)]
            _sync(device)
            start = time.perf_counter()
            step(item)
            _sync(device)
            if index >= warmup:
                total += time.perf_counter() - start
    return total / iters


def measure_speed(model: torch.nn.Module, images_and_targets: Sequence[tuple[torch.Tensor, list[dict]]],
                  device: torch.device | str, warmup: int = 5, iters: int | None = None) -> dict[str, Any]:
    """Batch-1 inference time of ``model.predict`` (network + post-processing).

    Each timed step moves one single-image batch to ``device`` and runs ``predict`` under
    ``torch.no_grad()`` in eval mode, bracketed by ``torch.cuda.synchronize`` on GPU and timed
    with ``time.perf_counter``. ``warmup`` untimed steps come first. Batches are cycled when
    more steps than batches are asked for.

    Args:
        images_and_targets: list of ``(images (1, 3, H, W), [target])`` batches.
        warmup: untimed steps.
        iters: timed steps (default: one per batch given).

    Returns:
        ``dict(ms_per_img, fps, device_name, iters, warmup)``.
    """
    if len(images_and_targets) == 0:
        raise ValueError("measure_speed needs at least one batch")
    device = torch.device(device)
    iters = len(images_and_targets) if iters is None else int(iters)
    if iters <= 0:
        raise ValueError("iters must be positive")
    for images, _ in images_and_targets:
        if images.shape[0] != 1:
            raise ValueError(f"measure_speed times batch size 1, got a batch of {images.shape[0]}")
    was_training = model.training
    model.eval()
    try:
        seconds = time_per_call(lambda batch: model.predict(_move_images(batch[0], device), batch[1]),
                                images_and_targets, device, warmup, iters)
    finally:
        model.train(was_training)
    ms = seconds * 1000.0
    return {
        "ms_per_img": ms,
        "fps": 1000.0 / ms if ms > 0 else float("inf"),
        "device_name": device_name(device),
        "iters": iters,
        "warmup": warmup,
    }
