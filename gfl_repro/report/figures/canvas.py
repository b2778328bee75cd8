"""What every figure shares: a matplotlib figure (no pyplot, no GUI backend), the profile's
stamp, and writing PNG, PDF and the CSV of exactly the data drawn, atomically."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ...specs.profiles import Profile
from ...specs.spec import Artifact, Experiment
from ...store import atomic_write, atomic_write_text

FORMATS = ("png", "pdf")
DPI = 150
STAMP_HEIGHT = 0.16  # inches kept free at the bottom for the stamp


@dataclass(frozen=True)
class Context:
    """What a drawing needs to know besides its tables."""

    experiment: Experiment
    artifact: Artifact
    profile: Profile


@dataclass
class Drawing:
    figure: Figure
    data: pd.DataFrame  # exactly what is drawn, written as the CSV beside the images
    notes: list[str] = field(default_factory=list)  # one-line findings `plot` prints


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def stamp(figure: Figure, profile: Profile) -> None:
    """Say on the figure which scale its data comes from."""
    text = (f"{profile.name} profile: toy scale, synthetic data" if profile.toy_scale
            else f"{profile.name} profile: {profile.description}")
    figure.get_layout_engine().set(rect=(0, STAMP_HEIGHT / figure.get_figheight(), 1,
                                         1 - STAMP_HEIGHT / figure.get_figheight()))
    figure.text(0.995, 0.004, text, ha="right", va="bottom", fontsize=7, color="0.35",
                style="italic" if profile.toy_scale else "normal")


def save_drawing(drawing: Drawing, stem: Path, profile: Profile) -> list[Path]:
    """Write ``<stem>.png``, ``<stem>.pdf`` and ``<stem>.csv``; returns their paths."""
    stamp(drawing.figure, profile)
    paths = []
    for fmt in FORMATS:
        buffer = io.BytesIO()
        drawing.figure.savefig(buffer, format=fmt, dpi=DPI)
        drawing.figure.set_layout_engine("none")  # the first format laid it out; keep those positions
        path = stem.with_name(f"{stem.name}.{fmt}")
        atomic_write(path, lambda handle, data=buffer.getvalue(): handle.write(data))
        paths.append(path)
    csv = stem.with_name(f"{stem.name}.csv")
    atomic_write_text(csv, drawing.data.to_csv(index=False))
    return paths + [csv]


__all__ = ["Context", "Drawing", "FORMATS", "new_figure", "save_drawing", "stamp"]
