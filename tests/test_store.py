"""The results store: atomic writes, completion marker, readers that never crash."""

from __future__ import annotations

import json

import pytest

from gfl_repro.specs.run_config import RunConfig
from gfl_repro.store import (
    COCO_STATS, CORRUPT, DONE, INCOMPLETE, MISSING, append_metrics, atomic_write, atomic_write_text, read_config,
    read_metrics, read_run, run_dir, write_config, write_result,
)


def test_layout_and_completion_marker(tmp_path):
    d = run_dir(tmp_path, "smoke", "abc123")
    assert d == tmp_path / "smoke" / "runs" / "abc123"
    assert read_run(tmp_path, "smoke", "abc123").state == MISSING
    write_config(d, RunConfig(reg_max=12.0), "abc123", "smoke")
    append_metrics(d, {"iter": 1, "loss": 2.5})
    assert read_run(tmp_path, "smoke", "abc123").state == INCOMPLETE
    write_result(d, run_id="abc123", profile="smoke", engine="native", toy_scale=True, split="minival",
                 stats=[0.4, 0.6, 0.45, 0.2, 0.44, 0.5, 0.3, 0.5, 0.55, 0.3, 0.6, 0.7], fps=20.0, device="cpu")
    record = read_run(tmp_path, "smoke", "abc123")
    assert record.state == DONE
    assert record.metric("AP") == pytest.approx(40.0)
    assert record.metric("FPS") == 20.0
    assert set(record.result["metrics"]) == set(COCO_STATS)
    assert read_config(d) == RunConfig(reg_max=12.0)


def test_minus_one_stats_read_as_absent(tmp_path):
    d = run_dir(tmp_path, "smoke", "r")
    write_result(d, run_id="r", profile="smoke", engine="native", toy_scale=True, split="minival", stats=[-1.0] * 12)
    assert read_run(tmp_path, "smoke", "r").metric("APs") is None


@pytest.mark.parametrize("content, problem", [
    ("{not json", "unreadable"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"metrics": {"AP": 0.1}}), "'AP50' missing"),
])
def test_corrupt_results_are_reported_not_raised(tmp_path, content, problem):
    d = run_dir(tmp_path, "smoke", "bad")
    d.mkdir(parents=True)
    (d / "result.json").write_text(content)
    record = read_run(tmp_path, "smoke", "bad")
    assert record.state == CORRUPT and problem in record.problem


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.json"
    atomic_write_text(path, "old")

    def half_then_crash(handle):
        handle.write(b"new but partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"], "no temporary file left behind"


def test_metrics_reader_skips_torn_lines(tmp_path):
    append_metrics(tmp_path, {"iter": 1})
    append_metrics(tmp_path, {"iter": 2})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"iter": 3, "lo')  # a crash mid-line
    records, problem = read_metrics(tmp_path)
    assert [r["iter"] for r in records] == [1, 2]
    assert "skipped 1" in problem


def test_write_result_rejects_wrong_stat_count(tmp_path):
    with pytest.raises(ValueError, match="12 COCOeval stats"):
        write_result(tmp_path, run_id="r", profile="smoke", engine="native", toy_scale=True, split="minival", stats=[0.1])
