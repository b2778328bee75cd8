"""`gfl-repro plot`: the paper's figures from the analyses' data.

One drawing per analysis name of the figure specs (:data:`DRAWINGS`, keyed like
:data:`gfl_repro.specs.spec.ANALYSES`). Each artifact of a figure spec becomes
``<out>/<experiment>_<artifact>.png``, ``.pdf`` and ``.csv`` (exactly the data drawn, with
named columns). Drawing reads files only (run analyses, result files), except the analytic
panels and the model-free assignment histogram, which it computes (and caches) itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ...analysis import artifact_tables
from ...analysis.tables import Table
from ...specs.catalogue import PROJECT_ROOT
from ...specs.profiles import Profile
from ...specs.spec import Experiment
from . import distribution_shapes, predicted_distributions, qfl_curves, quality_labels, regression_targets
from . import score_vs_iou, speed_vs_accuracy
from .canvas import Context, Drawing, save_drawing

DRAWINGS: dict[str, Callable[[dict[str, Table], Context], Drawing]] = {
    "score_vs_iou": score_vs_iou.draw,
    "predicted_distributions": predicted_distributions.draw,
    "qfl_curves": qfl_curves.draw,
    "distribution_shapes": distribution_shapes.draw,
    "regression_targets": regression_targets.draw,
    "speed_vs_accuracy": speed_vs_accuracy.draw,
    "quality_labels": quality_labels.draw,
}


@dataclass
class Plotted:
    """One artifact drawn: its files (PNG, PDF, CSV) and one-line findings."""

    experiment: str
    artifact: str
    files: list[Path]
    notes: list[str]


def default_figures_dir(profile: Profile) -> Path:
    """``figures/<profile><variant>/`` of the project checkout (``figures/smoke/``,
    ``figures/smoke-bf16/``, ...)."""
    return PROJECT_ROOT / "figures" / profile.tagged_name


def plot_experiment(experiment: Experiment, profile: Profile, results_root: Path, out_dir: Path,
                    catalogue: dict[str, Experiment], data_root: Path | None = None) -> list[Plotted]:
    """Draw every artifact of a figure spec into ``out_dir``. Raises
    :class:`gfl_repro.analysis.NotReady` (before writing anything) when its runs are not done."""
    tables = {a.name: artifact_tables(experiment, a, profile, results_root, catalogue, data_root)
              for a in experiment.artifacts}
    plotted = []
    for artifact in experiment.artifacts:
        drawing = DRAWINGS[artifact.analysis](tables[artifact.name], Context(experiment, artifact, profile))
        files = save_drawing(drawing, Path(out_dir) / f"{experiment.id}_{artifact.name}", profile)
        plotted.append(Plotted(experiment.id, artifact.name, files, drawing.notes))
    return plotted


__all__ = ["DRAWINGS", "Plotted", "default_figures_dir", "plot_experiment"]
