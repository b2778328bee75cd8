"""The inline launcher: train the runs in this process, one after another."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..engines import execute
from ..specs.profiles import Profile
from ..store import DONE, run_dir
from .plan import PlannedRun
from .state import FAILED, MISSING, PENDING, RUNNING, last_error_line, write_job


def mark_pending(runs: list[PlannedRun], profile: Profile, results_root: Path) -> None:
    """Claim the runs for this process (under the launch lock): ``job.json`` says pending."""
    for planned in runs:
        write_job(run_dir(results_root, profile.name, planned.run_id), launcher="inline", state=PENDING,
                  pid=os.getpid(), error="")


def run_inline(runs: list[PlannedRun], profile: Profile, results_root: Path, *, data_root: Path | None = None,
               device: str | None = None, progress: bool = True,
               echo: Callable[[str], None] = print) -> list[dict]:
    """Train the runs here, one after another, keeping ``job.json`` up to date; their results.

    The caller has already marked them pending (:func:`mark_pending`) under the launch lock.
    A failure marks that run failed, puts the runs not started back to missing, and raises.
    """
    results = []
    for i, planned in enumerate(runs, 1):
        directory = run_dir(results_root, profile.name, planned.run_id)
        echo(f"[{i}/{len(runs)}] run {planned.run_id}: {planned.name}")
        write_job(directory, launcher="inline", state=RUNNING, pid=os.getpid(), error="")
        try:
            result = execute(planned.config, directory, run_id=planned.run_id, profile=profile.name,
                             data_root=data_root, device=device, progress=progress)
        except BaseException as err:
            write_job(directory, state=FAILED, error=last_error_line(f"{type(err).__name__}: {err}") or "interrupted")
            for rest in runs[i:]:  # not started: back to missing so the next `run` picks them up
                write_job(run_dir(results_root, profile.name, rest.run_id), state=MISSING)
            raise
        write_job(directory, state=DONE)
        m = result["metrics"]
        echo(f"    AP {_percent(m['AP'])}  AP50 {_percent(m['AP50'])}  ({result['ms_per_img']:.1f} ms/img)")
        results.append(result)
    return results


def _percent(stat: float) -> str:
    """A COCOeval stat in percent; its -1 (no ground truth in that range) reads n/a."""
    return "n/a" if stat < 0 else f"{100 * stat:.1f}"
