"""Reading mmdet / mmengine checkpoints without running code from them.

``torch.load(..., weights_only=True)`` rebuilds only tensors, containers and plain values; any
other type the pickle names is refused unless it is on an allow-list. mmengine's checkpoints
hold, besides tensors and plain values, a few safe types: numpy arrays and scalars (in
``meta`` and the message hub) and mmengine's ``HistoryBuffer`` (the message hub's logged
scalars: a dict of two numpy arrays and an int). :func:`allowed_globals` lists exactly those;
loading under :func:`mmdet_safe_globals` accepts them and still refuses everything else, e.g. a
pickle whose ``__reduce__`` names ``os.system``.

A ``HistoryBuffer`` pickles its statistics methods as ``getattr(HistoryBuffer, "mean")`` (and
"min", "max", "current"); the allow-list's ``getattr`` is :func:`history_buffer_method`, which
returns exactly those four and refuses any other attribute of anything.

``HistoryBuffer`` needs mmengine to be importable. Where it is not (converting a checkpoint
without the mmdet extra), the name maps to :class:`Inert`, a class without methods whose
instances only receive the pickled attributes: nothing of the file is executed either way.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

HISTORY_BUFFER = "mmengine.logging.history_buffer.HistoryBuffer"
FORCE_ON, FORCE_OFF = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


class Inert:
    """Stands in for a class of a checkpoint's metadata that is not importable here; holds the
    pickled attributes and does nothing else."""


def _numpy_globals() -> list[Any]:
    """numpy's array / scalar reconstructors and the numeric dtype classes, under the module
    names numpy 1.x (``numpy.core``) and numpy 2.x (``numpy._core``) pickle them with."""
    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    out: list[Any] = [np.ndarray, np.dtype]
    for func in (core._reconstruct, core.scalar):
        out += [(func, f"numpy.core.multiarray.{func.__name__}"), (func, f"numpy._core.multiarray.{func.__name__}")]
    numeric = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
               np.float16, np.float32, np.float64, np.complex64, np.complex128)
    out += sorted({type(np.dtype(t)) for t in numeric}, key=lambda t: t.__name__)
    return out


def _history_buffer() -> Any:
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:
        return (Inert, HISTORY_BUFFER)
    return HistoryBuffer


STATISTICS = ("min", "max", "current", "mean")


def history_buffer_method(owner: Any, name: str) -> Any:
    """The one ``getattr`` a checkpoint may call: a statistics method of mmengine's
    HistoryBuffer (or nothing, for the inert stand-in). Anything else is refused."""
    entry = _history_buffer()
    history_buffer = entry[0] if isinstance(entry, tuple) else entry
    if owner is history_buffer and name in STATISTICS:
        return getattr(owner, name, None)
    raise pickle.UnpicklingError(f"GLOBAL builtins.getattr of {getattr(owner, '__name__', owner)!r}.{name} refused")


def allowed_globals() -> list[Any]:
    """The allow-list: entries for ``torch.serialization.safe_globals`` (a class or function, or
    a (object, pickled name) pair)."""
    return [*_numpy_globals(), _history_buffer(), (history_buffer_method, "builtins.getattr")]


@contextlib.contextmanager
def mmdet_safe_globals() -> Iterator[None]:
    """While inside, every ``torch.load`` with ``weights_only=True`` (torch's default, which
    mmengine's loaders use) also accepts the types of :func:`allowed_globals`."""
    with torch.serialization.safe_globals(allowed_globals()):
        yield


@contextlib.contextmanager
def weights_only_loading() -> Iterator[None]:
    """While inside (mmengine training and resuming), every ``torch.load`` reads with
    ``weights_only=True`` and the allow-list, even one that asks for a full unpickle or runs
    under an inherited ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``: torch's
    ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` is set, the opposite switch removed, both restored after."""
    saved = {key: os.environ.get(key) for key in (FORCE_ON, FORCE_OFF)}
    os.environ[FORCE_ON] = "1"
    os.environ.pop(FORCE_OFF, None)
    try:
        with mmdet_safe_globals():
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class UnsafeCheckpoint(pickle.UnpicklingError):
    """A checkpoint naming a type outside the allow-list (one line)."""


def refusal(path: Path | str, err: BaseException) -> str | None:
    """One line for a checkpoint that weights-only loading refused because of a type outside
    the allow-list (which file, what it named); None when ``err`` is another failure."""
    text = str(err)
    match = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"but got <class '([\w.]+)'>", text)
    if match is None:
        return None
    return (f"{path}: refused to load: it names {match[1]}, which is not among the tensors, numbers and numpy / "
            "mmengine metadata types a checkpoint may hold (nothing from the file was run)")


def load_checkpoint(path: Path | str) -> Any:
    """``torch.load`` of an mmdet/mmengine checkpoint with ``weights_only=True`` and the
    allow-list; :class:`UnsafeCheckpoint` (one line) when it names anything else. Other
    failures (a truncated or foreign file) propagate as torch raises them."""
    with mmdet_safe_globals():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            line = refusal(path, err)
            if line is None:
                raise
            raise UnsafeCheckpoint(line) from None


__all__ = ["HISTORY_BUFFER", "Inert", "history_buffer_method", "UnsafeCheckpoint", "allowed_globals", "load_checkpoint", "mmdet_safe_globals",
           "refusal", "weights_only_loading"]
