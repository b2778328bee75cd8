"""Launchers: hand the runs of a plan to Slurm (submitit job array) or to local background
processes, exactly once each.

Idempotence: under an exclusive lock on ``results/<profile>/launch.lock``, a run is
submitted only when its state (:mod:`gfl_repro.jobstate`) is ``missing``, or ``failed`` with
``retry``; ``done``, ``pending`` and ``running`` runs are left alone. Two ``run`` commands
started together therefore submit each run once. ``job.json`` is written (``pending`` with the
job id) before the lock is released.

Slurm options come from flags or a launcher config file (TOML, a ``[slurm]`` table with the
same names); flags win. Defaults depend on the profile: ``paper`` asks for one node with 8
GPUs (one task per GPU, DistributedDataParallel), ``smoke`` for one CPU task.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
import tomllib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator

from .jobstate import FAILED, MISSING, PENDING, run_state, write_job
from .launch import Plan, PlannedRun
from .profiles import Profile
from .store import profile_dir, run_dir, write_config

LAUNCHERS = ("inline", "local", "slurm")


class LaunchError(ValueError):
    """Bad launcher options or a failed submission (one line)."""


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: int | None = None
    time_min: int = 60
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = 64
    extra: tuple[str, ...] = ()  # further sbatch flags, e.g. "--exclusive", "--mail-type=END"

    @property
    def tasks_per_node(self) -> int:
        """One process per GPU (DDP); one task on CPU-only jobs."""
        return max(self.gpus_per_node, 1)

    def check(self) -> "SlurmOptions":
        for name in ("nodes", "cpus_per_task", "time_min", "array_parallelism"):
            if getattr(self, name) < 1:
                raise LaunchError(f"slurm option {name} must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_node < 0:
            raise LaunchError(f"slurm option gpus_per_node must be >= 0, got {self.gpus_per_node}")
        if self.mem_gb is not None and self.mem_gb < 1:
            raise LaunchError(f"slurm option mem_gb must be >= 1, got {self.mem_gb}")
        for flag in self.extra:
            if not re.fullmatch(r"--[a-z][a-z0-9-]*(=\S+)?", flag):
                raise LaunchError(f"extra sbatch flag {flag!r} must look like --name or --name=value")
        return self

    def submitit_parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "nodes": self.nodes,
            "tasks_per_node": self.tasks_per_node,
            "cpus_per_task": self.cpus_per_task,
            "timeout_min": self.time_min,
            "slurm_array_parallelism": self.array_parallelism,
        }
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        for name in ("partition", "account", "qos", "constraint"):
            value = getattr(self, name)
            if value:
                params[f"slurm_{name}"] = value
        additional = {}
        for flag in self.extra:
            key, _, value = flag[2:].partition("=")
            additional[key.replace("-", "_")] = value if value else True
        if additional:
            params["slurm_additional_parameters"] = additional
        return params


PROFILE_SLURM_DEFAULTS = {
    "paper": SlurmOptions(gpus_per_node=8, cpus_per_task=8, mem_gb=256, time_min=24 * 60),
    "smoke": SlurmOptions(gpus_per_node=0, cpus_per_task=2, time_min=30),
}


def slurm_options(profile: Profile, config_file: Path | None, flags: dict[str, Any]) -> SlurmOptions:
    """Profile defaults <- launcher config file [slurm] table <- command-line flags."""
    options = PROFILE_SLURM_DEFAULTS.get(profile.name, SlurmOptions())
    names = {f.name for f in fields(SlurmOptions)}
    if config_file is not None:
        try:
            data = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
        except OSError as err:
            raise LaunchError(f"cannot read launcher config {config_file}: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise LaunchError(f"launcher config {config_file}: invalid TOML ({err})") from None
        table = data.get("slurm", {})
        unknown = sorted(set(table) - names)
        if unknown:
            raise LaunchError(f"launcher config {config_file}: unknown [slurm] option {unknown[0]!r}; "
                              f"allowed: {', '.join(sorted(names))}")
        options = _replace_checked(options, table, str(config_file))
    given = {k: v for k, v in flags.items() if v is not None and v != ()}
    return _replace_checked(options, given, "command line").check()


def _replace_checked(options: SlurmOptions, values: dict[str, Any], where: str) -> SlurmOptions:
    changes = {}
    for f in fields(SlurmOptions):
        if f.name not in values:
            continue
        value = values[f.name]
        default = getattr(SlurmOptions(), f.name)
        if f.name == "extra":
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise LaunchError(f"{where}: slurm option extra must be a list of sbatch flags")
            value = tuple(value)
        elif isinstance(default, int) or f.name in ("mem_gb",):
            if isinstance(value, bool) or not isinstance(value, int):
                raise LaunchError(f"{where}: slurm option {f.name} must be an integer, got {value!r}")
        elif not isinstance(value, str):
            raise LaunchError(f"{where}: slurm option {f.name} must be text, got {value!r}")
        changes[f.name] = value
    return replace(options, **changes)


# --------------------------------------------------------------------------------- selection


@dataclass
class Selection:
    submit: list[PlannedRun] = field(default_factory=list)
    skipped: list[tuple[PlannedRun, str]] = field(default_factory=list)  # (run, state)


def select_runs(plan: Plan, profile: Profile, results_root: Path, retry: bool) -> Selection:
    """Which runs to submit now: missing ones, and failed ones when ``retry``."""
    sel = Selection()
    for planned in plan.runs:
        state = run_state(run_dir(results_root, profile.name, planned.run_id)).state
        if state == MISSING or (state == FAILED and retry):
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


def prepare(planned: PlannedRun, profile: Profile, results_root: Path, data_root: Path | None) -> Path:
    """Run directory with config.json (what the job reads) before anything is submitted."""
    directory = run_dir(results_root, profile.name, planned.run_id)
    write_config(directory, planned.config, planned.run_id, profile.name)
    write_job(directory, data_root=str(data_root) if data_root else None, rows=planned.rows)
    return directory


# --------------------------------------------------------------------------------- slurm


def submit_slurm(runs: list[PlannedRun], profile: Profile, results_root: Path, options: SlurmOptions,
                 data_root: Path | None) -> list[str]:
    """One submitit job array for ``runs``; returns the job ids (one per run)."""
    import submitit

    from .job import TrainJob

    if not runs:
        return []
    folder = profile_dir(results_root, profile.name) / "slurm" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(name=f"gfl-{profile.name}", **options.submitit_parameters())
    dirs = [prepare(r, profile, results_root, data_root) for r in runs]
    try:
        with executor.batch():
            jobs = [executor.submit(TrainJob(str(d))) for d in dirs]
    except Exception as err:  # sbatch refused: say why in one line
        raise LaunchError(f"sbatch failed: {' '.join(str(err).split())[:500]}") from None
    ids = []
    for directory, job in zip(dirs, jobs):
        write_job(directory, launcher="slurm", state=PENDING, job_id=job.job_id, error="",
                  stdout=str(job.paths.stdout), stderr=str(job.paths.stderr), options=asdict(options))
        _link(directory / "job.out", job.paths.stdout)
        _link(directory / "job.err", job.paths.stderr)
        ids.append(job.job_id)
    return ids


def _link(link: Path, target: Path) -> None:
    try:
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    except OSError:
        pass


# --------------------------------------------------------------------------------- local


def default_local_cap() -> int:
    """One concurrent run per visible GPU, 1 on CPU."""
    import torch

    return max(torch.cuda.device_count(), 1)


def submit_local(runs: list[PlannedRun], profile: Profile, results_root: Path, cap: int,
                 data_root: Path | None) -> int:
    """Start a detached supervisor that runs ``runs`` with at most ``cap`` at a time; its pid."""
    if not runs:
        return 0
    dirs = [prepare(r, profile, results_root, data_root) for r in runs]
    for directory in dirs:  # before the supervisor starts: it alone writes these files afterwards
        write_job(directory, launcher="local", state=PENDING, supervisor_pid=None, pid=None, error="",
                  stdout=str(directory / "job.log"))
    log = profile_dir(results_root, profile.name) / "local-launcher.log"
    with open(log, "a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gfl_repro.local_queue", str(cap), *map(str, dirs)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return proc.pid
