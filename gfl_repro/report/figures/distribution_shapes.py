"""Fig. 5(b): distributions over the bins with the same integral (Eq. 5)."""

from __future__ import annotations

from ...analysis.distribution_shapes import TARGET
from ...analysis.tables import Table
from .canvas import Context, Drawing, new_figure


def draw(tables: dict[str, Table], ctx: Context) -> Drawing:
    frame = tables[""].frame
    shapes = list(dict.fromkeys(frame["distribution"]))
    fig = new_figure(4.0 * len(shapes), 3.4)
    axes = fig.subplots(1, len(shapes), sharey=True)
    for ax, name in zip(axes, shapes):
        p = frame[frame["distribution"] == name]
        ax.bar(p["y"], p["probability"], width=0.8, color="tab:blue")
        ax.axvline(TARGET, color="red", linestyle="--", linewidth=1)
        ax.set(title=f"{name}\nintegral = {p['integral'].iloc[0]:.3f}", xlabel="y_i (bins)")
    axes[0].set_ylabel("P(y_i)")
    fig.suptitle(f"Figure 5(b): different distributions, same integral y = {TARGET} (red)")
    return Drawing(fig, frame)
