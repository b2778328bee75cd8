"""Constant tensors (coder stds, regress ranges, strides) on the device they are used on.

``x.new_tensor(values)`` copies host data to ``x``'s device each time it is called, and on a GPU
such a copy waits for everything queued before it. :func:`constant` makes the tensor once per
(values, device, dtype) and hands out the same one afterwards; callers never modify it in place.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor


@lru_cache(maxsize=None)
def _constant(values: tuple, device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.tensor(values, dtype=dtype).to(device)


def constant(values, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``like.new_tensor(values)`` (``dtype`` defaults to ``like``'s), made once per device and dtype."""
    frozen = tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in values)
    return _constant(frozen, like.device, like.dtype if dtype is None else dtype)


__all__ = ["constant"]
