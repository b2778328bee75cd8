"""The figures' data, checked against the paper's equations, the head's own target code, a
direct pass of the assigner and the result files (not pixels). Tiny synthetic data and
randomly initialised models saved as checkpoints: seconds."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from gfl_repro.analysis import ANALYSES, distribution_shapes, qfl_curves, regression_targets, score_vs_iou
from gfl_repro.analysis import predicted_distributions, quality_labels, speed_vs_accuracy
from gfl_repro.analysis.runs import load_run
from gfl_repro.analysis.tables import Table, load_table, save_table
from gfl_repro.datasets.coco import build_loader
from gfl_repro.datasets.synthetic import CATEGORIES
from gfl_repro.engines.environment import locate_data
from gfl_repro.engines.native.checkpoints import save_checkpoint
from gfl_repro.models.assigners.atss import atss_assign
from gfl_repro.models.detector import build_detector
from gfl_repro.models.losses import bin_values
from gfl_repro.models.priors import grid_anchors
from gfl_repro.report.figures import DRAWINGS
from gfl_repro.specs import spec
from gfl_repro.specs.run_config import run_id
from gfl_repro.store import run_dir, write_config

from conftest import finish_run

TINY = dict(synth_train=4, synth_val=2, batch_size=2)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GFL_REPRO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def tiny_config(catalogue, smoke, experiment: str, label: str, **changes):
    exp = catalogue[experiment]
    return dataclasses.replace(exp.resolve(exp.row(label), smoke), **{**TINY, **changes})


def saved_run(tmp_path, config, prepare=None):
    """A run directory holding ``config`` and a randomly initialised detector's checkpoint."""
    torch.manual_seed(0)
    model = build_detector(config, num_classes=len(CATEGORIES))
    if prepare is not None:
        prepare(model)
    directory = tmp_path / "runs" / run_id(config)
    write_config(directory, config, run_id(config), "smoke")
    save_checkpoint(directory, {"model": model.state_dict()})
    return directory


def anchor_shaped_boxes(model) -> None:
    """Make every prior predict a box close to its own anchor (each side's distribution peaks at
    4 strides, half the anchor's side), so predictions overlap the ground truth."""
    with torch.no_grad():
        bins = model.head.box.bins
        bias = model.head.reg_out.bias.view(4, bins)
        bias.zero_()
        bias[:, 4] = 4.0


# ------------------------------------------------------------------------------ registries


def test_one_analysis_and_one_drawing_per_spec_analysis_name():
    assert tuple(ANALYSES) == spec.ANALYSES
    assert tuple(DRAWINGS) == spec.ANALYSES


# ------------------------------------------------------------------------------ Fig. 5


def test_qfl_curves_equal_eq2():
    frame = qfl_curves.compute().frame
    assert list(frame.columns) == ["beta", "sigma", "loss"]
    assert {0.0, 0.5, 1.0, 2.0, 4.0} <= set(frame["beta"])
    y, s, b = 0.5, frame["sigma"].to_numpy(), frame["beta"].to_numpy()
    eq2 = -np.abs(y - s) ** b * ((1 - y) * np.log(1 - s) + y * np.log(s))
    np.testing.assert_allclose(frame["loss"], eq2, rtol=1e-9, atol=1e-12)
    at_label = frame[(np.isclose(frame["sigma"], 0.5)) & (frame["beta"] > 0)]
    assert len(at_label) and np.allclose(at_label["loss"], 0.0)  # sigma = y is QFL's global minimum


def test_distribution_shapes_have_the_same_integral():
    frame = distribution_shapes.compute().frame
    shapes = frame.groupby("distribution")
    assert len(shapes) >= 3
    for _, p in shapes:
        assert p["probability"].min() >= 0 and math.isclose(p["probability"].sum(), 1.0, abs_tol=1e-12)
        integral = float((p["probability"] * bin_values(distribution_shapes.REG_MAX).numpy()).sum())  # Eq. 5
        assert math.isclose(integral, distribution_shapes.TARGET, abs_tol=1e-9)
    widths = [(p["probability"] > 0).sum() for _, p in shapes]
    assert len(set(widths)) == len(widths)  # genuinely different shapes


def test_regression_targets_equal_a_direct_pass_of_the_assigner(catalogue, smoke, cache):
    config = tiny_config(catalogue, smoke, "fig5", "ATSS assignment")
    data = locate_data(config, progress=False)
    table = regression_targets.compute(config, data).frame

    dataset = regression_targets.train_set(config, data)
    model = build_detector(config, num_classes=dataset.num_classes).eval()
    distances = []
    for images, targets in build_loader(dataset, batch_size=1, shuffle=False):
        with torch.no_grad():
            sizes = [tuple(x.shape[-2:]) for x in model(images).cls]  # the detector's own feature maps
        assert sizes == regression_targets.level_sizes(images.shape[-2:], model.head.strides)
        levels = grid_anchors(sizes, model.head.strides, 8.0)
        anchors = torch.cat(levels)
        gt = targets[0]["boxes"]
        result = atss_assign(anchors, [len(a) for a in levels], gt, targets[0]["labels"], None, config.atss_topk)
        pos = torch.nonzero(result.assigned_gt_inds > 0).squeeze(1)
        stride = torch.cat([torch.full((len(a),), float(s)) for a, s in zip(levels, model.head.strides)])[pos, None]
        cx, cy = (anchors[pos, 0] + anchors[pos, 2]) / 2, (anchors[pos, 1] + anchors[pos, 3]) / 2
        box = gt[result.assigned_gt_inds[pos] - 1]
        ltrb = torch.stack([cx - box[:, 0], cy - box[:, 1], box[:, 2] - cx, box[:, 3] - cy], dim=1) / stride
        distances.append(ltrb.numpy())
    direct = np.concatenate(distances)
    assert len(direct) > 0
    for s, side in enumerate(regression_targets.SIDES):
        counts, _ = np.histogram(direct[:, s], bins=regression_targets.EDGES)
        assert table[table["side"] == side]["count"].tolist() == counts.tolist()
    assert table["count"].sum() == 4 * len(direct)


# ------------------------------------------------------------------------------ Fig. 9


def test_quality_labels_equal_the_heads_own_targets(catalogue, smoke, cache, tmp_path):
    config = tiny_config(catalogue, smoke, "fig9", "GFL")
    run = load_run(saved_run(tmp_path, config), device="cpu")
    images, targets = next(iter(build_loader(run.train_set(), batch_size=1, shuffle=False)))
    labels = quality_labels.labels_of_batch(run, images, targets)

    captured = {}
    head = run.model.head
    original = head.quality.cls_loss

    def spy(x, q):
        captured["q"] = q
        return original(x, q)

    head.quality.cls_loss = spy
    with torch.no_grad():
        run.model.loss(images, targets)
    q = captured["q"]
    assert len(labels) == len(q.iou) > 0
    np.testing.assert_array_equal(labels["iou"].to_numpy(), q.iou.numpy())
    np.testing.assert_array_equal(labels["centerness"].to_numpy(), q.centerness.numpy())

    every = pd.concat([quality_labels.labels_of_batch(run, i, t)
                       for i, t in build_loader(run.train_set(), batch_size=config.batch_size, shuffle=False)])
    table = quality_labels.compute(run).frame
    for label in quality_labels.LABELS:
        counts, _ = np.histogram(every[label].clip(0, 1), bins=quality_labels.EDGES)
        assert table[table["label"] == label]["count"].tolist() == counts.tolist()
    assert quality_labels.positives(table) == len(every) >= len(labels)
    found = quality_labels.shares(table)
    assert found["centerness_below_0.4"] == pytest.approx((every["centerness"] < 0.4).mean())
    assert found["iou_above_0.4"] == pytest.approx((every["iou"] > 0.4).mean())


# ------------------------------------------------------------------------------ Fig. 2 and Fig. 3


def test_score_vs_iou_reads_the_iou_branch_and_the_joint_score(catalogue, smoke, cache, tmp_path):
    branch_cfg = tiny_config(catalogue, smoke, "fig2", "IoU-branch", score_thr=0.0)
    run = load_run(saved_run(tmp_path, branch_cfg), device="cpu")
    frame = score_vs_iou.compute(run, max_images=1, max_points=10**6).frame
    images, targets = next(iter(build_loader(run.val_set(), batch_size=1, shuffle=False)))
    with torch.no_grad():
        outputs = run.model(images)
    branch = torch.cat([x.reshape(-1) for x in outputs.quality]).sigmoid().numpy()
    cls = torch.cat([x[0].permute(1, 2, 0).reshape(-1, x.shape[1]) for x in outputs.cls]).sigmoid().max(1).values
    assert len(frame) == len(branch)  # threshold 0: every prior of the image
    np.testing.assert_allclose(np.sort(frame["pred_iou"]), np.sort(branch), rtol=1e-6)
    np.testing.assert_allclose(np.sort(frame["cls_score"]), np.sort(cls.numpy()), rtol=1e-6)
    anchors = torch.cat(run.model.head.priors(outputs))
    levels = [len(a) for a in run.model.head.priors(outputs)]
    assigned = atss_assign(anchors, levels, targets[0]["boxes"], targets[0]["labels"], None, branch_cfg.atss_topk)
    assert int(frame["is_background"].sum()) == int((assigned.assigned_gt_inds == 0).sum())
    assert frame["true_iou"].between(0, 1).all()

    joint_cfg = tiny_config(catalogue, smoke, "fig2", "joint w/ QFL", score_thr=0.0)
    joint = score_vs_iou.compute(load_run(saved_run(tmp_path, joint_cfg), device="cpu"), max_points=50).frame
    assert len(joint) == 50
    assert (joint["pred_iou"] == joint["cls_score"]).all()
    assert score_vs_iou.correlation(joint) == pytest.approx(1.0)


def test_predicted_distributions_are_the_softmax_whose_integral_is_the_box(catalogue, smoke, cache, tmp_path):
    config = tiny_config(catalogue, smoke, "fig3", "GFL")
    run = load_run(saved_run(tmp_path, config, prepare=anchor_shaped_boxes), device="cpu")
    table = predicted_distributions.compute(run, per_kind=1)
    frame = table.frame
    assert set(frame["kind"]) == {"flat", "sharp"}
    values = bin_values(config.reg_max, config.bin_width).numpy()
    for (number, side), p in frame.groupby(["instance", "side"]):
        assert p["probability"].sum() == pytest.approx(1.0, abs=1e-5)
        assert p["distance"].tolist() == values.tolist()
        assert p["pred_distance"].iloc[0] == pytest.approx(float(p["probability"] @ values), abs=1e-4)
    images = run.val_set().coco.imgs
    for number, p in frame.groupby("instance"):
        first = p.iloc[0]
        assert first["iou"] >= predicted_distributions.MATCH_IOU
        crop = table.arrays[f"crop_{number}"]
        assert crop.dtype == np.uint8 and crop.ndim == 3 and crop.shape[2] == 3
        # the predicted box is the prior's centre -/+ the integrals times the stride (Eq. 5), clipped
        # to the image (the smoke images are not resized: 192 x 160 at image scale (192, 160))
        width, height = images[int(first["image_id"])]["width"], images[int(first["image_id"])]["height"]
        d = {side: p[p["side"] == side].iloc[0]["pred_distance"] * first["stride"] for side in predicted_distributions.SIDES}
        expected = [max(0.0, first["cx"] - d["left"]), max(0.0, first["cy"] - d["top"]),
                    min(width, first["cx"] + d["right"]), min(height, first["cy"] + d["bottom"])]
        got = [first[f"pred_{k}"] for k in ("x1", "y1", "x2", "y2")]
        assert got == pytest.approx(expected, abs=1e-3)
    entropy = frame.groupby(["kind", "instance"])["entropy"].mean()
    assert entropy["flat"].min() >= entropy["sharp"].max()


# ------------------------------------------------------------------------------ Fig. 7


def test_speed_vs_accuracy_points_equal_the_result_files(catalogue, smoke, tmp_path):
    table4 = catalogue["table4"]
    runs = table4.runs(smoke)
    _, missing = speed_vs_accuracy.compute(table4, smoke, tmp_path)
    assert len(missing) == len(runs)
    for i, (row, _, _) in enumerate(runs):
        finish_run(tmp_path, smoke, table4, row, ap=0.2 + 0.01 * i, fps=10.0 + i)
    result, missing = speed_vs_accuracy.compute(table4, smoke, tmp_path)
    frame = result.frame
    assert missing == []
    ours = frame[frame["source"] == "ours"]
    assert len(ours) == len(runs)
    for i, (_, _, rid) in enumerate(runs):
        point = ours[ours["run_id"] == rid].iloc[0]
        assert point["ms"] == pytest.approx(1000 / (10.0 + i)) and point["AP"] == pytest.approx(100 * (0.2 + 0.01 * i))
        assert point["device"] == "cpu"
    paper = frame[frame["source"] == "paper"]
    assert len(paper) == len(table4.rows)
    for row, (_, point) in zip(table4.rows, paper.iterrows()):
        fps = row.paper["FPS"]
        if fps is None:
            assert not point["placed"] and "n/a" in point["note"] and math.isnan(point["ms"])
        else:
            assert point["placed"] and point["ms"] == pytest.approx(1000 / fps)
            assert point["AP"] == row.paper["AP"]


# ------------------------------------------------------------------------------ storage


def test_tables_round_trip_with_arrays(tmp_path):
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    crop = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    path = save_table(tmp_path / "analysis" / "thing", Table(frame, {"crop_0": crop}))
    assert path.name == "thing.csv"
    back = load_table(tmp_path / "analysis" / "thing")
    pd.testing.assert_frame_equal(back.frame, frame)
    np.testing.assert_array_equal(back.arrays["crop_0"], crop)
    assert load_table(tmp_path / "analysis" / "absent") is None
    assert not list((tmp_path / "analysis").glob(".*.tmp"))


def test_an_analysis_of_a_run_not_done_waits(catalogue, smoke, cache, tmp_path):
    from gfl_repro.analysis import NotReady, artifact_tables, compute_analyses

    fig9 = catalogue["fig9"]
    artifact = fig9.artifacts[0]
    assert compute_analyses(fig9, smoke, tmp_path)[0].startswith("fig9 / GFL: quality_labels waits for run")
    with pytest.raises(NotReady, match=r"first: gfl-repro run fig9$"):
        artifact_tables(fig9, artifact, smoke, tmp_path, catalogue)
    rid = run_id(fig9.resolve(fig9.row("GFL"), smoke))
    assert not run_dir(tmp_path, "smoke", rid).exists()
