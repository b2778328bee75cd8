"""The hooks of the native training loop (:class:`gfl_repro.engines.native.loop.Hook`).

Each owns one concern. With several processes only the main one (rank 0) writes files and
shows progress; every process stops on a non-finite loss or a stop request.

* :class:`CheckpointHook`: resume from the run's checkpoint before training; save at every
  epoch end, every ``interval`` iterations and on a stop request.
* :class:`NonFiniteLossHook`: raise :class:`~gfl_repro.engines.native.loop.NonFiniteLoss`
  before the update of an iteration whose loss is NaN or infinite.
* :class:`MetricsHook`: the ``metrics.jsonl`` records (:mod:`gfl_repro.engines.metrics`).
* :class:`ProgressBarHook`: a tqdm bar with the loss parts, lr and ETA.
* :class:`StopRequestHook`: end training after the current iteration when asked (preemption).
* :class:`CallbackHook`: call a function after every iteration (tests, tools).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ...distributed import is_main
from ...store import append_metrics
from ..metrics import (LOG_INTERVAL, IterWindow, end_record, epoch_record, error_record, should_log, start_record,
                       step_info)
from .checkpoints import CheckpointError, check_resumable, check_same_config, has_checkpoint, load_latest, save_checkpoint
from ..errors import NonFiniteLoss
from .loop import Hook, Progress, Trainer
from .rng import rng_state, set_rng_state


class CheckpointHook(Hook):
    """Resume from ``run_dir``'s latest checkpoint; save the state at epoch ends, every
    ``interval`` global iterations (not at an epoch's last one: the epoch end saves) and
    when a stop is requested."""

    def __init__(self, run_dir: Path, interval: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.interval = interval
        self.saved_at: int | None = None  # global iteration count of the last save

    def before_train(self, trainer: Trainer) -> None:
        payload = load_latest(self.run_dir)
        if payload is None:
            return
        config = trainer.config.to_dict() if hasattr(trainer.config, "to_dict") else None
        where = self.run_dir / "checkpoints"
        check_same_config(payload.get("config"), config, where)
        check_resumable(payload, where)
        try:
            trainer.model.load_state_dict(payload["model"])
            trainer.optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{where}: does not fit this model ({' '.join(str(err).split())[:300]})") from None
        trainer.progress = Progress(
            epoch=int(payload["epoch"]), iter_in_epoch=int(payload["iter_in_epoch"]),
            global_iter=int(payload["global_iter"]),
            epoch_sums={k: float(v) for k, v in payload["epoch_sums"].items()},
            epoch_count=int(payload["epoch_count"]), epoch_seconds=float(payload["epoch_seconds"]),
        )
        trainer.resumed = True
        self.saved_at = trainer.progress.global_iter
        if not trainer.finished:
            set_rng_state(payload["rng"], trainer.device.type == "cuda")  # last: nothing above perturbs it

    def after_step(self, trainer: Trainer) -> None:
        step = trainer.step
        if self.interval and (step.iteration + 1) % self.interval == 0 and not step.last_of_epoch:
            self.save(trainer)

    def on_stop(self, trainer: Trainer) -> None:
        self.save(trainer)

    def after_epoch(self, trainer: Trainer) -> None:
        self.save(trainer)

    def save(self, trainer: Trainer) -> None:
        progress = trainer.progress
        if not is_main() or (self.saved_at == progress.global_iter and progress.iter_in_epoch):
            return
        save_checkpoint(self.run_dir, {
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "epoch": progress.epoch,
            "iter_in_epoch": progress.iter_in_epoch,
            "global_iter": progress.global_iter,
            "epoch_sums": dict(progress.epoch_sums),
            "epoch_count": progress.epoch_count,
            "epoch_seconds": progress.epoch_seconds,
            "rng": rng_state(trainer.device.type == "cuda"),
            "config": trainer.config.to_dict() if hasattr(trainer.config, "to_dict") else None,
        })
        self.saved_at = progress.global_iter


class NonFiniteLossHook(Hook):
    """Stop before the update when a loss part or their sum is NaN or infinite."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def after_backward(self, trainer: Trainer) -> None:
        step = trainer.step
        if all(math.isfinite(v) for v in step.losses.values()):
            return
        kept = ("the last checkpoint is kept" if has_checkpoint(self.run_dir)
                else "no checkpoint had been written yet: a retry starts from the beginning")
        raise NonFiniteLoss(step.iteration, step.epoch, step.index, step.losses, kept=kept)


class MetricsHook(Hook):
    """``metrics.jsonl``: start/resume, iter (every ``log_interval``), epoch, end, error."""

    def __init__(self, run_dir: Path, log_interval: int = LOG_INTERVAL) -> None:
        self.run_dir = Path(run_dir)
        self.log_interval = log_interval
        self.window = IterWindow()

    def write(self, record: dict[str, Any] | None) -> None:
        if record is not None and is_main():
            append_metrics(self.run_dir, record)

    def before_train(self, trainer: Trainer) -> None:
        if trainer.finished:
            return
        p = trainer.progress
        self.write(start_record(trainer.resumed, epoch=p.epoch, iter_in_epoch=p.iter_in_epoch,
                                        iteration=p.global_iter, epochs=trainer.epochs,
                                        device=str(trainer.device), amp=trainer.amp))

    def _info(self, trainer: Trainer) -> dict[str, Any]:
        s = trainer.step
        return step_info(epoch=s.epoch, iter_in_epoch=s.index, iteration=s.iteration, lr=s.lr,
                                 epochs=trainer.epochs, epoch_iters=s.epoch_iters)

    def after_step(self, trainer: Trainer) -> None:
        s = trainer.step
        self.window.add({**s.losses, "time": s.seconds, "data_time": s.data_time,
                         **({"grad_norm": s.grad_norm} if s.grad_norm is not None else {})})
        if should_log(s.iteration, s.last_of_epoch, self.log_interval):
            self.flush(trainer)

    def flush(self, trainer: Trainer) -> None:
        """The ``iter`` record of the iterations since the last one, if any."""
        if self.window.n:
            self.write(self.window.flush(self._info(trainer)))

    def on_stop(self, trainer: Trainer) -> None:
        self.flush(trainer)

    def after_epoch(self, trainer: Trainer) -> None:
        self.flush(trainer)  # a loader without len() has not flushed at its last batch
        e = trainer.epoch_summary
        self.write(epoch_record(epoch=e.epoch, iteration=e.iteration, iters=e.iters, lr=e.lr, sums=e.sums,
                                        seconds=e.seconds))

    def after_train(self, trainer: Trainer) -> None:
        self.write(end_record(epochs=trainer.epochs, iteration=trainer.progress.global_iter - 1))

    def on_error(self, trainer: Trainer, error: BaseException) -> None:
        if isinstance(error, NonFiniteLoss):
            self.write(error_record("NonFiniteLoss", str(error), epoch=error.epoch, iter=error.iter,
                                            iteration=error.iteration))


class ProgressBarHook(Hook):
    """A tqdm bar on stderr: iterations, epoch, loss parts, lr, ETA (main process only)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar = None

    def before_train(self, trainer: Trainer) -> None:
        self.bar = tqdm(initial=trainer.progress.global_iter, total=None, dynamic_ncols=True, unit="it",
                        disable=not self.enabled or not is_main())

    def before_epoch(self, trainer: Trainer) -> None:
        if trainer.epoch_iters is not None and self.bar.total is None:
            self.bar.total = trainer.epochs * trainer.epoch_iters
        self.bar.set_description(f"epoch {trainer.progress.epoch + 1}/{trainer.epochs}", refresh=False)

    def after_step(self, trainer: Trainer) -> None:
        s = trainer.step
        self.bar.update(1)
        self.bar.set_postfix_str(" ".join(f"{k}={v:.4g}" for k, v in s.losses.items()) + f" lr={s.lr:.3g}",
                                 refresh=False)

    def cleanup(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()


class StopRequestHook(Hook):
    """Poll ``should_stop`` after every iteration; a True ends training after it (checkpointed)."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop

    def after_step(self, trainer: Trainer) -> None:
        if self.should_stop():
            trainer.stop_requested = True


class CallbackHook(Hook):
    """Call ``fn`` after every optimiser step with the step's position, lr and losses."""

    def __init__(self, fn: Callable[[dict[str, Any]], None]) -> None:
        self.fn = fn

    def after_step(self, trainer: Trainer) -> None:
        s = trainer.step
        self.fn({**step_info(epoch=s.epoch, iter_in_epoch=s.index, iteration=s.iteration, lr=s.lr,
                                     epochs=trainer.epochs, epoch_iters=s.epoch_iters), **s.losses})


__all__ = ["CallbackHook", "CheckpointHook", "MetricsHook", "NonFiniteLossHook", "ProgressBarHook",
           "StopRequestHook"]
