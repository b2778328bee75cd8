"""`status`: where every run of some experiments stands, from the run directories.

State comes from :func:`gfl_repro.launch.state.run_state` (the project's own files first; the
scheduler is asked only about jobs those files call alive). Progress is the last training
record of ``metrics.jsonl``: iteration / total and an ETA from the recent seconds per iteration.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ..engines.mmdet.config import shown_state
from ..launch.state import run_state
from ..specs.profiles import Profile
from ..specs.spec import Experiment
from ..store import DONE, read_metrics, read_run, run_dir


def training_progress(directory: Path) -> dict[str, Any]:
    """{'iteration': done, 'total': of, 'eta_s': seconds} from metrics.jsonl (empty if unknown)."""
    records, _ = read_metrics(directory)
    iters = [r for r in records if r.get("type") == "iter"]
    if not iters:
        return {}
    last = iters[-1]
    done = int(last.get("iteration", -1)) + 1
    out: dict[str, Any] = {"iteration": done}
    if last.get("epoch_iters") and last.get("epochs"):
        total = int(last["epoch_iters"]) * int(last["epochs"])
        out["total"] = total
        if isinstance(last.get("time"), (int, float)):
            out["eta_s"] = max(total - done, 0) * float(last["time"])
    return out


def status_rows(experiments: list[Experiment], profile: Profile, results_root: Path,
                ask_scheduler: bool = True, engine: str = "native", seeds: int = 1) -> list[dict[str, Any]]:
    """One entry per row × seed (0 .. seeds - 1): the run's state, progress, AP when done."""
    rows = []
    cache: dict[str, dict[str, Any]] = {}
    for exp in experiments:
        for row, config, rid in exp.runs(profile, engine, seeds):
            if rid not in cache:
                directory = run_dir(results_root, profile.name, rid)
                state = run_state(directory, ask_scheduler=ask_scheduler)
                entry: dict[str, Any] = {"run_id": rid, "state": shown_state(config, state.state), "job_id": state.job.get("job_id"),
                                         "launcher": state.job.get("launcher"), "error": state.detail}
                entry.update(training_progress(directory))
                if state.state == DONE:
                    record = read_run(results_root, profile.name, rid)
                    entry["AP"] = record.metric("AP")
                    entry["AP50"] = record.metric("AP50")
                cache[rid] = entry
            rows.append({"experiment": exp.id, "row": row.display, "seed": config.seed, **cache[rid]})
    return rows


def seed_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per experiment row: seeds done / asked and the AP mean ± std over the done ones."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        grouped.setdefault((r["experiment"], r["row"]), []).append(r)
    out = []
    for (exp, row), runs in grouped.items():
        aps = [r["AP"] for r in runs if r["state"] == DONE and r.get("AP") is not None]
        out.append({"experiment": exp, "row": row, "seeds_done": sum(r["state"] == DONE for r in runs),
                    "seeds_asked": len(runs), "AP_mean": statistics.fmean(aps) if aps else None,
                    "AP_std": statistics.stdev(aps) if len(aps) >= 2 else None})
    return out


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def format_status(rows: list[dict[str, Any]]) -> str:
    header = (f"{'experiment':<10} {'row':<34} {'seed':>4} {'run':<12} {'state':<8} {'progress':<16} {'ETA':>7} "
              f"{'AP':>5}  detail")
    lines = [header]
    for r in rows:
        progress = f"{r['iteration']}/{r.get('total', '?')}" if "iteration" in r else ""
        eta = _eta(r.get("eta_s")) if r["state"] == "running" else ""
        ap = f"{r['AP']:.1f}" if r.get("AP") is not None else ""
        detail = r["error"] if r["state"] in ("failed", "corrupt") else (f"job {r['job_id']}" if r.get("job_id") else "")
        lines.append(f"{r['experiment']:<10} {r['row'][:34]:<34} {r.get('seed', 0):>4} {r['run_id']:<12} "
                     f"{r['state']:<8} {progress:<16} {eta:>7} {ap:>5}  {detail}")
    summary = seed_summary(rows)
    if any(s["seeds_asked"] > 1 for s in summary):
        lines += ["", f"{'experiment':<10} {'row':<34} {'seeds done':>10}  AP over the seeds done"]
        for s in summary:
            ap = "" if s["AP_mean"] is None else f"{s['AP_mean']:.1f}" + (
                f" ± {s['AP_std']:.1f}" if s["AP_std"] is not None else "")
            done = f"{s['seeds_done']}/{s['seeds_asked']}"
            lines.append(f"{s['experiment']:<10} {s['row'][:34]:<34} {done:>10}  {ap}")
    return "\n".join(lines)
