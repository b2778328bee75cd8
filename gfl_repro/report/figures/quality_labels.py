"""Fig. 9: histograms of the IoU labels and the centerness labels of all positive training
samples, with the shares the paper reads off them (centerness below 0.4, IoU above 0.4)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...analysis.quality_labels import HIGH_IOU, LOW_CENTERNESS, shares
from ...analysis.tables import Table
from .canvas import Context, Drawing, new_figure

EDGES = np.linspace(0.0, 1.0, 11)
LABELS = (("iou", "IoU labels", "tab:green"), ("centerness", "centerness labels", "tab:orange"))


def draw(tables: dict[str, Table], ctx: Context) -> Drawing:
    (label, table), = tables.items()
    frame = table.frame
    fig = new_figure(10, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    found = shares(frame)
    rows = []
    for ax, (column, title, colour) in zip(axes, LABELS):
        counts, _ = np.histogram(frame[column].clip(0, 1), bins=EDGES)
        share = counts / max(len(frame), 1)
        ax.bar(EDGES[:-1], 100 * share, width=np.diff(EDGES), align="edge", color=colour, edgecolor="white")
        ax.axvline(0.4, color="0.3", linestyle="--", linewidth=0.8)
        ax.set(xlim=(0, 1), xlabel=title, title=title)
        rows += [{"label": column, "bin_low": lo, "bin_high": hi, "count": int(c), "share": float(s)}
                 for lo, hi, c, s in zip(EDGES[:-1], EDGES[1:], counts, share)]
    axes[0].set_ylabel(f"share of the {len(frame)} positive training samples (%)")
    axes[0].text(0.03, 0.95, f"IoU > {HIGH_IOU}: {found['iou_above_0.4']:.1%}", transform=axes[0].transAxes,
                 va="top", fontsize=9)
    axes[1].text(0.97, 0.95, f"centerness < {LOW_CENTERNESS}: {found['centerness_below_0.4']:.1%}",
                 transform=axes[1].transAxes, va="top", ha="right", fontsize=9)
    fig.suptitle(f"{ctx.experiment.paper_ref}: label distributions over all positive training samples ({label})")
    note = (f"{label}: {len(frame)} positives; IoU labels > {HIGH_IOU}: {found['iou_above_0.4']:.1%}; "
            f"centerness labels < {LOW_CENTERNESS}: {found['centerness_below_0.4']:.1%}")
    return Drawing(fig, pd.DataFrame(rows), [note])
