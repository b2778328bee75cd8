"""Fig. 7: speed (ms per image) against AP: the paper's Table 4 points for every method and this
reproduction's Table 4 runs, each labelled with the device it was timed on. Rows whose FPS the
paper does not print cannot be placed; the figure lists them."""

from __future__ import annotations

import matplotlib
import pandas as pd

from ...analysis.tables import Table
from .canvas import Context, Drawing, new_figure

GFL = "GFL (ours)"
LOG_TICKS = (20, 50, 100, 200, 500, 1000, 2000)
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "h")


def draw(tables: dict[str, Table], ctx: Context) -> Drawing:
    frame = pd.concat([t.frame for t in tables.values()], ignore_index=True)
    paper = frame[(frame["source"] == "paper")]
    placed = paper[paper["placed"].astype(bool)]
    ours = frame[frame["source"] == "ours"]
    fig = new_figure(13, 5.6)
    left, right = fig.subplots(1, 2)
    colours = matplotlib.colormaps["tab20"].colors
    for i, (method, points) in enumerate(placed.groupby("method", sort=False)):
        gfl = method == GFL
        points = points.sort_values("ms")
        left.plot(points["ms"], points["AP"], marker="*" if gfl else MARKERS[i % len(MARKERS)],
                  markersize=12 if gfl else 5, linestyle="-" if gfl else ":", linewidth=1.6 if gfl else 0.8,
                  color="red" if gfl else colours[i % len(colours)], label=method, zorder=3 if gfl else 2)
        for _, p in points.iterrows() if gfl else ():
            left.annotate(p["backbone"], (p["ms"], p["AP"]), fontsize=7, xytext=(-4, 2), ha="right",
                          textcoords="offset points", color="red")
    left.set_xscale("log")
    ticks = [t for t in LOG_TICKS if placed["ms"].min() / 1.5 <= t <= placed["ms"].max() * 1.5]
    left.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])
    unplaced = paper[~paper["placed"].astype(bool)]
    if len(unplaced):
        names = "; ".join(f"{m} {b}" for m, b in zip(unplaced["method"], unplaced["backbone"]))
        left.text(0.99, 0.01, f"not placed (FPS n/a in the paper): {names}", transform=left.transAxes,
                  ha="right", va="bottom", fontsize=7)
    left.set(xlabel="inference time (ms per image, = 1000 / FPS; log scale)", ylabel="COCO test-dev AP",
             title="the paper (Table 4 as printed; RTX 2080Ti, batch 1)")
    left.legend(fontsize=6, ncol=2, loc="lower right", bbox_to_anchor=(1.0, 0.06))
    for device, points in ours.groupby("device", sort=False):
        points = points.sort_values("ms")
        right.plot(points["ms"], points["AP"], marker="*", markersize=11, linestyle="none", label=f"timed on {device}")
        for _, p in points.iterrows():
            right.annotate(p["backbone"], (p["ms"], p["AP"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if not ctx.profile.toy_scale:
        gfl = placed[placed["method"] == GFL].sort_values("ms")
        right.plot(gfl["ms"], gfl["AP"], marker="*", markerfacecolor="none", color="red", linestyle=":",
                   label="the paper's GFL")
    split = "val" if ctx.profile.toy_scale else "test-dev (scored on val2017 locally)"
    right.set(xlabel="inference time (ms per image, batch 1)", ylabel=f"AP ({split})",
              title=f"this reproduction: Table 4 GFL runs ({ctx.profile.name} profile)")
    right.legend(fontsize=8)
    fig.suptitle(f"{ctx.experiment.paper_ref}: speed vs accuracy")
    notes = [f"{p['method']} {p['backbone']}: {p['AP']:.1f} AP at {p['ms']:.1f} ms/img on {p['device']}"
             for _, p in ours.iterrows()]
    return Drawing(fig, frame, notes)
