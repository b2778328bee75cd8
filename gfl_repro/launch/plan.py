"""Which runs an invocation of `run` needs.

Every row × seed (0 .. seeds - 1) is one run; runs are deduplicated by run_id across the
named experiments (a run shared by several tables trains once per seed). Which of them to
start now (not done, pending or running) is decided under the launch lock by
:func:`gfl_repro.launch.run.select_runs`.
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

    @property
    def name(self) -> str:
        """Its rows and seed, as `run` prints them."""
        return f"{', '.join(self.rows)} (seed {self.config.seed})"


@dataclass
class Plan:
    runs: list[PlannedRun]  # distinct runs the chosen engine can build
    unsupported: list[str]  # one line per row it cannot build (yet)
    engine: str = "native"


def plan_runs(experiments: list[Experiment], profile: Profile, engine: str = "native",
              seeds: int | dict[str, int] = 1) -> Plan:
    """The distinct runs of the experiments' rows × seeds for ``engine``, and the rows it cannot build.

    ``seeds`` is one number for every experiment, or a number per experiment id."""
    runs: dict[str, PlannedRun] = {}
    unsupported: dict[str, None] = {}
    for exp in experiments:
        for row, config, rid in exp.runs(profile, engine, seeds if isinstance(seeds, int) else seeds[exp.id]):
            try:
                check_runnable(config)
            except ValueError as err:
                unsupported[f"{exp.id} / {row.display}: {err}"] = None
                continue
            runs.setdefault(rid, PlannedRun(rid, config)).rows.append(f"{exp.id} / {row.display}")
    return Plan(list(runs.values()), list(unsupported), engine)
