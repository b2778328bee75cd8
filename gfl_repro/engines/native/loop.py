"""The native engine's training loop: a short loop, with everything else in hooks.

:class:`Trainer` trains any ``torch.nn.Module`` that has ``loss(images, targets) ->
dict[str, Tensor]`` on the batches of ``make_loader(epoch)``, with SGD and the lr schedule of
mmdetection 3.3's ``gfl_r50_fpn_1x_coco`` (:mod:`gfl_repro.engines.native.schedule`). What
happens around the optimiser steps lives in :mod:`gfl_repro.engines.native.hooks`:
checkpoint and resume, metrics records, the progress bar, a stop request, a non-finite loss.
:func:`gfl_repro.engines.native.fit.fit` builds the usual set of hooks and trains.

Counting convention: ``epoch``, ``iter`` (within the epoch) and ``iteration`` (global, over the
whole run) are 0-based indices everywhere: in :func:`~gfl_repro.engines.native.schedule.lr_at`,
in metrics records, in :class:`~gfl_repro.engines.errors.NonFiniteLoss`. The checkpoint's ``global_iter`` /
``iter_in_epoch`` are *counts of finished iterations*, i.e. the index of the next one.

Resume: when the run has a checkpoint, training continues from it, mid-epoch too (the batches
of that epoch already trained on are skipped). On CPU the resumed run reproduces the
uninterrupted one bit for bit (tested). Requirements on the caller for this:

* ``make_loader(epoch)`` yields the same batches every time it is called with the same epoch
  (seeded by ``config.seed`` and ``epoch``). If it accepts a keyword ``start``, a resume calls
  ``make_loader(epoch, start=k)`` and expects batches ``k, k+1, ...`` (lets a data pipeline skip
  batches without decoding them; its ``len()``, if any, then counts the remaining batches);
  otherwise the first ``k`` batches are drawn and dropped.
* Loader randomness is isolated from the model's: the global torch (CPU), numpy and ``random``
  generators are re-seeded from ``(config.seed, epoch, batch index)`` around the creation of the
  loader's iterator and around every ``next()`` on it, and restored afterwards. A loader that
  draws from the global generators (``DataLoader(shuffle=True)`` without a ``generator``,
  ``np.random`` augmentations with ``num_workers=0``) is thus deterministic per batch, and the
  model's random stream does not depend on how many batches were drawn or skipped.
* Everything random in the model's step draws from the global generators, whose states
  (torch CPU, CUDA when training on a GPU, numpy, ``random``) are checkpointed and restored.

GPU determinism: the checkpoint restores the CUDA generator too, so a resumed GPU run continues
the same random stream, but GPU runs are *not* bit-reproducible: cuDNN algorithm choice and
atomics in backward kernels (scatter/index add, interpolation, deformable conv, ...) change the
float summation order from run to run. With ``amp=True`` (a run whose ``precision`` is ``bf16``)
the forward pass runs under ``torch.autocast(dtype=torch.bfloat16)`` on the training device
(no loss scaling is needed for bf16); the head computes its targets and losses in float32
(:meth:`gfl_repro.models.heads.base.DenseHead.loss`), and the loss parts are summed in float32.
The default, and the paper's, is fp32 throughout. On CPU results can also depend on the number of
threads of the BLAS / oneDNN backend; resume on the same machine and thread count.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import NothingTrained
from .rng import isolated_rng, mix_seed, seed_everything
from .schedule import lr_factor


def build_optimizer(model: torch.nn.Module, config: Any) -> torch.optim.SGD:
    """SGD over the parameters with ``requires_grad``, as mmdet builds it for GFL.

    ``lr = config.base_lr``, ``momentum = config.momentum``, ``weight_decay =
    config.weight_decay`` on *every* parameter, biases and norm weights included (mmdet's GFL
    config has no ``paramwise_cfg``; mmengine then passes ``model.parameters()`` to SGD, and
    frozen parameters, which never get a gradient, are never updated — leaving them out here is
    equivalent). ``RunConfig.base_lr`` is already the lr for ``config.batch_size``.
    Each param group records ``initial_lr``; the trainer sets ``lr = initial_lr * factor``.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameter with requires_grad=True")
    optimizer = torch.optim.SGD(params, lr=config.base_lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer


@dataclass
class Progress:
    """Where training stands (what a checkpoint stores besides weights and RNG states)."""

    epoch: int = 0  # next epoch to train
    iter_in_epoch: int = 0  # iterations of `epoch` already done
    global_iter: int = 0  # iterations done in all
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_count: int = 0
    epoch_seconds: float = 0.0

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.iter_in_epoch = epoch, 0
        self.epoch_sums, self.epoch_count, self.epoch_seconds = {}, 0, 0.0


@dataclass
class Step:
    """What the last iteration did (read by the hooks)."""

    epoch: int
    index: int  # batch index within the epoch
    iteration: int  # global
    lr: float
    losses: dict[str, float]  # "loss" (the sum) first, then each part
    epoch_iters: int | None  # batches in the epoch, None if the loader has no len()
    seconds: float = 0.0  # wall time of the iteration, data loading included
    data_time: float = 0.0
    grad_norm: float | None = None

    @property
    def last_of_epoch(self) -> bool:
        return self.epoch_iters is not None and self.index == self.epoch_iters - 1


@dataclass
class EpochSummary:
    """An epoch that just ended, before the progress moved on to the next one."""

    epoch: int
    iteration: int  # its last global iteration
    iters: int
    lr: float
    sums: dict[str, float]
    seconds: float


class Hook:
    """Something that happens around the optimiser steps (detectron2's ``HookBase`` habit).

    Events, in the order a run meets them: ``before_train`` (a hook may resume here),
    ``before_epoch``, ``after_backward`` (the losses are known, the weights not yet updated),
    ``after_step``, ``on_stop`` (a stop request in the middle of an epoch), ``after_epoch``
    (the progress already points at the next epoch), ``after_train`` (all epochs done),
    ``on_error`` and, always last, ``cleanup``.
    """

    def before_train(self, trainer: "Trainer") -> None: ...
    def before_epoch(self, trainer: "Trainer") -> None: ...
    def after_backward(self, trainer: "Trainer") -> None: ...
    def after_step(self, trainer: "Trainer") -> None: ...
    def on_stop(self, trainer: "Trainer") -> None: ...
    def after_epoch(self, trainer: "Trainer") -> None: ...
    def after_train(self, trainer: "Trainer") -> None: ...
    def on_error(self, trainer: "Trainer", error: BaseException) -> None: ...
    def cleanup(self, trainer: "Trainer") -> None: ...


class Trainer:
    """SGD over ``make_loader(epoch)``'s batches for ``epochs`` epochs; hooks do the rest.

    Hooks read and set: ``progress`` (:class:`Progress`), ``step`` (:class:`Step`),
    ``epoch_summary`` (:class:`EpochSummary`), ``resumed``, ``stop_requested``, ``model``,
    ``optimizer``, ``config``, ``device``.
    """

    def __init__(self, model: torch.nn.Module, make_loader: Callable[..., Iterable], config: Any, *,
                 device: str | torch.device, hooks: Sequence[Hook], epochs: int | None = None,
                 amp: bool = False, grad_clip: float | None = None) -> None:
        self.device = torch.device(device)
        self.config = config
        self.epochs = config.epochs if epochs is None else int(epochs)
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        self.amp = bool(amp)
        self.grad_clip = grad_clip
        self.make_loader = make_loader
        self.model = model.to(self.device)
        self.model.train()
        self.optimizer = build_optimizer(self.model, config)
        self.hooks = list(hooks)
        self.progress = Progress()
        self.resumed = False
        self.stop_requested = False
        self.step: Step | None = None
        self.epoch_summary: EpochSummary | None = None

    @property
    def finished(self) -> bool:
        return self.progress.epoch >= self.epochs

    def train(self) -> bool:
        """True when all epochs are done (also when they were on entry: nothing is trained
        then), False when a stop request ended it earlier. Raises
        :class:`~gfl_repro.engines.errors.NothingTrained` when an epoch yields no batch."""
        try:
            self._call("before_train")
            if not self.resumed:
                seed_everything(self.config.seed)
            if self.finished:
                return True
            for epoch in range(self.progress.epoch, self.epochs):
                if epoch != self.progress.epoch:
                    self.progress.start_epoch(epoch)
                self._train_epoch(epoch)
                if self.stop_requested and not self.step.last_of_epoch:
                    self._call("on_stop")
                    return False
                self._end_epoch(epoch)
                if self.stop_requested:
                    return self.finished
            self._call("after_train")
            return True
        except BaseException as err:
            self._call("on_error", err)
            raise
        finally:
            self._call("cleanup")

    def _call(self, event: str, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self, *args)

    def _train_epoch(self, epoch: int) -> None:
        length, batches = epoch_batches(self.make_loader, epoch, self.progress.iter_in_epoch, self.config.seed)
        self.epoch_iters = length
        self._call("before_epoch")
        tick = time.perf_counter()
        for index, batch in batches:
            self._train_step(epoch, index, batch, tick)
            self._call("after_step")
            if self.stop_requested:
                break
            tick = time.perf_counter()

    def _train_step(self, epoch: int, index: int, batch: Any, tick: float) -> None:
        data_time = time.perf_counter() - tick
        iteration = self.progress.global_iter
        scale = lr_factor(iteration, epoch, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * scale
        images, targets = to_device(batch, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with (torch.autocast(device_type=self.device.type, dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()):
            parts = loss_parts(self.model.loss(images, targets))
        total = torch.stack(list(parts.values())).sum()
        if total.requires_grad:
            total.backward()
        values = torch.stack([total.detach(), *(v.detach() for v in parts.values())]).tolist()
        losses = {"loss": values[0], **dict(zip(parts.keys(), values[1:]))}
        self.step = Step(epoch, index, iteration, self.optimizer.param_groups[0]["lr"], losses, self.epoch_iters,
                         data_time=data_time)
        self._call("after_backward")
        if self.grad_clip is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            self.step.grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip))
        self.optimizer.step()

        progress = self.progress
        progress.global_iter, progress.iter_in_epoch = iteration + 1, index + 1
        progress.epoch_count += 1
        for key, value in losses.items():
            progress.epoch_sums[key] = progress.epoch_sums.get(key, 0.0) + value
        self.step.seconds = time.perf_counter() - tick
        progress.epoch_seconds += self.step.seconds

    def _end_epoch(self, epoch: int) -> None:
        progress = self.progress
        if progress.epoch_count == 0:  # before anything marks the epoch done
            raise NothingTrained(epoch)
        self.epoch_summary = EpochSummary(epoch, progress.global_iter - 1, progress.epoch_count,
                                          self.optimizer.param_groups[0]["lr"], dict(progress.epoch_sums),
                                          progress.epoch_seconds)
        progress.start_epoch(epoch + 1)
        self._call("after_epoch")


# ---------------------------------------------------------------------------------- batches


def _accepts_start(make_loader: Callable) -> bool:
    try:
        return "start" in inspect.signature(make_loader).parameters
    except (TypeError, ValueError):
        return False


def epoch_batches(make_loader: Callable, epoch: int, start: int, seed: int) -> tuple[int | None, Iterator[tuple[int, Any]]]:
    """(batches in the epoch or None if unknown, iterator of (batch index, batch) from ``start``),
    each batch drawn with the loader's randomness isolated (see the module docstring)."""
    with isolated_rng(mix_seed(seed, epoch, -1)):
        if start and _accepts_start(make_loader):
            loader, first, skip = make_loader(epoch, start=start), start, 0
        else:
            loader, first, skip = make_loader(epoch), 0, start
        try:
            length: int | None = first + len(loader)  # type: ignore[arg-type]
        except TypeError:
            length = None
        iterator = iter(loader)

    def batches() -> Iterator[tuple[int, Any]]:
        index = first
        while True:
            with isolated_rng(mix_seed(seed, epoch, index)):
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
            if index >= first + skip:
                yield index, batch
            index += 1

    return length, batches()


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors of a batch (nested in lists / tuples / dicts too) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        moved = [to_device(v, device) for v in obj]
        return type(obj)(moved) if isinstance(obj, list) else tuple(moved)
    return obj


def loss_parts(raw: Any) -> dict[str, torch.Tensor]:
    """Loss dict -> name: float32 scalar (tensors are averaged, lists summed, as mmdet does)."""
    if not isinstance(raw, dict) or not raw:
        raise TypeError(f"model.loss must return a non-empty dict of tensors, got {type(raw).__name__}")
    parts = {}
    for name, value in raw.items():
        if name == "loss":
            raise ValueError("'loss' is reserved for the sum of the parts; name the parts otherwise")
        if isinstance(value, (list, tuple)):
            value = sum(v.float().mean() for v in value)
        elif isinstance(value, torch.Tensor):
            value = value.float().mean()
        else:
            raise TypeError(f"loss part {name!r} is a {type(value).__name__}, not a tensor")
        parts[str(name)] = value
    return parts


__all__ = ["EpochSummary", "Hook", "Progress", "Step", "Trainer", "build_optimizer",
           "epoch_batches", "loss_parts", "to_device"]
