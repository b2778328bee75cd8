"""Which runs an invocation of `run` needs.

Runs are deduplicated by run_id across the named experiments (a run shared by several
tables trains once). Which of them to start now (not done, pending or running) is decided
under the launch lock by :func:`gfl_repro.launch.run.select_runs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engines import check_runnable
from ..specs.profiles import Profile
from ..specs.run_config import RunConfig
from ..specs.spec import Experiment


@dataclass
class PlannedRun:
    run_id: str
    config: RunConfig
    rows: list[str] = field(default_factory=list)  # "table3 / ATSS + QFL", every row it serves


@dataclass
class Plan:
    runs: list[PlannedRun]  # distinct runs the chosen engine can build
    unsupported: list[str]  # one line per row it cannot build (yet)
    engine: str = "native"


def plan_runs(experiments: list[Experiment], profile: Profile, engine: str = "native") -> Plan:
    """The distinct runs of the experiments' rows for ``engine``, and the rows it cannot build."""
    runs: dict[str, PlannedRun] = {}
    unsupported = []
    for exp in experiments:
        for row, config, rid in exp.runs(profile, engine):
            try:
                check_runnable(config)
            except ValueError as err:
                unsupported.append(f"{exp.id} / {row.display}: {err}")
                continue
            runs.setdefault(rid, PlannedRun(rid, config)).rows.append(f"{exp.id} / {row.display}")
    return Plan(list(runs.values()), unsupported, engine)
