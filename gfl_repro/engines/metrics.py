"""The records of ``metrics.jsonl``: one module builds them, both engines write them.

One JSON object per line, appended (:func:`gfl_repro.store.append_metrics`); ``type`` says
which record it is. Counting convention: ``epoch``, ``iter`` (within the epoch) and
``iteration`` (global, over the whole run) are 0-based indices.

* ``start`` / ``resume``: where training (re)starts: ``epoch``, ``iter``, ``iteration``,
  ``epochs``, ``wall_time`` and what the engine adds (``device``, ``amp``, ``engine``). After a
  crash (not a requested stop) iterations between the last checkpoint and the crash appear
  again after the ``resume`` record; readers keep the last record of an iteration.
* ``iter``: every ``log_interval`` global iterations, at the last iteration of an epoch and
  before a requested stop: ``epoch``, ``iter``, ``iteration`` (the last one in the window),
  ``lr`` (its learning rate), ``epochs``, ``epoch_iters``, each loss part and ``loss`` (their
  sum) averaged over the window's ``n`` iterations, ``time`` (seconds per iteration, data
  loading included), ``data_time``, ``grad_norm`` when clipping. ``status`` reads the last one
  for progress and ETA.
* ``epoch``: at each epoch end: ``epoch``, ``iteration`` (its last), ``iters``, ``lr``, mean of
  each part and of ``loss`` over the epoch, ``time`` (seconds of training in this epoch).
* ``end`` when all epochs are done; ``error`` (with ``error`` and ``message``) on a
  non-finite loss.
"""

from __future__ import annotations

import time
from typing import Any

LOG_INTERVAL = 10
"""Iterations between two ``iter`` records (both engines)."""


def start_record(resumed: bool, *, epoch: int, iter_in_epoch: int, iteration: int, epochs: int,
                 **extra: Any) -> dict[str, Any]:
    """``start`` (fresh run) or ``resume`` record; ``extra`` adds engine facts (device, amp, engine)."""
    return {"type": "resume" if resumed else "start", "epoch": epoch, "iter": iter_in_epoch,
            "iteration": iteration, "epochs": epochs, **extra, "wall_time": time.time()}


def step_info(*, epoch: int, iter_in_epoch: int, iteration: int, lr: float, epochs: int,
              epoch_iters: int | None) -> dict[str, Any]:
    """Where one training iteration sits: the common fields of an ``iter`` record."""
    return {"epoch": epoch, "iter": iter_in_epoch, "iteration": iteration, "lr": lr, "epochs": epochs,
            "epoch_iters": epoch_iters}


def should_log(iteration: int, last_of_epoch: bool, interval: int = LOG_INTERVAL) -> bool:
    """Whether an ``iter`` record is due after 0-based global ``iteration``."""
    return (iteration + 1) % interval == 0 or last_of_epoch


class IterWindow:
    """Running sums of per-iteration values between two ``iter`` records."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.n += 1

    def flush(self, info: dict[str, Any]) -> dict[str, Any] | None:
        """The ``iter`` record of the iterations since the last one (None if there were none)."""
        if not self.n:
            return None
        record = {"type": "iter", **info, **{k: v / self.n for k, v in self.sums.items()}, "n": self.n}
        self.sums, self.n = {}, 0
        return record


def epoch_record(*, epoch: int, iteration: int, iters: int, lr: float, sums: dict[str, float],
                 seconds: float) -> dict[str, Any]:
    """``epoch`` record: means of the loss parts over the epoch's ``iters`` iterations."""
    means = {k: v / iters for k, v in sums.items()} if iters else {}
    return {"type": "epoch", "epoch": epoch, "iteration": iteration, "iters": iters, "lr": lr, **means,
            "time": seconds}


def end_record(*, epochs: int, iteration: int) -> dict[str, Any]:
    return {"type": "end", "epoch": epochs - 1, "iteration": iteration, "wall_time": time.time()}


def error_record(error: str, message: str, **where: Any) -> dict[str, Any]:
    return {"type": "error", "error": error, "message": message, **where}


__all__ = ["LOG_INTERVAL", "IterWindow", "end_record", "epoch_record", "error_record", "should_log",
           "start_record", "step_info"]
