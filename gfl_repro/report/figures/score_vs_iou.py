"""Fig. 2(b): classification score against predicted IoU for sampled validation instances of
the IoU-branch model and of the joint (QFL) model, with the region the paper circles: background
instances (negatives of the assignment, overlapping every ground truth little) whose predicted
IoU is high — they may outrank true positives in NMS."""

from __future__ import annotations

import pandas as pd
from matplotlib.patches import Rectangle

from ...analysis.score_vs_iou import correlation
from ...analysis.tables import Table
from .canvas import Context, Drawing, new_figure

HIGH_PREDICTED_IOU = 0.5  # the circled region: background with predicted IoU above this
LOW_TRUE_IOU = 0.3  # ... whose box overlaps every ground truth less than this
COLOURS = ("tab:blue", "tab:green", "tab:orange", "tab:purple")


def draw(tables: dict[str, Table], ctx: Context) -> Drawing:
    fig = new_figure(6.4, 5.6)
    ax = fig.add_subplot()
    ax.add_patch(Rectangle((HIGH_PREDICTED_IOU, 0), 1 - HIGH_PREDICTED_IOU, 1, facecolor="red", alpha=0.06,
                           edgecolor="red", linestyle="--", linewidth=1.2, zorder=0))
    frames, notes = [], []
    for (label, table), colour in zip(tables.items(), COLOURS):
        frame = table.frame
        r = correlation(frame)
        background = frame["is_background"].astype(bool)
        region = background & (frame["pred_iou"] > HIGH_PREDICTED_IOU) & (frame["true_iou"] < LOW_TRUE_IOU)
        ax.scatter(frame["pred_iou"], frame["cls_score"], s=6, alpha=0.45, color=colour, linewidths=0,
                   label=f"{label} (r = {r:.2f}, n = {len(frame)})")
        ax.scatter(frame.loc[region, "pred_iou"], frame.loc[region, "cls_score"], s=9, facecolors="none",
                   edgecolors="red", linewidths=0.4)
        share = region.sum() / max(background.sum(), 1)
        notes.append(f"{label}: Pearson r(score, predicted IoU) = {r:.3f} over {len(frame)} sampled instances; "
                     f"background with predicted IoU > {HIGH_PREDICTED_IOU} and true IoU < {LOW_TRUE_IOU}: "
                     f"{int(region.sum())} ({share:.0%} of the background sampled)")
        frames.append(frame.assign(model=label)[["model", "pred_iou", "cls_score", "true_iou", "is_background"]])
    ax.text(0.985, 0.985, f"red outline: background (negative, true IoU < {LOW_TRUE_IOU})\n"
            f"with predicted IoU > {HIGH_PREDICTED_IOU}", color="red",
            ha="right", va="top", fontsize=8, transform=ax.transAxes)
    ax.plot([0, 1], [0, 1], color="0.6", linewidth=0.8, linestyle=":")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted IoU score", ylabel="predicted classification score",
           title=f"{ctx.experiment.paper_ref}: score vs predicted IoU, sampled val instances")
    ax.legend(loc="upper left", fontsize=8, markerscale=3)
    return Drawing(fig, pd.concat(frames, ignore_index=True), notes)
