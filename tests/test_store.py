"""The results store: atomic writes, completion marker, readers that never crash."""

from __future__ import annotations

import json
import os
import stat

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


@pytest.mark.parametrize("umask, mode", [(0o027, 0o640), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask_so_a_group_can_read_them(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "result.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == mode


def test_a_result_json_that_does_not_parse_is_corrupt_for_the_launcher_too(tmp_path):
    from gfl_repro.launch.state import run_state, set_aside_corrupt_result

    d = run_dir(tmp_path, "smoke", "r")
    write_result(d, run_id="r", profile="smoke", engine="native", toy_scale=True, split="minival", stats=[0.1] * 12)
    assert run_state(d).state == DONE
    text = (d / "result.json").read_text()
    (d / "result.json").write_text(text[: len(text) // 2])  # truncated
    state = run_state(d)
    assert state.state == CORRUPT and "result.json: unreadable" in state.detail
    assert read_run(tmp_path, "smoke", "r").state == CORRUPT
    kept = set_aside_corrupt_result(d)
    assert kept.name == "result.json.corrupt" and run_state(d).state == MISSING
