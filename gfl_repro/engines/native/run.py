"""One native run, end to end: data → data check → model → training (resumable) → COCO
evaluation → result.json.

The dataset is checked (:func:`gfl_repro.engines.environment.check_data`) before anything
trains. Every file it writes goes through :mod:`gfl_repro.store`; ``result.json`` is written
last, so its presence means the run is complete. A run whose checkpoint is finished only
evaluates (how ``run --retry`` re-evaluates a run whose evaluation failed or whose result is
corrupt).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from ... import distributed
from ...datasets.coco import CocoDetection, build_loader, fixed_canvas
from ...models.detector import build_detector, check_supported
from ...models.registry import DETECTORS
from ...specs.profiles import PROFILES
from ...specs.run_config import RunConfig
from ...store import atomic_write_text, write_config, write_env, write_result
from ..environment import (SPEED_IMAGES, TEST_DEV_DETECTIONS, DataPaths, check_data, default_workers, environment,
                           evaluated_on, locate_data, parse_device, pretrained_weights)
from ..evaluation import evaluate, measure_speed, predict_coco
from .fit import fit
from .rng import seed_everything

ENGINE = "native"


def execute_native(
    config: RunConfig,
    run_dir: Path,
    *,
    run_id: str,
    profile: str,
    data_root: Path | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    num_workers: int | None = None,
    checkpoint_interval: int | None = None,
) -> dict | None:
    """Train and evaluate one run in ``run_dir``; resumes from its checkpoint if there is one.

    Returns the result dict, or None when ``should_stop`` interrupted training (a checkpoint
    holds the state; calling again resumes) and on every process but the main one.
    """
    check_supported(config)
    run_dir = Path(run_dir)
    process_device = distributed.init_from_submitit()
    dev = process_device or parse_device(device)
    data = locate_data(config, data_root, cache_dir, progress)
    check_data(data)
    weights = pretrained_weights(config)
    write_config(run_dir, config, run_id, profile)
    write_env(run_dir, environment(dev))
    workers = default_workers(dev, num_workers)

    scale = tuple(config.image_scale)
    keep_ratio = DETECTORS[config.detector].keep_ratio
    train_set = CocoDetection(
        data.train_images, data.train_annotations, train=True, scale=scale,
        multiscale_range=tuple(config.multiscale_short) if config.multiscale else None, seed=config.seed,
        keep_ratio=keep_ratio, augment=config.augment,
    )
    val_set = CocoDetection(data.val_images, data.val_annotations, train=False, scale=scale, keep_ratio=keep_ratio)
    seed_everything(config.seed)  # the initial weights are part of the run's identity
    detector = build_detector(config, num_classes=len(train_set.cat_ids), pretrained=weights).to(dev)
    model = distributed.wrap(detector, dev)
    rank, world = distributed.rank(), distributed.world_size()
    canvas = compile_canvas(config)

    def make_loader(epoch: int, start: int = 0):
        loader = build_loader(train_set, config.batch_size, shuffle=True, num_workers=workers, seed=config.seed,
                              rank=rank, world_size=world, start=start, pin_memory=dev.type == "cuda",
                              group_by_aspect_ratio=True, canvas=canvas)
        loader.sampler.set_epoch(epoch)
        return loader

    finished = fit(model, make_loader, config, run_dir, device=dev, progress=progress, should_stop=should_stop,
                   amp=config.precision == "bf16", checkpoint_interval=checkpoint_interval)
    if rank != 0 or not finished:
        return None  # other ranks stop here; or interrupted by should_stop (the checkpoint resumes it)

    val_loader = build_loader(val_set, batch_size=max(1, min(config.batch_size, 8)), shuffle=False,
                              num_workers=workers, canvas=canvas)
    stats = evaluate(detector, val_loader, val_set.coco, list(val_set.cat_ids), dev, progress=progress)
    single = build_loader(val_set, batch_size=1, shuffle=False, num_workers=0, canvas=canvas)
    batches = [b for _, b in zip(range(SPEED_IMAGES), single)]
    speed = measure_speed(detector, batches, dev, warmup=min(5, len(batches)))
    test_dev = write_test_dev_detections(detector, config, data, run_dir, dev, workers, progress, val_set.cat_ids)
    return write_result(
        run_dir, run_id=run_id, profile=profile, engine=ENGINE, toy_scale=PROFILES[profile].toy_scale,
        split=config.eval_split, stats=stats, ms_per_img=speed["ms_per_img"], fps=speed["fps"],
        device=speed["device_name"], extra={"evaluated_on": evaluated_on(config), "test_dev_detections": test_dev},
    )


def compile_canvas(config: RunConfig) -> tuple[int, int] | None:
    """The fixed canvas batches are padded to when the detector is compiled (``--compile``): the
    compiled backbone, neck and head then see one shape per orientation (and one for a batch of
    both) instead of one per padded size. None otherwise: batches are padded as mmdet pads them."""
    if not config.compile:
        return None
    return fixed_canvas(config.image_scale, max(config.multiscale_short) if config.multiscale else None)


def write_test_dev_detections(detector, config: RunConfig, data: DataPaths, run_dir: Path, device: torch.device,
                              workers: int, progress: bool, cat_ids: list[int]) -> str | None:
    """For a test-dev row whose COCO root has test2017/ and its image info: the detections of
    every test-dev image in the COCO results format (``detections_test-dev2017.json`` in the run
    directory, for the evaluation server). Returns the file name, or None when not written."""
    if config.eval_split != "test-dev" or data.test_dev_images is None:
        return None
    test_set = CocoDetection(data.test_dev_images, data.test_dev_info, train=False, scale=tuple(config.image_scale),
                             keep_ratio=DETECTORS[config.detector].keep_ratio)
    loader = build_loader(test_set, batch_size=max(1, min(config.batch_size, 8)), shuffle=False, num_workers=workers,
                          canvas=compile_canvas(config))
    _, results = predict_coco(detector, loader, list(cat_ids), device, progress=progress)
    atomic_write_text(Path(run_dir) / TEST_DEV_DETECTIONS, json.dumps(results))
    return TEST_DEV_DETECTIONS


__all__ = ["ENGINE", "compile_canvas", "execute_native"]
