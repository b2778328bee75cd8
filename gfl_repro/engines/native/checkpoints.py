"""A run's training checkpoints: ``checkpoints/last.pt`` and the one before it, ``previous.pt``.

Both are plain dicts of tensors, numbers and lists that ``torch.load(..., weights_only=True)``
reads. A save writes the new file beside the old one, moves ``last.pt`` to ``previous.pt``
and renames the new file to ``last.pt``: at every moment at least one complete checkpoint
exists. :func:`load_latest` reads ``last.pt`` and falls back to ``previous.pt`` with a
warning when the latest cannot be read (a truncated file, a disk that filled up).

Payload keys: ``format``, ``model`` (state dict), ``optimizer`` (state dict), ``epoch`` (next
epoch to train, = epochs when done), ``iter_in_epoch`` (iterations of that epoch already done),
``global_iter`` (iterations done in all), ``epoch_sums`` / ``epoch_count`` / ``epoch_seconds``
(running epoch statistics), ``rng`` (:func:`gfl_repro.engines.native.rng.rng_state`),
``config`` (the RunConfig as a dict).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from ...store import atomic_write

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "last.pt"
PREVIOUS_FILE = "previous.pt"
CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """No readable checkpoint where one was expected (one line: which files and why)."""


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    """``run_dir/checkpoints/last.pt``."""
    return Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE


def previous_path(run_dir: str | os.PathLike) -> Path:
    """``run_dir/checkpoints/previous.pt``: the checkpoint saved before ``last.pt``."""
    return Path(run_dir) / CHECKPOINT_DIR / PREVIOUS_FILE


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read one checkpoint file (``weights_only=True``: nothing in it is executed)."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    return checkpoint_path(run_dir).exists() or previous_path(run_dir).exists()


def load_latest(run_dir: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any] | None:
    """The newest readable checkpoint of a run; None when the run has none.

    A ``last.pt`` that cannot be read is reported with a warning and ``previous.pt`` is used;
    when neither can be read, :class:`CheckpointError` says why.
    """
    problems = []
    for path in (checkpoint_path(run_dir), previous_path(run_dir)):
        if not path.exists():
            continue
        try:
            payload = load_checkpoint(path, map_location)
        except Exception as err:  # truncated, corrupt or foreign file
            problems.append(f"{path}: {type(err).__name__}: {' '.join(str(err).split())[:200]}")
            continue
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            problems.append(f"{path}: not a checkpoint of this engine")
            continue
        if problems:
            warnings.warn(f"unreadable checkpoint ({problems[0]}); resuming from {path.name}")
        return payload
    if problems:
        raise CheckpointError("no readable checkpoint: " + "; ".join(problems))
    return None


def save_checkpoint(run_dir: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as the new ``last.pt``; the old one becomes ``previous.pt``."""
    latest, previous = checkpoint_path(run_dir), previous_path(run_dir)
    payload = {"format": CHECKPOINT_FORMAT, **payload}

    def rotate() -> None:
        if latest.exists():
            os.replace(latest, previous)

    atomic_write(latest, lambda handle: torch.save(payload, handle), before_replace=rotate)
    return latest


def check_same_config(stored: dict[str, Any] | None, current: dict[str, Any] | None, path: Path) -> None:
    """Refuse (:class:`CheckpointError`) to resume a checkpoint written for another configuration."""
    if not stored or current is None:
        return
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path}: the stored config is not a table; refusing to resume")
    differ = sorted(k for k in stored.keys() & current.keys() if stored[k] != current[k])
    if differ:
        details = ", ".join(f"{k}: {stored[k]!r} -> {current[k]!r}" for k in differ)
        raise CheckpointError(f"{path} was written for another config ({details}); refusing to resume")


RESUME_KEYS = ("model", "optimizer", "epoch", "iter_in_epoch", "global_iter", "epoch_sums", "epoch_count",
               "epoch_seconds", "rng")
"""What a checkpoint must hold to resume training from it."""


def check_resumable(payload: dict[str, Any], path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``payload`` holds every key a resume reads."""
    missing = [key for key in RESUME_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: not a complete training checkpoint (no {', '.join(missing)})")


__all__ = ["CHECKPOINT_DIR", "CHECKPOINT_FILE", "CheckpointError", "PREVIOUS_FILE", "check_resumable", "check_same_config",
           "checkpoint_path", "has_checkpoint", "load_checkpoint", "load_latest", "previous_path",
           "save_checkpoint"]
