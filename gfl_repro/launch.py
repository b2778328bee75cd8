"""Which runs an invocation of `run` needs, and running them in this process.

Runs are deduplicated by run_id across the named experiments (a run shared by several
tables trains once). Which of them to start now (not done, pending or running) is decided
by :func:`gfl_repro.launchers.select_runs` under the launch lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .config import RunConfig
from .jobstate import FAILED, MISSING, RUNNING, last_error_line, write_job
from .mmdet_config import check_expressible
from .models.detector import check_supported
from .profiles import Profile
from .runner import execute
from .spec import Experiment
from .store import DONE, run_dir


@dataclass
class PlannedRun:
    run_id: str
    config: RunConfig
    rows: list[str] = field(default_factory=list)  # "table3 / ATSS + QFL", every row it serves


@dataclass
class Plan:
    runs: list[PlannedRun]  # distinct runs the chosen engine can build
    unsupported: list[str]  # one line per row it cannot build (yet)


def plan_runs(experiments: list[Experiment], profile: Profile, engine: str = "native") -> Plan:
    runs: dict[str, PlannedRun] = {}
    unsupported = []
    check = check_expressible if engine == "mmdet" else check_supported
    for exp in experiments:
        for row, config, rid in exp.runs(profile, engine):
            try:
                check(config)
            except ValueError as err:
                unsupported.append(f"{exp.id} / {row.display}: {err}")
                continue
            runs.setdefault(rid, PlannedRun(rid, config)).rows.append(f"{exp.id} / {row.display}")
    return Plan(list(runs.values()), unsupported)


def run_inline(runs: list[PlannedRun], profile: Profile, results_root: Path, *, data_root: Path | None = None,
               device: str | None = None, progress: bool = True, echo: Callable[[str], None] = print) -> None:
    """Train the runs here, one after another, keeping job.json up to date (launcher "inline").

    The caller has already marked them ``pending`` under the launch lock.
    """
    for i, planned in enumerate(runs, 1):
        directory = run_dir(results_root, profile.name, planned.run_id)
        echo(f"[{i}/{len(runs)}] run {planned.run_id}: {', '.join(planned.rows)}")
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
        echo(f"    AP {100 * m['AP']:.1f}  AP50 {100 * m['AP50']:.1f}  ({result['ms_per_img']:.1f} ms/img)")
