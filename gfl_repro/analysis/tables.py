"""Where analysis data lives and how it is written: named-column tables (CSV), with arrays
beside them when a figure needs pixels (NPZ).

Data an analysis computes from a trained run lives in the run's directory,
``results/<profile>/runs/<run_id>/analysis/<analysis>.csv`` (+ ``.npz``); data computed
without a run (the assignment histogram of Fig. 5c) in
``results/<profile>/analysis/<analysis>_<config run id>.csv``. Every file is written
atomically (CSV first, NPZ before it when there is one), so a reader sees a whole table or none.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..store import atomic_write, atomic_write_text, profile_dir

ANALYSIS_DIR = "analysis"


@dataclass
class Table:
    """An analysis result: a table with named columns and, optionally, named arrays (images)."""

    frame: pd.DataFrame
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def run_analysis_stem(run_dir: Path, name: str) -> Path:
    """``<run_dir>/analysis/<name>`` (the files add ``.csv`` / ``.npz``)."""
    return Path(run_dir) / ANALYSIS_DIR / name


def profile_analysis_stem(results_root: Path, profile: str, name: str, key: str) -> Path:
    """``results/<profile>/analysis/<name>_<key>``: data of no run, keyed by the config it used."""
    return profile_dir(results_root, profile) / ANALYSIS_DIR / f"{name}_{key}"


def save_table(stem: Path, table: Table) -> Path:
    """Write ``<stem>.npz`` (when the table has arrays), then ``<stem>.csv``; returns the CSV path.
    The CSV is written last: its presence marks the analysis complete."""
    stem = Path(stem)
    if table.arrays:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **table.arrays)
        atomic_write(stem.with_suffix(".npz"), lambda handle: handle.write(buffer.getvalue()))
    csv = stem.with_suffix(".csv")
    atomic_write_text(csv, table.frame.to_csv(index=False))
    return csv


def load_table(stem: Path) -> Table | None:
    """The table saved at ``stem``; None when it was never written or cannot be read."""
    stem = Path(stem)
    csv = stem.with_suffix(".csv")
    if not csv.is_file():
        return None
    try:
        frame = pd.read_csv(csv)
        arrays = {}
        if stem.with_suffix(".npz").is_file():
            with np.load(stem.with_suffix(".npz"), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    return Table(frame, arrays)


__all__ = ["ANALYSIS_DIR", "Table", "load_table", "profile_analysis_stem", "run_analysis_stem", "save_table"]
