"""What `list` and `show` report: the catalogue joined with the state of its runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..engines.mmdet.config import shown_state
from ..specs.catalogue import load_catalogue
from ..specs.profiles import Profile
from ..specs.run_config import run_id
from ..specs.spec import Experiment
from ..store import DONE, read_run


def experiment_summary(exp: Experiment, profile: Profile, results_root: Path,
                       engine: str = "native") -> dict[str, Any]:
    """One line of `list`: id, paper reference, title, rows, distinct runs done / total."""
    run_ids = sorted({rid for _, _, rid in exp.runs(profile, engine)})
    done = sum(read_run(results_root, profile.name, rid).state == DONE for rid in run_ids)
    return {
        "id": exp.id,
        "kind": exp.kind,
        "paper_ref": exp.paper_ref,
        "title": exp.title,
        "rows": len(exp.rows),
        "runs_done": done,
        "runs_total": len(run_ids),
    }


def list_experiments(profile: Profile, results_root: Path, experiments_dir: Path | None = None,
                     engine: str = "native") -> list[dict[str, Any]]:
    return [experiment_summary(exp, profile, results_root, engine) for exp in load_catalogue(experiments_dir).values()]


def describe_experiment(exp: Experiment, profile: Profile, results_root: Path, engine: str = "native") -> dict[str, Any]:
    """Everything `show` prints, JSON-ready: rows, overrides, paper numbers, run ids and state."""
    rows = []
    for row in exp.rows:
        entry: dict[str, Any] = {
            "label": row.label,
            "group": row.group,
            "section": row.section,
            "info": row.info,
            "paper": row.paper,
            "notes": row.notes,
            "reference": row.reference,
            "train": row.train,
            "recipe": row.recipe or exp.recipe,
            "overrides": row.overrides,
        }
        if not row.reference:
            config = exp.resolve(row, profile, engine)
            rid = run_id(config)
            record = read_run(results_root, profile.name, rid)
            entry["run_id"] = rid if row.train else None
            entry["state"] = shown_state(config, record.state) if row.train else "analysis only"
            entry["reproduced"] = {m: record.metric(m) for m in exp.metrics} if record.state == DONE else None
            entry["config"] = config.to_dict()
        rows.append(entry)
    return {
        "id": exp.id,
        "kind": exp.kind,
        "paper_ref": exp.paper_ref,
        "title": exp.title,
        "split": exp.split,
        "profile": profile.name,
        "engine": engine,
        "toy_scale": profile.toy_scale,
        "metrics": list(exp.metrics),
        "info_columns": list(exp.info_columns),
        "groups": list(exp.groups),
        "uses": list(exp.uses),
        "artifacts": [{"name": a.name, "analysis": a.analysis, "rows": list(a.rows)} for a in exp.artifacts],
        "rows": rows,
    }


def format_description(desc: dict[str, Any]) -> str:
    """Human-readable `show` output."""
    lines = [
        f"{desc['id']}: {desc['paper_ref']} — {desc['title']}",
        f"split: {desc['split']}   profile: {desc['profile']}" + ("   (toy scale)" if desc["toy_scale"] else "")
        + (f"   engine: {desc['engine']}" if desc.get("engine", "native") != "native" else ""),
    ]
    if desc["uses"]:
        lines.append(f"draws on: {', '.join(desc['uses'])}")
    for art in desc["artifacts"]:
        rows = f" from {', '.join(art['rows'])}" if art["rows"] else ""
        lines.append(f"artifact {art['name']}: {art['analysis']}{rows}")
    lines.append("")
    for row in desc["rows"]:
        name = f"{row['group']} / {row['label']}" if row["group"] else row["label"]
        if row["info"]:
            name += "  [" + ", ".join(f"{k}={v}" for k, v in row["info"].items() if v) + "]"
        lines.append(name)
        if row["reference"]:
            lines.append("    reference row (paper numbers only, never run)")
        else:
            changes = ", ".join(f"{k}={v}" for k, v in row["overrides"].items()) or "—"
            lines.append(f"    recipe {row['recipe']}; overrides: {changes}")
            if row["run_id"]:
                lines.append(f"    run {row['run_id']}: {row['state']}")
            else:
                lines.append(f"    {row['state']}")
        if row["paper"]:
            paper = "  ".join(f"{m} {'n/a' if v is None else v}" for m, v in row["paper"].items())
            lines.append(f"    paper: {paper}")
        if row.get("reproduced"):
            ours = "  ".join(f"{m} {'–' if v is None else f'{v:.1f}'}" for m, v in row["reproduced"].items())
            lines.append(f"    ours:  {ours}")
    return "\n".join(lines)
