"""Fig. 3: predicted per-side distributions (the softmax over the bins) of a GFL model beside
their boxes on validation images: ground truth white, prediction green; the instances with the
flattest and the sharpest distributions."""

from __future__ import annotations

from matplotlib.patches import Rectangle

from ...analysis.predicted_distributions import SIDES
from ...analysis.tables import Table
from .canvas import Context, Drawing, new_figure


def _box(ax, row, prefix: str, colour: str) -> None:
    x1, y1 = row[f"{prefix}_x1"] - row["crop_x0"], row[f"{prefix}_y1"] - row["crop_y0"]
    w, h = row[f"{prefix}_x2"] - row[f"{prefix}_x1"], row[f"{prefix}_y2"] - row[f"{prefix}_y1"]
    ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), w, h, fill=False, edgecolor=colour, linewidth=1.6))


def draw(tables: dict[str, Table], ctx: Context) -> Drawing:
    (label, table), = tables.items()
    frame = table.frame
    instances = list(dict.fromkeys(frame["instance"]))
    fig = new_figure(13, 2.3 * max(len(instances), 1))
    grid = fig.add_gridspec(max(len(instances), 1), 1 + len(SIDES), width_ratios=[1.3] + [1] * len(SIDES))
    for r, number in enumerate(instances):
        rows = frame[frame["instance"] == number]
        first = rows.iloc[0]
        image = fig.add_subplot(grid[r, 0])
        image.imshow(table.arrays[f"crop_{number}"], interpolation="nearest")
        image.set_facecolor("black")
        _box(image, first, "gt", "white")
        _box(image, first, "pred", "lime")
        image.set_xticks([]), image.set_yticks([])
        image.set_title(f"{first['kind']}: image {first['image_id']}, IoU {first['iou']:.2f}", fontsize=8)
        for s, side in enumerate(SIDES):
            ax = fig.add_subplot(grid[r, 1 + s])
            p = rows[rows["side"] == side]
            ax.bar(p["distance"], p["probability"], width=0.8 * float(p["distance"].diff().min() or 1),
                   color="tab:green")
            ax.axvline(p["gt_distance"].iloc[0], color="black", linestyle="--", linewidth=1)
            ax.axvline(p["pred_distance"].iloc[0], color="lime", linewidth=1.2)
            ax.set_title(f"{side}: entropy {p['entropy'].iloc[0]:.2f}", fontsize=8)
            ax.tick_params(labelsize=7)
            if r == len(instances) - 1:
                ax.set_xlabel("distance (stride units)", fontsize=8)
    fig.suptitle(f"{ctx.experiment.paper_ref}: predicted distributions of the four sides ({label}); "
                 "GT white / dashed, prediction green (its integral, Eq. 5)", fontsize=10)
    return Drawing(fig, frame)
