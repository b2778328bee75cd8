"""Engines: what trains and evaluates one run. One entry point, :func:`execute`, which the
job entry point and the inline launcher call; the run config's ``engine`` picks the native
PyTorch engine (:mod:`.native`) or mmdetection itself (:mod:`.mmdet`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..specs.run_config import RunConfig


def check_runnable(config: RunConfig) -> None:
    """Raise ValueError (one line: what is missing) unless ``config.engine`` can build ``config``."""
    if config.engine == "mmdet":
        from .mmdet.config import check_expressible

        check_expressible(config)
    else:
        from ..models.detector import check_supported

        check_supported(config)


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
    """Train and evaluate one run in ``run_dir`` with the engine its config names; resume from
    the run's checkpoint when there is one.

    Returns the result dict (also written as ``result.json``), or None when ``should_stop``
    interrupted training (a checkpoint holds the state; calling again resumes) and on every
    process but the main one. ``device`` and ``checkpoint_interval`` are the native engine's
    (mmengine picks the device and checkpoints every epoch).
    """
    if config.engine == "mmdet":
        from .mmdet.run import execute_mmdet

        return execute_mmdet(config, run_dir, run_id=run_id, profile=profile, data_root=data_root,
                             cache_dir=cache_dir, progress=progress, should_stop=should_stop, num_workers=num_workers)
    from .native.run import execute_native

    return execute_native(config, run_dir, run_id=run_id, profile=profile, data_root=data_root, cache_dir=cache_dir,
                          device=device, progress=progress, should_stop=should_stop, num_workers=num_workers,
                          checkpoint_interval=checkpoint_interval)


__all__ = ["check_runnable", "execute"]
