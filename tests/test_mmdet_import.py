"""import-mmdet: mmdet-named state dicts convert into the native detector exactly."""

from __future__ import annotations

import os
import pickle
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import unwritable

from gfl_repro.specs.catalogue import load_catalogue
from gfl_repro.cli import cli
from gfl_repro.engines.mmdet.convert import (CheckpointImportError, convert_state_dict, export_state_dict,
                                             load_mmdet_checkpoint)
from gfl_repro.engines.mmdet.safe_load import FORCE_OFF, FORCE_ON, load_checkpoint, weights_only_loading
from gfl_repro.models.detector import build_detector
from gfl_repro.specs.profiles import PROFILES


def native(label: str, seed: int):
    exp = load_catalogue()["table3"]
    torch.manual_seed(seed)
    return build_detector(exp.resolve(exp.row(label), PROFILES["smoke"]), num_classes=6).eval()


def as_mmdet(state: dict, head_prefix: str) -> dict:
    """A native state dict under mmdet's key names, as an mmdet checkpoint file holds it."""
    out = export_state_dict(state, head_type=head_prefix)
    if head_prefix == "gfl":
        out["bbox_head.integral.project"] = torch.linspace(0, 16, 17)
    return {"state_dict": out, "meta": {"epoch": 12}}


def test_export_names_follow_mmdet():
    keys = set(export_state_dict(native("ATSS", 0).state_dict(), head_type="atss"))
    assert {"bbox_head.cls_convs.0.conv.weight", "bbox_head.cls_convs.1.gn.bias", "bbox_head.atss_cls.bias",
            "bbox_head.atss_reg.weight", "bbox_head.atss_centerness.weight", "bbox_head.scales.4.scale",
            "neck.lateral_convs.0.conv.weight", "backbone.layer1.0.conv1.weight"} <= keys


@pytest.mark.parametrize("label, prefix", [("ATSS + QFL + DFL", "gfl"), ("ATSS", "atss")])
def test_converted_checkpoint_gives_the_same_detections(tmp_path, label, prefix):
    source = native(label, seed=1)
    torch.nn.init.zeros_(source.head.cls_out.bias)  # scores well above the threshold: many detections
    path = tmp_path / "mmdet.pth"
    torch.save(as_mmdet(source.state_dict(), prefix), path)
    out = tmp_path / "native.pth"
    result = CliRunner().invoke(cli, ["import-mmdet", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    payload = torch.load(out, weights_only=True)
    target = native(label, seed=2)
    target.load_state_dict(payload["model"], strict=True)
    images = torch.randn(2, 3, 160, 192)
    meta = [{"img_shape": (160, 192), "scale_factor": (1.0, 1.0)}] * 2
    a, b = source.predict(images, meta), target.predict(images, meta)
    assert len(a[0]["boxes"]) > 10
    for x, y in zip(a, b):
        for k in ("boxes", "scores", "labels"):
            assert torch.equal(x[k], y[k])


def test_bad_checkpoints_are_one_line(tmp_path):
    missing = CliRunner().invoke(cli, ["import-mmdet", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "o.pth")])
    assert missing.exit_code == 2 and "no such file" in missing.output
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    bad = CliRunner().invoke(cli, ["import-mmdet", str(junk), "--out", str(tmp_path / "o.pth")])
    assert bad.exit_code == 2 and "cannot read as a torch checkpoint" in bad.output
    with pytest.raises(CheckpointImportError, match="DCN v1"):
        convert_state_dict({"backbone.layer3.0.conv2.conv_offset.weight": torch.zeros(18, 256, 3, 3)})
    with pytest.raises(CheckpointImportError, match="not a dense detector checkpoint"):
        convert_state_dict({"roi_head.bbox_head.fc_cls.weight": torch.zeros(2, 2)})


# ------------------------------------------------------------------ loading without running code from the file


def _history_buffer():
    """mmengine's HistoryBuffer when mmengine is importable, else a class pickled under its name
    (the converter must read it without mmengine)."""
    try:
        from mmengine.logging.history_buffer import HistoryBuffer

        return HistoryBuffer([0.5, 0.25], [1, 1]), {}
    except ImportError:
        pass
    names = ["mmengine", "mmengine.logging", "mmengine.logging.history_buffer"]
    modules = {name: types.ModuleType(name) for name in names}
    stand_in = type("HistoryBuffer", (), {"__module__": names[-1]})
    modules[names[-1]].HistoryBuffer = stand_in
    buffer = stand_in()
    buffer.max_length, buffer._log_history, buffer._count_history = 1000000, np.array([0.5, 0.25]), np.array([1, 1])
    return buffer, modules


def test_mmengine_metadata_loads_with_the_allow_list(tmp_path, monkeypatch):
    source = native("ATSS + QFL + DFL", seed=1)
    checkpoint = as_mmdet(source.state_dict(), "gfl")
    buffer, fake_modules = _history_buffer()
    checkpoint["meta"].update(epoch=np.int64(12), best=np.float64(0.402), hist=np.arange(3, dtype=np.float32),
                              dataset_meta={"classes": ("a", "b")})
    checkpoint["message_hub"] = {"log_scalars": {"train/loss": buffer}, "runtime_info": {"iter": 7330},
                                 "resumed_keys": {"train/loss": True}}
    checkpoint["param_schedulers"] = [{"milestones": Counter({8: 1, 11: 1}), "last_step": 12}]
    for name, module in fake_modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    torch.save(checkpoint, tmp_path / "mmdet.pth")
    for name in fake_modules:
        monkeypatch.delitem(sys.modules, name)
    out = tmp_path / "native.pth"
    result = CliRunner().invoke(cli, ["import-mmdet", str(tmp_path / "mmdet.pth"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    state = torch.load(out, weights_only=True)["model"]
    assert all(torch.equal(state[k], v) for k, v in source.state_dict().items() if k in state)
    loaded = load_checkpoint(tmp_path / "mmdet.pth")
    assert loaded["meta"]["best"] == np.float64(0.402) and list(loaded["meta"]["hist"]) == [0, 1, 2]
    hub = loaded["message_hub"]["log_scalars"]["train/loss"]
    assert list(hub._log_history) == [0.5, 0.25]


class _Touch:
    """A crafted checkpoint entry: unpickling it would run a shell command."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("where", ["meta", "state_dict"])
def test_a_crafted_checkpoint_runs_nothing_and_is_refused_in_one_line(tmp_path, where):
    marker = tmp_path / "ran"
    checkpoint = as_mmdet(native("ATSS", 0).state_dict(), "atss")
    checkpoint[where] = {"x": _Touch(marker)} if where == "meta" else {**checkpoint["state_dict"], "x": _Touch(marker)}
    torch.save(checkpoint, tmp_path / "evil.pth")
    result = CliRunner().invoke(cli, ["import-mmdet", str(tmp_path / "evil.pth"), "--out", str(tmp_path / "o.pth")])
    assert not marker.exists(), "code from the checkpoint ran"
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gfl-repro: error: {tmp_path / 'evil.pth'}: refused to load: "
                                                   "it names posix.system, which is not among")
    assert not (tmp_path / "o.pth").exists()


def test_mmengine_loading_is_forced_weights_only(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    torch.save({"x": _Touch(marker)}, tmp_path / "evil.pth")
    monkeypatch.setenv(FORCE_OFF, "1")  # inherited from the user's shell: must not open the door
    with weights_only_loading():
        assert FORCE_OFF not in os.environ and os.environ[FORCE_ON] == "1"
        with pytest.raises(pickle.UnpicklingError, match="posix.system"):
            torch.load(tmp_path / "evil.pth")  # as mmengine calls it, no weights_only argument
        with pytest.raises(pickle.UnpicklingError):
            torch.load(tmp_path / "evil.pth", weights_only=False)
        torch.save({"w": torch.ones(2), "n": np.float64(1.0)}, tmp_path / "ok.pth")
        assert torch.load(tmp_path / "ok.pth")["n"] == 1.0
    assert not marker.exists()
    assert os.environ[FORCE_OFF] == "1" and FORCE_ON not in os.environ  # restored


def test_import_mmdet_output_problems_are_one_line(tmp_path):
    torch.save(as_mmdet(native("ATSS", 0).state_dict(), "atss"), tmp_path / "m.pth")
    (tmp_path / "dir").mkdir()
    into_dir = CliRunner().invoke(cli, ["import-mmdet", str(tmp_path / "m.pth"), "--out", str(tmp_path / "dir")])
    assert into_dir.exit_code == 2 and into_dir.output.count("\n") == 1
    assert "is a directory; give the path of the file to write" in into_dir.output
    blocked = unwritable(tmp_path) / "native.pth"
    result = CliRunner().invoke(cli, ["import-mmdet", str(tmp_path / "m.pth"), "--out", str(blocked)])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith(f"gfl-repro: error: {blocked.parent.parent}")  # the folder it could not make


def test_allowed_getattr_reaches_only_history_buffer_statistics(tmp_path):
    """The allow-list's getattr (HistoryBuffer's pickled statistics methods) refuses any other
    attribute, even of an allowed class."""

    class Probe:
        def __reduce__(self):
            return (getattr, (np.dtype, "__subclasses__"))

    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": {"x": Probe()}}, tmp_path / "probe.pth")
    with pytest.raises(CheckpointImportError, match="refused"):
        load_mmdet_checkpoint(tmp_path / "probe.pth")


@pytest.mark.parametrize("kind,label", [("retinanet", "RetinaNet"), ("foveabox", "FoveaBox"), ("ssd512", "SSD512")])
def test_table1b_checkpoints_import(tmp_path, kind, label):
    """RetinaNet, FoveaBox and SSD512 checkpoints under mmdet's names convert back to the
    native detector exactly, and `import-mmdet` says which head it found."""
    exp = load_catalogue()["table1b"]
    torch.manual_seed(3)
    source = build_detector(exp.resolve(exp.row(label), PROFILES["smoke"]), num_classes=6).eval()
    mmdet_state = as_mmdet(source.state_dict(), kind)["state_dict"]
    assert ("bbox_head.retina_cls.weight" in mmdet_state) == (kind == "retinanet")
    assert ("bbox_head.conv_reg.weight" in mmdet_state) == (kind == "foveabox")
    assert ("neck.l2_norm.weight" in mmdet_state) == (kind == "ssd512")
    torch.save({"state_dict": mmdet_state, "meta": {"epoch": 12}}, tmp_path / "mmdet.pth")
    result = CliRunner().invoke(cli, ["import-mmdet", str(tmp_path / "mmdet.pth"), "--out", str(tmp_path / "n.pth")])
    assert result.exit_code == 0, result.output
    assert f"{label} head, 6 classes" in result.output
    target = build_detector(exp.resolve(exp.row(label), PROFILES["smoke"]), num_classes=6)
    target.load_state_dict(torch.load(tmp_path / "n.pth", weights_only=True)["model"], strict=True)
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values()))
