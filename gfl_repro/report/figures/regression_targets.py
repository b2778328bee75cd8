"""Fig. 5(c): histogram of ATSS's regression targets (distances from a positive anchor's centre
to its ground truth's four sides, in stride units) over the training set, with the largest
distance the General distribution can represent (y_n = n)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...analysis.tables import Table
from .canvas import Context, Drawing, new_figure


def draw(tables: dict[str, Table], ctx: Context) -> Drawing:
    (label, table), = tables.items()
    per_side = table.frame
    pooled = per_side.groupby(["bin_low", "bin_high"], sort=True, as_index=False)["count"].sum()
    total = max(int(pooled["count"].sum()), 1)
    pooled["share"] = pooled["count"] / total
    reg_max = ctx.experiment.resolve(ctx.experiment.row(label), ctx.profile).reg_max
    within = pooled.loc[pooled["bin_high"] <= reg_max, "count"].sum() / total
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    finite = np.isfinite(pooled["bin_high"])
    ax.bar(pooled["bin_low"], 100 * pooled["share"], width=1.0, align="edge", color="tab:blue", edgecolor="white")
    ax.axvline(reg_max, color="red", linestyle="--", linewidth=1)
    ax.text(reg_max - 0.3, ax.get_ylim()[1] * 0.97, f"y_n = {reg_max:g}:\n{within:.1%} of the targets\nbelow",
            color="red", ha="right", va="top", fontsize=8)
    overflow = pooled[~finite]
    if len(overflow) and overflow["count"].iloc[0] > 0:
        ax.text(float(overflow["bin_low"].iloc[0]) + 0.5, 100 * float(overflow["share"].iloc[0]), "≥",
                ha="center", va="bottom", fontsize=8)
    used = pooled.loc[pooled["count"] > 0, "bin_low"]
    ax.set_xlim(0, max(reg_max + 2, float(used.max()) + 1 if len(used) else 0))
    ax.set(xlabel="regression target (distance to a GT side, stride units)",
           ylabel=f"share of the {total} targets (%)",
           title="Figure 5(c): ATSS regression targets, all positives of the training set")
    note = f"{total // 4} positive anchors, {total} targets; {within:.1%} within y_n = {reg_max:g}"
    return Drawing(fig, pd.DataFrame(pooled), [note])
