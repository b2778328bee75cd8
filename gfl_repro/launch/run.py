"""The launch sequence of `gfl-repro run`: choose the runs to start, check their inputs, hand
them to a launcher, exactly once each.

Idempotence: under an exclusive lock on ``results/<profile>/launch.lock``, a run is started
only when its state (:mod:`gfl_repro.launch.state`) is ``missing``, or ``failed`` with
``retry``; ``done``, ``pending`` and ``running`` runs are left alone. Two ``run`` commands
started together therefore start each run once. ``job.json`` is written (``pending``, with
the job id) before the lock is released.
"""

from __future__ import annotations

import fcntl
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..engines.environment import DataError, locate_data, pretrained_weights
from ..specs.profiles import Profile
from ..store import profile_dir, run_dir
from .errors import LaunchError
from .inline import mark_pending, run_inline
from .local import default_local_cap, submit_local
from .plan import Plan, PlannedRun
from .slurm import SlurmOptions, submit_slurm
from .state import CORRUPT, FAILED, MISSING, run_state, set_aside_corrupt_result

LAUNCHERS = ("inline", "local", "slurm")


@dataclass(frozen=True)
class LaunchOptions:
    launcher: str = "inline"
    dry_run: bool = False
    retry: bool = False  # start failed runs again (they resume from their checkpoint)
    data_root: Path | None = None
    device: str | None = None  # inline only
    max_parallel: int | None = None  # local only
    slurm: SlurmOptions | None = None  # slurm only
    progress: bool = True


@dataclass
class Selection:
    submit: list[PlannedRun] = field(default_factory=list)
    skipped: list[tuple[PlannedRun, str]] = field(default_factory=list)  # (run, state)


@dataclass
class LaunchSummary:
    """What one `run` did: the runs it started (or would have, with ``dry_run``), the ones it
    left alone by state, Slurm job ids, the local supervisor's pid, inline results."""

    started: list[PlannedRun]
    skipped: dict[str, int]
    dry_run: bool
    job_ids: list[str] = field(default_factory=list)
    supervisor_pid: int | None = None
    results: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def select_runs(plan: Plan, profile: Profile, results_root: Path, retry: bool) -> Selection:
    """Which runs to start now: missing ones, and failed or corrupt ones when ``retry``."""
    sel = Selection()
    for planned in plan.runs:
        state = run_state(run_dir(results_root, profile.name, planned.run_id)).state
        if state == MISSING or (state in (FAILED, CORRUPT) and retry):
            sel.submit.append(planned)
        else:
            sel.skipped.append((planned, state))
    return sel


@contextmanager
def launch_lock(results_root: Path, profile: Profile) -> Iterator[None]:
    """Exclusive lock per results root and profile, held while choosing and submitting."""
    path = profile_dir(results_root, profile.name) / "launch.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_inputs(runs: list[PlannedRun], data_root: Path | None) -> None:
    """Raise :class:`~gfl_repro.engines.environment.DataError` unless the dataset and the
    ImageNet weights the runs need are where they should be (checked before anything starts)."""
    if runs and runs[0].config.dataset != "synthetic":
        locate_data(runs[0].config, data_root)
    for planned in runs:
        pretrained_weights(planned.config)


def run(plan: Plan, profile: Profile, results_root: Path, options: LaunchOptions,
        echo: Callable[[str], None] = print) -> LaunchSummary:
    """Start the plan's runs that are not done, pending or running with ``options.launcher``.

    ``echo`` receives the lines a user should see (what starts, what was skipped, progress of
    inline runs). Raises :class:`LaunchError` when there is nothing to run or a launcher
    refuses, :class:`~gfl_repro.engines.environment.DataError` when inputs are missing (a dry
    run warns instead), and whatever an inline run raises.
    """
    if options.launcher not in LAUNCHERS:
        raise LaunchError(f"unknown launcher {options.launcher!r}; choose from: {', '.join(LAUNCHERS)}")
    if not plan.runs:
        if len(plan.unsupported) == 1:
            raise LaunchError(plan.unsupported[0])
        what = (f"{len(plan.unsupported)} row(s) need the native engine (listed above)" if plan.engine == "mmdet"
                else f"{len(plan.unsupported)} row(s) need engine support that does not exist yet (listed above)")
        raise LaunchError("nothing to run: " + (what if plan.unsupported else "these experiments have no training runs"))
    with launch_lock(results_root, profile):
        sel = select_runs(plan, profile, results_root, options.retry)
        summary = LaunchSummary(sel.submit, dict(Counter(state for _, state in sel.skipped)), options.dry_run)
        try:
            check_inputs(sel.submit, options.data_root)
        except DataError as err:
            if not options.dry_run:
                raise
            summary.warnings.append(f"{err} (a real run stops here)")
        for line in describe(summary, plan, profile, options):
            echo(line)
        if options.dry_run:
            return summary
        for planned in sel.submit:  # a corrupt result is re-evaluated: the run resumes from its checkpoint
            set_aside_corrupt_result(run_dir(results_root, profile.name, planned.run_id))
        if options.launcher == "slurm":
            summary.job_ids = submit_slurm(sel.submit, profile, results_root, options.slurm, options.data_root)
            for planned, job_id in zip(sel.submit, summary.job_ids):
                echo(f"  submitted {planned.run_id} as Slurm job {job_id}")
        elif options.launcher == "local":
            summary.supervisor_pid = submit_local(sel.submit, profile, results_root,
                                                  options.max_parallel or default_local_cap(), options.data_root)
            if sel.submit:
                echo(f"  local launcher pid {summary.supervisor_pid} runs them; follow with: gfl-repro status")
        else:
            mark_pending(sel.submit, profile, results_root)
    if options.launcher == "inline":
        summary.results = run_inline(sel.submit, profile, results_root, data_root=options.data_root,
                                     device=options.device, progress=options.progress, echo=echo)
    return summary


def describe(summary: LaunchSummary, plan: Plan, profile: Profile, options: LaunchOptions) -> list[str]:
    """The lines `run` prints before starting anything (and all a dry run prints)."""
    verb = "run" if options.launcher == "inline" else "submit"
    skipped = ", ".join(f"{state} {summary.skipped[state]}" for state in sorted(summary.skipped))
    lines = [f"{len(summary.started)} run(s) to {verb}" + (f"; skipped: {skipped}" if skipped else "")
             + f" ({profile.label}, {plan.engine} engine, launcher {options.launcher})"]
    lines += [f"warning: {w}" for w in summary.warnings]
    if not options.retry and (summary.skipped.get(FAILED) or summary.skipped.get(CORRUPT)):
        lines.append("  (--retry starts failed and corrupt runs again; they resume from their checkpoint)")
    if options.dry_run:
        lines += [f"  would run {p.run_id}: {p.name}" for p in summary.started]
        if options.launcher == "slurm" and options.slurm is not None:
            resources = ", ".join(f"{k}={v}" for k, v in options.slurm.submitit_parameters().items())
            lines.append(f"  slurm: one job array of {len(summary.started)}; {resources}")
        elif options.launcher == "local":
            lines.append(f"  local: at most {options.max_parallel or default_local_cap()} at a time")
    return lines


__all__ = ["LAUNCHERS", "LaunchError", "LaunchOptions", "LaunchSummary", "check_inputs", "describe", "launch_lock",
           "run", "select_runs"]
