"""collect: result files -> pandas tables beside the paper's numbers (pure; reads files only).

For every table row and printed metric the frame holds three columns: the paper's number,
the reproduced one and their difference (reproduced - paper). Runs that are missing,
unfinished or corrupt leave their cells empty (NaN) and say so in the row's ``run``
column; they are never an error. Renderers turn one frame into LaTeX (pandas Styler,
booktabs, grouped headers, best reproduced value in bold), Markdown or CSV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..engines.mmdet.config import shown_state
from ..specs.profiles import Profile
from ..specs.run_config import run_id as config_run_id
from ..specs.spec import Experiment
from ..store import read_run

PAPER, OURS, DIFF = "paper", "ours", "Δ"
RUN = "run"
LABEL = "row"  # index level of the printed row label
REFERENCE = "reference"


@dataclass(frozen=True)
class CollectedTable:
    experiment: Experiment
    profile: Profile
    frame: pd.DataFrame  # index: [section], label, info columns; columns: ([group], metric, kind)
    problems: tuple[str, ...]  # one line per corrupt or unreadable run
    engine: str = "native"  # which implementation trained the reproduced runs

    @property
    def caption(self) -> str:
        exp = self.experiment
        scale = (
            "TOY SCALE: reproduced on synthetic data with tiny models; not comparable with the paper's COCO numbers"
            if self.profile.toy_scale
            else f"reproduced on COCO {exp.split}"
        )
        engine = "" if self.engine == "native" else f", {self.engine} engine"
        return f"{exp.paper_ref}: {exp.title}. Paper vs reproduced ({self.profile.name} profile{engine}; {scale})."


def collect_table(experiment: Experiment, profile: Profile, results_root: Path,
                  engine: str = "native") -> CollectedTable:
    """Build the paper-vs-reproduced frame of one table experiment from result files
    (the runs ``engine`` trained)."""
    if experiment.kind != "table":
        raise ValueError(f"{experiment.id} is a figure; use `gfl-repro plot {experiment.id}`")
    has_sections = any(r.section for r in experiment.rows)
    groups = experiment.groups or (None,)
    labels = list(dict.fromkeys((r.section, r.label, tuple(r.info.get(c, "") for c in experiment.info_columns)) for r in experiment.rows))

    cells: dict[tuple, dict[tuple, object]] = {key: {} for key in labels}
    problems: list[str] = []
    for row in experiment.rows:
        key = (row.section, row.label, tuple(row.info.get(c, "") for c in experiment.info_columns))
        prefix = (row.group,) if experiment.groups else ()
        if row.reference:
            state, record = REFERENCE, None
        else:
            config = experiment.resolve(row, profile, engine)
            rid = config_run_id(config)
            record = read_run(results_root, profile.name, rid)
            state = shown_state(config, record.state)
            if record.problem and record.state != "incomplete":
                problems.append(f"{experiment.id} / {row.display} ({rid}): {record.problem}")
        for metric in experiment.metrics:
            paper = row.paper.get(metric)
            ours = record.metric(metric) if record is not None else None
            cells[key][prefix + (metric, PAPER)] = _nan(paper)
            cells[key][prefix + (metric, OURS)] = _nan(ours)
            cells[key][prefix + (metric, DIFF)] = _nan(None if paper is None or ours is None else ours - paper)
        cells[key][prefix + (RUN, "")] = state

    columns = []
    for group in groups:
        prefix = (group,) if experiment.groups else ()
        columns += [prefix + (m, k) for m in experiment.metrics for k in (PAPER, OURS, DIFF)]
        columns.append(prefix + (RUN, ""))
    names = (["group"] if experiment.groups else []) + ["metric", "value"]
    frame = pd.DataFrame(
        [[cells[key].get(col, math.nan if col[-2] != RUN else "") for col in columns] for key in labels],
        columns=pd.MultiIndex.from_tuples(columns, names=names),
    )
    index_levels = []
    if has_sections:
        index_levels.append(("section", [k[0] or "" for k in labels]))
    index_levels.append((LABEL, [k[1] for k in labels]))
    for i, col in enumerate(experiment.info_columns):
        index_levels.append((col, [k[2][i] for k in labels]))
    if len(index_levels) == 1:
        frame.index = pd.Index(index_levels[0][1], name=LABEL)
    else:
        frame.index = pd.MultiIndex.from_arrays([v for _, v in index_levels], names=[n for n, _ in index_levels])
    return CollectedTable(experiment, profile, frame, tuple(problems), engine)


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


# ------------------------------------------------------------------------------ rendering


def value_columns(frame: pd.DataFrame, kind: str) -> list[tuple]:
    return [c for c in frame.columns if c[-1] == kind]


def _format_cell(value: object, kind: str) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.1f}" if kind == DIFF else f"{value:.1f}"


def _best_rows(frame: pd.DataFrame) -> dict[tuple, set[int]]:
    """Positions of the best (highest) reproduced value of every `ours` column."""
    best: dict[tuple, set[int]] = {}
    for col in value_columns(frame, OURS):
        values = pd.to_numeric(frame[col], errors="coerce")
        if values.notna().any():
            top = values.max()
            best[col] = {i for i, v in enumerate(values) if v == top}
    return best


def to_markdown(table: CollectedTable) -> str:
    frame = table.frame
    best = _best_rows(frame)
    shown = frame.copy().astype(object)
    for j, col in enumerate(frame.columns):
        for i, value in enumerate(frame[col]):
            text = _format_cell(value, col[-1])
            if i in best.get(col, ()):
                text = f"**{text}**"
            shown.iat[i, j] = text
    shown.columns = [" ".join(str(part) for part in col if part) for col in frame.columns]
    shown = shown.reset_index()
    body = shown.to_markdown(index=False, disable_numparse=True)
    return f"**{table.caption}**\n\n{body}\n"


def to_csv(table: CollectedTable) -> str:
    flat = table.frame.copy()
    flat.columns = ["_".join(str(part) for part in col if part) for col in flat.columns]
    flat = flat.reset_index()
    flat.insert(0, "profile", table.profile.name)
    flat.insert(1, "toy_scale", table.profile.toy_scale)
    return flat.to_csv(index=False, float_format="%.2f")


_LATEX_SYMBOLS = {
    "Δ": r"$\Delta$",
    "β": r"$\beta$",
    "✓": r"$\checkmark$",
    "–": "--",
    "y_n": r"$y_n$",
    "≤": r"$\leq$",
}
_LATEX_METRICS = {"AP50": "AP$_{50}$", "AP75": "AP$_{75}$", "APs": "AP$_S$", "APm": "AP$_M$", "APl": "AP$_L$"}


def latex_text(text: str) -> str:
    """Escape plain text for LaTeX and spell the paper's symbols in math mode."""
    if text in _LATEX_METRICS:
        return _LATEX_METRICS[text]
    if text in _LATEX_SYMBOLS:
        return _LATEX_SYMBOLS[text]
    out = []
    for ch in text:
        if ch in "&%$#_{}":
            out.append("\\" + ch)
        elif ch == "~":
            out.append(r"\textasciitilde{}")
        elif ch == "^":
            out.append(r"\textasciicircum{}")
        elif ch == "\\":
            out.append(r"\textbackslash{}")
        else:
            out.append(_LATEX_SYMBOLS.get(ch, ch))
    return "".join(out)


LATEX_PACKAGES = ("booktabs", "amssymb", "graphicx")
LATEX_PREAMBLE_NOTE = "needs \\usepackage{" + ",".join(LATEX_PACKAGES) + "}"


def to_latex(table: CollectedTable) -> str:
    """A booktabs table through pandas Styler; needs only booktabs and amssymb."""
    frame = table.frame.copy()
    best = _best_rows(frame)
    shown = frame.astype(object)
    for j, col in enumerate(frame.columns):
        for i, value in enumerate(frame[col]):
            text = latex_text(_format_cell(value, col[-1]))
            if i in best.get(col, ()):
                text = rf"\textbf{{{text}}}"
            shown.iat[i, j] = text
    shown.columns = pd.MultiIndex.from_tuples([tuple(latex_text(str(part)) for part in col) for col in frame.columns])
    keys = [key if isinstance(key, tuple) else (key,) for key in frame.index]
    names = [None if n in (LABEL, "section") else latex_text(n) for n in frame.index.names]
    shown.index = pd.MultiIndex.from_tuples([tuple(latex_text(str(part)) for part in key) for key in keys], names=names)
    styler = shown.style
    n_index = frame.index.nlevels
    column_format = "l" * n_index + "".join("l" if c[-2] == RUN else "r" for c in frame.columns)
    latex = styler.to_latex(
        caption=latex_text(table.caption),
        label=f"tab:{table.experiment.id}-{table.profile.name}",
        hrules=True,
        multicol_align="c",
        multirow_align="naive",
        column_format=column_format,
        position="htbp",
        environment="table*",
        clines=None,
    )
    # Scale the (wide) tabular to the text width; the header says which packages it needs.
    latex = latex.replace("\\begin{tabular}", "\\resizebox{\\textwidth}{!}{%\n\\begin{tabular}", 1)
    latex = latex.replace("\\end{tabular}", "\\end{tabular}%\n}", 1)
    return f"% {LATEX_PREAMBLE_NOTE}\n{latex}"


RENDERERS = {"latex": (to_latex, "tex"), "markdown": (to_markdown, "md"), "csv": (to_csv, "csv")}
FORMATS = tuple(RENDERERS)


def render(table: CollectedTable, fmt: str) -> tuple[str, str]:
    """(text, file extension) of one collected table in ``fmt``."""
    renderer, ext = RENDERERS[fmt]
    return renderer(table), ext
