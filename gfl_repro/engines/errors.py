"""Why a run stopped without a result: errors both engines raise, each one line for the user."""

from __future__ import annotations

import math


class NonFiniteLoss(RuntimeError):
    """A loss part (or their sum) became NaN or infinite; training stopped before the update.

    Attributes: ``iteration`` (0-based global), ``epoch`` and ``iter`` (0-based), ``parts``
    (name -> value of every loss part and ``loss``, the sum).
    """

    def __init__(self, iteration: int, epoch: int, iter_in_epoch: int, parts: dict[str, float],
                 kept: str = "the last checkpoint is kept"):
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
            f"(epoch {epoch}, iteration {iter_in_epoch} of the epoch; {kept})"
        )


class NothingTrained(RuntimeError):
    """An epoch of training yielded no batch: the run would end without having trained (one
    line). A run that trained nothing is never reported as done."""

    def __init__(self, epoch: int):
        self.epoch = epoch
        super().__init__(f"epoch {epoch} of training yielded no batch: the training set is empty (after filtering), "
                         "so nothing would be trained")


class DeviceError(ValueError):
    """A device name torch does not know, or a GPU this machine does not have (one line)."""


__all__ = ["DeviceError", "NonFiniteLoss", "NothingTrained"]
