"""Every bad input through the command line is one line and a non-zero exit; a run that failed
or was damaged is never "done", and `run --retry` picks it up after the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import unwritable
from gfl_repro import cli as cli_module
from gfl_repro.cli import cli
from gfl_repro.datasets import coco

TINY_SPEC = """
[experiment]
id = "tiny"
kind = "table"
paper_ref = "tiny"
title = "One run at a size that trains in seconds"
split = "minival"
recipe = "gfl"
metrics = ["AP", "AP50"]

[[row]]
label = "GFL"
overrides = { synth_train = 8, synth_val = 4, epochs = 1, lr_steps = [1], batch_size = 4, warmup_iters = 2 }
paper = [40.2, 58.6]
"""


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "tiny.toml").write_text(TINY_SPEC)
    monkeypatch.setenv("GFL_REPRO_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()

    def invoke(*args, results: Path | None = None):
        seeds = ["--seeds", "1"] if args and args[0] in ("run", "status", "list", "show", "collect") else []
        return runner.invoke(cli, ["--experiments-dir", str(tmp_path / "exp"),
                                   "--results-dir", str(results or tmp_path / "res"), *args, *seeds])

    return invoke


def one_error_line(result, status: int) -> str:
    """The error line of a failed command (its last line); asserts it is the only error line."""
    assert result.exit_code == status, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("gfl-repro: error:")]
    assert len(errors) == 1 and result.output.strip().splitlines()[-1] == errors[0], result.output
    assert "Traceback" not in result.output
    return errors[0]


@pytest.mark.parametrize("args, status, fragment", [
    (["run", "tiny", "--device", "warp9"], 2, "unknown device 'warp9'; use cpu, cuda or cuda:N"),
    (["run", "tiny", "--device", "cuda:99" if torch.cuda.is_available() else "cuda"], 2, "CUDA GPU"),
    (["run", "tiny", "--launcher", "local", "--device", "cpu"], 2, "--device is the inline launcher's option"),
    (["run", "tiny", "--launcher", "slurm", "--partition", "gpu\nrm -rf ~"], 2, "partition must be a name"),
    (["run", "tiny", "--launcher-config", "/nonexistent.toml", "--launcher", "slurm"], 2,
     "cannot read launcher config /nonexistent.toml"),
])
def test_bad_run_options_are_one_line(tiny, args, status, fragment):
    assert fragment in one_error_line(tiny(*args), status)


def test_file_in_place_of_a_directory(tiny, tmp_path):
    (tmp_path / "a-file").write_text("x")
    for verb in (["list"], ["status", "tiny"], ["run", "tiny"], ["collect", "tiny"]):
        line = one_error_line(tiny(*verb, results=tmp_path / "a-file"), 2)
        assert line == f"gfl-repro: error: results directory {tmp_path / 'a-file'} is a file, not a directory"
    line = one_error_line(tiny("collect", "tiny", "--out", str(tmp_path / "a-file")), 2)
    assert line.endswith("--out " + str(tmp_path / "a-file") + " is a file, not a directory")
    synth = CliRunner().invoke(cli, ["data", "synth", "--out", str(tmp_path / "a-file" / "sub"), "--num-train", "1"])
    assert str(tmp_path / "a-file") in one_error_line(synth, 1)


def test_unwritable_targets_are_one_line(tiny, tmp_path, monkeypatch):
    blocked = unwritable(tmp_path)
    assert str(blocked.parent) in one_error_line(tiny("collect", "tiny", "--out", str(blocked / "tables")), 1)
    assert str(blocked.parent) in one_error_line(tiny("run", "tiny", "--quiet", results=blocked), 1)
    monkeypatch.setenv("GFL_REPRO_CACHE", str(blocked / "cache"))
    line = one_error_line(tiny("run", "tiny", "--quiet"), 2)
    assert "cannot write the synthetic data cache" in line and "GFL_REPRO_CACHE" in line


def test_broken_spec_names_its_file_in_every_command(tiny, tmp_path):
    (tmp_path / "exp" / "zz.toml").write_bytes(b"[experiment]\nid = \"zz\xff\"\n")
    for verb in (["list"], ["status"], ["collect"]):
        assert f"{tmp_path / 'exp' / 'zz.toml'}: not UTF-8 text" in one_error_line(tiny(*verb), 2)
    assert tiny("show", "tiny").exit_code == 0  # a command that does not read it still works


def test_unexpected_errors_are_one_line_with_a_way_to_the_traceback(tiny, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli_module, "list_experiments", broken)
    line = one_error_line(tiny("list"), 1)
    assert line == ("gfl-repro: error: unexpected ZeroDivisionError: division by zero "
                    "(run with GFL_REPRO_DEBUG=1 for the traceback)")
    monkeypatch.setenv("GFL_REPRO_DEBUG", "1")
    assert isinstance(tiny("list").exception, ZeroDivisionError)


def test_damaged_runs_are_never_done_and_retry_resumes_them(tiny, tmp_path, monkeypatch):
    """A corrupt image met in evaluation, then a truncated result.json, then unreadable
    checkpoints: each a one-line error and not done; `run --retry` re-evaluates from the
    finished checkpoint without training again."""
    real_read = coco.read_image
    damaged = {}

    def corrupt_first_val_image(path):
        if path.parent.name == "val" and not damaged:  # the run reaches evaluation: damage a file now
            damaged[path] = path.read_bytes()
            path.write_bytes(damaged[path][:200])
        return real_read(path)

    monkeypatch.setattr(coco, "read_image", corrupt_first_val_image)
    first = tiny("run", "tiny", "--quiet")
    (path, intact), = damaged.items()
    assert one_error_line(first, 2).startswith(f"gfl-repro: error: {path}: cannot decode image")
    status = json.loads(tiny("status", "tiny", "--format", "json").output)[0]
    assert status["state"] == "failed" and str(path) in status["error"]
    run_dir = tmp_path / "res" / "smoke" / "runs" / status["run_id"]
    assert not (run_dir / "result.json").exists()

    path.write_bytes(intact)  # the fix
    retried = tiny("run", "tiny", "--quiet", "--retry")
    assert retried.exit_code == 0, retried.output
    assert json.loads(tiny("status", "tiny", "--format", "json").output)[0]["state"] == "done"
    starts = [json.loads(x)["type"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert starts.count("start") == 1 and "resume" not in starts  # evaluated again, not trained again

    text = (run_dir / "result.json").read_text()
    (run_dir / "result.json").write_text(text[:40])  # truncated
    assert json.loads(tiny("status", "tiny", "--format", "json").output)[0]["state"] == "corrupt"
    assert any(line.startswith("tiny ") and "0/1" in line for line in tiny("list").output.splitlines())
    assert "corrupt" in tiny("show", "tiny").output
    skipped = tiny("run", "tiny", "--quiet")
    assert skipped.exit_code == 0 and "skipped: corrupt 1" in skipped.output and "--retry starts" in skipped.output
    again = tiny("run", "tiny", "--quiet", "--retry")
    assert again.exit_code == 0, again.output
    assert json.loads((run_dir / "result.json").read_text())["metrics"] == json.loads(text)["metrics"]
    assert (run_dir / "result.json.corrupt").read_text() == text[:40]  # kept for a look, out of the way
    assert [json.loads(x)["type"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()].count("start") == 1

    for name in ("last.pt", "previous.pt"):
        checkpoint = run_dir / "checkpoints" / name
        if checkpoint.exists():
            checkpoint.write_bytes(checkpoint.read_bytes()[:300])
    (run_dir / "result.json").write_text("{")
    line = one_error_line(tiny("run", "tiny", "--quiet", "--retry"), 1)
    assert line.startswith("gfl-repro: error: no readable checkpoint: ") and "last.pt" in line
    assert json.loads(tiny("status", "tiny", "--format", "json").output)[0]["state"] == "failed"
