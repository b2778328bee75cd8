"""The project's own record of where a run is: ``job.json`` in its run directory.

The launcher writes it at submission (``pending``, with the scheduler's job id); the job
rewrites it when it starts (``running``), when it is requeued (``pending`` again), and when
it ends (``done`` or ``failed`` with its last error line). ``result.json`` stays the
completion marker. Readers trust this file first and ask the scheduler only about jobs the
file says are alive, so a job that died without a word (node failure, ``scancel``) shows as
failed instead of running forever.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store import CORRUPT, DONE, MISSING, RESULT_FILE, atomic_write_json, read_result, run_dir, write_config

JOB_FILE = "job.json"
PENDING, RUNNING, FAILED = "pending", "running", "failed"
LIVE = (PENDING, RUNNING)


@dataclass(frozen=True)
class RunState:
    state: str  # missing / pending / running / done / failed / corrupt
    job: dict[str, Any]
    detail: str = ""  # the last error line when failed, the problem when corrupt


def read_job(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(run_dir) / JOB_FILE).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_job(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Update ``job.json`` with ``fields`` (atomic read-modify-write by one writer at a time)."""
    job = read_job(run_dir)
    job.update(fields)
    job["updated_at"] = time.time()
    atomic_write_json(Path(run_dir) / JOB_FILE, job)
    return job


def last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_state(run_dir: Path, ask_scheduler: bool = True) -> RunState:
    """State of a run from its files, confirming live jobs with the scheduler."""
    run_dir = Path(run_dir)
    job = read_job(run_dir)
    if (run_dir / RESULT_FILE).exists():
        _, problem = read_result(run_dir)
        return RunState(CORRUPT, job, problem) if problem else RunState(DONE, job)
    state = job.get("state", MISSING)
    if state == FAILED:
        return RunState(FAILED, job, job.get("error", ""))
    if state in LIVE:
        if ask_scheduler and not job_alive(job):
            return RunState(FAILED, job, job.get("error") or "job ended without writing a result (killed or lost)")
        return RunState(state, job)
    return RunState(MISSING, job)


def job_alive(job: dict[str, Any]) -> bool:
    """Ask the scheduler (Slurm) or the OS (local process) whether the job still exists."""
    launcher = job.get("launcher")
    if launcher == "slurm":
        job_id = job.get("job_id")
        squeue = shutil.which("squeue")
        if not job_id or not squeue:
            return True  # cannot tell: trust the file
        out = subprocess.run([squeue, "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True)
        if out.returncode != 0:  # unknown id: long gone; any other error: cannot tell
            return "Invalid job id" not in out.stderr
        return bool(out.stdout.strip())
    if launcher in ("local", "inline"):
        pid = job.get("pid") or job.get("supervisor_pid")
        if not pid:
            return True
        return _pid_alive(int(pid))
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def set_aside_corrupt_result(run_dir: Path) -> Path | None:
    """Move a corrupt ``result.json`` to ``result.json.corrupt`` (before the run is started again
    to re-evaluate it), so that the run reads as not done until a new result is written."""
    path = Path(run_dir) / RESULT_FILE
    if not path.exists() or not read_result(run_dir)[1]:
        return None
    kept = path.with_name(RESULT_FILE + ".corrupt")
    os.replace(path, kept)
    return kept


def prepare_run_dir(planned, profile, results_root: Path, data_root: Path | None) -> Path:
    """The run directory with ``config.json`` (what the job reads) and ``job.json`` (its rows and
    data root), written before anything is submitted. ``planned`` is a
    :class:`~gfl_repro.launch.plan.PlannedRun`."""
    directory = run_dir(results_root, profile.name, planned.run_id)
    write_config(directory, planned.config, planned.run_id, profile.name)
    write_job(directory, data_root=str(data_root) if data_root else None, rows=planned.rows)
    return directory
