"""import-mmdet: mmdet-named state dicts convert into the native detector exactly."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from gfl_repro.specs.catalogue import load_catalogue
from gfl_repro.cli import cli
from gfl_repro.engines.mmdet.convert import CheckpointImportError, convert_state_dict, export_state_dict
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
    with pytest.raises(CheckpointImportError, match="not a GFL/ATSS detector"):
        convert_state_dict({"roi_head.bbox_head.fc_cls.weight": torch.zeros(2, 2)})
