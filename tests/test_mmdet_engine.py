"""`--engine mmdet`: which rows stock mmdet expresses, the configs built from the specs, and
runs trained by mmengine's runner landing in the same store.

The first group needs no mmdet (the expressibility rule is pure); the rest is skipped with
the reason when the mmdet extra is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from gfl_repro.specs.catalogue import default_experiments_dir, get_experiment
from gfl_repro.cli import cli
from gfl_repro.specs.run_config import RunConfig, run_id
from gfl_repro.engines.mmdet.config import NeedsNativeEngine, expressible, stock_name
from gfl_repro.specs.profiles import PROFILES
from gfl_repro.specs.spec import SpecError, load_experiment

SMOKE, PAPER = PROFILES["smoke"], PROFILES["paper"]


def _rows(experiment: str, profile=SMOKE, engine="mmdet"):
    exp = get_experiment(experiment, default_experiments_dir())
    return {row.display: config for row, config, _ in exp.runs(profile, engine)}


def _stock(experiment: str, profile=SMOKE) -> dict[str, str | None]:
    out = {}
    for label, config in _rows(experiment, profile).items():
        try:
            out[label] = stock_name(config)
        except NeedsNativeEngine:
            out[label] = None
    return out


# ------------------------------------------------------------------ which rows (no mmdet needed)


def test_stock_rows_of_each_table():
    assert _stock("table3") == {"ATSS": "atss", "ATSS + QFL": None, "ATSS + DFL": None, "ATSS + QFL + DFL": "gfl"}
    assert set(_stock("table2b").values()) == {"gfl"}  # the n sweep: reg_max is a stock knob
    assert _stock("table2c") == {"Δ = 0.5": None, "Δ = 1": "gfl", "Δ = 2": None, "Δ = 4": None}
    # the smoke profile's toy SSD (BatchNorm in its VGG, flip only) is native-only; at the paper's settings it is stock
    assert _stock("table1b") == {"FoveaBox": "foveabox", "FoveaBox + joint w/ QFL": None, "RetinaNet": "retinanet",
                                 "RetinaNet + joint w/ QFL": None, "SSD512": None, "SSD512 + joint w/ QFL": None}
    assert _stock("table1b", PAPER) == {"FoveaBox": "foveabox", "FoveaBox + joint w/ QFL": None,
                                        "RetinaNet": "retinanet", "RetinaNet + joint w/ QFL": None,
                                        "SSD512": "ssd512", "SSD512 + joint w/ QFL": None}
    table4 = {label: name for label, name in _stock("table4", PAPER).items()}
    assert table4 and set(table4.values()) == {"gfl"}  # every trained Table 4 row is GFL
    table1a = _stock("table1a")
    assert {k for k, v in table1a.items() if v} == {"FCOS / centerness-branch", "ATSS / centerness-branch"}
    # Table 1(c) is QFL with a Dirac box (the paper's numbers say so): no stock mmdet head
    assert set(_stock("table1c").values()) == {None}


def test_native_only_message_names_the_row_settings():
    config = _rows("table3")["ATSS + DFL"]
    with pytest.raises(NeedsNativeEngine, match=r"needs the native engine .*quality=centerness.*box=general"):
        stock_name(config)
    with pytest.raises(NeedsNativeEngine, match="Δ = 2"):
        stock_name(_rows("table2c")["Δ = 2"])
    assert not expressible(config) and expressible(_rows("table3")["ATSS"])
    toy_ssd = _rows("table1b")["SSD512"].replace(augment="ssd")
    with pytest.raises(NeedsNativeEngine, match="SSD VGG has no norm layers, this row's norm is 'bn'"):
        stock_name(toy_ssd)
    with pytest.raises(NeedsNativeEngine, match="norm 'bn' is the native toy SSD's"):
        stock_name(_rows("table1b")["RetinaNet"].replace(norm="bn"))


def test_engine_is_part_of_the_run_identity_and_native_ids_are_unchanged():
    native = _rows("table3", engine="native")["ATSS + QFL + DFL"]
    mmdet = _rows("table3")["ATSS + QFL + DFL"]
    assert native.engine == "native" and mmdet.engine == "mmdet"
    assert native.replace(engine="mmdet") == mmdet
    assert run_id(native) != run_id(mmdet)
    # the default engine is not hashed: ids from before the field existed stay valid
    assert run_id(RunConfig()) == run_id(RunConfig(engine="native"))


def test_spec_rows_cannot_choose_the_engine(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('[experiment]\nid = "x"\nkind = "table"\npaper_ref = "T"\ntitle = "t"\nsplit = "minival"\n'
                    'recipe = "gfl"\nmetrics = ["AP"]\n\n[[row]]\nlabel = "r"\noverrides = { engine = "mmdet" }\n'
                    'paper = [1.0]\n')
    with pytest.raises(SpecError, match="engine is chosen on the command line"):
        load_experiment(path)


def test_run_refuses_native_only_rows_in_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["--results-dir", str(tmp_path), "run", "table2c", "--engine", "mmdet", "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum("needs the native engine" in line for line in lines) == 3
    assert any("would run" in line and "Δ = 1" in line for line in lines)
    only_native = runner.invoke(cli, ["--results-dir", str(tmp_path), "run", "table1c", "--engine", "mmdet"])
    assert only_native.exit_code == 2
    assert only_native.output.strip().splitlines()[-1] == (
        "gfl-repro: error: nothing to run: 5 row(s) need the native engine (listed above)")
    bad = runner.invoke(cli, ["run", "table3", "--engine", "mmdt"])
    assert bad.exit_code == 2 and "did you mean 'mmdet'" in bad.output


# ------------------------------------------------------------------ configs (mmdet needed)

mmdet = pytest.importorskip("mmdet", reason="the mmdet extra is not installed (bash scripts/mmdet_extra.sh)")


def _build(config: RunConfig, classes=("a", "b", "c"), pretrained: Path | None = None):
    from gfl_repro.engines.mmdet.config import build_config, register_tiny_backbones

    register_tiny_backbones()
    return build_config(config, classes=list(classes), train_images=Path("/data/train"),
                        train_annotations=Path("/data/train.json"), val_images=Path("/data/val"),
                        val_annotations=Path("/data/val.json"), work_dir=Path("/tmp/work"), pretrained=pretrained)


def _mmdet_model(cfg):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    model = MODELS.build(cfg.model)
    for module in model.modules():  # mmdet's L2Norm allocates its scale uninitialised until init_weights
        if type(module).__name__ == "L2Norm":
            module.weight.data.fill_(module.scale)
    return model


@pytest.mark.parametrize("experiment,label", [
    ("table3", "ATSS"), ("table3", "ATSS + QFL + DFL"), ("table1a", "FCOS / centerness-branch"),
    ("table2b", "n = 12"), ("table1b", "RetinaNet"), ("table1b", "FoveaBox"),
])
def test_smoke_config_is_the_native_model(experiment, label):
    """The mmdet model built from the spec holds exactly the native model's tensors, and with
    the same weights computes the same head outputs."""
    from gfl_repro.engines.mmdet.convert import convert_state_dict
    from gfl_repro.models.detector import build_detector

    config = _rows(experiment)[label]
    torch.manual_seed(0)
    theirs = _mmdet_model(_build(config)).eval()
    ours = build_detector(config, num_classes=3).eval()
    converted = convert_state_dict(theirs.state_dict())
    ours.load_state_dict(converted, strict=True)
    images = torch.randn(2, 3, 160, 192)
    with torch.no_grad():
        expected = theirs._forward(images)
        got = ours(images)
    # mmdet's FCOS (norm_on_bbox) returns distances in pixels at test time, the native head
    # in stride units (it decodes later); GFL/ATSS heads agree as they are
    unit = (8, 16, 32, 64, 128) if config.detector == "fcos" else (1,) * 5
    assert len(expected[0]) == len(got.cls) == 5
    for level in range(5):
        torch.testing.assert_close(got.cls[level], expected[0][level], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.reg[level] * unit[level], expected[1][level], rtol=1e-5, atol=1e-4)
        if len(expected) == 3:  # centerness
            torch.testing.assert_close(got.quality[level], expected[2][level], rtol=1e-5, atol=1e-5)


def test_paper_ssd512_config_is_the_native_model():
    """SSD512 at paper scale (mmdet's VGG has no width setting): mmdet's model converts into the
    native one, and with the same weights both compute the same outputs on a 512 x 512 image."""
    from gfl_repro.engines.mmdet.convert import convert_state_dict
    from gfl_repro.models.detector import build_detector

    config = _rows("table1b", PAPER)["SSD512"]
    torch.manual_seed(0)
    theirs = _mmdet_model(_build(config)).eval()
    ours = build_detector(config, num_classes=3).eval()
    ours.load_state_dict(convert_state_dict(theirs.state_dict()), strict=True)
    images = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        expected = theirs._forward(images)
        got = ours(images)
    assert len(expected[0]) == len(got.cls) == 7
    for level in range(7):
        torch.testing.assert_close(got.cls[level], expected[0][level], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got.reg[level], expected[1][level], rtol=1e-4, atol=1e-4)


def test_paper_table4_config_reads_like_the_paper():
    rows = _rows("table4", PAPER)
    x101 = [c for c in rows.values() if c.backbone == "x101_32x4d" and c.dcn]
    assert x101, "Table 4 has a GFL X-101-32x4d-DCN row"
    cfg = _build(x101[0], classes=[f"c{i}" for i in range(80)], pretrained=Path("/weights/x101_32x4d.pth"))
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.depth, backbone.groups, backbone.base_width) == ("ResNeXt", 101, 32, 4)
    assert backbone.dcn.type == "DCNv2" and tuple(backbone.stage_with_dcn) == (False, True, True, True)
    assert backbone.init_cfg == {"type": "Pretrained", "checkpoint": "/weights/x101_32x4d.pth"}
    resize = [s for s in cfg.train_dataloader.dataset.pipeline if "Resize" in s["type"]]
    assert resize == [dict(type="RandomResize", scale=[(1333, 480), (1333, 800)], keep_ratio=True)]
    assert cfg.train_cfg.max_epochs == 24 and cfg.param_scheduler[1]["milestones"] == [16, 22]
    assert cfg.optim_wrapper.optimizer.lr == 0.01 and cfg.train_dataloader.batch_size == 16
    head = cfg.model.bbox_head
    assert (head.type, head.num_classes, head.reg_max, head.loss_dfl.loss_weight) == ("GFLHead", 80, 16, 0.25)
    assert cfg.model.test_cfg.nms.iou_threshold == 0.6
    assert "://" not in cfg.pretty_text  # nothing is downloaded


def test_paper_ssd512_is_120_epochs_without_the_repeat_wrapper():
    cfg = _build(_rows("table1b", PAPER)["SSD512"], classes=[f"c{i}" for i in range(80)])
    dataset = cfg.train_dataloader.dataset
    assert dataset.type == "CocoDataset" and dataset.ann_file == "/data/train.json"
    assert any(s["type"] == "MinIoURandomCrop" for s in dataset.pipeline)  # mmdet's SSD augmentation kept
    assert [s["scale"] for s in dataset.pipeline if s["type"] == "Resize"] == [(512, 512)]
    assert cfg.train_cfg.max_epochs == 120 and cfg.param_scheduler[1]["milestones"] == [80, 110]
    assert cfg.optim_wrapper.optimizer.lr == 0.002 and cfg.optim_wrapper.optimizer.weight_decay == 5e-4
    test = cfg.model.test_cfg
    assert (test.score_thr, test.nms.iou_threshold, test.max_per_img) == (0.02, 0.45, 200)
    assert cfg.model.backbone.init_cfg is None and "://" not in cfg.pretty_text


def test_stock_knobs_follow_the_row():
    gfl = _build(_rows("table2b")["n = 12"]).model
    assert gfl.bbox_head.reg_max == 12 and gfl.bbox_head.loss_cls.beta == 2.0
    fovea = _build(_rows("table1b")["FoveaBox"]).model
    assert (fovea.bbox_head.loss_cls.gamma, fovea.bbox_head.loss_cls.alpha) == (1.5, 0.4)
    assert fovea.test_cfg.nms.iou_threshold == 0.5
    fcos = _build(_rows("table1a")["FCOS / centerness-branch"])
    assert fcos.model.data_preprocessor.bgr_to_rgb is True  # pytorch-style, as the native recipe
    assert fcos.param_scheduler[0]["start_factor"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------ training through mmengine

TINY = dict(synth_train=16, synth_val=8, epochs=2, lr_steps=(2,), batch_size=4, warmup_iters=2)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GFL_REPRO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _records(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


def test_mmdet_run_stops_resumes_and_writes_the_store(tmp_path, cache):
    from gfl_repro.engines import execute
    from gfl_repro.store import read_run

    config = _rows("table3")["ATSS + QFL + DFL"].replace(**TINY)
    rid = run_id(config)
    directory = tmp_path / "res" / "smoke" / "runs" / rid
    calls = []

    def stop_in_second_epoch() -> bool:
        calls.append(1)
        return len(calls) == 5  # 4 iterations per epoch: stop after the first of epoch 2

    assert execute(config, directory, run_id=rid, profile="smoke", progress=False,
                   should_stop=stop_in_second_epoch) is None
    assert not (directory / "result.json").exists()
    assert (directory / "mmdet" / "epoch_1.pth").exists()
    result = execute(config, directory, run_id=rid, profile="smoke", progress=False)
    records = _records(directory)
    assert [r["type"] for r in records if r["type"] in ("start", "resume", "end")] == ["start", "resume", "end"]
    resume = next(r for r in records if r["type"] == "resume")
    assert resume["iteration"] == 4 and resume["epoch"] == 1  # from the epoch-1 checkpoint
    assert result["engine"] == "mmdet" and result["stock_config"] == "gfl/gfl_r50_fpn_1x_coco.py"
    record = read_run(tmp_path / "res", "smoke", rid)
    assert record.state == "done" and 0.0 <= record.metric("AP") <= 100.0
    stored = json.loads((directory / "config.json").read_text())
    assert stored["config"]["engine"] == "mmdet" and stored["run_id"] == rid
    assert (directory / "mmdet_config.py").exists()


class _Touch:
    """A crafted checkpoint entry: unpickling it would run a shell command."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


def test_a_planted_resume_checkpoint_runs_nothing(tmp_path, cache):
    from gfl_repro.engines import execute
    from gfl_repro.engines.mmdet.safe_load import UnsafeCheckpoint

    config = _rows("table3")["ATSS"].replace(**TINY)
    rid = run_id(config)
    directory = tmp_path / "res" / "smoke" / "runs" / rid
    work = directory / "mmdet"
    work.mkdir(parents=True)
    marker = tmp_path / "ran"
    torch.save({"meta": {"epoch": 1, "iter": 4}, "state_dict": {}, "message_hub": _Touch(marker)}, work / "epoch_1.pth")
    (work / "last_checkpoint").write_text(str(work / "epoch_1.pth"))
    with pytest.raises(UnsafeCheckpoint, match="refused to load: it names posix.system"):
        execute(config, directory, run_id=rid, profile="smoke", progress=False)
    assert not marker.exists(), "code from the planted checkpoint ran"
    assert not (directory / "result.json").exists()


TINY_SPEC = """
[experiment]
id = "tiny"
kind = "table"
paper_ref = "Table 3 (tiny)"
title = "Table 3 rows at a size that trains in seconds"
split = "minival"
recipe = "atss"
metrics = ["AP", "AP50"]

[[row]]
label = "ATSS"
overrides = { synth_train = 8, synth_val = 4, epochs = 1, lr_steps = [1], batch_size = 4, warmup_iters = 2 }
paper = [39.2, 57.4]

[[row]]
label = "ATSS + DFL"
overrides = { synth_train = 8, synth_val = 4, epochs = 1, lr_steps = [1], batch_size = 4, warmup_iters = 2, box = "general", dfl_weight = 0.25 }
paper = [39.5, 57.3]
"""


def test_cli_run_status_collect_with_the_mmdet_engine(tmp_path, cache):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "tiny.toml").write_text(TINY_SPEC)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, ["--experiments-dir", str(tmp_path / "exp"), "--results-dir", str(tmp_path / "res"),
                                   *args])

    first = invoke("run", "tiny", "--seeds", "1", "--engine", "mmdet", "--quiet")
    assert first.exit_code == 0, first.output
    assert "skipped: tiny / ATSS + DFL: needs the native engine" in first.output
    assert "1 run(s) to run (smoke profile (toy scale, synthetic data), mmdet engine" in first.output
    assert "AP50" in first.output
    again = invoke("run", "tiny", "--seeds", "1", "--engine", "mmdet", "--quiet")
    assert again.exit_code == 0 and "0 run(s) to run; skipped: done 1" in again.output
    status = invoke("status", "tiny", "--seeds", "1", "--engine", "mmdet", "--format", "json")
    states = {row["row"]: row["state"] for row in json.loads(status.output)}
    assert states == {"ATSS": "done", "ATSS + DFL": "native only"}
    native = invoke("status", "tiny", "--seeds", "1", "--format", "json")
    assert {row["state"] for row in json.loads(native.output)} == {"missing"}  # engines do not share runs
    show = invoke("show", "tiny", "--engine", "mmdet", "--format", "json")
    assert [row["state"] for row in json.loads(show.output)["rows"]] == ["done", "native only"]
    table = invoke("collect", "tiny", "--seeds", "1", "--engine", "mmdet", "--format", "markdown")
    assert table.exit_code == 0 and "1/2 rows with results" in table.output
    text = (tmp_path / "res" / "smoke" / "tables" / "tiny.mmdet.md").read_text()
    assert "mmdet engine" in text and "native only" in text
