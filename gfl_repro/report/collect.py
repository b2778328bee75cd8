"""collect: result files -> one table per paper artifact, beside the paper's numbers (pure:
reads files only).

Every row of a table spec becomes a :class:`TableRow`: the paper's numbers and, for a trained
row, the reproduced value of every metric for each seed (0 .. seeds - 1) that is done, with
the row's state (``done``, ``partial`` when some seeds are missing, ``not run``,
``not implemented`` when the engine cannot build the row yet, ``native only``, ``unreadable``,
or ``reference`` for the paper's other methods, which are never trained). Runs that are missing
or corrupt are never an error. :func:`claims_of` checks the spec's claims over the seeds.

The machine-readable form (:meth:`CollectedTable.frame`, also the CSV) is long: one line per
table row × metric, columns ``section, group, row, <info columns>, metric, paper, paper_note,
ours_mean, ours_std, ours_values, seeds_done, seeds_asked, delta, within_tolerance, state,
device, evaluated_on`` (``delta`` = ours − paper, never for FPS; ``within_tolerance`` for AP at
a profile that is not toy scale). The Markdown and LaTeX renderings (and :func:`~gfl_repro.report.tables.render`)
are in :mod:`gfl_repro.report.tables`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..engines import check_runnable
from ..engines.mmdet.config import shown_state
from ..specs.profiles import Profile
from ..specs.run_config import run_id as config_run_id
from ..specs.spec import Experiment, Row
from ..store import CORRUPT, DONE, read_run
from .claims import Verdict, evaluate_claims, within_tolerance

REFERENCE, PARTIAL, NOT_RUN, NOT_IMPLEMENTED, NATIVE_ONLY, UNREADABLE = (
    "reference", "partial", "not run", "not implemented", "native only", "unreadable")
TEST_DEV_SERVER = "val2017 (test-dev via the server)"


@dataclass(frozen=True)
class TableRow:
    row: Row
    state: str
    seeds_asked: int = 0
    run_ids: tuple[str, ...] = ()  # one per seed asked
    values: dict[str, list[float]] = field(default_factory=dict)  # metric -> one value per done seed
    devices: tuple[str, ...] = ()  # where the done seeds were timed
    evaluated_on: tuple[str, ...] = ()  # the split the done seeds were evaluated on
    reason: str = ""  # why the engine cannot build it

    @property
    def seeds_done(self) -> int:
        return max((len(v) for v in self.values.values()), default=0) if self.state in (DONE, PARTIAL) else 0

    def mean(self, metric: str) -> float | None:
        values = self.values.get(metric) or []
        return statistics.fmean(values) if values else None

    def std(self, metric: str) -> float | None:
        values = self.values.get(metric) or []
        return statistics.stdev(values) if len(values) >= 2 else None


@dataclass(frozen=True)
class CollectedTable:
    experiment: Experiment
    profile: Profile
    rows: tuple[TableRow, ...]
    problems: tuple[str, ...]  # one line per corrupt or unreadable run
    engine: str = "native"  # which implementation trained the reproduced runs
    seeds: int = 1  # seeds asked per row

    @property
    def devices(self) -> list[str]:
        """Devices the reproduced FPS were timed on, in order of appearance."""
        return list(dict.fromkeys(d for r in self.rows for d in r.devices))

    @property
    def evaluated_on(self) -> str:
        """The split our numbers come from, as tables label it."""
        splits = list(dict.fromkeys(s for r in self.rows for s in r.evaluated_on))
        if not splits:
            splits = [default_evaluated_on(self.profile)]
        if self.experiment.split == "test-dev" and splits == ["val2017"]:
            return TEST_DEV_SERVER
        return ", ".join(splits)

    @property
    def caption(self) -> str:
        exp = self.experiment
        scale = ("TOY SCALE: synthetic data and tiny models; ours are not comparable with the paper's COCO numbers"
                 if self.profile.toy_scale else f"paper on COCO {exp.split}, ours on {self.evaluated_on}")
        how = "".join(f", {tag}" for tag in self.profile.arithmetic_tags)
        engine = "" if self.engine == "native" else f", {self.engine} engine"
        return f"{exp.paper_ref}: {exp.title}. Paper vs ours ({self.profile.name} profile{how}{engine}; {scale})."

    @property
    def runs_done(self) -> int:
        return sum(r.seeds_done for r in self.rows)

    @property
    def runs_asked(self) -> int:
        return sum(r.seeds_asked for r in self.rows if r.state != REFERENCE)

    def frame(self) -> pd.DataFrame:
        """The long machine-readable table (see the module docstring)."""
        exp = self.experiment
        records = []
        for r in self.rows:
            for metric in exp.metrics:
                paper = r.row.paper.get(metric)
                mean, std = r.mean(metric), r.std(metric)
                accuracy = metric != "FPS"
                records.append({
                    "section": r.row.section or "", "group": r.row.group or "", "row": r.row.label,
                    **{c: r.row.info.get(c, "") for c in exp.info_columns},
                    "metric": metric,
                    "paper": paper,
                    "paper_note": r.row.notes.get(metric, "") or ("n/a" if metric in r.row.paper and paper is None else ""),
                    "ours_mean": mean, "ours_std": std,
                    "ours_values": ";".join(f"{v:.2f}" for v in r.values.get(metric, [])),
                    "seeds_done": r.seeds_done if r.state != REFERENCE else None,
                    "seeds_asked": r.seeds_asked if r.state != REFERENCE else None,
                    "delta": mean - paper if accuracy and mean is not None and paper is not None else None,
                    "within_tolerance": (within_tolerance(r.values.get(metric, []), paper)
                                         if metric == "AP" and not self.profile.toy_scale else None),
                    "state": r.state,
                    "device": "; ".join(r.devices) if metric == "FPS" else "",
                    "evaluated_on": "; ".join(r.evaluated_on),
                })
        return pd.DataFrame.from_records(records)


def default_evaluated_on(profile: Profile) -> str:
    """What a result without ``evaluated_on`` (written before it existed) was evaluated on."""
    return "synthetic val" if profile.toy_scale else "val2017"


def collect_table(experiment: Experiment, profile: Profile, results_root: Path, engine: str = "native",
                  seeds: int = 1) -> CollectedTable:
    """Read the result files of every row × seed of one table experiment."""
    if experiment.kind != "table":
        raise ValueError(f"{experiment.id} is a figure; use `gfl-repro plot {experiment.id}`")
    rows, problems = [], []
    for row in experiment.rows:
        if row.reference:
            rows.append(TableRow(row, REFERENCE))
            continue
        rows.append(_collect_row(experiment, row, profile, results_root, engine, seeds, problems))
    return CollectedTable(experiment, profile, tuple(rows), tuple(problems), engine, seeds)


def _collect_row(experiment: Experiment, row: Row, profile: Profile, results_root: Path, engine: str, seeds: int,
                 problems: list[str]) -> TableRow:
    configs = [experiment.resolve(row, profile, engine, seed) for seed in range(seeds)]
    run_ids = tuple(config_run_id(c) for c in configs)
    values: dict[str, list[float]] = {m: [] for m in experiment.metrics}
    devices, splits, corrupt = [], [], False
    for config, rid in zip(configs, run_ids):
        record = read_run(results_root, profile.name, rid)
        if record.state == CORRUPT:
            corrupt = True
            problems.append(f"{experiment.id} / {row.display} seed {config.seed} ({rid}): {record.problem}")
        if record.state != DONE:
            continue
        for metric in experiment.metrics:
            value = record.metric(metric)
            if value is not None:
                values[metric].append(value)
        devices.append(str(record.result.get("device") or "unknown device"))
        splits.append(str(record.result.get("evaluated_on") or default_evaluated_on(profile)))
    done = len(splits)
    reason = ""
    try:
        check_runnable(configs[0])
    except ValueError as err:
        reason = str(err)
    if done:
        state = DONE if done == seeds else PARTIAL
    elif corrupt:
        state = UNREADABLE
    elif reason:
        state = NATIVE_ONLY if shown_state(configs[0], "missing") != "missing" else NOT_IMPLEMENTED
    else:
        state = NOT_RUN
    return TableRow(row, state, seeds, run_ids, {m: v for m, v in values.items() if v} if done else {},
                    tuple(dict.fromkeys(devices)), tuple(dict.fromkeys(splits)), reason)


def claims_of(table: CollectedTable) -> list[Verdict]:
    """The spec's claims judged over the seeds done (see :mod:`gfl_repro.report.claims`)."""
    samples: dict[str, dict[str, list[float]]] = {}
    references: dict[str, dict[str, float]] = {}
    for r in table.rows:
        for metric in table.experiment.metrics:
            if r.state == REFERENCE:
                if r.row.paper.get(metric) is not None:
                    references.setdefault(metric, {})[r.row.display] = r.row.paper[metric]
            else:
                samples.setdefault(metric, {})[r.row.display] = list(r.values.get(metric, []))
    return evaluate_claims(table.experiment.claims, samples, references, table.profile.toy_scale)


def to_csv(table: CollectedTable) -> str:
    flat = table.frame()
    flat.insert(0, "experiment", table.experiment.id)
    flat.insert(1, "profile", table.profile.name)
    flat.insert(2, "toy_scale", table.profile.toy_scale)
    flat.insert(3, "engine", table.engine)
    return flat.to_csv(index=False, float_format="%.2f")
