"""Why a dataset cannot be used: one line for the user."""

from __future__ import annotations

import re

_WORKER_PREFIX = re.compile(r"^(?:[\w.]+\.)?DataError: ")


class DataError(RuntimeError):
    """The data a run needs is missing or malformed (message: one line naming the file).

    A DataError raised inside a DataLoader worker reaches the main process re-raised by torch
    with the worker's traceback prepended to the message (``Caught DataError in DataLoader
    worker process 0. Original Traceback ...``); only the original last line is kept, so the
    message stays the one line it was.
    """

    def __init__(self, message: str = "") -> None:
        message = str(message)
        if "Original Traceback" in message:
            last = message.strip().splitlines()[-1].strip()
            message = _WORKER_PREFIX.sub("", last)
        super().__init__(message)


__all__ = ["DataError"]
