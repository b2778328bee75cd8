"""Every verb through Click's CliRunner, once as the installed console script; bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import REPO, finish_run
from gfl_repro.cli import cli
from paper_tables import PAPER


@pytest.fixture
def run_cli(tmp_path):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, ["--results-dir", str(tmp_path / "results"), *args])

    return invoke


def test_list_shows_all_13_artifacts(run_cli):
    result = run_cli("list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in ["table1a", "table1b", "table1c", "table2a", "table2b", "table2c", "table3", "table4",
                 "fig2", "fig3", "fig5", "fig7", "fig9"]:
        assert any(line.startswith(name + " ") for line in lines), name
    assert any(line.startswith("table4") and " 36 " in line and "0/5" in line for line in lines)
    assert "toy scale" in result.output


def test_list_counts_done_runs(run_cli, tmp_path, catalogue, smoke):
    exp = catalogue["table3"]
    finish_run(tmp_path / "results", smoke, exp, exp.row("ATSS + QFL + DFL"))
    out = run_cli("list").output.splitlines()
    assert any(line.startswith("table3") and "1/4" in line for line in out)
    assert any(line.startswith("table2b") and "1/4" in line for line in out)  # the shared GFL run


def test_show_json_holds_every_table4_number(run_cli):
    result = run_cli("show", "table4", "--format", "json")
    assert result.exit_code == 0
    desc = json.loads(result.output)
    assert len(desc["rows"]) == 36
    got = {(r["info"]["Backbone"], r["label"]): r for r in desc["rows"]}
    for key, want in PAPER["table4"].items():
        row = got[key]
        assert row["paper"]["FPS"] == want["fps"]
        for m in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            assert row["paper"][m] == want[m], (key, m)
        assert row["info"]["Epoch"] == str(want["epochs"])
    gfl = [r for r in desc["rows"] if r["label"] == "GFL (ours)"]
    assert all(r["state"] == "missing" and len(r["run_id"]) == 12 for r in gfl)
    assert all("run_id" not in r for r in desc["rows"] if r["reference"])


def test_show_text(run_cli):
    result = run_cli("show", "table2c", "--profile", "paper")
    assert result.exit_code == 0
    assert "Table 2(c)" in result.output and "bin_width=0.5" in result.output and "AP 40.2" in result.output


def test_collect_latex_for_table2b(run_cli, tmp_path):
    result = run_cli("collect", "table2b", "--format", "latex")
    assert result.exit_code == 0, result.output
    tex = (tmp_path / "results" / "smoke" / "tables" / "table2b.tex").read_text()
    assert "40.1" in tex and "58.6" in tex and "missing" in tex and r"\toprule" in tex


def test_collect_all_tables_to_out_dir(run_cli, tmp_path):
    result = run_cli("collect", "--format", "csv", "--out", str(tmp_path / "t"))
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [
        f"{t}.csv" for t in ["table1a", "table1b", "table1c", "table2a", "table2b", "table2c", "table3", "table4"]]


@pytest.mark.parametrize("args, fragment", [
    (["show", "tabel2b"], "unknown experiment 'tabel2b' (did you mean 'table2b'?); choose from: table1a"),
    (["list", "--profile", "smok"], "unknown profile 'smok' (did you mean 'smoke'?); choose from: smoke, paper"),
    (["collect", "table2b", "--format", "latx"], "unknown format 'latx' (did you mean 'latex'?); choose from: latex, markdown, csv"),
    (["show", "table2b", "--format", "yaml"], "unknown format 'yaml'"),
    (["collect", "fig2"], "fig2 is a figure, not a table"),
    (["list", "--bogus"], "No such option"),
    (["frobnicate"], "No such command"),
])
def test_bad_input_is_one_line_exit_2(run_cli, args, fragment):
    result = run_cli(*args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gfl-repro: error: "), result.output
    assert fragment in lines[0]
    assert "Traceback" not in result.output


def test_unreadable_spec_is_one_line(tmp_path):
    bad = tmp_path / "exp"
    bad.mkdir()
    (bad / "table9.toml").write_text("[experiment\n")
    result = CliRunner().invoke(cli, ["--experiments-dir", str(bad), "list"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "table9.toml: invalid TOML" in result.output


def test_installed_console_script(tmp_path):
    script = Path(sys.executable).with_name("gfl-repro")
    exe = str(script) if script.exists() else shutil.which("gfl-repro")
    assert exe, "the gfl-repro console script is not installed"
    env = {**os.environ, "GFL_REPRO_RESULTS": str(tmp_path)}
    ok = subprocess.run([exe, "list"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert ok.returncode == 0 and "table4" in ok.stdout
    bad = subprocess.run([exe, "show", "nope"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("gfl-repro: error: unknown experiment 'nope'")
    assert "Traceback" not in bad.stderr
    col = subprocess.run([exe, "collect", "table2b", "--format", "latex"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert col.returncode == 0 and (tmp_path / "smoke" / "tables" / "table2b.tex").exists()
    assert REPO.joinpath("experiments", "table2b.toml").exists()
