"""`gfl-repro run FIG` (its analysis step) and `gfl-repro plot` end to end, on figure specs like
the real ones at a size that takes seconds: runs are randomly initialised detectors saved as
finished runs (checkpoint + result files), so nothing trains."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from gfl_repro.cli import cli
from gfl_repro.datasets.synthetic import CATEGORIES
from gfl_repro.engines.native.checkpoints import save_checkpoint
from gfl_repro.models.detector import build_detector
from gfl_repro.specs.catalogue import load_catalogue
from gfl_repro.specs.profiles import PROFILES
from gfl_repro.store import run_dir

from conftest import finish_run

TINY = "synth_train = 4, synth_val = 2, batch_size = 2"
SPECS = {
    "table4": f"""
[experiment]
id = "table4"
kind = "table"
paper_ref = "Table 4"
title = "tiny Table 4"
split = "test-dev"
info_columns = ["Backbone"]
metrics = ["FPS", "AP"]

[[row]]
label = "RetinaNet"
reference = true
info = {{ Backbone = "R-101" }}
paper = [13.6, 39.1]

[[row]]
label = "CentripetalNet"
reference = true
info = {{ Backbone = "HG-104" }}
paper = ["n/a", 45.8]

[[row]]
label = "GFL (ours)"
recipe = "gfl"
overrides = {{ {TINY} }}
info = {{ Backbone = "R-50" }}
paper = [19.4, 43.1]
""",
    "fig2": f"""
[experiment]
id = "fig2"
kind = "figure"
paper_ref = "Figure 2(b)"
title = "tiny Fig. 2"
split = "minival"
recipe = "atss"

[[row]]
label = "IoU-branch"
overrides = {{ quality = "iou", score_thr = 0.0, {TINY} }}

[[row]]
label = "joint w/ QFL"
overrides = {{ quality = "joint", cls_loss = "qfl", score_thr = 0.0, {TINY} }}

[[artifact]]
name = "score_scatter"
analysis = "score_vs_iou"
rows = ["IoU-branch", "joint w/ QFL"]
""",
    "fig3": f"""
[experiment]
id = "fig3"
kind = "figure"
paper_ref = "Figure 3"
title = "tiny Fig. 3"
split = "minival"
recipe = "gfl"

[[row]]
label = "GFL"
overrides = {{ {TINY} }}

[[artifact]]
name = "side_distributions"
analysis = "predicted_distributions"
rows = ["GFL"]
""",
    "fig5": f"""
[experiment]
id = "fig5"
kind = "figure"
paper_ref = "Figure 5(a)-(c)"
title = "tiny Fig. 5"
split = "minival"
recipe = "gfl"

[[row]]
label = "ATSS assignment"
train = false
overrides = {{ {TINY} }}

[[artifact]]
name = "qfl_curves"
analysis = "qfl_curves"

[[artifact]]
name = "distribution_shapes"
analysis = "distribution_shapes"

[[artifact]]
name = "regression_targets"
analysis = "regression_targets"
rows = ["ATSS assignment"]
""",
    "fig7": """
[experiment]
id = "fig7"
kind = "figure"
paper_ref = "Figure 7"
title = "tiny Fig. 7"
split = "test-dev"
uses = ["table4"]

[[artifact]]
name = "speed_accuracy"
analysis = "speed_vs_accuracy"
""",
    "fig9": f"""
[experiment]
id = "fig9"
kind = "figure"
paper_ref = "Figure 9"
title = "tiny Fig. 9"
split = "minival"
recipe = "gfl"

[[row]]
label = "GFL"
overrides = {{ {TINY} }}

[[artifact]]
name = "label_distributions"
analysis = "quality_labels"
rows = ["GFL"]
""",
}
ARTIFACTS = ("fig2_score_scatter", "fig3_side_distributions", "fig5_qfl_curves", "fig5_distribution_shapes",
             "fig5_regression_targets", "fig7_speed_accuracy", "fig9_label_distributions")


@pytest.fixture
def env(tmp_path, monkeypatch):
    specs = tmp_path / "exp"
    specs.mkdir()
    for name, text in SPECS.items():
        (specs / f"{name}.toml").write_text(text)
    monkeypatch.setenv("GFL_REPRO_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, ["--experiments-dir", str(specs), "--results-dir", str(tmp_path / "res"), *args])

    return invoke, tmp_path


def finish_with_checkpoint(results_root, experiment, row) -> None:
    """A finished run of ``row`` whose checkpoint is a randomly initialised detector (its boxes
    shaped like its anchors, so they overlap the ground truth)."""
    smoke = PROFILES["smoke"]
    rid = finish_run(results_root, smoke, experiment, row, fps=20.0)
    config = experiment.resolve(row, smoke)
    torch.manual_seed(0)
    model = build_detector(config, num_classes=len(CATEGORIES))
    if config.box == "general":
        with torch.no_grad():
            bias = model.head.reg_out.bias.view(4, model.head.box.bins)
            bias.zero_()
            bias[:, 4] = 4.0
    save_checkpoint(run_dir(results_root, smoke.name, rid), {"model": model.state_dict()})


@pytest.mark.slow
def test_run_computes_analyses_once_then_plot_draws_every_figure(env):
    invoke, tmp = env
    early = invoke("plot", "fig2", "--out", str(tmp / "figs"))
    assert early.exit_code == 1
    (line,) = early.output.strip().splitlines()
    assert line.startswith("gfl-repro: error: fig2: no score_vs_iou data for 'IoU-branch' (run ")
    assert line.endswith(" not done); first: gfl-repro run fig2")
    assert not (tmp / "figs").exists()

    catalogue = load_catalogue(tmp / "exp")
    for name in ("table4", "fig2", "fig3"):
        for row in catalogue[name].rows:
            if row.is_run:
                finish_with_checkpoint(tmp / "res", catalogue[name], row)

    first = invoke("run", "fig2", "fig3", "fig7", "fig9", "--quiet", "--device", "cpu")
    assert first.exit_code == 0, first.output
    assert "0 run(s) to run; skipped: done 4" in first.output
    for line in ("fig2 / IoU-branch: score_vs_iou", "fig2 / joint w/ QFL: score_vs_iou",
                 "fig3 / GFL: predicted_distributions", "fig9 / GFL: quality_labels"):
        assert f"analysis: {line} -> " in first.output
    hint = next(line for line in first.output.splitlines() if line.startswith("figures: gfl-repro "))
    assert hint.endswith(" plot fig2 fig3 fig7 fig9 --profile smoke") and "--results-dir" in hint  # the options used
    again = invoke("run", "fig2", "fig3", "fig7", "fig9", "--quiet")
    assert again.exit_code == 0 and "analysis:" not in again.output

    assessment = invoke("run", "fig5")  # no run to train: only the assignment histogram
    assert assessment.exit_code == 0, assessment.output
    assert "analysis: fig5: regression_targets -> " in assessment.output

    plotted = invoke("plot", "--out", str(tmp / "figs"))
    assert plotted.exit_code == 0, plotted.output
    for stem in ARTIFACTS:
        png, pdf, csv = (tmp / "figs" / f"{stem}.{ext}" for ext in ("png", "pdf", "csv"))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
        assert pdf.read_bytes()[:5] == b"%PDF-", stem
        assert len(pd.read_csv(csv)) > 0, stem
    assert list(pd.read_csv(tmp / "figs" / "fig5_qfl_curves.csv").columns) == ["beta", "sigma", "loss"]
    scatter = pd.read_csv(tmp / "figs" / "fig2_score_scatter.csv")
    assert list(scatter.columns) == ["model", "pred_iou", "cls_score", "true_iou", "is_background"]
    assert set(scatter["model"]) == {"IoU-branch", "joint w/ QFL"}
    speed = pd.read_csv(tmp / "figs" / "fig7_speed_accuracy.csv")
    assert speed.loc[speed["source"] == "ours", "ms"].tolist() == [pytest.approx(50.0)]
    assert speed.loc[speed["method"] == "CentripetalNet", "note"].item() == "FPS n/a in the paper: not placed"
    labels = pd.read_csv(tmp / "figs" / "fig9_label_distributions.csv")
    assert labels.groupby("label")["count"].agg(["size", "sum"]).to_dict() == {
        "size": {"centerness": 10, "iou": 10}, "sum": {"centerness": labels["count"].sum() // 2,
                                                       "iou": labels["count"].sum() // 2}}
    assert labels["count"].sum() > 0
    assert "IoU labels > 0.4:" in plotted.output and "Pearson r(score, predicted IoU)" in plotted.output


def test_plot_fig5_needs_no_run_and_tables_are_refused(env):
    invoke, tmp = env
    result = invoke("plot", "fig5", "--out", str(tmp / "figs"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp / "figs").iterdir()) == sorted(
        f"{stem}.{ext}" for stem in ARTIFACTS if stem.startswith("fig5") for ext in ("csv", "pdf", "png"))
    table = invoke("plot", "table4")
    assert table.exit_code == 2
    assert table.output.strip() == "gfl-repro: error: table4 is a table, not a figure; use `gfl-repro collect table4`"
    unknown = invoke("plot", "fig99")
    assert unknown.exit_code == 2 and "unknown experiment 'fig99'" in unknown.output
