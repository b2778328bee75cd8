"""`gfl-repro report`: one document with every table, figure, claim and verdict (pure: reads
result, environment and figure files; writes the document).

It writes ``report.md`` (reads on a code-hosting page), ``report.tex`` and, when ``pdflatex``
is installed, ``report.pdf``. Contents: the profile (toy scale said plainly), the claims'
verdicts at a glance, the versions and devices the runs recorded, every table in the paper's
layout with its claims, every figure that exists under ``figures/<profile>/`` (the files
`gfl-repro plot` writes: ``<experiment>_<artifact>.png``, ``.pdf`` beside it), and what is
missing with the command that fills it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..specs.catalogue import load_catalogue
from ..specs.profiles import Profile
from ..specs.spec import Experiment
from ..store import ENV_FILE, RESULT_FILE, atomic_write_text, run_dir
from .claims import RULE
from .collect import NOT_IMPLEMENTED, NOT_RUN, PARTIAL, REFERENCE, UNREADABLE, CollectedTable, claims_of, collect_table
from .tables import latex_text, to_latex, to_markdown

LATEX_TIMEOUT_S = 300


class ReportError(RuntimeError):
    """pdflatex could not build the PDF (message: one line and where the log is)."""


@dataclass(frozen=True)
class Figure:
    experiment: Experiment
    artifact: str
    png: Path
    pdf: Path

    @property
    def exists(self) -> bool:
        return self.png.is_file()


@dataclass
class Report:
    markdown: Path
    latex: Path
    pdf: Path | None  # None when pdflatex is not installed
    tables: list[CollectedTable] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # "what — command"


def figures_of(catalogue: dict[str, Experiment], figures_dir: Path, profile: Profile) -> list[Figure]:
    """Every figure artifact of the catalogue and where `gfl-repro plot` puts it."""
    base = Path(figures_dir) / profile.tagged_name
    return [Figure(exp, art.name, base / f"{exp.id}_{art.name}.png", base / f"{exp.id}_{art.name}.pdf")
            for exp in catalogue.values() if exp.kind == "figure" for art in exp.artifacts]


def _flags(profile: Profile, engine: str, seeds: int, global_flags: str) -> str:
    flags = f" --profile {profile.name}" + (f" --engine {engine}" if engine != "native" else "")
    flags += f" --seeds {seeds}" if seeds != profile.default_seeds else ""
    return (f" {global_flags}" if global_flags else "") + "{verb}" + flags


def missing_items(tables: list[CollectedTable], figures: list[Figure], profile: Profile, engine: str, seeds: int,
                  global_flags: str = "") -> list[str]:
    """What is missing, one line each with the command that fills it."""
    pattern = _flags(profile, engine, seeds, global_flags)
    out = []
    for table in tables:
        exp = table.experiment
        todo = [r for r in table.rows if r.state in (NOT_RUN, PARTIAL, UNREADABLE)]
        trained = [r for r in table.rows if r.state != REFERENCE]
        if todo and len(todo) == len([r for r in trained if r.state != NOT_IMPLEMENTED]):
            command = "gfl-repro" + pattern.replace("{verb}", " run " + exp.id)
            out.append(f"{exp.id}: {len(todo)} row(s) without every seed — {command}")
        else:
            for r in todo:
                verb = f" run {exp.id} --row {shlex.quote(r.row.display)}"
                out.append(f"{exp.id} / {r.row.display}: {r.seeds_done}/{r.seeds_asked} seeds — "
                           f"gfl-repro{pattern.replace('{verb}', verb)}")
        for r in table.rows:
            if r.state == NOT_IMPLEMENTED:
                out.append(f"{exp.id} / {r.row.display}: not implemented ({r.reason}); no command fills it yet")
    for fig in figures:
        if not fig.exists:
            plot = f"gfl-repro{pattern.replace('{verb}', ' plot ' + fig.experiment.id)}"
            needs_runs = bool(fig.experiment.runs(profile, engine)) or bool(fig.experiment.uses)
            needed = " ".join(fig.experiment.uses or (fig.experiment.id,))
            run = "gfl-repro" + pattern.replace("{verb}", " run " + needed) + " && "
            out.append(f"{fig.experiment.id} {fig.artifact}: no {fig.png.name} — {run if needs_runs else ''}{plot}")
    return out


def environments(tables: list[CollectedTable], results_root: Path, profile: Profile) -> list[str]:
    """Distinct (versions, device) the done runs recorded, with how many runs each."""
    seen: Counter[str] = Counter()
    for table in tables:
        for r in table.rows:
            for rid in r.run_ids:
                directory = run_dir(results_root, profile.name, rid)
                if not (directory / RESULT_FILE).is_file():
                    continue
                env = _read_json(directory / ENV_FILE)
                result = _read_json(directory / RESULT_FILE)
                parts = [f"{k} {env[k]}" for k in ("gfl_repro", "python", "torch", "torchvision") if env.get(k)]
                if result.get("mmdet"):
                    parts.append(f"mmdet {result['mmdet']}")
                parts.append(f"engine {result.get('engine', '?')}")
                parts.append(f"device {result.get('device') or env.get('device_name') or 'unknown'}")
                seen[rid + "\0" + ", ".join(parts)] = 1
    counts = Counter(key.split("\0", 1)[1] for key in seen)
    return [f"{text} ({n} run{'s' if n != 1 else ''})" for text, n in counts.most_common()]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _profile_text(profile: Profile, seeds: int, engine: str) -> str:
    scale = ("TOY SCALE: these numbers show that the pipeline works; they are not comparable with the paper's "
             "COCO numbers."
             if profile.toy_scale else "The paper's settings on COCO 2017.")
    how = "".join(f"; {tag}" for tag in profile.arithmetic_tags)
    return (f"Profile `{profile.name}` ({profile.description}){how}; {seeds} seed(s) per row; {engine} engine. "
            f"{scale}")


def _glance(tables: list[CollectedTable]) -> list[tuple[str, str, str]]:
    """(table, runs done, verdict counts) per table."""
    rows = []
    for t in tables:
        counts = Counter(v.verdict for v in claims_of(t))
        text = ", ".join(f"{n} {verdict}" for verdict, n in counts.most_common()) or "no claims"
        rows.append((t.experiment.paper_ref, f"{t.runs_done}/{t.runs_asked}", text))
    return rows


def render_markdown(report: Report, profile: Profile, seeds: int, engine: str, envs: list[str],
                    out_dir: Path) -> str:
    lines = ["# Generalized Focal Loss: reproduction report", "", _profile_text(profile, seeds, engine), "",
             "## At a glance", "", "| table | runs done | claims |", "|:---|---:|:---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in _glance(report.tables)]
    lines += ["", f"Claims rule: {RULE}.", "", "## Versions and devices", ""]
    lines += [f"- {e}" for e in envs] or ["- no run is done yet"]
    lines += ["", "## Tables", ""]
    for table in report.tables:
        lines += [to_markdown(table, heading="###"), ""]
    lines += ["## Figures", ""]
    for fig in report.figures:
        if fig.exists:
            rel = os.path.relpath(fig.png, out_dir)
            lines += [f"### {fig.experiment.paper_ref}: {fig.artifact}", "", f"![{fig.experiment.title}]({rel})", ""]
    if not any(f.exists for f in report.figures):
        lines += ["No figure has been drawn yet (see below).", ""]
    lines += ["## Missing", ""] + ([f"- {m}" for m in report.missing] or ["Nothing: every run and figure is there."])
    return "\n".join(lines) + "\n"


def render_latex(report: Report, profile: Profile, seeds: int, engine: str, envs: list[str], out_dir: Path) -> str:
    lines = [r"\documentclass[10pt]{article}", r"\usepackage{booktabs,amssymb,graphicx}",
             r"\title{Generalized Focal Loss: reproduction report}", r"\date{}", r"\begin{document}", r"\maketitle",
             latex_text(_profile_text(profile, seeds, engine).replace("`", "")), "",
             r"\section*{At a glance}", r"\begin{tabular}{lrl}", r"\toprule", r"table & runs done & claims \\",
             r"\midrule"]
    lines += [f"{latex_text(a)} & {latex_text(b)} & {latex_text(c)} \\\\" for a, b, c in _glance(report.tables)]
    lines += [r"\bottomrule", r"\end{tabular}", "", r"\smallskip", r"{\footnotesize Claims rule: " + latex_text(RULE)
              + ".}", r"\section*{Versions and devices}", r"\begin{itemize}\footnotesize"]
    lines += [rf"\item {latex_text(e)}" for e in envs] or [r"\item no run is done yet"]
    lines += [r"\end{itemize}", r"\clearpage", r"\section*{Tables}"]
    for table in report.tables:
        lines += [to_latex(table), r"\clearpage"]
    lines.append(r"\section*{Figures}")
    for fig in report.figures:
        if fig.exists:
            image = fig.pdf if fig.pdf.is_file() else fig.png
            rel = os.path.relpath(image, out_dir).replace(os.sep, "/")
            lines += [r"\begin{figure}[htbp]", r"\centering", rf"\includegraphics[width=\linewidth]{{{rel}}}",
                      rf"\caption{{{latex_text(fig.experiment.paper_ref + ': ' + fig.experiment.title)}}}",
                      r"\end{figure}"]
    if not any(f.exists for f in report.figures):
        lines.append("No figure has been drawn yet (see below).")
    lines += [r"\clearpage", r"\section*{Missing}", r"\begin{itemize}\footnotesize\raggedright"]
    lines += [rf"\item {latex_text(m)}" for m in report.missing] or [r"\item Nothing: every run and figure is there."]
    lines += [r"\end{itemize}", r"\end{document}"]
    return "\n".join(lines) + "\n"


def compile_pdf(tex: Path) -> Path | None:
    """``pdflatex`` the document in its directory; None when pdflatex is not installed."""
    exe = shutil.which("pdflatex")
    if exe is None:
        return None
    proc = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", tex.name], cwd=tex.parent,
                          capture_output=True, text=True, timeout=LATEX_TIMEOUT_S)
    pdf = tex.with_suffix(".pdf")
    if proc.returncode != 0 or not pdf.is_file():
        errors = [line for line in proc.stdout.splitlines() if line.startswith("!")]
        raise ReportError(f"pdflatex failed on {tex} ({errors[0] if errors else 'see ' + str(tex.with_suffix('.log'))})")
    return pdf


def build_report(profile: Profile, results_root: Path, out_dir: Path, figures_dir: Path,
                 experiments_dir: Path | None = None, engine: str = "native", seeds: int | None = None,
                 global_flags: str = "", pdf: bool = True) -> Report:
    """Write report.md and report.tex (and report.pdf with ``pdf`` when pdflatex exists) to ``out_dir``."""
    seeds = seeds or profile.default_seeds
    catalogue = load_catalogue(experiments_dir)
    out_dir = Path(out_dir)
    tables = [collect_table(e, profile, results_root, engine, seeds) for e in catalogue.values() if e.kind == "table"]
    figures = figures_of(catalogue, figures_dir, profile)
    report = Report(out_dir / "report.md", out_dir / "report.tex", None, tables, figures,
                    missing_items(tables, figures, profile, engine, seeds, global_flags))
    envs = environments(tables, results_root, profile)
    atomic_write_text(report.markdown, render_markdown(report, profile, seeds, engine, envs, out_dir))
    atomic_write_text(report.latex, render_latex(report, profile, seeds, engine, envs, out_dir))
    if pdf:
        report.pdf = compile_pdf(report.latex)
    return report


__all__ = ["Figure", "Report", "ReportError", "build_report", "compile_pdf", "figures_of", "missing_items"]
