"""Where a training step would make a GPU wait for the host (a diagnostic).

On a GPU, kernels are queued and the host runs ahead; an operation that needs a value on
the host (``.item()``, ``int(t)``, ``if t.any():``, ``.tolist()``) or whose output size
depends on the data (``t[mask]``, ``nonzero``) stops the host until the device has finished
everything queued before it. :func:`count_host_syncs` runs a function (one training step's
loss and backward, say) and records every such operation with the line of this package that
made it. It needs no GPU: the operations are recognised by what they are, on any device, so
the count on a CPU is the count a GPU would see.

Recorded: reads of a value to the host (``item``, ``tolist``, ``numpy``, ``cpu``,
``bool``/``int``/``float``/``index`` of a tensor); copies of host data to the device, which
wait for the device's queue as a read does (``torch.tensor``/``as_tensor`` of Python data
with a ``device``, ``new_tensor`` of Python data, indexing with a Python list); and the
operators whose output size depends on the data (``nonzero``, ``masked_select``, ``unique``,
``repeat_interleave`` with tensor repeats, indexing or index assignment with a boolean mask,
also in backward). On a CPU every tensor is on the host; those that would stay there on a
GPU are told apart as made from Python data without a ``device`` (``torch.tensor(values)``)
or computed from such tensors only, and reading them is not recorded.
Not recorded: what an operator checks internally on a CPU only (``F.one_hot``'s range
check, for instance, which CUDA leaves to a device-side assert).
"""

from __future__ import annotations

import traceback
import weakref
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_PACKAGE = Path(__file__).resolve().parents[2]  # the gfl_repro directory
_TORCH = Path(torch.__file__).resolve().parent

_HOST_READS = {
    torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu,
    torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__,
}

_aten = torch.ops.aten
_DATA_DEPENDENT_SIZE = {
    _aten.nonzero.default, _aten.masked_select.default, _aten.repeat_interleave.Tensor,
    _aten._unique2.default, _aten.unique_consecutive.default, _aten.unique_dim.default,
}
_INDEXING = {_aten.index.Tensor, _aten.index_put.default, _aten.index_put_.default,
             _aten._index_put_impl_.default}


@dataclass
class HostSyncs:
    """The operations recorded, counted per (operation, where: the ``file:line`` that made it, or
    ``backward (<autograd node>)`` for a backward pass's own)."""

    sites: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.sites.values())

    def lines(self) -> list[str]:
        """One line per site, most frequent first: ``count  operation  where``."""
        return [f"{n:4d}  {op:24s}  {where}" for (op, where), n in self.sites.most_common()]


def _where() -> str:
    """The line that made the operation: ``backward (<autograd node>)`` inside a backward pass,
    else the innermost frame of this package on the stack, else the innermost frame outside
    torch."""
    node = torch._C._current_autograd_node()
    if node is not None:
        return f"backward ({node.name()})"
    frames = [(Path(f.filename).resolve(), f.lineno) for f in reversed(traceback.extract_stack())]
    frames = [(path, line) for path, line in frames if path != Path(__file__).resolve()]
    for path, line in frames:
        if path.is_relative_to(_PACKAGE):
            return f"{path.relative_to(_PACKAGE.parent)}:{line}"
    for path, line in frames:
        if not path.is_relative_to(_TORCH) and path.name != "contextlib.py":
            return f"{path.name}:{line}"
    return "torch"


def _has_bool_index(indices: Any) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


def _has_list_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, list) for i in items)


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [x for x in tree_flatten(tree)[0] if isinstance(x, torch.Tensor)]


class _Recorder:
    """The sites recorded, and the tensors that live on the host by design: made from Python
    data without a ``device`` (``torch.tensor(values)``), or computed from such tensors only.
    Reading those costs a GPU nothing, so they are not recorded."""

    def __init__(self) -> None:
        self.syncs = HostSyncs()
        self._host: dict[int, weakref.ref] = {}  # by id: tensors do not compare by identity

    def on_host(self, tensor: torch.Tensor) -> bool:
        ref = self._host.get(id(tensor))
        return ref is not None and ref() is tensor

    def keep_on_host(self, tensors: list[torch.Tensor]) -> None:
        for tensor in tensors:
            key = id(tensor)
            self._host[key] = weakref.ref(tensor, lambda _, key=key: self._host.pop(key, None))

    def record(self, op: str, tensor: Any = None) -> None:
        if not (isinstance(tensor, torch.Tensor) and self.on_host(tensor)):
            self.syncs.sites[(op, _where())] += 1


class _HostReads(TorchFunctionMode):
    def __init__(self, recorder: _Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        record = self.recorder.record
        if func in _HOST_READS:
            record(func.__name__, args[0])
        elif func in (torch.tensor, torch.as_tensor) and not isinstance(args[0], torch.Tensor) and "device" in kwargs:
            record(f"{func.__name__} from host data")
        elif func is torch.Tensor.new_tensor and not isinstance(args[1], torch.Tensor):
            record("new_tensor from host data", args[0])
        elif func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and _has_list_index(args[1]):
            record("indexing with a list", args[0])
        result = func(*args, **kwargs)
        inputs = _tensors((args, kwargs))
        host_born = func in (torch.tensor, torch.as_tensor) and not inputs and "device" not in kwargs
        if host_born or (inputs and all(self.recorder.on_host(t) for t in inputs)):
            self.recorder.keep_on_host(_tensors(result))
        return result


class _DataDependentSizes(TorchDispatchMode):
    def __init__(self, recorder: _Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _DATA_DEPENDENT_SIZE:
            self.recorder.record(func.__name__.split(".")[0], args[0])
        elif func in _INDEXING and _has_bool_index(args[1]):
            kind = "indexing" if func is _aten.index.Tensor else "assignment"
            self.recorder.record(f"boolean mask {kind}", args[0])
        return func(*args, **(kwargs or {}))


def count_host_syncs(fn: Callable[[], Any]) -> tuple[Any, HostSyncs]:
    """Run ``fn()`` and return its result with the host synchronisations it would make on a GPU."""
    recorder = _Recorder()
    with _DataDependentSizes(recorder), _HostReads(recorder):
        result = fn()
    return result, recorder.syncs


__all__ = ["HostSyncs", "count_host_syncs"]
