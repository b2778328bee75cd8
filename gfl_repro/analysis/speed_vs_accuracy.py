"""Fig. 7: speed (ms per image) against AP — the paper's points for every method of Table 4 and
this reproduction's Table 4 runs, read from their result files.

Paper points: ``ms = 1000 / FPS`` of the row as printed (a single RTX 2080Ti at batch 1, or
the speed the paper quotes from SAPD); a row whose FPS the paper prints as
"n/a" has no speed and cannot be placed (``placed`` is false, ``note`` says why). Our points:
the run's AP and its measured ``ms_per_img``, labelled with the device it was timed on.

Table columns: ``source`` ("paper" / "ours"), ``method``, ``backbone``, ``ms``, ``AP``,
``fps``, ``device``, ``run_id``, ``placed``, ``note`` (where a paper FPS comes from another
paper, or why a point is not placed).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..specs.profiles import Profile
from ..specs.spec import Experiment
from ..store import DONE, read_run
from .tables import Table

COLUMNS = ("source", "method", "backbone", "ms", "AP", "fps", "device", "run_id", "placed", "note")


def paper_points(table: Experiment) -> list[dict]:
    points = []
    for row in table.rows:
        fps, ap = row.paper.get("FPS"), row.paper.get("AP")
        placed = fps is not None and ap is not None
        points.append({
            "source": "paper", "method": row.label, "backbone": row.info.get("Backbone", ""),
            "ms": 1000.0 / fps if placed else math.nan, "AP": ap if ap is not None else math.nan,
            "fps": fps if fps is not None else math.nan, "device": "", "run_id": "", "placed": placed,
            "note": row.notes.get("FPS", "") if placed else "FPS n/a in the paper: not placed",
        })
    return points


def our_points(table: Experiment, profile: Profile, results_root: Path) -> tuple[list[dict], list[str]]:
    """Points of the table's runs that are done, and the row names of those that are not."""
    points, missing = [], []
    for row, config, rid in table.runs(profile):
        record = read_run(results_root, profile.name, rid)
        ms = record.result.get("ms_per_img") if record.state == DONE else None
        if record.state != DONE or not isinstance(ms, (int, float)) or record.metric("AP") is None:
            missing.append(f"{row.label} {row.info.get('Backbone', '')}".strip())
            continue
        fps = record.result.get("fps")
        points.append({
            "source": "ours", "method": row.label, "backbone": row.info.get("Backbone", ""), "ms": float(ms),
            "AP": record.metric("AP"), "fps": float(fps) if isinstance(fps, (int, float)) else math.nan,
            "device": str(record.result.get("device") or "unknown device"), "run_id": rid, "placed": True,
            "note": "",
        })
    return points, missing


def compute(table: Experiment, profile: Profile, results_root: Path) -> tuple[Table, list[str]]:
    """The figure's points, and the rows of ``table`` whose runs are not done."""
    ours, missing = our_points(table, profile, results_root)
    frame = pd.DataFrame(paper_points(table) + ours, columns=list(COLUMNS))
    return Table(frame), missing


__all__ = ["COLUMNS", "compute", "our_points", "paper_points"]
