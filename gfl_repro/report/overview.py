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
                       engine: str = "native", seeds: int = 1) -> dict[str, Any]:
    """One line of `list`: id, paper reference, title, rows, distinct runs (rows × seeds) done / total."""
    run_ids = sorted({rid for _, _, rid in exp.runs(profile, engine, seeds)})
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
                     engine: str = "native", seeds: int = 1) -> list[dict[str, Any]]:
    return [experiment_summary(exp, profile, results_root, engine, seeds)
            for exp in load_catalogue(experiments_dir).values()]


REFERENCE_STATE = "reference, not trained"


def describe_experiment(exp: Experiment, profile: Profile, results_root: Path, engine: str = "native",
                        seeds: int = 1) -> dict[str, Any]:
    """Everything `show` prints, JSON-ready: rows, overrides, paper numbers, run ids and state
    (``run_id``/``state``/``reproduced`` are seed 0's; ``seeds`` lists every seed's run)."""
    rows = []
    for row in exp.rows:
        entry: dict[str, Any] = {
            "label": row.label,
            "name": row.display,
            "group": row.group,
            "section": row.section,
            "info": row.info,
            "paper": row.paper,
            "notes": row.notes,
            "reference": row.reference,
            "train": row.is_run,
            "recipe": row.recipe or exp.recipe,
            "overrides": row.overrides,
        }
        if row.reference:
            entry["state"] = REFERENCE_STATE
        else:
            config = exp.resolve(row, profile, engine)
            rid = run_id(config)
            record = read_run(results_root, profile.name, rid)
            entry["run_id"] = rid if row.train else None
            entry["state"] = shown_state(config, record.state) if row.train else "analysis only"
            entry["reproduced"] = {m: record.metric(m) for m in exp.metrics} if record.state == DONE else None
            entry["config"] = config.to_dict()
            if row.train:
                entry["seeds"] = [_seed_entry(exp, row, profile, results_root, engine, s) for s in range(seeds)]
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
        "claims": [c.text for c in exp.claims],
        "seeds": seeds,
        "rows": rows,
    }


def _seed_entry(exp: Experiment, row, profile: Profile, results_root: Path, engine: str, seed: int) -> dict[str, Any]:
    config = exp.resolve(row, profile, engine, seed)
    rid = run_id(config)
    record = read_run(results_root, profile.name, rid)
    return {"seed": seed, "run_id": rid, "state": shown_state(config, record.state), "AP": record.metric("AP")}


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
    for claim in desc.get("claims", []):
        lines.append(f"claim: {claim}")
    lines.append("")
    for row in desc["rows"]:
        name = row.get("name") or (f"{row['group']} / {row['label']}" if row["group"] else row["label"])
        if row["info"]:
            name += "  [" + ", ".join(f"{k}={v}" for k, v in row["info"].items() if v) + "]"
        lines.append(name)
        if row["reference"]:
            lines.append(f"    {REFERENCE_STATE} (paper numbers only)")
        else:
            changes = ", ".join(f"{k}={v}" for k, v in row["overrides"].items()) or "—"
            lines.append(f"    recipe {row['recipe']}; overrides: {changes}")
            if row["run_id"]:
                for seed in row.get("seeds") or [{"seed": 0, "run_id": row["run_id"], "state": row["state"]}]:
                    lines.append(f"    run {seed['run_id']} (seed {seed['seed']}): {seed['state']}")
            else:
                lines.append(f"    {row['state']}")
        if row["paper"]:
            paper = "  ".join(f"{m} {'n/a' if v is None else v}" for m, v in row["paper"].items())
            lines.append(f"    paper: {paper}")
        if row.get("reproduced"):
            ours = "  ".join(f"{m} {'–' if v is None else f'{v:.1f}'}" for m, v in row["reproduced"].items())
            lines.append(f"    ours:  {ours}")
    return "\n".join(lines)
