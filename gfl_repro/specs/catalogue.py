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


def default_figures_dir() -> Path:
    """``$GFL_REPRO_FIGURES`` if set, else ``figures/`` of the project checkout (`gfl-repro plot`
    writes ``figures/<profile>/<experiment>_<artifact>.png``)."""
    return Path(os.environ.get("GFL_REPRO_FIGURES", PROJECT_ROOT / "figures"))


class UnknownName(LookupError):
    """A name that is not among the valid choices; the message suggests the closest one."""

    def __init__(self, what: str, name: str, choices: list[str]):
        close = difflib.get_close_matches(name, choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(f"unknown {what} {name!r}{hint}; choose from: {', '.join(choices)}")


def experiment_names(directory: Path | None = None) -> list[str]:
    directory = directory or default_experiments_dir()
    return sorted((p.stem for p in directory.glob("*.toml")), key=_paper_order)


def _spec_dir(directory: Path | None) -> Path:
    directory = Path(directory or default_experiments_dir())
    if not directory.is_dir():
        problem = "is not a directory" if directory.exists() else "does not exist"
        raise SpecError(f"experiments directory {directory} {problem}")
    return directory


def _check_uses(experiments: dict[str, Experiment], available: list[str]) -> None:
    for exp in experiments.values():
        for used in exp.uses:
            if used not in available:
                raise SpecError(f"{exp.path.name}, [experiment], field 'uses': no experiment {used!r}")


def load_catalogue(directory: Path | None = None) -> dict[str, Experiment]:
    """Every experiment of the directory, in paper order; checks cross-references."""
    directory = _spec_dir(directory)
    names = experiment_names(directory)
    experiments = {name: load_experiment(directory / f"{name}.toml") for name in names}
    _check_uses(experiments, names)
    return experiments


def get_experiment(name: str, directory: Path | None = None) -> Experiment:
    return select([name], directory)[0]


def select(names: tuple[str, ...] | list[str], directory: Path | None = None) -> list[Experiment]:
    """The named experiments (all of them when ``names`` is empty), in paper order.

    Only the named spec files are read, so a broken spec elsewhere in the directory stops only
    the commands that need it (each says which file, in one line)."""
    directory = _spec_dir(directory)
    available = experiment_names(directory)
    for name in names:
        if name not in available:
            raise UnknownName("experiment", name, available)
    if not names:
        return list(load_catalogue(directory).values())
    chosen = {name: load_experiment(directory / f"{name}.toml") for name in available if name in names}
    _check_uses(chosen, available)
    return list(chosen.values())


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


class NoMatchingRow(LookupError):
    """A ``--row`` pattern that names no row; the message lists the closest row names."""


def select_rows(experiments: list[Experiment], patterns: tuple[str, ...] | list[str]) -> list[Experiment]:
    """The experiments reduced to the rows whose display name ("group / label") contains one
    of ``patterns`` (case-insensitive); experiments left without rows are dropped. No
    patterns: the experiments as they are. Raises :class:`NoMatchingRow` for a pattern that
    matches no row of ``experiments``."""
    if not patterns:
        return list(experiments)
    names = list(dict.fromkeys(r.display for exp in experiments for r in exp.rows))
    for pattern in patterns:
        if not any(pattern.lower() in name.lower() for name in names):
            lower = {name.lower(): name for name in names}
            close = [lower[c] for c in difflib.get_close_matches(pattern.lower(), list(lower), n=3, cutoff=0.3)]
            hint = f"; close: {', '.join(repr(c) for c in close)}" if close else ""
            raise NoMatchingRow(f"no row matches --row {pattern!r}{hint} (see `gfl-repro show EXPERIMENT`)")
    chosen = []
    for exp in experiments:
        keep = {r.display for r in exp.rows if any(p.lower() in r.display.lower() for p in patterns)}
        if keep:
            chosen.append(exp.only_rows(keep))
    return chosen
