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
    assert any(line.startswith("table4") and " 36 " in line and "0/15" in line for line in lines)  # 5 rows x 3 seeds
    assert "toy scale" in result.output and "runs counted at 3 seed(s)" in result.output
    one_seed = run_cli("list", "--seeds", "1").output.splitlines()
    assert any(line.startswith("table4") and "0/5" in line for line in one_seed)


def test_list_counts_done_runs(run_cli, tmp_path, catalogue, smoke):
    exp = catalogue["table3"]
    finish_run(tmp_path / "results", smoke, exp, exp.row("ATSS + QFL + DFL"))
    finish_run(tmp_path / "results", smoke, exp, exp.row("ATSS + QFL + DFL"), seed=1)
    out = run_cli("list").output.splitlines()
    assert any(line.startswith("table3") and "2/12" in line for line in out)
    assert any(line.startswith("table2b") and "2/12" in line for line in out)  # the shared GFL runs


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
    assert all(r["state"] == "missing" and len(r["run_id"]) == 12 and r["train"] for r in gfl)
    assert [r["name"] for r in gfl] == ["GFL (ours) R-50", "GFL (ours) R-101", "GFL (ours) X-101-32x4d",
                                         "GFL (ours) R-101-DCN", "GFL (ours) X-101-32x4d-DCN"]
    assert all(len(r["seeds"]) == 3 for r in gfl) and gfl[0]["seeds"][0]["run_id"] == gfl[0]["run_id"]
    refs = [r for r in desc["rows"] if r["reference"]]
    assert len(refs) == 31
    assert all("run_id" not in r and r["train"] is False and r["state"] == "reference, not trained" for r in refs)


def test_show_text(run_cli):
    result = run_cli("show", "table2c", "--profile", "paper")
    assert result.exit_code == 0
    assert "Table 2(c)" in result.output and "bin_width=0.5" in result.output and "AP 40.2" in result.output


def test_collect_latex_for_table2b(run_cli, tmp_path):
    result = run_cli("collect", "table2b", "--format", "latex")
    assert result.exit_code == 0, result.output
    tex = (tmp_path / "results" / "smoke" / "tables" / "table2b.tex").read_text()
    assert "40.1" in tex and "58.6" in tex and "not run" in tex and r"\toprule" in tex
    assert "table2b: 0/4 rows with results (0/12 runs, 3 seeds)" in result.output
    assert "not tested: AP flat within 0.2" in result.output and "claims rule: d = difference" in result.output


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


def test_row_selection_on_show_status_and_collect(run_cli, tmp_path, catalogue, smoke):
    exp = catalogue["table1a"]
    finish_run(tmp_path / "results", smoke, exp, exp.row("IoU-branch", "ATSS"), ap=0.31)
    show = run_cli("show", "table1a", "--row", "atss / iou-branch", "--seeds", "1", "--format", "json")
    assert show.exit_code == 0, show.output
    assert [r["name"] for r in json.loads(show.output)["rows"]] == ["ATSS / IoU-branch"]
    status = run_cli("status", "table1a", "--row", "IoU-branch", "--seeds", "2")
    lines = [line for line in status.output.splitlines() if line.startswith("table1a")]
    assert status.exit_code == 0 and len(lines) == 2 * 2 + 2  # 2 rows x 2 seeds, then one summary line per row
    assert any("ATSS / IoU-branch" in line and "1/2" in line and "31.0" in line for line in lines)
    collect = run_cli("collect", "table1a", "--row", "ATSS / IoU-branch", "--seeds", "1", "--out", str(tmp_path / "t"))
    assert collect.exit_code == 0 and "table1a: 1/1 rows with results (1/1 runs)" in collect.output
    md = (tmp_path / "t" / "table1a.md").read_text()
    assert "IoU-branch" in md and "centerness" not in md and "FCOS" not in md


def test_unknown_row_is_one_line_with_close_names(run_cli):
    result = run_cli("collect", "table1a", "--row", "ATSS / IoU-brnch")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("gfl-repro: error: no row matches --row 'ATSS / IoU-brnch'; close: 'ATSS / IoU-branch'")


def test_run_hints_repeat_the_options_used(tmp_path, catalogue, smoke):
    exp = catalogue["table3"]
    results = tmp_path / "my results"
    for name in ("ATSS + QFL", "ATSS + QFL + DFL"):  # the rows --row 'ATSS + QFL' selects, both seeds done
        for seed in range(2):
            finish_run(results, smoke, exp, exp.row(name), seed=seed)
    result = CliRunner().invoke(cli, ["--results-dir", str(results), "run", "table3", "--row", "ATSS + QFL",
                                      "--seeds", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "0 run(s) to run; skipped: done 4" in result.output
    want = f"--results-dir '{results}' {{verb}} table3 --profile smoke --seeds 2 --row 'ATSS + QFL'"
    assert f"status:  gfl-repro {want.format(verb='status')}" in result.output
    assert f"tables:  gfl-repro {want.format(verb='collect')}" in result.output


def test_report_writes_markdown_latex_and_pdf(tmp_path, catalogue, smoke):
    exp = catalogue["table3"]
    results = tmp_path / "results"
    for name in ("ATSS", "ATSS + QFL"):
        for seed in range(3):
            finish_run(results, smoke, exp, exp.row(name), ap=0.30 + 0.01 * seed, fps=9.0, seed=seed,
                       device="Test CPU")
    figures = tmp_path / "figures"
    (figures / "smoke").mkdir(parents=True)
    _write_png(figures / "smoke" / "fig5_qfl_curves.png")
    result = CliRunner().invoke(cli, ["--results-dir", str(results), "report", "--out", str(tmp_path / "rep"),
                                      "--figures-dir", str(figures)])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "TOY SCALE" in md and "## Tables" in md and md.count("### Table") == 8
    assert "![" in md and "../figures/smoke/fig5_qfl_curves.png" in md
    assert "device Test CPU (6 runs)" in md
    assert "gfl-repro --results-dir" in md and "run table3 --row 'ATSS + DFL' --profile smoke" in md
    assert "fig9 label_distributions: no fig9_label_distributions.png — gfl-repro" in md and "plot fig9" in md
    assert "fig5 distribution_shapes: no fig5_distribution_shapes.png — gfl-repro" in md
    assert "run fig5" not in md  # fig5 needs no run
    assert "inconclusive: ATSS + QFL > ATSS (AP)" in md
    tex = (tmp_path / "rep" / "report.tex").read_text()
    assert r"\includegraphics" in tex and r"\resizebox" not in tex
    if shutil.which("pdflatex"):
        assert "pdf:" in result.output and (tmp_path / "rep" / "report.pdf").stat().st_size > 10000
    else:
        assert "pdf:      not built: pdflatex is not installed" in result.output


def _write_png(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, 1])
    fig.savefig(path)
    plt.close(fig)


def test_outputs_of_another_arithmetic_sit_beside_the_plain_ones(tmp_path, catalogue, smoke):
    """collect / report of bf16 runs write table3.bf16.md and report-bf16/, never over the fp32
    table3.md and report/; each says which arithmetic its numbers come from."""
    from gfl_repro.report.figures import default_figures_dir
    from gfl_repro.specs.profiles import with_arithmetic

    results = tmp_path / "results"
    exp = catalogue["table3"]
    bf16 = with_arithmetic(smoke, "bf16")
    finish_run(results, smoke, exp, exp.row("ATSS"), ap=0.1234)
    finish_run(results, bf16, exp, exp.row("ATSS"), ap=0.0987)
    base = ["--results-dir", str(results)]
    for flags in ([], ["--precision", "bf16"]):
        for verb in (["collect", "table3"], ["report", "--figures-dir", str(tmp_path / "figures")]):
            result = CliRunner().invoke(cli, [*base, *flags, *verb])
            assert result.exit_code == 0, result.output
    tables = results / "smoke" / "tables"
    plain, other = (tables / "table3.md").read_text(), (tables / "table3.bf16.md").read_text()
    assert "| 12.3 |" in plain and "| 9.9 |" not in plain and "(smoke profile; TOY" in plain
    assert "| 9.9 |" in other and "| 12.3 |" not in other and "(smoke profile, bf16; TOY" in other
    assert "; bf16;" in (results / "smoke" / "report-bf16" / "report.md").read_text()
    assert "bf16" not in (results / "smoke" / "report" / "report.md").read_text()
    assert default_figures_dir(bf16).name == "smoke-bf16" and default_figures_dir(smoke).name == "smoke"
