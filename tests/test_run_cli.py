"""`gfl-repro run` and `gfl-repro data synth` through the CLI, at a size that takes seconds."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gfl_repro.cli import cli

TINY_SPEC = """
[experiment]
id = "tiny"
kind = "table"
paper_ref = "Table 3 (tiny)"
title = "Two Table 3 rows at a size that trains in seconds"
split = "minival"
recipe = "atss"
metrics = ["AP", "AP50"]

[[row]]
label = "ATSS + QFL + DFL"
recipe = "gfl"
overrides = { synth_train = 8, synth_val = 4, epochs = 1, lr_steps = [1], batch_size = 4, warmup_iters = 2 }
paper = [40.2, 58.6]

[[row]]
label = "ATSS (same run twice)"
recipe = "gfl"
overrides = { synth_train = 8, synth_val = 4, epochs = 1, lr_steps = [1], batch_size = 4, warmup_iters = 2 }
paper = [40.2, 58.6]
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "tiny.toml").write_text(TINY_SPEC)
    monkeypatch.setenv("GFL_REPRO_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, ["--experiments-dir", str(tmp_path / "exp"), "--results-dir", str(tmp_path / "res"), *args])

    return invoke, tmp_path


def test_run_trains_shared_run_once_then_skips(env):
    invoke, tmp = env
    first = invoke("run", "tiny", "--seeds", "1", "--quiet")
    assert first.exit_code == 0, first.output
    assert "1 run(s) to run (smoke profile" in first.output and "AP50" in first.output
    results = list((tmp / "res" / "smoke" / "runs").glob("*/result.json"))
    assert len(results) == 1 and json.loads(results[0].read_text())["toy_scale"] is True
    second = invoke("run", "tiny", "--seeds", "1", "--quiet")
    assert second.exit_code == 0 and "0 run(s) to run; skipped: done 1" in second.output
    table = invoke("collect", "tiny", "--seeds", "1", "--format", "csv")
    assert table.exit_code == 0 and "2/2 rows with results" in table.output


def test_run_errors_are_one_line(env, tmp_path):
    invoke, _ = env
    bad = invoke("run", "tiny", "--seeds", "1", "--profile", "paper", "--data-root", str(tmp_path / "nowhere"))
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines()[-1].startswith("gfl-repro: error: COCO 2017 incomplete under")
    assert "Traceback" not in bad.output
    missing = invoke("run", "nope")
    assert missing.exit_code == 2 and "unknown experiment 'nope'" in missing.output


def test_run_names_rows_the_engine_cannot_build(tmp_path, monkeypatch):
    import gfl_repro.launch.plan as plan_module

    def native_has_no_table1b_detector(config):  # every row runs natively today: pretend these do not
        raise ValueError(f"detector {config.detector!r} is not in the native engine yet")

    monkeypatch.setattr(plan_module, "check_runnable", native_has_no_table1b_detector)
    result = CliRunner().invoke(cli, ["--results-dir", str(tmp_path), "run", "table1b"])
    assert result.exit_code == 2
    assert "not runnable yet: table1b / FoveaBox: detector 'foveabox'" in result.output
    assert result.output.strip().splitlines()[-1].startswith("gfl-repro: error: nothing to run")


def test_data_synth_writes_coco_files(tmp_path):
    out = tmp_path / "synth"
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(out), "--num-train", "3", "--num-val", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    train = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert len(train["images"]) == 3 and len(list((out / "train").glob("*.png"))) == 3
    again = CliRunner().invoke(cli, ["data", "synth", "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_paper_runs_need_local_imagenet_weights(tmp_path, monkeypatch):
    coco = tmp_path / "coco"
    for d in ("train2017", "val2017", "annotations"):
        (coco / d).mkdir(parents=True)
    for f in ("instances_train2017.json", "instances_val2017.json"):
        (coco / "annotations" / f).write_text("{}")
    monkeypatch.delenv("GFL_REPRO_PRETRAINED", raising=False)
    message = ("ImageNet weights for r50 not found: $GFL_REPRO_PRETRAINED (unset); "
               "set GFL_REPRO_PRETRAINED to a directory holding r50.pth")
    args = ["--results-dir", str(tmp_path / "res"), "run", "table3", "--profile", "paper", "--data-root", str(coco)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == f"gfl-repro: error: {message}"
    # a dry run previews the plan anyway, with the problem as a warning
    preview = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert preview.exit_code == 0, preview.output
    assert f"warning: {message} (a real run stops here)" in preview.output
    assert "would run" in preview.output


TEST_DEV_SPEC = """
[experiment]
id = "tinydev"
kind = "table"
paper_ref = "Table 4 (tiny)"
title = "A test-dev row on a fake COCO root"
split = "test-dev"
recipe = "gfl"
metrics = ["AP"]

[[row]]
label = "GFL"
overrides = { dataset = "coco2017", epochs = 1, lr_steps = [1], batch_size = 4, warmup_iters = 2 }
paper = [43.1]
"""


def _fake_coco(root, tmp_path):
    """COCO 2017's layout (with test-dev) built from a tiny synthetic set."""
    import shutil

    from gfl_repro.datasets.synthetic import generate

    synth = generate(tmp_path / "synth", num_train=4, num_val=2, seed=0, progress=False)
    (root / "annotations").mkdir(parents=True)
    shutil.copytree(synth / "train", root / "train2017")
    shutil.copytree(synth / "val", root / "val2017")
    shutil.copytree(synth / "val", root / "test2017")
    shutil.copy(synth / "annotations" / "instances_train.json", root / "annotations" / "instances_train2017.json")
    shutil.copy(synth / "annotations" / "instances_val.json", root / "annotations" / "instances_val2017.json")
    val = json.loads((synth / "annotations" / "instances_val.json").read_text())
    info = {"images": val["images"], "categories": val["categories"]}  # test-dev has no annotations
    (root / "annotations" / "image_info_test-dev2017.json").write_text(json.dumps(info))
    return val


def test_test_dev_rows_write_server_detections_and_say_val2017(tmp_path):
    coco = tmp_path / "coco"
    val = _fake_coco(coco, tmp_path)
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "tinydev.toml").write_text(TEST_DEV_SPEC)
    args = ["--experiments-dir", str(tmp_path / "exp"), "--results-dir", str(tmp_path / "res")]
    result = CliRunner().invoke(cli, [*args, "run", "tinydev", "--seeds", "1", "--data-root", str(coco), "--quiet"])
    assert result.exit_code == 0, result.output
    [run] = list((tmp_path / "res" / "smoke" / "runs").iterdir())
    record = json.loads((run / "result.json").read_text())
    assert record["split"] == "test-dev" and record["evaluated_on"] == "val2017"
    assert record["test_dev_detections"] == "detections_test-dev2017.json"
    detections = json.loads((run / "detections_test-dev2017.json").read_text())
    assert isinstance(detections, list)
    image_ids = {image["id"] for image in val["images"]}
    categories = {c["id"] for c in val["categories"]}
    for det in detections:
        assert set(det) == {"image_id", "category_id", "bbox", "score"}
        assert det["image_id"] in image_ids and det["category_id"] in categories and len(det["bbox"]) == 4
    table = CliRunner().invoke(cli, [*args, "collect", "tinydev", "--seeds", "1", "--format", "csv",
                                     "--out", str(tmp_path / "t")])
    assert table.exit_code == 0, table.output
    csv = (tmp_path / "t" / "tinydev.csv").read_text().splitlines()
    header, line = csv[0].split(","), csv[1].split(",")
    assert line[header.index("evaluated_on")] == "val2017" and line[header.index("state")] == "done"


def test_the_fast_path_flags_make_their_own_runs(tmp_path):
    base = ["--results-dir", str(tmp_path / "res")]

    def planned(*flags: str) -> tuple[str, set[str]]:
        result = CliRunner().invoke(cli, [*base, *flags, "run", "table3", "--seeds", "1", "--dry-run"])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        return lines[0], {line.split()[2].rstrip(":") for line in lines if line.strip().startswith("would run")}

    header, plain = planned()
    fast_header, fast = planned("--channels-last", "--compile")
    assert len(plain) == len(fast) == 4 and not plain & fast
    assert "channels-last, compiled" in fast_header and "channels-last" not in header
    refused = CliRunner().invoke(cli, [*base, "--channels-last", "run", "table3", "--engine", "mmdet"])
    assert refused.exit_code == 2
    assert "needs the native engine (--channels-last is the native engine's fast path)" in refused.output
    assert "Traceback" not in refused.output
