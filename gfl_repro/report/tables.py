"""Tables in the paper's layout, as Markdown and LaTeX (pure: renders a collected table).

Layout: one table per artifact; a grouped table (Tables 1a, 2a) becomes one part per
detector. Each printed row is the paper's line, and under it a line "ours" with the mean ±
standard deviation over the seeds done ("ours (2/3)" when fewer than asked), a ΔAP column
(ours − paper, AP only) and, at a profile that is not toy scale, ✓/✗ for the tolerance
|ours − paper| ≤ 0.3 AP. Marks: "n/a" the paper prints n/a; "–" no value; "not run" /
"not implemented" / "native only" / "unreadable" for a row without a result; the paper's
footnote marks (*) are kept; our FPS carry a mark (†, ‡, …) naming the device they were timed
on, and are never compared with the paper's RTX 2080Ti FPS. The best "ours" mean of an
accuracy metric is bold within a part (never FPS).

LaTeX: booktabs, ``\\footnotesize`` (8 pt in a 10 pt article) with no scaling; a part that
would be wider than an article column (345 pt) gets a wrapping method column, then is split
into parts by metric columns (Table 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..specs.profiles import Profile
from ..specs.spec import Experiment
from ..store import DONE, atomic_write_text
from .claims import RULE, TOLERANCE_RULE, Verdict, within_tolerance
from .collect import PARTIAL, REFERENCE, CollectedTable, TableRow, claims_of, collect_table, to_csv

PAPER_MARKS = ("*", "**", "***")
DEVICE_MARKS = ("†", "‡", "§", "¶")
COLUMN_PT = 345.0  # \textwidth of a 10 pt article
FONT_PT = 8.0
SEP_PT = 6.0  # 2 x \tabcolsep (3 pt)
MIN_LABEL_PT = 70.0  # "centerness-guided" is 65 pt
LATEX_PACKAGES = ("booktabs", "amssymb", "graphicx")
LATEX_PREAMBLE_NOTE = "needs \\usepackage{" + ",".join(LATEX_PACKAGES) + "}"


@dataclass(frozen=True)
class Part:
    title: str  # "" when the table is one part
    rows: tuple[TableRow, ...]
    info_columns: tuple[str, ...]
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class Marks:
    paper: dict[str, str]  # note text -> mark
    device: dict[str, str]  # device -> mark


# ------------------------------------------------------------------------------ cells


def _paper_text(r: TableRow, metric: str, marks: Marks) -> str:
    value = r.row.paper.get(metric)
    if value is None:
        return "n/a" if metric in r.row.paper else ""
    note = r.row.notes.get(metric)
    return f"{value:.1f}" + (marks.paper[note] if note else "")


def _ours_text(r: TableRow, metric: str, marks: Marks) -> tuple[str, str, str]:
    """(mean, std, device mark) texts; std "" with one seed; ("–", "", "") without a value."""
    mean, std = r.mean(metric), r.std(metric)
    if mean is None:
        return "–", "", ""
    mark = "".join(marks.device[d] for d in r.devices) if metric == "FPS" else ""
    return f"{mean:.1f}", f"{std:.1f}" if std is not None else "", mark


def _delta_text(table: CollectedTable, r: TableRow) -> str:
    mean, paper = r.mean("AP"), r.row.paper.get("AP")
    if mean is None or paper is None:
        return ""
    text = f"{mean - paper:+.1f}".replace("-", "−")
    if not table.profile.toy_scale:
        text += " ✓" if within_tolerance(r.values.get("AP", []), paper) else " ✗"
    return text


def _best(part: Part) -> dict[str, float]:
    """Best ours mean (rounded as printed) per accuracy metric with at least two rows."""
    best = {}
    for metric in part.metrics:
        means = [round(m, 1) for r in part.rows if (m := r.mean(metric)) is not None]
        if metric != "FPS" and len(means) >= 2:
            best[metric] = max(means)
    return best


def marks_of(table: CollectedTable) -> Marks:
    notes = list(dict.fromkeys(n for r in table.rows for n in r.row.notes.values()))
    return Marks({n: PAPER_MARKS[min(i, len(PAPER_MARKS) - 1)] for i, n in enumerate(notes)},
                 {d: DEVICE_MARKS[min(i, len(DEVICE_MARKS) - 1)] for i, d in enumerate(table.devices)})


def _ours_label(r: TableRow) -> str:
    return "ours" if r.seeds_asked <= 1 or r.state == DONE else f"ours ({r.seeds_done}/{r.seeds_asked})"


def _state_text(r: TableRow) -> str:
    return r.state + (f" ({r.reason})" if r.reason and r.state not in (DONE, PARTIAL) else "")


def notes_of(table: CollectedTable, marks: Marks) -> list[str]:
    """The legend under a table: how to read it, footnotes, devices."""
    seeds = (f"mean ± standard deviation over {table.seeds} seeds" if table.seeds > 1 else "one seed")
    lines = [f"Each row: the paper's numbers, then ours ({seeds}; \"ours (n/N)\" when only n of N seeds are done). "
             "ΔAP = ours − paper"
             + (f"; ✓/✗: {TOLERANCE_RULE}" if not table.profile.toy_scale else "")
             + ". n/a: the paper prints n/a. –: no value. not run: no result yet; not implemented: the engine cannot "
               "build this row yet."]
    lines += [f"{mark} {note}." for note, mark in marks.paper.items()]
    if "FPS" in table.experiment.metrics:
        timed = "; ".join(f"{mark} {device}" for device, mark in marks.device.items())
        lines.append("Paper FPS: one RTX 2080Ti, batch 1. Our FPS: batch 1 on "
                     + (timed if timed else "the device of each run")
                     + "; a different device, so no Δ and no best is marked for FPS.")
    return lines


# ------------------------------------------------------------------------------ parts


_CHAR_PT = {".": 2.36, ",": 2.36, " ": 2.83, "(": 3.3, ")": 3.3, "±": 6.61, "−": 6.61, "+": 6.61, "-": 2.83,
            "✓": 6.61, "✗": 6.61, "=": 6.61, "Δ": 6.9, "β": 4.8, "/": 4.25}


def _text_pt(text: str) -> float:
    """Width of ``text`` at 8 pt Computer Modern (\\footnotesize of a 10 pt article: digits
    4.25 pt, lower case 4.17 pt on average, upper case 6.08 pt), plus 3 %; checked against
    pdflatex's overfull-box warnings in the tests."""
    width = 0.0
    for ch in text:
        if ch in _CHAR_PT:
            width += _CHAR_PT[ch]
        elif ch.isdigit():
            width += 4.25
        elif ch.isupper():
            width += 6.08
        else:
            width += 4.17
    return 1.03 * width * FONT_PT / 8.0


def _column_pt(header: str, cells: list[str], bold: list[str] = ()) -> float:
    """Widest cell + column separation; ``bold`` cells may be set in bold (digits 4.8 pt)."""
    return max([_text_pt(header)] + [_text_pt(c) for c in cells] + [1.13 * _text_pt(c) for c in bold]) + SEP_PT


def _metric_pt(table: CollectedTable, rows: tuple[TableRow, ...], metric: str, marks: Marks) -> float:
    best = _best(Part("", rows, (), (metric,))).get(metric)
    paper, ours, bold = [], [], []
    for r in rows:
        paper.append(_paper_text(r, metric, marks))
        mean, std, mark = _ours_text(r, metric, marks)
        text = mean + ("±" + std if std else "") + mark
        shown_bold = best is not None and r.mean(metric) is not None and round(r.mean(metric), 1) == best
        (bold if shown_bold else ours).append(text)
    width = _column_pt(metric, paper + ours, bold)
    if metric == "AP":
        width += _column_pt("ΔAP", [_delta_text(table, r) for r in rows])
    return width


def label_pt(rows: tuple[TableRow, ...]) -> float:
    texts = [r.row.label for r in rows] + ["ours (3/3)"] + [r.row.section or "" for r in rows]
    return max(_text_pt(t) for t in texts) + SEP_PT + 8.0


def _info_pt(rows: tuple[TableRow, ...], column: str) -> float:
    return _column_pt(column, [r.row.info.get(column, "") for r in rows])


def shown_info_columns(table: CollectedTable) -> tuple[str, ...]:
    """Info columns minus those every label already ends with ("n = 12" needs no n column)."""
    rows = table.rows
    return tuple(c for c in table.experiment.info_columns
                 if not all(r.row.label.endswith(f"= {r.row.info.get(c, '')}") for r in rows))


def parts_of(table: CollectedTable, width_pt: float | None = None) -> list[Part]:
    """The table as printed parts: one per group; with ``width_pt``, parts wider than that
    (with a method column wrapped to no less than 70 pt) are split by metric columns."""
    exp = table.experiment
    info = shown_info_columns(table)
    groups = exp.groups or (None,)
    marks = marks_of(table)
    parts = []
    for group in groups:
        rows = tuple(r for r in table.rows if r.row.group == group)
        if not rows:  # a group --row left empty
            continue
        title = group or ""
        if width_pt is None:
            parts.append(Part(title, rows, info, exp.metrics))
            continue
        need = {m: _metric_pt(table, rows, m, marks) for m in exp.metrics}

        def fits(chunk: list[str], columns: tuple[str, ...]) -> bool:
            return MIN_LABEL_PT + sum(_info_pt(rows, c) for c in columns) + sum(need[m] for m in chunk) <= width_pt

        metrics = list(exp.metrics)
        head = 1  # the longest first chunk that fits beside every info column
        while head < len(metrics) and fits(metrics[:head + 1], info):
            head += 1
        for k in range(1, len(metrics) + 1):  # the fewest parts: even chunks, else a full first one
            even = _even_chunks(metrics, k)
            chunks = even if all(fits(c, info if i == 0 else info[:1]) for i, c in enumerate(even)) else None
            if chunks is None and k > 1 and head < len(metrics):
                rest = _even_chunks(metrics[head:], k - 1)
                if all(fits(c, info[:1]) for c in rest):
                    chunks = [metrics[:head], *rest]
            if chunks is not None:
                break
        else:
            chunks = [[m] for m in metrics]
        for i, chunk in enumerate(chunks):
            cols = info if i == 0 else info[:1]
            suffix = f"part {i + 1} of {len(chunks)}" if len(chunks) > 1 else ""
            parts.append(Part(", ".join(t for t in (title, suffix) if t), rows, cols, tuple(chunk)))
    return parts


def _even_chunks(items: list[str], k: int) -> list[list[str]]:
    """``items`` in ``k`` consecutive chunks whose sizes differ by at most one (larger first)."""
    size, extra = divmod(len(items), k)
    out, start = [], 0
    for i in range(k):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


# ------------------------------------------------------------------------------ Markdown


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_part(table: CollectedTable, part: Part, marks: Marks) -> list[str]:
    best = _best(part)
    header = ["Method", *part.info_columns]
    for m in part.metrics:
        header += [m, "ΔAP"] if m == "AP" else [m]
    align = [":---"] + [":---:"] * len(part.info_columns) + ["---:"] * (len(header) - 1 - len(part.info_columns))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    section = None
    for r in part.rows:
        if r.row.section and r.row.section != section:
            section = r.row.section
            lines.append("| " + " | ".join([f"*{section}*"] + [""] * (len(header) - 1)) + " |")
        paper = [_md_escape(r.row.label), *(r.row.info.get(c, "") for c in part.info_columns)]
        ours = ["↳ " + _ours_label(r), *([""] * len(part.info_columns))]
        for m in part.metrics:
            paper.append(_paper_text(r, m, marks))
            mean, std, mark = _ours_text(r, m, marks)
            text = mean + (f" ± {std}" if std else "") + mark
            if best.get(m) is not None and r.mean(m) is not None and round(r.mean(m), 1) == best[m]:
                text = f"**{text}**"
            ours.append(text)
            if m == "AP":
                paper.append("")
                ours.append(_delta_text(table, r))
        lines.append("| " + " | ".join(paper) + " |")
        if r.state == REFERENCE:
            continue
        if r.seeds_done == 0:
            lead = 1 + len(part.info_columns)
            ours = ours[:lead] + [f"*{_state_text(r)}*"] + [""] * (len(header) - lead - 1)
        lines.append("| " + " | ".join(_md_escape(c) for c in ours) + " |")
    return lines


def verdict_lines(verdicts: list[Verdict]) -> list[str]:
    return [f"{v.verdict}: {v.claim.text} — {v.detail}" for v in verdicts]


def tolerance_lines(table: CollectedTable) -> list[str]:
    """Per trained row with an AP: within / outside the tolerance (not at toy scale)."""
    if table.profile.toy_scale:
        return []
    out = []
    for r in table.rows:
        has_ap = "AP" in table.experiment.metrics
        ok = within_tolerance(r.values.get("AP", []), r.row.paper.get("AP")) if has_ap else None
        if r.state != REFERENCE and ok is not None:
            out.append(f"{'within' if ok else 'outside'}: {r.row.display} (ours {r.mean('AP'):.1f}, paper "
                       f"{r.row.paper['AP']:.1f})")
    return out


def to_markdown(table: CollectedTable, heading: str = "###") -> str:
    marks = marks_of(table)
    out = [f"{heading} {table.experiment.paper_ref}", "", f"**{table.caption}**", ""]
    for part in parts_of(table):
        if part.title:
            out += [f"*{part.title}*", ""]
        out += _md_part(table, part, marks) + [""]
    out += [f"<sub>{line}</sub>  " for line in notes_of(table, marks)] + [""]
    verdicts = claims_of(table)
    if verdicts:
        out += ["**Claims** (rule: " + RULE + "):", ""] + [f"- {line}" for line in verdict_lines(verdicts)] + [""]
    tolerance = tolerance_lines(table)
    if tolerance:
        out += [f"**Tolerance** ({TOLERANCE_RULE}):", ""] + [f"- {line}" for line in tolerance] + [""]
    return "\n".join(out)


# ------------------------------------------------------------------------------ LaTeX


_LATEX_SYMBOLS = {
    "Δ": r"$\Delta$", "β": r"$\beta$", "✓": r"$\checkmark$", "✗": r"$\times$", "–": "--", "−": "$-$", "±": r"$\pm$",
    "≤": r"$\leq$", "·": r"$\cdot$", "√": r"$\surd$", "²": r"$^2$", "Σ": r"$\Sigma$", "↳": "", "†": r"$^\dagger$",
    "‡": r"$^\ddagger$", ">": "$>$", "<": "$<$", "|": "$|$", "§": r"\S{}", "¶": r"\P{}", "*": r"$^*$",
    "…": r"\dots{}", "—": "---", "’": "'",
}
_LATEX_METRICS = {"AP50": "AP$_{50}$", "AP75": "AP$_{75}$", "APs": "AP$_S$", "APm": "AP$_M$", "APl": "AP$_L$",
                  "y_n": r"$y_n$"}


def latex_text(text: str) -> str:
    """Escape plain text for LaTeX and spell the paper's symbols in math mode."""
    if text in _LATEX_METRICS:
        return _LATEX_METRICS[text]
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


def _tex_part(table: CollectedTable, part: Part, marks: Marks, label: str) -> str:
    best = _best(part)
    metric_cols = sum(2 if m == "AP" else 1 for m in part.metrics)
    columns = 1 + len(part.info_columns) + metric_cols
    rest = sum(_info_pt(part.rows, c) for c in part.info_columns) + sum(
        _metric_pt(table, part.rows, m, marks) for m in part.metrics)
    label_width = label_pt(part.rows)
    first = "l" if rest + label_width <= COLUMN_PT else f"p{{{max(MIN_LABEL_PT, COLUMN_PT - rest - SEP_PT):.0f}pt}}"
    spec = first + "c" * len(part.info_columns) + "r" * metric_cols
    header = ["Method", *(latex_text(c) for c in part.info_columns)]
    for m in part.metrics:
        header += [latex_text(m), r"$\Delta$AP"] if m == "AP" else [latex_text(m)]
    body = []
    section = None
    for r in part.rows:
        if r.row.section and r.row.section != section:
            if section is not None:
                body.append(r"\midrule")
            section = r.row.section
            body.append(rf"\multicolumn{{{columns}}}{{l}}{{\textit{{{latex_text(section)}}}}} \\")
        paper = [latex_text(r.row.label), *(latex_text(r.row.info.get(c, "")) for c in part.info_columns)]
        ours = [r"\quad " + latex_text(_ours_label(r)), *([""] * len(part.info_columns))]
        for m in part.metrics:
            paper.append(latex_text(_paper_text(r, m, marks)))
            mean, std, mark = _ours_text(r, m, marks)
            text = latex_text(mean) + (r"$\pm$" + std if std else "") + latex_text(mark)
            if best.get(m) is not None and r.mean(m) is not None and round(r.mean(m), 1) == best[m]:
                text = rf"\textbf{{{text}}}"
            ours.append(text)
            if m == "AP":
                paper.append("")
                ours.append(latex_text(_delta_text(table, r)))
        body.append(" & ".join(paper) + r" \\")
        if r.state == REFERENCE:
            continue
        if r.seeds_done == 0:
            ours = ours[:1 + len(part.info_columns)] + [
                rf"\multicolumn{{{metric_cols}}}{{l}}{{\textit{{{latex_text(r.state)}}}}}"]
        body.append(" & ".join(ours) + r" \\")
    title = table.caption if not part.title else f"{table.caption} {part.title}."
    notes = " ".join(latex_text(n) for n in notes_of(table, marks))
    return "\n".join([
        r"\begin{table}[htbp]", r"\centering", r"\footnotesize", r"\setlength{\tabcolsep}{3pt}",
        rf"\caption{{{latex_text(title)}}}", rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule", *body,
        r"\bottomrule", r"\end{tabular}", "", r"\smallskip", rf"\parbox{{\linewidth}}{{\footnotesize {notes}}}",
        r"\end{table}",
    ])


def to_latex(table: CollectedTable) -> str:
    """The table's parts as booktabs floats at 8 pt, then its claims and tolerance verdicts."""
    marks = marks_of(table)
    parts = parts_of(table, COLUMN_PT)
    base = f"tab:{table.experiment.id}-{table.profile.name}"
    floats = [_tex_part(table, p, marks, base + (f"-{i + 1}" if len(parts) > 1 else "")) for i, p in enumerate(parts)]
    out = [f"% {LATEX_PREAMBLE_NOTE}", *floats]
    verdicts = claims_of(table)
    tolerance = tolerance_lines(table)
    if verdicts or tolerance:
        out.append(rf"\paragraph{{{latex_text(table.experiment.paper_ref)}: claims.}}")
        if verdicts:
            out.append(r"{\footnotesize Rule: " + latex_text(RULE) + ".}")
            out.append(r"\begin{itemize}\footnotesize")
            out += [rf"\item \textbf{{{latex_text(v.verdict)}}}: {latex_text(v.claim.text)} --- {latex_text(v.detail)}"
                    for v in verdicts]
            out.append(r"\end{itemize}")
        if tolerance:
            out.append(r"{\footnotesize Tolerance: " + latex_text(TOLERANCE_RULE) + ".}")
            out.append(r"\begin{itemize}\footnotesize")
            out += [rf"\item {latex_text(line)}" for line in tolerance]
            out.append(r"\end{itemize}")
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Written:
    table: CollectedTable
    path: Path
    verdicts: list[Verdict]

    @property
    def summary(self) -> str:
        """One line: how many rows and runs have results (not a verdict), where the file is."""
        trained = [r for r in self.table.rows if r.state != REFERENCE]
        rows_done = sum(r.seeds_done > 0 for r in trained)
        seeds = f", {self.table.seeds} seeds" if self.table.seeds > 1 else ""
        return (f"{self.table.experiment.id}: {rows_done}/{len(trained)} rows with results "
                f"({self.table.runs_done}/{self.table.runs_asked} runs{seeds}) -> {self.path}")


def write_tables(experiments: list[Experiment], profile: Profile, results_root: Path, out_dir: Path, fmt: str,
                 engine: str = "native", seeds: int = 1) -> list[Written]:
    """`collect`: render every table experiment of ``experiments`` into ``out_dir``."""
    written = []
    for exp in experiments:
        if exp.kind != "table":
            continue
        table = collect_table(exp, profile, results_root, engine, seeds)
        text, ext = render(table, fmt)
        tags = profile.arithmetic_tags + (() if engine == "native" else (engine,))
        path = Path(out_dir) / ".".join([exp.id, *tags, ext])
        atomic_write_text(path, text)
        written.append(Written(table, path, claims_of(table)))
    return written


RENDERERS = {"latex": (to_latex, "tex"), "markdown": (to_markdown, "md"), "csv": (to_csv, "csv")}
FORMATS = tuple(RENDERERS)


def render(table: CollectedTable, fmt: str) -> tuple[str, str]:
    """(text, file extension) of one collected table in ``fmt``."""
    renderer, ext = RENDERERS[fmt]
    return renderer(table), ext


__all__ = ["FORMATS", "LATEX_PACKAGES", "Part", "Written", "latex_text", "parts_of", "render", "to_latex", "to_markdown",
           "verdict_lines", "write_tables"]
