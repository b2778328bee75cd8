"""The Slurm launcher: one submitit job array per invocation, and its options.

Slurm options come from flags or a launcher config file (TOML, a ``[slurm]`` table with the
same names); flags win. Defaults depend on the profile: ``paper`` asks for one node with 8
GPUs (one task per GPU, DistributedDataParallel), ``smoke`` for one CPU task.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..specs.profiles import Profile
from ..store import profile_dir
from .errors import LaunchError
from .plan import PlannedRun
from .state import PENDING, prepare_run_dir, write_job


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
        """Every value that reaches the batch script is checked: numbers in range, names without
        whitespace or control characters (a newline would add a line to the script)."""
        for name in TEXT_OPTIONS:
            value = getattr(self, name)
            if value is not None and not NAME.fullmatch(value):
                raise LaunchError(f"slurm option {name} must be a name without spaces or control characters, "
                                  f"got {value!r}")
        for name in ("nodes", "cpus_per_task", "time_min", "array_parallelism"):
            if getattr(self, name) < 1:
                raise LaunchError(f"slurm option {name} must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_node < 0:
            raise LaunchError(f"slurm option gpus_per_node must be >= 0, got {self.gpus_per_node}")
        if self.mem_gb is not None and self.mem_gb < 1:
            raise LaunchError(f"slurm option mem_gb must be >= 1, got {self.mem_gb}")
        for flag in self.extra:
            if not re.fullmatch(r"--[a-z][a-z0-9-]*(=[^\s\x00-\x1f\x7f]+)?", flag):
                raise LaunchError(f"extra sbatch flag {flag!r} must look like --name or --name=value "
                                  "(no spaces or control characters)")
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


TEXT_OPTIONS = ("partition", "account", "qos", "constraint")
NAME = re.compile(r"[^\s\x00-\x1f\x7f]+")
"""A Slurm name or expression: printable, no whitespace (no newline can reach the script)."""

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
        except UnicodeDecodeError as err:
            raise LaunchError(f"launcher config {config_file}: not UTF-8 text (byte {err.start})") from None
        except tomllib.TOMLDecodeError as err:
            raise LaunchError(f"launcher config {config_file}: invalid TOML ({' '.join(str(err).split())})") from None
        other = sorted(set(data) - {"slurm"})
        if other:
            raise LaunchError(f"launcher config {config_file}: unknown entry {other[0]!r}; it holds a [slurm] table")
        table = data.get("slurm", {})
        if not isinstance(table, dict):
            raise LaunchError(f"launcher config {config_file}: 'slurm' must be a table ([slurm]), got {table!r}")
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
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise LaunchError(f"{where}: slurm option extra must be a list of sbatch flags")
            value = tuple(value)
        elif isinstance(default, int) or f.name in ("mem_gb",):
            if isinstance(value, bool) or not isinstance(value, int):
                raise LaunchError(f"{where}: slurm option {f.name} must be an integer, got {value!r}")
        elif not isinstance(value, str):
            raise LaunchError(f"{where}: slurm option {f.name} must be text, got {value!r}")
        changes[f.name] = value
    return replace(options, **changes)


def submit_slurm(runs: list[PlannedRun], profile: Profile, results_root: Path, options: SlurmOptions,
                 data_root: Path | None) -> list[str]:
    """One submitit job array for ``runs``; returns the job ids (one per run)."""
    import submitit

    from .job import TrainJob

    if not runs:
        return []
    folder = profile_dir(results_root, profile.name) / "slurm" / "%j"
    if not NAME.fullmatch(str(folder).replace(" ", "_")):  # the log paths are lines of the batch script
        raise LaunchError(f"the results directory {str(results_root)!r} holds a control character; Slurm's "
                          "batch script cannot name it")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(name=f"gfl-{profile.name}", **options.submitit_parameters())
    dirs = [prepare_run_dir(r, profile, results_root, data_root) for r in runs]
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
