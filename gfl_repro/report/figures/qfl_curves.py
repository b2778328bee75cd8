"""Fig. 5(a): QFL (Eq. 2) against σ under the quality label y = 0.5, one curve per β."""

from __future__ import annotations

from ...analysis.qfl_curves import LABEL
from ...analysis.tables import Table
from .canvas import Context, Drawing, new_figure


def draw(tables: dict[str, Table], ctx: Context) -> Drawing:
    frame = tables[""].frame
    fig = new_figure(5.6, 4.4)
    ax = fig.add_subplot()
    for beta, curve in frame.groupby("beta", sort=True):
        ax.plot(curve["sigma"], curve["loss"], label=f"β = {beta:g}")
    ax.axvline(LABEL, color="0.5", linestyle=":", linewidth=0.8)
    ax.set(xlim=(0, 1), ylim=(0, min(5.0, float(frame["loss"].max()))), xlabel="σ (predicted quality)",
           ylabel="QFL", title=f"Figure 5(a): QFL under quality label y = {LABEL}")
    ax.legend()
    return Drawing(fig, frame[["beta", "sigma", "loss"]])
