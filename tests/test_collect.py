"""collect from fixture result directories: complete, partial and corrupt; every format."""

from __future__ import annotations

import math
import os
import shutil
import subprocess

import pandas as pd
import pytest

from conftest import finish_run
from gfl_repro.report.collect import OURS, PAPER, collect_table, latex_text, render
from gfl_repro.store import run_dir


def test_complete_table_puts_paper_and_reproduced_side_by_side(tmp_path, catalogue, smoke):
    exp = catalogue["table2b"]
    for i, row in enumerate(exp.rows):
        finish_run(tmp_path, smoke, exp, row, ap=0.30 + 0.01 * i)
    frame = collect_table(exp, smoke, tmp_path).frame
    assert list(frame.index.get_level_values(0)) == ["n = 12", "n = 14", "n = 16", "n = 18"]
    assert frame[("AP", PAPER)].tolist() == [40.1, 40.2, 40.2, 40.1]
    assert frame[("AP", OURS)].tolist() == pytest.approx([30.0, 31.0, 32.0, 33.0])
    assert frame[("AP", "Δ")].tolist() == pytest.approx([-10.1, -9.2, -8.2, -7.1])
    assert frame[("AP50", OURS)].tolist() == pytest.approx([50.0, 51.0, 52.0, 53.0])
    assert (frame[("run", "")] == "done").all()


def test_partial_and_corrupt_runs_show_as_such(tmp_path, catalogue, smoke):
    exp = catalogue["table1a"]
    rid = finish_run(tmp_path, smoke, exp, exp.row("IoU-branch", "ATSS"), ap=0.25)
    broken = finish_run(tmp_path, smoke, exp, exp.row("IoU-guided", "FCOS"), ap=0.2)
    (run_dir(tmp_path, "smoke", broken) / "result.json").write_text("{oops")
    table = collect_table(exp, smoke, tmp_path)
    frame = table.frame
    assert frame.loc["IoU-branch", ("ATSS", "AP", OURS)] == pytest.approx(25.0)
    assert frame.loc["IoU-branch", ("ATSS", "run", "")] == "done"
    assert math.isnan(frame.loc["IoU-branch", ("FCOS", "AP", OURS)])
    assert frame.loc["IoU-branch", ("FCOS", "run", "")] == "missing"
    assert frame.loc["IoU-guided", ("FCOS", "run", "")] == "corrupt"
    assert len(table.problems) == 1 and broken in table.problems[0]
    assert frame.loc["joint w/ QFL (ours)", ("ATSS", "AP", PAPER)] == 39.9
    assert rid  # the finished run is the one read back


def test_reference_rows_keep_paper_numbers(tmp_path, catalogue, smoke):
    frame = collect_table(catalogue["table4"], smoke, tmp_path).frame
    assert len(frame) == 36
    ref = frame.xs(("one-stage", "ATSS", "R-101"), level=("section", "row", "Backbone"))
    assert ref[("AP", PAPER)].item() == 43.6 and ref[("run", "")].item() == "reference"
    fps = frame.xs(("CentripetalNet",), level=("row",))[("FPS", PAPER)].item()
    assert math.isnan(fps)  # printed as n/a


def test_figures_are_not_tables(catalogue, smoke, tmp_path):
    with pytest.raises(ValueError, match="plot fig2"):
        collect_table(catalogue["fig2"], smoke, tmp_path)


def test_markdown_and_csv(tmp_path, catalogue, smoke):
    exp = catalogue["table3"]
    finish_run(tmp_path, smoke, exp, exp.row("ATSS + QFL + DFL"), ap=0.35, fps=12.5)
    finish_run(tmp_path, smoke, exp, exp.row("ATSS"), ap=0.30, fps=13.0)
    table = collect_table(exp, smoke, tmp_path)
    md, ext = render(table, "markdown")
    assert ext == "md" and "TOY SCALE" in md
    assert "**35.0**" in md and "**13.0**" in md  # best reproduced AP and FPS in bold
    assert "| ATSS + QFL + DFL | ✓     | ✓     | 19.4" in md
    csv, ext = render(table, "csv")
    parsed = pd.read_csv(__import__("io").StringIO(csv))
    assert ext == "csv" and (parsed["profile"] == "smoke").all() and parsed["toy_scale"].all()
    assert parsed.loc[parsed["row"] == "ATSS + QFL + DFL", "AP_ours"].item() == pytest.approx(35.0)


def test_latex_escaping():
    assert latex_text("w/ QFL & 50%") == r"w/ QFL \& 50\%"
    assert latex_text("Δ") == r"$\Delta$" and latex_text("AP50") == "AP$_{50}$"


def _pdflatex_or_skip():
    if shutil.which("pdflatex"):
        return
    if os.environ.get("CI"):
        pytest.fail("pdflatex is required in CI (scripts/setup.sh installs it)")
    pytest.skip("pdflatex is not installed on this machine (scripts/setup.sh installs it with apt-get)")


@pytest.mark.parametrize("name", ["table1a", "table2b", "table3", "table4"])
def test_latex_compiles_with_pdflatex(tmp_path, catalogue, smoke, name):
    _pdflatex_or_skip()
    exp = catalogue[name]
    for row in exp.rows[:2]:
        if row.is_run:
            finish_run(tmp_path / "results", smoke, exp, row, ap=0.3, fps=10.0)
    tex, _ = render(collect_table(exp, smoke, tmp_path / "results"), "latex")
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    if exp.groups:
        assert r"\multicolumn{" in tex and "{FCOS}" in tex and "{ATSS}" in tex
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs,amssymb,graphicx}\n"
                   f"\\begin{{document}}\n{tex}\n\\end{{document}}\n", encoding="utf-8")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
