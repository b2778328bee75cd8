"""The experiment catalogue: every spec under ``experiments/``, loaded and cross-checked."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from .spec import Experiment, SpecError, load_experiment

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def default_experiments_dir() -> Path:
    """``$GFL_REPRO_EXPERIMENTS`` if set, else ``experiments/`` of the project checkout."""
    return Path(os.environ.get("GFL_REPRO_EXPERIMENTS", PROJECT_ROOT / "experiments"))


def default_results_dir() -> Path:
    """``$GFL_REPRO_RESULTS`` if set, else ``results/`` of the project checkout."""
    return Path(os.environ.get("GFL_REPRO_RESULTS", PROJECT_ROOT / "results"))


class UnknownName(LookupError):
    """A name that is not among the valid choices; the message suggests the closest one."""

    def __init__(self, what: str, name: str, choices: list[str]):
        close = difflib.get_close_matches(name, choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(f"unknown {what} {name!r}{hint}; choose from: {', '.join(choices)}")


def experiment_names(directory: Path | None = None) -> list[str]:
    directory = directory or default_experiments_dir()
    return sorted((p.stem for p in directory.glob("*.toml")), key=_paper_order)


def load_catalogue(directory: Path | None = None) -> dict[str, Experiment]:
    """Every experiment of the directory, in paper order; checks cross-references."""
    directory = directory or default_experiments_dir()
    if not directory.is_dir():
        raise SpecError(f"experiments directory {directory} does not exist")
    experiments = {name: load_experiment(directory / f"{name}.toml") for name in experiment_names(directory)}
    for exp in experiments.values():
        for used in exp.uses:
            if used not in experiments:
                raise SpecError(f"{exp.path.name}, [experiment], field 'uses': no experiment {used!r}")
    return experiments


def get_experiment(name: str, directory: Path | None = None) -> Experiment:
    catalogue = load_catalogue(directory)
    if name not in catalogue:
        raise UnknownName("experiment", name, list(catalogue))
    return catalogue[name]


def select(names: tuple[str, ...] | list[str], directory: Path | None = None) -> list[Experiment]:
    """The named experiments (all of them when ``names`` is empty), in paper order."""
    catalogue = load_catalogue(directory)
    for name in names:
        if name not in catalogue:
            raise UnknownName("experiment", name, list(catalogue))
    return [exp for name, exp in catalogue.items() if not names or name in names]


def select_with_uses(names: tuple[str, ...] | list[str], directory: Path | None = None) -> list[Experiment]:
    """:func:`select`, plus the experiments those draw on (``uses``: Fig. 7 draws on Table 4's
    runs), in paper order: what `run` must train for them."""
    chosen = select(names, directory)
    wanted = {exp.id for exp in chosen} | {used for exp in chosen for used in exp.uses}
    return [exp for name, exp in load_catalogue(directory).items() if name in wanted]


def _paper_order(name: str) -> tuple[int, int, str]:
    """Tables before figures, then by number (fig10 after fig9)."""
    kind = 0 if name.startswith("table") else 1
    digits = "".join(ch for ch in name if ch.isdigit())
    return (kind, int(digits) if digits else 0, name)
