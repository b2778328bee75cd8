"""The native engine's generic training loop: SGD, mmdet's lr schedule, resumable checkpoints.

:func:`fit` trains any ``torch.nn.Module`` that has ``loss(images, targets) -> dict[str, Tensor]``
on the batches of ``make_loader(epoch)``, with the optimiser and schedule of mmdetection 3.3's
``gfl_r50_fpn_1x_coco`` (DESIGN.md §3; the schedule is derived in :mod:`gfl_repro.schedule`).

Files it writes under ``run_dir`` (layout of :mod:`gfl_repro.store`)::

    checkpoints/last.pt   model + optimiser + progress + RNG states; replaced atomically at every
                          epoch end, every ``checkpoint_interval`` iterations and on a requested
                          stop. ``torch.load(path, weights_only=True)`` reads it.
    metrics.jsonl         one JSON object per line, appended (see "Metrics records" below)

Counting convention: ``epoch``, ``iter`` (within the epoch) and ``iteration`` (global, over the
whole run) are 0-based indices everywhere — in :func:`~gfl_repro.schedule.lr_at`, in metrics
records, in :class:`NonFiniteLoss`. The checkpoint's ``global_iter`` / ``iter_in_epoch`` are
*counts of finished iterations*, i.e. the index of the next one.

Resume: when ``checkpoints/last.pt`` exists, :func:`fit` continues from it, mid-epoch too (it
skips the batches of that epoch already trained on). On CPU the resumed run reproduces the
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
float summation order from run to run. Bit-exact GPU runs would need
``torch.use_deterministic_algorithms(True)``, ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` and
``torch.backends.cudnn.benchmark = False`` (set by the caller, not here), and fail for ops with
no deterministic kernel. With ``amp=True`` on CUDA the forward pass runs under
``torch.autocast(dtype=torch.bfloat16)`` (no loss scaling is needed for bf16); the loss parts are
summed in float32. ``amp`` is ignored on CPU. On CPU results can also depend on the number of
threads of the BLAS / oneDNN backend; resume on the same machine and thread count.

Metrics records (``type`` field):

* ``start`` / ``resume``: where training (re)starts: ``epoch``, ``iter``, ``iteration``,
  ``device``, ``amp``. After a crash (not a requested stop) iterations between the last
  checkpoint and the crash appear again after the ``resume`` record; readers keep the last
  record of an iteration.
* ``iter``: every ``log_interval`` global iterations, at the last iteration of an epoch and
  before a requested stop: ``epoch``, ``iter``, ``iteration`` (the last one in the window),
  ``lr`` (its learning rate), each loss part and ``loss`` (their sum) averaged over the window's
  ``n`` iterations, ``time`` (seconds per iteration, data loading included), ``data_time``,
  ``grad_norm`` when clipping.
* ``epoch``: at each epoch end: ``epoch``, ``iteration`` (its last), ``iters``, ``lr``, mean of
  each part and of ``loss`` over the epoch, ``time`` (seconds of training in this epoch).
* ``end`` when all epochs are done; ``error`` (with ``message``) on :class:`NonFiniteLoss`.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .distributed import is_main
from .schedule import lr_factor
from .store import append_metrics, atomic_write

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "last.pt"
CHECKPOINT_FORMAT = 1
DEFAULT_LOG_INTERVAL = 10


class NonFiniteLoss(RuntimeError):
    """A loss part (or their sum) became NaN or infinite; training stopped before the update.

    Attributes: ``iteration`` (0-based global), ``epoch`` and ``iter`` (0-based), ``parts``
    (name -> value of every loss part and ``loss``, the sum).
    """

    def __init__(self, iteration: int, epoch: int, iter_in_epoch: int, parts: dict[str, float]):
        self.iteration = iteration
        self.epoch = epoch
        self.iter = iter_in_epoch
        self.parts = dict(parts)
        bad = {name: value for name, value in parts.items() if not math.isfinite(value) and name != "loss"}
        if not bad:  # every part finite but the sum overflowed
            bad = {"loss": parts.get("loss", float("nan"))}
        named = ", ".join(f"{name}={value}" for name, value in bad.items())
        super().__init__(
            f"loss became non-finite at iteration {iteration}: {named} "
            f"(epoch {epoch}, iteration {iter_in_epoch} of the epoch; the last checkpoint is kept)"
        )


# ------------------------------------------------------------------------------ optimiser


def build_optimizer(model: torch.nn.Module, config: Any) -> torch.optim.SGD:
    """SGD over the parameters with ``requires_grad``, as mmdet builds it for GFL.

    ``lr = config.base_lr``, ``momentum = config.momentum``, ``weight_decay =
    config.weight_decay`` on *every* parameter, biases and norm weights included (mmdet's GFL
    config has no ``paramwise_cfg``; mmengine then passes ``model.parameters()`` to SGD, and
    frozen parameters, which never get a gradient, are never updated — leaving them out here is
    equivalent). ``RunConfig.base_lr`` is already the lr for ``config.batch_size``: the linear
    scaling rule (0.01 per 16 images) is applied when the config is resolved, not here.
    Each param group records ``initial_lr``; :func:`fit` sets ``lr = initial_lr * factor``.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameter with requires_grad=True")
    optimizer = torch.optim.SGD(
        params, lr=config.base_lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer


# ------------------------------------------------------------------------------ RNG


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


def _rng_state(with_cuda: bool) -> dict[str, Any]:
    """Global RNG states as tensors / lists / numbers (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "internal": [int(x) for x in internal], "gauss_next": gauss_next},
    }
    if with_cuda:
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: dict[str, Any], with_cuda: bool) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        (npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"])
    )
    pyst = state["python"]
    random.setstate((pyst["version"], tuple(pyst["internal"]), pyst["gauss_next"]))
    if with_cuda:
        cuda = state.get("cuda")
        if cuda is not None and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            warnings.warn("checkpoint has no CUDA RNG state for this device count; CUDA RNG not restored")


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes, unlike hash())."""
    digest = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@contextlib.contextmanager
def _isolated_rng(seed: int) -> Iterator[None]:
    """Run the body with the CPU torch / numpy / random generators seeded by ``seed``, then
    restore their previous states (keeps data loading out of the model's random stream)."""
    saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.random.default_generator.manual_seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])


# ------------------------------------------------------------------------------ checkpoints


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    """``run_dir/checkpoints/last.pt``."""
    return Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit` (``weights_only=True``).

    Keys: ``format``, ``model`` (state dict), ``optimizer`` (state dict), ``epoch`` (next epoch to
    train, = epochs when done), ``iter_in_epoch`` (iterations of that epoch already done),
    ``global_iter`` (iterations done in all), ``epoch_sums`` / ``epoch_count`` /
    ``epoch_seconds`` (running epoch statistics), ``rng``, ``config`` (RunConfig as a dict).
    """
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def _atomic_torch_save(payload: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda handle: torch.save(payload, handle))


def _config_dict(config: Any) -> dict[str, Any] | None:
    return config.to_dict() if hasattr(config, "to_dict") else None


def _check_same_config(stored: dict[str, Any] | None, config: Any, path: Path) -> None:
    current = _config_dict(config)
    if not stored or current is None:
        return
    differ = sorted(k for k in stored.keys() & current.keys() if stored[k] != current[k])
    if differ:
        details = ", ".join(f"{k}: {stored[k]!r} -> {current[k]!r}" for k in differ)
        raise ValueError(f"{path} was written for another config ({details}); refusing to resume")


@dataclass
class _Progress:
    epoch: int = 0  # next epoch to train
    iter_in_epoch: int = 0  # iterations of `epoch` already done
    global_iter: int = 0  # iterations done in all
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_count: int = 0
    epoch_seconds: float = 0.0

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.iter_in_epoch = epoch, 0
        self.epoch_sums, self.epoch_count, self.epoch_seconds = {}, 0, 0.0


def _save_checkpoint(path: Path, model, optimizer, progress: _Progress, config: Any, with_cuda: bool) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": progress.epoch,
        "iter_in_epoch": progress.iter_in_epoch,
        "global_iter": progress.global_iter,
        "epoch_sums": dict(progress.epoch_sums),
        "epoch_count": progress.epoch_count,
        "epoch_seconds": progress.epoch_seconds,
        "rng": _rng_state(with_cuda),
        "config": _config_dict(config),
    }
    _atomic_torch_save(payload, path)


# ------------------------------------------------------------------------------ batches


def _accepts_start(make_loader: Callable) -> bool:
    try:
        params = inspect.signature(make_loader).parameters
    except (TypeError, ValueError):
        return False
    return "start" in params


def _epoch_batches(
    make_loader: Callable, epoch: int, start: int, seed: int
) -> tuple[int | None, Iterator[tuple[int, Any]]]:
    """(batches in the epoch or None if unknown, iterator of (batch index, batch) from ``start``)."""
    with _isolated_rng(_mix_seed(seed, epoch, -1)):
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
            with _isolated_rng(_mix_seed(seed, epoch, index)):
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
            if index >= first + skip:
                yield index, batch
            index += 1

    return length, batches()


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        moved = [_to_device(v, device) for v in obj]
        return type(obj)(moved) if isinstance(obj, list) else tuple(moved)
    return obj


def _loss_parts(raw: Any) -> dict[str, torch.Tensor]:
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


class _Window:
    """Running sums of per-iteration values between two metrics records."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.n += 1

    def means(self) -> dict[str, float]:
        return {key: value / self.n for key, value in self.sums.items()}

    def reset(self) -> None:
        self.sums, self.n = {}, 0


# ------------------------------------------------------------------------------ fit


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
    log_interval: int = DEFAULT_LOG_INTERVAL,
) -> bool:
    """Train ``model`` for ``epochs`` (default ``config.epochs``) epochs, resuming if possible.

    Args:
        model: a module with ``loss(images, targets) -> dict[str, Tensor]``: named loss parts
            (tensors are averaged, lists of tensors summed, as mmdet's ``parse_losses``); their
            sum is minimised. Moved to ``device`` and put in train mode here.
        make_loader: ``make_loader(epoch)`` -> iterable of ``(images, targets)`` batches of that
            0-based epoch, the same batches on every call (see the module docstring for the
            determinism contract and the optional ``start`` keyword). Tensors in the batch
            (nested in lists / tuples / dicts too) are moved to ``device``.
        config: a :class:`~gfl_repro.config.RunConfig` (optimiser, schedule, ``seed``).
            ``config.base_lr`` is the lr for ``config.batch_size``.
        run_dir: the run's directory (``checkpoints/last.pt`` and ``metrics.jsonl`` go there).
        device: where to train.
        epochs: overrides ``config.epochs`` (how far to train; the lr schedule still comes
            from ``config``).
        progress: show a tqdm bar (loss parts, lr, ETA) on stderr.
        checkpoint_interval: also checkpoint every this many global iterations.
        on_iteration: called after every optimiser step with a dict ``epoch``, ``iter``,
            ``iteration`` (0-based), ``lr``, each loss part and ``loss`` (floats).
        amp: bf16 autocast for the forward pass on CUDA; ignored on other devices.
        grad_clip: clip the global gradient L2 norm to this value (GFL uses none).
        should_stop: polled after every iteration; when it returns True the state after that
            iteration is checkpointed and fit returns (for preemption signals).
        log_interval: write an ``iter`` metrics record every this many global iterations.

    Returns True when all epochs are done (also when the checkpoint was already complete on
    entry: nothing is trained then), False when stopped on request before that. Either way
    ``model`` holds the weights of ``checkpoints/last.pt``.

    Raises:
        NonFiniteLoss: a loss part became NaN/inf; raised before that iteration's update and
            without writing a checkpoint, so ``last.pt`` holds the state before it.
    """
    device = torch.device(device)
    epochs = config.epochs if epochs is None else int(epochs)
    if log_interval < 1:
        raise ValueError(f"log_interval must be >= 1, got {log_interval}")
    if checkpoint_interval is not None and checkpoint_interval < 1:
        raise ValueError(f"checkpoint_interval must be >= 1, got {checkpoint_interval}")
    run_dir = Path(run_dir)
    ckpt = checkpoint_path(run_dir)
    with_cuda = device.type == "cuda"
    use_amp = bool(amp) and with_cuda

    model.to(device)
    model.train()
    optimizer = build_optimizer(model, config)
    state = _Progress()
    resumed = ckpt.exists()
    if resumed:
        payload = load_checkpoint(ckpt)
        _check_same_config(payload.get("config"), config, ckpt)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        state = _Progress(
            epoch=int(payload["epoch"]),
            iter_in_epoch=int(payload["iter_in_epoch"]),
            global_iter=int(payload["global_iter"]),
            epoch_sums={k: float(v) for k, v in payload["epoch_sums"].items()},
            epoch_count=int(payload["epoch_count"]),
            epoch_seconds=float(payload["epoch_seconds"]),
        )
        rng = payload["rng"]
        del payload
    else:
        seed_everything(config.seed)
    if state.epoch >= epochs:
        return state.epoch >= epochs
    if resumed:
        _set_rng_state(rng, with_cuda)  # last, so that nothing above perturbs the stream

    main = is_main()  # with several processes only rank 0 writes files and shows progress

    def log(directory, record) -> None:
        if main:
            append_metrics(directory, record)

    def flush(info: dict[str, Any]) -> None:
        """Write the mean of the iterations since the last ``iter`` record, if any."""
        if window.n:
            log(run_dir, {"type": "iter", **info, **window.means(), "n": window.n})
            window.reset()

    def save() -> None:
        if not main:
            return
        _save_checkpoint(ckpt, model, optimizer, state, config, with_cuda)

    log(run_dir, {
        "type": "resume" if resumed else "start", "epoch": state.epoch, "iter": state.iter_in_epoch,
        "iteration": state.global_iter, "device": str(device), "amp": use_amp, "epochs": epochs,
        "wall_time": time.time(),
    })

    autocast = (lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
    bar = tqdm(initial=state.global_iter, total=None, disable=not progress or not main, dynamic_ncols=True, unit="it")
    window = _Window()
    try:
        for epoch in range(state.epoch, epochs):
            if epoch != state.epoch:
                state.start_epoch(epoch)
            length, batches = _epoch_batches(make_loader, epoch, state.iter_in_epoch, config.seed)
            if length is not None and bar.total is None:
                bar.total = epochs * length
            bar.set_description(f"epoch {epoch + 1}/{epochs}", refresh=False)
            stopped = False
            tick = time.perf_counter()
            for index, batch in batches:
                data_time = time.perf_counter() - tick
                iteration = state.global_iter
                lr_scale = lr_factor(iteration, epoch, config)
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"] * lr_scale
                lr = optimizer.param_groups[0]["lr"]

                images, targets = _to_device(batch, device)
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    parts = _loss_parts(model.loss(images, targets))
                total = torch.stack(list(parts.values())).sum()
                if total.requires_grad:
                    total.backward()
                values = torch.stack([total.detach(), *(v.detach() for v in parts.values())]).tolist()
                record = {"loss": values[0], **dict(zip(parts.keys(), values[1:]))}
                if not all(math.isfinite(v) for v in values):
                    raise NonFiniteLoss(iteration, epoch, index, record)
                grad_norm = None
                if grad_clip is not None:
                    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
                optimizer.step()

                state.global_iter = iteration + 1
                state.iter_in_epoch = index + 1
                state.epoch_count += 1
                for key, value in record.items():
                    state.epoch_sums[key] = state.epoch_sums.get(key, 0.0) + value
                now = time.perf_counter()
                seconds = now - tick
                state.epoch_seconds += seconds
                window.add({**record, "time": seconds, "data_time": data_time,
                            **({"grad_norm": grad_norm} if grad_norm is not None else {})})
                last_of_epoch = length is not None and index == length - 1
                info = {"epoch": epoch, "iter": index, "iteration": iteration, "lr": lr, "epochs": epochs,
                        "epoch_iters": length}
                if (iteration + 1) % log_interval == 0 or last_of_epoch:
                    flush(info)
                if on_iteration is not None:
                    on_iteration({**info, **record})
                bar.update(1)
                bar.set_postfix_str(
                    " ".join(f"{k}={v:.4g}" for k, v in record.items()) + f" lr={lr:.3g}", refresh=False
                )
                if should_stop is not None and should_stop():
                    stopped = True
                    flush(info)
                    if not last_of_epoch:
                        save()
                        return state.epoch >= epochs
                    break
                if checkpoint_interval and (iteration + 1) % checkpoint_interval == 0 and not last_of_epoch:
                    save()
                tick = time.perf_counter()

            # epoch end (also reached by a resume whose checkpoint sits at the epoch's end)
            if window.n:  # length unknown: the window was not flushed at the last batch
                flush(info)
            count = state.epoch_count
            means = {k: v / count for k, v in state.epoch_sums.items()} if count else {}
            log(run_dir, {
                "type": "epoch", "epoch": epoch, "iteration": state.global_iter - 1, "iters": count,
                "lr": optimizer.param_groups[0]["lr"], **means, "time": state.epoch_seconds,
            })
            state.start_epoch(epoch + 1)
            save()
            if stopped:
                return state.epoch >= epochs
        log(run_dir, {"type": "end", "epoch": epochs - 1, "iteration": state.global_iter - 1,
                                 "wall_time": time.time()})
        return True
    except NonFiniteLoss as err:
        log(run_dir, {"type": "error", "error": "NonFiniteLoss", "message": str(err),
                                 "epoch": err.epoch, "iter": err.iter, "iteration": err.iteration})
        raise
    finally:
        bar.close()


__all__ = [
    "NonFiniteLoss",
    "build_optimizer",
    "checkpoint_path",
    "fit",
    "load_checkpoint",
    "seed_everything",
    "CHECKPOINT_DIR",
    "CHECKPOINT_FILE",
]
