r"""Fig. 5(b): different distributions over the bins y_0 … y_n with the same integral (Eq. 5,
:math:`\hat y = \sum_i P(y_i)\, y_i`), as the paper illustrates: a bimodal one (1), a flat
one (2) and the compact one DFL drives towards (3), which puts all its mass on the two bins
around the target (the global minimum of Eq. 6).

Each shape is a mixture of *two-point* distributions: the one centred at x puts
``y_{i+1} − x`` on bin i and ``x − y_i`` on bin i + 1 (``y_i ≤ x ≤ y_{i+1}``), so its integral
is exactly x. Mixing centres ``target + d_k`` with weights ``w_k`` and ``Σ w_k d_k = 0`` keeps
the integral at the target. Table columns: ``distribution, bin, y, probability, integral``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .tables import Table

REG_MAX = 16
TARGET = 6.4
# name -> (offsets from the target, weights); every sum of weight x offset is 0
SHAPES = {
    "(1) bimodal": ((-4.0, 3.0), (3.0 / 7, 4.0 / 7)),
    "(2) flat": (tuple(float(d) for d in range(-5, 6)), (1.0 / 11,) * 11),
    "(3) compact (DFL)": ((0.0,), (1.0,)),
}


def two_point(x: float, reg_max: int = REG_MAX) -> np.ndarray:
    """The distribution over bins 0 … reg_max (width 1) whose mass sits on the two bins around x."""
    p = np.zeros(reg_max + 1)
    low = min(int(np.floor(x)), reg_max - 1)
    p[low] = low + 1 - x
    p[low + 1] = x - low
    return p


def shape(offsets, weights, target: float = TARGET, reg_max: int = REG_MAX) -> np.ndarray:
    if abs(sum(w * d for w, d in zip(weights, offsets))) > 1e-9 or abs(sum(weights) - 1) > 1e-9:
        raise ValueError("weights must sum to 1 and balance the offsets around the target")
    return sum(w * two_point(target + d, reg_max) for w, d in zip(weights, offsets))


def compute(target: float = TARGET, reg_max: int = REG_MAX) -> Table:
    bins = np.arange(reg_max + 1)
    frames = []
    for name, (offsets, weights) in SHAPES.items():
        p = shape(offsets, weights, target, reg_max)
        frames.append(pd.DataFrame({"distribution": name, "bin": bins, "y": bins.astype(float), "probability": p,
                                    "integral": float(p @ bins)}))
    return Table(pd.concat(frames, ignore_index=True))


__all__ = ["REG_MAX", "SHAPES", "TARGET", "compute", "shape", "two_point"]
