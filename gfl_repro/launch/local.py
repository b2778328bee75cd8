"""The local launcher: a detached supervisor process runs the queued runs here, at most
``cap`` at a time (:mod:`gfl_repro.launch.local_queue`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..specs.profiles import Profile
from ..store import profile_dir
from .plan import PlannedRun
from .state import PENDING, prepare_run_dir, write_job


def default_local_cap() -> int:
    """One concurrent run per visible GPU, 1 on CPU."""
    import torch

    return max(torch.cuda.device_count(), 1)


def submit_local(runs: list[PlannedRun], profile: Profile, results_root: Path, cap: int,
                 data_root: Path | None) -> int:
    """Start a detached supervisor that runs ``runs`` with at most ``cap`` at a time; its pid."""
    if not runs:
        return 0
    dirs = [prepare_run_dir(r, profile, results_root, data_root) for r in runs]
    for directory in dirs:  # before the supervisor starts: it alone writes these files afterwards
        write_job(directory, launcher="local", state=PENDING, supervisor_pid=None, pid=None, error="",
                  stdout=str(directory / "job.log"))
    log = profile_dir(results_root, profile.name) / "local-launcher.log"
    with open(log, "a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gfl_repro.launch.local_queue", str(cap), *map(str, dirs)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return proc.pid
