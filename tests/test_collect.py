"""collect from fixture result directories: seeds, partial and corrupt runs, marks, every format."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess

import pandas as pd
import pytest

from conftest import finish_run
from gfl_repro.report.collect import NOT_IMPLEMENTED, NOT_RUN, PARTIAL, REFERENCE, UNREADABLE, claims_of, collect_table
from gfl_repro.report.tables import COLUMN_PT, latex_text, parts_of, render
from gfl_repro.specs.profiles import PROFILES
from gfl_repro.store import run_dir


def test_seeds_give_mean_and_std_beside_the_paper(tmp_path, catalogue, smoke):
    exp = catalogue["table2b"]
    for i, row in enumerate(exp.rows):
        for seed, noise in enumerate((0.0, 0.01, 0.02)):
            finish_run(tmp_path, smoke, exp, row, ap=0.30 + 0.01 * i + noise, seed=seed)
    table = collect_table(exp, smoke, tmp_path, seeds=3)
    frame = table.frame()
    ap = frame[frame["metric"] == "AP"]
    assert ap["row"].tolist() == ["n = 12", "n = 14", "n = 16", "n = 18"]
    assert ap["paper"].tolist() == [40.1, 40.2, 40.2, 40.1]
    assert ap["ours_mean"].tolist() == pytest.approx([31.0, 32.0, 33.0, 34.0])
    assert ap["ours_std"].tolist() == pytest.approx([1.0] * 4)
    assert ap["delta"].tolist() == pytest.approx([-9.1, -8.2, -7.2, -6.1])
    assert (ap["seeds_done"] == 3).all() and (ap["state"] == "done").all()
    assert ap["ours_values"].iloc[0] == "30.00;31.00;32.00"
    md, _ = render(table, "markdown")
    assert "| n = 12 | 1 | 40.1 |  | 58.4 |" in md  # the n column is dropped: the label says it
    assert "| ↳ ours |  | 31.0 ± 1.0 | −9.1 |" in md


def test_partial_seeds_missing_corrupt_and_not_implemented(tmp_path, catalogue, smoke, monkeypatch):
    import gfl_repro.report.collect as collect_module

    def native_has_no_fcos_iou_branch(config):  # every row runs natively today: pretend one does not
        if (config.detector, config.quality) == ("fcos", "iou"):
            raise ValueError("FCOS with quality = 'iou' is not in the native engine yet")

    monkeypatch.setattr(collect_module, "check_runnable", native_has_no_fcos_iou_branch)
    exp = catalogue["table1a"]
    finish_run(tmp_path, smoke, exp, exp.row("IoU-branch", "ATSS"), ap=0.25, seed=0)
    broken = finish_run(tmp_path, smoke, exp, exp.row("IoU-guided", "ATSS"), ap=0.2)
    (run_dir(tmp_path, "smoke", broken) / "result.json").write_text("{oops")
    table = collect_table(exp, smoke, tmp_path, seeds=2)
    by_name = {r.row.display: r for r in table.rows}
    assert by_name["ATSS / IoU-branch"].state == PARTIAL and by_name["ATSS / IoU-branch"].seeds_done == 1
    assert by_name["ATSS / IoU-guided"].state == UNREADABLE
    assert by_name["ATSS / w/o quality branch"].state == NOT_RUN
    assert by_name["FCOS / IoU-branch"].state == NOT_IMPLEMENTED and "FCOS" in by_name["FCOS / IoU-branch"].reason
    assert len(table.problems) == 1 and broken in table.problems[0]
    md, _ = render(table, "markdown")
    assert "↳ ours (1/2)" in md and "*not run*" in md and "*not implemented (FCOS" in md and "*unreadable*" in md
    assert table.runs_done == 1 and table.runs_asked == 24


def test_reference_rows_have_no_ours_line_and_keep_footnotes(tmp_path, catalogue, smoke):
    table = collect_table(catalogue["table4"], smoke, tmp_path, seeds=1)
    assert sum(r.state == REFERENCE for r in table.rows) == 31
    md, _ = render(table, "markdown")
    assert md.count("↳ ours") == 5  # only the five GFL runs
    assert "| TridentNet | R-101 | 24 | ✓ | ICCV19 | 2.7* |" in md
    assert "| CentripetalNet | HG-104 | 210 | ✓ | CVPR20 | n/a |" in md
    assert "* FPS taken from SAPD [33]." in md
    frame = table.frame()
    fps = frame[(frame["row"] == "TridentNet") & (frame["metric"] == "FPS")]
    assert fps["paper_note"].tolist() == ["FPS taken from SAPD [33]"] * 2


def test_fps_names_its_device_and_gets_no_delta_nor_bold(tmp_path, catalogue, smoke):
    exp = catalogue["table3"]
    finish_run(tmp_path, smoke, exp, exp.row("ATSS + QFL + DFL"), ap=0.35, fps=12.5, device="Test CPU A")
    finish_run(tmp_path, smoke, exp, exp.row("ATSS"), ap=0.30, fps=13.0, device="Test CPU B")
    table = collect_table(exp, smoke, tmp_path, seeds=1)
    md, _ = render(table, "markdown")
    assert "13.0†" in md and "12.5‡" in md and "**13.0" not in md  # marks in row order
    assert "† Test CPU B" in md and "‡ Test CPU A" in md
    assert "**35.0**" in md  # the best AP is bold
    frame = table.frame()
    fps = frame[frame["metric"] == "FPS"]
    assert fps["delta"].isna().all() and fps["device"].tolist()[0] == "Test CPU B"
    assert "ΔFPS" not in md


def test_csv_is_long_and_machine_readable(tmp_path, catalogue, smoke):
    exp = catalogue["table3"]
    finish_run(tmp_path, smoke, exp, exp.row("ATSS + QFL + DFL"), ap=0.35, fps=12.5)
    csv, ext = render(collect_table(exp, smoke, tmp_path, seeds=1), "csv")
    parsed = pd.read_csv(io.StringIO(csv))
    assert ext == "csv" and len(parsed) == 4 * 4  # rows x metrics
    assert (parsed["profile"] == "smoke").all() and parsed["toy_scale"].all()
    ap = parsed[(parsed["row"] == "ATSS + QFL + DFL") & (parsed["metric"] == "AP")]
    assert ap["ours_mean"].item() == pytest.approx(35.0) and ap["paper"].item() == 40.2
    assert {"QFL", "DFL", "seeds_done", "seeds_asked", "within_tolerance", "evaluated_on"} <= set(parsed.columns)


def test_paper_profile_tolerance_and_test_dev_label(tmp_path, catalogue):
    paper = PROFILES["paper"]
    exp = catalogue["table4"]
    finish_run(tmp_path, paper, exp, exp.by_name("GFL (ours) R-50"), ap=0.432, evaluated_on="val2017")
    finish_run(tmp_path, paper, exp, exp.by_name("GFL (ours) R-101"), ap=0.440, evaluated_on="val2017")
    table = collect_table(exp, paper, tmp_path, seeds=1)
    assert "ours on val2017 (test-dev via the server)" in table.caption and "TOY" not in table.caption
    md, _ = render(table, "markdown")
    assert "+0.1 ✓" in md and "−1.0 ✗" in md
    assert "within: GFL (ours) R-50 (ours 43.2, paper 43.1)" in md
    assert "outside: GFL (ours) R-101 (ours 44.0, paper 45.0)" in md
    frame = table.frame()
    ap = frame[(frame["metric"] == "AP") & frame["ours_mean"].notna()]
    assert ap["within_tolerance"].tolist() == [True, False]


def test_claims_are_judged_over_the_seeds(tmp_path, catalogue, smoke):
    exp = catalogue["table3"]
    means = {"ATSS": 0.30, "ATSS + QFL": 0.33, "ATSS + DFL": 0.295, "ATSS + QFL + DFL": 0.34}
    for name, ap in means.items():
        for seed, noise in enumerate((-0.002, 0.0, 0.002)):
            finish_run(tmp_path, smoke, exp, exp.row(name), ap=ap + noise, seed=seed)
    verdicts = {v.claim.text: v for v in claims_of(collect_table(exp, smoke, tmp_path, seeds=3))}
    assert verdicts["ATSS + QFL > ATSS (AP)"].verdict == "reproduced"
    assert verdicts["ATSS + DFL > ATSS (AP)"].verdict == "contradicted"  # -0.5 AP with SE 0.16
    assert verdicts["ATSS + QFL + DFL > ATSS + QFL (AP)"].verdict == "reproduced"
    assert "d = +3.00, SE 0.16" in verdicts["ATSS + QFL > ATSS (AP)"].detail
    one_seed = claims_of(collect_table(exp, smoke, tmp_path, seeds=1))
    assert {v.verdict for v in one_seed} == {"inconclusive"}  # no noise estimate from one seed


def test_figures_are_not_tables(catalogue, smoke, tmp_path):
    with pytest.raises(ValueError, match="plot fig2"):
        collect_table(catalogue["fig2"], smoke, tmp_path)


def test_latex_escaping():
    assert latex_text("w/ QFL & 50%") == r"w/ QFL \& 50\%"
    assert latex_text("Δ") == r"$\Delta$" and latex_text("AP50") == "AP$_{50}$"
    assert latex_text("a > b") == "a $>$ b"


def test_wide_tables_are_split_not_scaled(tmp_path, catalogue, smoke):
    exp = catalogue["table4"]
    for row in exp.rows:
        if row.is_run:
            for seed in range(3):
                finish_run(tmp_path, smoke, exp, row, ap=0.3 + 0.01 * seed, fps=10.0 + seed, seed=seed)
    table = collect_table(exp, smoke, tmp_path, seeds=3)
    parts = parts_of(table, COLUMN_PT)
    assert len(parts) >= 2 and [m for p in parts for m in p.metrics] == list(exp.metrics)
    assert all(p.info_columns[:1] == ("Backbone",) for p in parts)
    tex, _ = render(table, "latex")
    assert r"\resizebox" not in tex and tex.count(r"\begin{tabular}") == len(parts) and r"\footnotesize" in tex


def _pdflatex_or_skip():
    if shutil.which("pdflatex"):
        return
    if os.environ.get("CI"):
        pytest.fail("pdflatex is required in CI (scripts/setup.sh installs it)")
    pytest.skip("pdflatex is not installed on this machine (scripts/setup.sh installs it with apt-get)")


def _compile(tmp_path, body: str) -> str:
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs,amssymb,graphicx}\n"
                   f"\\begin{{document}}\n{body}\n\\end{{document}}\n", encoding="utf-8")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
    return (tmp_path / "doc.log").read_text(errors="replace")


@pytest.mark.parametrize("name", ["table1a", "table1b", "table1c", "table2a", "table2b", "table2c", "table3", "table4"])
def test_latex_compiles_at_8pt_within_an_article_column(tmp_path, catalogue, smoke, name):
    """Every row done over 3 seeds (the widest cells): no overfull box in a 10 pt article."""
    _pdflatex_or_skip()
    exp = catalogue[name]
    for i, row in enumerate(exp.rows):
        if row.is_run:
            for seed in range(3):
                finish_run(tmp_path / "results", smoke, exp, row, ap=0.3 + 0.013 * i + 0.011 * seed,
                           fps=10.0 + seed, seed=seed)
    tex, _ = render(collect_table(exp, smoke, tmp_path / "results", seeds=3), "latex")
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    if exp.groups:
        captions = re.findall(r"\\caption\{([^}]*)\}", tex)
        assert any("FCOS" in c for c in captions) and any("ATSS" in c for c in captions)  # a part per detector
    log = _compile(tmp_path, tex)
    assert not re.search(r"Overfull \\hbox", log), re.findall(r"Overfull \\hbox \(([0-9.]+pt)", log)
