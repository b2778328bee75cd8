"""Training with the usual hooks: resume and checkpoints, metrics records, a progress bar,
a non-finite loss check, and optionally a per-iteration callback and a stop request."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from ..metrics import LOG_INTERVAL
from .hooks import (CallbackHook, CheckpointHook, MetricsHook, NonFiniteLossHook, ProgressBarHook,
                    StopRequestHook)
from .loop import Hook, Trainer


def fit(
    model: torch.nn.Module,
    make_loader: Callable[..., Iterable[tuple[Any, Any]]],
    config: Any,
    run_dir: str | os.PathLike,
    *,
    device: str | torch.device,
    epochs: int | None = None,
    progress: bool = True,
    checkpoint_interval: int | None = None,
    on_iteration: Callable[[dict[str, Any]], None] | None = None,
    amp: bool = False,
    grad_clip: float | None = None,
    should_stop: Callable[[], bool] | None = None,
    log_interval: int | None = None,
) -> bool:
    """Train ``model`` for ``epochs`` (default ``config.epochs``) epochs in ``run_dir``, resuming
    from its checkpoint if it has one.

    Args:
        model: a module with ``loss(images, targets) -> dict[str, Tensor]``: named loss parts
            (tensors are averaged, lists of tensors summed, as mmdet's ``parse_losses``); their
            sum is minimised. Moved to ``device`` and put in train mode here.
        make_loader: ``make_loader(epoch)`` -> iterable of ``(images, targets)`` batches of that
            0-based epoch, the same batches on every call (see the module docstring).
        config: a :class:`~gfl_repro.specs.run_config.RunConfig` (optimiser, schedule, ``seed``).
        run_dir: the run's directory (``checkpoints/`` and ``metrics.jsonl`` go there).
        device: where to train.
        epochs: overrides ``config.epochs`` (how far to train; the lr schedule still comes
            from ``config``).
        progress: show a tqdm bar (loss parts, lr, ETA) on stderr.
        checkpoint_interval: also checkpoint every this many global iterations.
        on_iteration: called after every optimiser step with a dict ``epoch``, ``iter``,
            ``iteration`` (0-based), ``lr``, each loss part and ``loss`` (floats).
        amp: bfloat16 autocast of the forward pass (a run with ``precision = "bf16"``).
        grad_clip: clip the global gradient L2 norm to this value (GFL uses none).
        should_stop: polled after every iteration; when it returns True the state after that
            iteration is checkpointed and fit returns (for preemption signals).
        log_interval: an ``iter`` metrics record every this many global iterations.

    Returns True when all epochs are done (also when the checkpoint was already complete on
    entry), False when stopped on request before that. Either way ``model`` holds the weights
    of the latest checkpoint.

    Raises:
        NonFiniteLoss: a loss part became NaN/inf; raised before that iteration's update and
            without writing a checkpoint, so the latest checkpoint holds the state before it.
    """
    log_interval = LOG_INTERVAL if log_interval is None else log_interval
    if log_interval < 1:
        raise ValueError(f"log_interval must be >= 1, got {log_interval}")
    if checkpoint_interval is not None and checkpoint_interval < 1:
        raise ValueError(f"checkpoint_interval must be >= 1, got {checkpoint_interval}")
    run_dir = Path(run_dir)
    hooks: list[Hook] = [
        CheckpointHook(run_dir, checkpoint_interval),
        NonFiniteLossHook(run_dir),
        MetricsHook(run_dir, log_interval),
        ProgressBarHook(progress),
    ]
    if on_iteration is not None:
        hooks.append(CallbackHook(on_iteration))
    if should_stop is not None:
        hooks.append(StopRequestHook(should_stop))
    trainer = Trainer(model, make_loader, config, device=device, hooks=hooks, epochs=epochs, amp=amp,
                      grad_clip=grad_clip)
    return trainer.train()


__all__ = ["fit"]
