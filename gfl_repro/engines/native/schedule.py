"""The learning-rate schedule of mmdetection 3.3's ``schedule_1x`` as a pure function.

mmdet's config (``configs/_base_/schedules/schedule_1x.py``) composes two mmengine parameter
schedulers on one optimizer::

    LinearLR(start_factor=0.001, by_epoch=False, begin=0, end=500)      # warmup, per iteration
    MultiStepLR(by_epoch=True, milestones=[8, 11], gamma=0.1)            # decay, per epoch

What mmengine 0.10 does with them (read from ``mmengine/optim/scheduler/param_scheduler.py``
and ``mmengine/hooks/param_scheduler_hook.py``):

* Each scheduler calls ``step()`` once when it is built (before training), which sets its
  ``last_step`` to 0 and applies its value for step 0. ``ParamSchedulerHook`` then steps the
  iteration-based schedulers after every training iteration and the epoch-based ones after
  every training epoch. Iteration ``g`` (0-based, counted over the whole run) of epoch ``e``
  (0-based) therefore runs with LinearLR at ``last_step = g`` and MultiStepLR at
  ``last_step = e``.
* Both are *chainable*: each multiplies the optimizer's current lr by a ratio, so the lr is
  the product of the two schedules' factors, whichever order they run in and also when a
  milestone falls inside the warmup.
* LinearLR's ratio at step ``k >= 1`` is ``1 + (f1 - f0) / (T f0 + (k - 1)(f1 - f0))`` with
  ``T = end - begin - 1``; the product telescopes to the factor ``f0 + (f1 - f0) k / T``.
  It only steps while ``begin <= k < end``, so the factor is reached at ``k = T = 499``
  (not 500: unlike mmcv 1.x's warmup, which divides by ``warmup_iters``) and stays 1.
* MultiStepLR multiplies by ``gamma`` when ``last_step`` equals a milestone, i.e. after epoch
  ``m - 1`` has finished: milestone 8 applies from the first iteration of the 0-based epoch 8
  (the 9th epoch) on.

Hence (:func:`lr_at`)::

    lr(g, e) = base_lr * w(g) * 0.1 ** #{m in lr_steps : m <= e}
    w(g)     = r + (1 - r) * min(g, W - 1) / (W - 1)        W = warmup_iters, r = warmup_ratio

One deliberate deviation: with ``warmup_iters == 1`` mmengine's LinearLR (``end = 1``) sets
the factor ``r`` at iteration 0 and then never steps again, leaving the lr at ``r * base_lr``
for the whole run; here the factor is ``r`` at iteration 0 and 1 afterwards.
``warmup_iters == 0`` means no warmup.
"""

from __future__ import annotations

from typing import Any

LR_GAMMA = 0.1
"""Decay factor at each of ``RunConfig.lr_steps`` (mmdet's MultiStepLR ``gamma``)."""


def warmup_factor(global_iteration: int, warmup_iters: int, warmup_ratio: float) -> float:
    """mmengine LinearLR's factor at 0-based iteration ``global_iteration`` (see module doc)."""
    if global_iteration < 0:
        raise ValueError(f"global_iteration must be >= 0, got {global_iteration}")
    if warmup_iters <= 0:
        return 1.0
    if warmup_iters == 1:
        return warmup_ratio if global_iteration == 0 else 1.0
    span = warmup_iters - 1
    k = min(global_iteration, span)
    return warmup_ratio + (1.0 - warmup_ratio) * k / span


def decay_factor(epoch: int, lr_steps: tuple[int, ...] | list[int], gamma: float = LR_GAMMA) -> float:
    """MultiStepLR's factor in 0-based ``epoch``: ``gamma`` per milestone ``m <= epoch``."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return gamma ** sum(1 for m in lr_steps if m <= epoch)


def lr_factor(global_iteration: int, epoch: int, config: Any) -> float:
    """Multiplier of ``config.base_lr`` at 0-based global iteration / epoch (warmup x decay)."""
    return warmup_factor(global_iteration, config.warmup_iters, config.warmup_ratio) * decay_factor(
        epoch, config.lr_steps
    )


def lr_at(iteration: int, epoch: int, config: Any, iters_per_epoch: int) -> float:
    """The learning rate mmengine uses for ``iteration`` of ``epoch`` (mmdet ``schedule_1x``).

    Args:
        iteration: 0-based index of the iteration *within* ``epoch``
            (``0 <= iteration < iters_per_epoch``).
        epoch: 0-based epoch index.
        config: a :class:`~gfl_repro.specs.run_config.RunConfig` (``base_lr``, ``warmup_iters``,
            ``warmup_ratio``, ``lr_steps``). ``base_lr`` is already the lr for
            ``config.batch_size`` (linear scaling is the resolver's job).
        iters_per_epoch: batches per epoch (every epoch has the same number).

    Returns:
        ``base_lr * w(g) * 0.1 ** #{m in lr_steps : m <= epoch}`` where
        ``g = epoch * iters_per_epoch + iteration`` is the global iteration and
        ``w(g) = r + (1 - r) * min(g, W - 1) / (W - 1)`` with ``W = warmup_iters``,
        ``r = warmup_ratio``: mmengine's LinearLR(start_factor=r, begin=0, end=W,
        by_epoch=False) chained with MultiStepLR(milestones=lr_steps, gamma=0.1,
        by_epoch=True). Full lr is reached at ``g = W - 1``; the decay for milestone ``m``
        starts with the first iteration of 0-based epoch ``m``.

    Examples (base_lr 0.01, W 500, r 0.001, steps 8, 11): g=0 -> 1e-5; g=499 -> 0.01;
    first iteration of epoch 8 -> 0.001; of epoch 11 -> 1e-4.
    """
    if iters_per_epoch <= 0:
        raise ValueError(f"iters_per_epoch must be positive, got {iters_per_epoch}")
    if not 0 <= iteration < iters_per_epoch:
        raise ValueError(
            f"iteration is the 0-based index within the epoch: expected 0 <= iteration < "
            f"{iters_per_epoch}, got {iteration}"
        )
    return config.base_lr * lr_factor(epoch * iters_per_epoch + iteration, epoch, config)


__all__ = ["LR_GAMMA", "warmup_factor", "decay_factor", "lr_factor", "lr_at"]
