"""Fig. 9: histograms of the IoU labels and the centerness labels of all positive training
samples, with the shares the paper reads off them (centerness below 0.4, IoU above 0.4)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...analysis.quality_labels import HIGH_IOU, LOW_CENTERNESS, positives, shares
from ...analysis.tables import Table
from .canvas import Context, Drawing, new_figure

BIN = 0.1  # the drawn bins (the stored histogram is 100 times finer)
LABELS = (("iou", "IoU labels", "tab:green"), ("centerness", "centerness labels", "tab:orange"))


def coarse(fine: pd.DataFrame, width: float = BIN) -> pd.DataFrame:
    """The stored 0.001-wide bins of one label summed into bins of ``width``."""
    index = np.minimum(np.floor(fine["bin_low"] / width + 1e-9), round(1 / width) - 1).astype(int)
    counts = fine.groupby(index)["count"].sum().reindex(range(round(1 / width)), fill_value=0)
    return pd.DataFrame({"bin_low": counts.index * width, "bin_high": (counts.index + 1) * width,
                         "count": counts.to_numpy()})


def draw(tables: dict[str, Table], ctx: Context) -> Drawing:
    (label, table), = tables.items()
    fine = table.frame
    total = positives(fine)
    found = shares(fine)
    fig = new_figure(10, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    frames = []
    for ax, (column, title, colour) in zip(axes, LABELS):
        bins = coarse(fine[fine["label"] == column]).assign(label=column)
        bins["share"] = bins["count"] / max(total, 1)
        ax.bar(bins["bin_low"], 100 * bins["share"], width=BIN, align="edge", color=colour, edgecolor="white")
        ax.axvline(0.4, color="0.3", linestyle="--", linewidth=0.8)
        ax.set(xlim=(0, 1), xlabel=title, title=title)
        frames.append(bins[["label", "bin_low", "bin_high", "count", "share"]])
    axes[0].set_ylabel(f"share of the {total} positive training samples (%)")
    axes[0].text(0.03, 0.95, f"IoU > {HIGH_IOU}: {found['iou_above_0.4']:.1%}", transform=axes[0].transAxes,
                 va="top", fontsize=9)
    axes[1].text(0.97, 0.95, f"centerness < {LOW_CENTERNESS}: {found['centerness_below_0.4']:.1%}",
                 transform=axes[1].transAxes, va="top", ha="right", fontsize=9)
    fig.suptitle(f"{ctx.experiment.paper_ref}: label distributions over all positive training samples ({label})")
    note = (f"{label}: {total} positives; IoU labels > {HIGH_IOU}: {found['iou_above_0.4']:.1%}; "
            f"centerness labels < {LOW_CENTERNESS}: {found['centerness_below_0.4']:.1%}")
    return Drawing(fig, pd.concat(frames, ignore_index=True), [note])
