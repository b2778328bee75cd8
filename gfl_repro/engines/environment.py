"""What every engine needs around a run: where its data is, the backbone's ImageNet weights,
facts about the machine (``env.json``), data-loading workers.

Both engines call these before training, and ``gfl-repro run`` calls :func:`locate_data` and
:func:`pretrained_weights` before submitting anything, so that a missing dataset or weight file
is one line on the login node, not a failed job.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__
from ..datasets.check import SAMPLE_IMAGES, DataWarning, SplitReport, check_dataset, require_usable
from ..datasets.errors import DataError
from ..datasets.synthetic import ensure_synthetic
from ..specs.profiles import Profile
from ..specs.run_config import RunConfig
from .errors import DeviceError

COCO_ENV = "GFL_REPRO_COCO"
PRETRAINED_ENV = "GFL_REPRO_PRETRAINED"
CACHE_ENV = "GFL_REPRO_CACHE"
DATA_SETTINGS = ("dataset", "synth_train", "synth_val")
"""The RunConfig fields that say which data a run reads."""
SPEED_IMAGES = 20
"""Validation images timed at batch 1 for a run's speed (ms/img, FPS)."""


TEST_DEV_IMAGES = "test2017"
TEST_DEV_INFO = "image_info_test-dev2017.json"
TEST_DEV_DETECTIONS = "detections_test-dev2017.json"
"""What a run evaluated on test-dev rows writes for the COCO evaluation server (in its run directory)."""


@dataclass(frozen=True)
class DataPaths:
    train_images: Path
    train_annotations: Path
    val_images: Path
    val_annotations: Path
    test_dev_images: Path | None = None  # COCO test2017/, when present
    test_dev_info: Path | None = None  # annotations/image_info_test-dev2017.json, when present


def evaluated_on(config: RunConfig) -> str:
    """The split a run's numbers come from: COCO val2017 (= minival; also for test-dev rows,
    whose test-dev numbers only the evaluation server computes) or the synthetic val set."""
    return "synthetic val" if config.dataset == "synthetic" else "val2017"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "gfl-repro"))


def locate_data(config: RunConfig, data_root: Path | None = None, cache_dir: Path | None = None,
                progress: bool = True) -> DataPaths:
    """Where the run's images and annotations are; generates the synthetic set on first use.

    COCO 2017 is found under ``data_root`` or ``$GFL_REPRO_COCO`` in its standard layout:
    ``train2017/``, ``val2017/``, ``annotations/instances_{train,val}2017.json``. test-dev
    rows are evaluated on val2017 locally (the evaluation server scores test-dev itself); when
    ``test2017/`` and ``annotations/image_info_test-dev2017.json`` are there too, their paths
    are returned so that the run writes test-dev detections for the server.
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
    test_images, test_info = root / TEST_DEV_IMAGES, root / "annotations" / TEST_DEV_INFO
    if test_images.is_dir() and test_info.is_file():
        paths = dataclasses.replace(paths, test_dev_images=test_images, test_dev_info=test_info)
    return paths


def check_data(paths: DataPaths, sample: int = SAMPLE_IMAGES) -> list[SplitReport]:
    """:func:`gfl_repro.datasets.check.check_dataset` on a run's data, before anything trains:
    raises :class:`DataError` (one line) when a split is unusable, warns (:class:`DataWarning`,
    one line each) about what the training rules skip; returns the reports."""
    reports = check_dataset(paths.train_images, paths.train_annotations, paths.val_images, paths.val_annotations,
                            sample=sample)
    require_usable(reports)
    for report in reports:
        for line in report.warnings:
            warnings.warn(line, DataWarning, stacklevel=2)
    return reports


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


def parse_device(name: str | None) -> torch.device:
    """The device a run trains on: ``name`` (``cpu``, ``cuda``, ``cuda:N``), or CUDA when
    available and ``name`` is None. :class:`~gfl_repro.engines.errors.DeviceError` (one line)
    for a name torch does not know or a GPU this machine does not have."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"device {name!r} is not supported; use cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise DeviceError(f"device {name!r}: no CUDA GPU is visible on this machine (use cpu)")
    if device.index is not None and device.index >= count:
        raise DeviceError(f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    return device


def profile_data(profile: Profile, data_root: Path | None = None, cache_dir: Path | None = None,
                 progress: bool = True) -> DataPaths:
    """The dataset of a profile's runs (:func:`locate_data` with the profile's data settings):
    the synthetic set for ``smoke`` (generated on first use), COCO 2017 for ``paper``."""
    settings = {k: v for k, v in profile.overrides.items() if k in DATA_SETTINGS}
    return locate_data(RunConfig().replace(**settings), data_root, cache_dir, progress)


def default_workers(device: torch.device, requested: int | None = None) -> int:
    """Data-loading worker processes: as requested, else 0 on CPU (no fork overhead) and 4 on GPU."""
    return requested if requested is not None else (0 if device.type == "cpu" else 4)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.lower().startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or "cpu"
    return str(device)


def environment(device: torch.device) -> dict:
    """Versions and the device of this process (``env.json``)."""
    import torchvision

    name = device_name(device)
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
