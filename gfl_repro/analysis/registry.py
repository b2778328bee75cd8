"""The analyses the figure specs name, one entry per name of
:data:`gfl_repro.specs.spec.ANALYSES` (the list the spec validator checks against), and the two
things done with them: compute what needs a trained model once, after training
(:func:`compute_analyses`, called by `gfl-repro run`), and hand a figure the tables it draws
(:func:`artifact_tables`, called by `gfl-repro plot`).

Where an analysis's data comes from (``source``):

=============  ===========================================================================
``run``        a trained run of each row the artifact names: computed once from its last
               checkpoint and stored in the run directory (``analysis/<name>.csv``)
``dataset``    the training set's annotations and the assigner, no model: computed on first
               use and cached under ``results/<profile>/analysis/``
``results``    the result files of the runs of the experiment the figure ``uses``
``formula``    the paper's equations alone
=============  ===========================================================================
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..engines.environment import locate_data
from ..specs.profiles import DEFAULT_PROFILE, Profile
from ..specs.run_config import run_id
from ..specs.spec import Artifact, Experiment
from ..store import DONE, read_run, run_dir
from .distribution_shapes import compute as distribution_shapes
from .predicted_distributions import compute as predicted_distributions
from .qfl_curves import compute as qfl_curves
from .quality_labels import compute as quality_labels
from .regression_targets import compute as regression_targets
from .score_vs_iou import compute as score_vs_iou
from .speed_vs_accuracy import compute as speed_vs_accuracy
from .runs import LoadedRun, load_run
from .tables import Table, load_table, profile_analysis_stem, run_analysis_stem, save_table

RUN, DATASET, RESULTS, FORMULA = "run", "dataset", "results", "formula"


@dataclass(frozen=True)
class Analysis:
    name: str
    source: str  # RUN, DATASET, RESULTS or FORMULA
    compute: Callable[..., object]
    summary: str


ANALYSES: dict[str, Analysis] = {a.name: a for a in (
    Analysis("score_vs_iou", RUN, score_vs_iou, "classification score vs predicted IoU of val instances"),
    Analysis("predicted_distributions", RUN, predicted_distributions,
             "per-side General distributions of val instances"),
    Analysis("qfl_curves", FORMULA, qfl_curves, "QFL (Eq. 2) against sigma at y = 0.5"),
    Analysis("distribution_shapes", FORMULA, distribution_shapes,
             "distributions with the same integral (Eq. 5)"),
    Analysis("regression_targets", DATASET, regression_targets,
             "histogram of ATSS regression targets over the training set"),
    Analysis("speed_vs_accuracy", RESULTS, speed_vs_accuracy, "speed (ms) vs AP of Table 4"),
    Analysis("quality_labels", RUN, quality_labels, "IoU and centerness labels of positive training samples"),
)}


class NotReady(RuntimeError):
    """A figure's data needs runs that are not done (one line, naming the `gfl-repro run` to do)."""


def run_command(experiment: Experiment, profile: Profile) -> str:
    flag = "" if profile.name == DEFAULT_PROFILE else f" --profile {profile.name}"
    return f"gfl-repro run {experiment.id}{flag}"


# ------------------------------------------------------------------------------ after training


def compute_analyses(experiment: Experiment, profile: Profile, results_root: Path, data_root: Path | None = None,
                     device: str | None = None) -> list[str]:
    """Compute and store the data of every artifact of ``experiment`` that needs a trained run
    (for the runs that are done and have none yet) or the training set; returns one line per
    thing done or waiting."""
    lines: list[str] = []
    loaded: dict[str, LoadedRun] = {}
    for artifact in experiment.artifacts:
        analysis = ANALYSES[artifact.analysis]
        if analysis.source == RUN:
            for label in artifact.rows:
                lines += _compute_for_row(experiment, label, analysis, profile, results_root, data_root, device, loaded)
        elif analysis.source == DATASET:
            stem = _dataset_stem(experiment, artifact, profile, results_root)
            if load_table(stem) is None:
                started = time.monotonic()
                _dataset_table(experiment, artifact, profile, results_root, data_root)
                lines.append(f"{experiment.id}: {analysis.name} -> {stem.with_suffix('.csv')} "
                             f"({time.monotonic() - started:.0f} s)")
    return lines


def _compute_for_row(experiment: Experiment, label: str, analysis: Analysis, profile: Profile, results_root: Path,
                     data_root: Path | None, device: str | None, loaded: dict[str, LoadedRun]) -> list[str]:
    config = experiment.resolve(experiment.row(label), profile)
    rid = run_id(config)
    directory = run_dir(results_root, profile.name, rid)
    stem = run_analysis_stem(directory, analysis.name)
    if load_table(stem) is not None:
        return []
    if read_run(results_root, profile.name, rid).state != DONE:
        return [f"{experiment.id} / {label}: {analysis.name} waits for run {rid} (not done)"]
    started = time.monotonic()
    if rid not in loaded:
        loaded[rid] = load_run(directory, data_root, device)
    path = save_table(stem, analysis.compute(loaded[rid]))
    return [f"{experiment.id} / {label}: {analysis.name} -> {path} ({time.monotonic() - started:.0f} s)"]


# ------------------------------------------------------------------------------ for plotting


def artifact_tables(experiment: Experiment, artifact: Artifact, profile: Profile, results_root: Path,
                    catalogue: dict[str, Experiment], data_root: Path | None = None) -> dict[str, Table]:
    """The tables an artifact draws, keyed by row label (by the used experiment's id for
    ``results``, "" for ``formula``). Reads stored data; computes only what needs no run.
    Raises :class:`NotReady` when runs or their analyses are missing."""
    analysis = ANALYSES[artifact.analysis]
    if analysis.source == FORMULA:
        return {"": analysis.compute()}
    if analysis.source == DATASET:
        return {artifact.rows[0]: _dataset_table(experiment, artifact, profile, results_root, data_root)}
    if analysis.source == RESULTS:
        return _results_tables(experiment, analysis, profile, results_root, catalogue)
    tables, waiting = {}, []
    for label in artifact.rows:
        rid = run_id(experiment.resolve(experiment.row(label), profile))
        table = load_table(run_analysis_stem(run_dir(results_root, profile.name, rid), analysis.name))
        if table is None:
            state = read_run(results_root, profile.name, rid).state
            waiting.append(f"{label!r} (run {rid} {'done, not analysed' if state == DONE else 'not done'})")
        else:
            tables[label] = table
    if waiting:
        raise NotReady(f"{experiment.id}: no {analysis.name} data for {', '.join(waiting)}; "
                       f"first: {run_command(experiment, profile)}")
    return tables


def _results_tables(experiment: Experiment, analysis: Analysis, profile: Profile, results_root: Path,
                    catalogue: dict[str, Experiment]) -> dict[str, Table]:
    tables = {}
    for used in experiment.uses:
        table, missing = analysis.compute(catalogue[used], profile, results_root)
        if missing:
            raise NotReady(f"{experiment.id}: {len(missing)} {used} run(s) not done ({', '.join(missing)}); "
                           f"first: {run_command(experiment, profile)}")
        tables[used] = table
    return tables


def _dataset_stem(experiment: Experiment, artifact: Artifact, profile: Profile, results_root: Path) -> Path:
    config = experiment.resolve(experiment.row(artifact.rows[0]), profile)
    return profile_analysis_stem(results_root, profile.name, artifact.analysis, run_id(config))


def _dataset_table(experiment: Experiment, artifact: Artifact, profile: Profile, results_root: Path,
                   data_root: Path | None) -> Table:
    """The cached table of a ``dataset`` analysis, computed (and cached) on first use."""
    stem = _dataset_stem(experiment, artifact, profile, results_root)
    table = load_table(stem)
    if table is None:
        config = experiment.resolve(experiment.row(artifact.rows[0]), profile)
        table = ANALYSES[artifact.analysis].compute(config, locate_data(config, data_root, progress=False))
        save_table(stem, table)
    return table


__all__ = ["ANALYSES", "Analysis", "DATASET", "FORMULA", "NotReady", "RESULTS", "RUN", "artifact_tables",
           "compute_analyses", "run_command"]
