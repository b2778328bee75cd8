"""One run, end to end: data → model → training (resumable) → COCO evaluation → result.json.

:func:`execute` is the trainer callable of (run config, run directory) that ``gfl-repro run``
calls in-process and that the launchers hand to submitit. Every file it writes goes through
:mod:`gfl_repro.store`; ``result.json`` is written last.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import __version__, distributed
from .config import RunConfig
from .datasets.coco import CocoDetection, build_loader
from .datasets.synthetic import ensure_synthetic
from .evaluate import evaluate, measure_speed
from .models.detector import build_detector, check_supported
from .profiles import PROFILES
from .store import write_config, write_env, write_result
from .train import fit, seed_everything

ENGINE = "native"
COCO_ENV = "GFL_REPRO_COCO"
PRETRAINED_ENV = "GFL_REPRO_PRETRAINED"
CACHE_ENV = "GFL_REPRO_CACHE"
SPEED_IMAGES = 20


class DataError(RuntimeError):
    """The dataset a run needs is missing or malformed (message: one line, what is missing)."""


@dataclass(frozen=True)
class DataPaths:
    train_images: Path
    train_annotations: Path
    val_images: Path
    val_annotations: Path


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "gfl-repro"))


def locate_data(config: RunConfig, data_root: Path | None = None, cache_dir: Path | None = None,
                progress: bool = True) -> DataPaths:
    """Where the run's images and annotations are; generates the synthetic set on first use.

    COCO 2017 is found under ``data_root`` or ``$GFL_REPRO_COCO`` in its standard layout:
    ``train2017/``, ``val2017/``, ``annotations/instances_{train,val}2017.json``. test-dev
    rows are evaluated on val2017 locally (the evaluation server scores test-dev itself).
    """
    if config.dataset == "synthetic":
        root = ensure_synthetic(cache_dir or default_cache_dir(), num_train=config.synth_train,
                                num_val=config.synth_val, seed=0, progress=progress)
        return DataPaths(root / "train", root / "annotations" / "instances_train.json",
                         root / "val", root / "annotations" / "instances_val.json")
    root = data_root or (Path(os.environ[COCO_ENV]) if os.environ.get(COCO_ENV) else None)
    if root is None:
        raise DataError(f"COCO 2017 location unknown: pass --data-root or set {COCO_ENV}")
    paths = DataPaths(root / "train2017", root / "annotations" / "instances_train2017.json",
                      root / "val2017", root / "annotations" / "instances_val2017.json")
    missing = [str(p) for p in (paths.train_images, paths.val_images) if not p.is_dir()]
    missing += [str(p) for p in (paths.train_annotations, paths.val_annotations) if not p.is_file()]
    if missing:
        raise DataError(f"COCO 2017 incomplete under {root}: missing {', '.join(missing)}")
    return paths


def pretrained_weights(config: RunConfig) -> Path | None:
    """The ImageNet weights of a full-size backbone: ``$GFL_REPRO_PRETRAINED/<backbone>.pth``.

    Files are torchvision-layout state dicts (e.g. ``torch.save(resnet50(weights=...).state_dict())``
    done once on a machine with internet); nothing is ever downloaded. Tiny (smoke) backbones
    train from scratch. A full-size run without the file is an error, not a silent scratch run.
    """
    if config.backbone_scale != "full":
        return None
    root = os.environ.get(PRETRAINED_ENV)
    path = Path(root) / f"{config.backbone}.pth" if root else None
    if path is None or not path.is_file():
        where = f"{path}" if path else f"${PRETRAINED_ENV} (unset)"
        raise DataError(f"ImageNet weights for {config.backbone} not found: {where}; set {PRETRAINED_ENV} to a "
                        f"directory holding {config.backbone}.pth")
    return path


def default_workers(device: torch.device, requested: int | None = None) -> int:
    """Data-loading worker processes: as requested, else 0 on CPU (no fork overhead) and 4 on GPU."""
    return requested if requested is not None else (0 if device.type == "cpu" else 4)


def environment(device: torch.device) -> dict:
    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return {
        "gfl_repro": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": str(device),
        "device_name": name,
        "cuda_devices": torch.cuda.device_count(),
        "cpu_threads": torch.get_num_threads(),
        "host": platform.node(),
    }


def execute(
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
    holds the state; calling again resumes). A config with ``engine = "mmdet"`` is handed to
    :func:`gfl_repro.mmdet_engine.execute_mmdet` (``device`` and ``checkpoint_interval`` are
    the native engine's).
    """
    if config.engine == "mmdet":
        from .mmdet_engine import execute_mmdet

        return execute_mmdet(config, run_dir, run_id=run_id, profile=profile, data_root=data_root,
                             cache_dir=cache_dir, progress=progress, should_stop=should_stop, num_workers=num_workers)
    check_supported(config)
    run_dir = Path(run_dir)
    process_device = distributed.init_from_submitit()
    dev = process_device or torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = locate_data(config, data_root, cache_dir, progress)
    weights = pretrained_weights(config)
    write_config(run_dir, config, run_id, profile)
    write_env(run_dir, environment(dev))
    workers = default_workers(dev, num_workers)

    scale = tuple(config.image_scale)
    train_set = CocoDetection(
        data.train_images, data.train_annotations, train=True, scale=scale,
        multiscale_range=tuple(config.multiscale_short) if config.multiscale else None, seed=config.seed,
    )
    val_set = CocoDetection(data.val_images, data.val_annotations, train=False, scale=scale)
    seed_everything(config.seed)  # the initial weights are part of the run's identity
    detector = build_detector(config, num_classes=len(train_set.cat_ids), pretrained=weights).to(dev)
    model = distributed.wrap(detector, dev)
    rank, world = distributed.rank(), distributed.world_size()

    def make_loader(epoch: int, start: int = 0):
        loader = build_loader(train_set, config.batch_size, shuffle=True, num_workers=workers, seed=config.seed,
                              rank=rank, world_size=world, start=start)
        loader.sampler.set_epoch(epoch)
        return loader

    finished = fit(model, make_loader, config, run_dir, device=dev, progress=progress, should_stop=should_stop,
                   amp=dev.type == "cuda", checkpoint_interval=checkpoint_interval)
    if rank != 0 or not finished:
        return None  # other ranks stop here; or interrupted by should_stop (the checkpoint resumes it)
    model = detector

    val_loader = build_loader(val_set, batch_size=max(1, min(config.batch_size, 8)), shuffle=False, num_workers=workers)
    stats = evaluate(model, val_loader, val_set.coco, list(val_set.cat_ids), dev, progress=progress)
    single = build_loader(val_set, batch_size=1, shuffle=False, num_workers=0)
    batches = [b for _, b in zip(range(SPEED_IMAGES), single)]
    speed = measure_speed(model, batches, dev, warmup=min(5, len(batches)))
    return write_result(
        run_dir, run_id=run_id, profile=profile, engine=ENGINE, toy_scale=PROFILES[profile].toy_scale,
        split=config.eval_split, stats=stats, ms_per_img=speed["ms_per_img"], fps=speed["fps"],
        device=speed["device_name"],
    )
