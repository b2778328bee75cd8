"""The results store: one directory per run, files only.

Layout::

    results/<profile>/runs/<run_id>/
        config.json     the resolved RunConfig, run_id, profile
        env.json        versions and device
        metrics.jsonl   training log, one JSON object per line, append-only
        result.json     the 12 COCOeval stats by name (+ ms/img, FPS), written last:
                        its presence marks the run complete
    results/<profile>/tables/   what `collect` writes

Every write of a whole file is atomic (temporary file in the same directory, fsync,
rename), so a reader sees either the old file or the new one. Readers never raise on
partial or corrupt files: they return a state and a one-line problem.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

from .specs.run_config import RunConfig

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""Names of ``COCOeval.stats`` in order (pycocotools); -1 there means no GT in that range."""

CONFIG_FILE = "config.json"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"

DONE, MISSING, INCOMPLETE, CORRUPT = "done", "missing", "incomplete", "corrupt"


def profile_dir(results_root: Path, profile: str) -> Path:
    return Path(results_root) / profile


def run_dir(results_root: Path, profile: str, run_id: str) -> Path:
    return profile_dir(results_root, profile) / "runs" / run_id


def tables_dir(results_root: Path, profile: str) -> Path:
    return profile_dir(results_root, profile) / "tables"


def report_dir(results_root: Path, profile: str, variant: str = "") -> Path:
    """Where ``report`` writes: ``report/``, or ``report<variant>/`` for the runs of another
    arithmetic or engine (``report-bf16/``, ``report-mmdet/``), so no report overwrites another."""
    return profile_dir(results_root, profile) / f"report{variant}"


# ------------------------------------------------------------------------------ writing


def _file_mode() -> int:
    """The mode a plain ``open(..., "w")`` would give: 0666 minus the process umask (so a
    results directory shared by a group stays readable by it)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[BinaryIO], None],
                 before_replace: Callable[[], None] | None = None) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, fsync, then rename it over
    ``path``: readers see the old file or the new one, never a partial one.

    ``before_replace`` runs after the new content is safely on disk and just before the
    rename (e.g. to keep the old file under another name). The file gets the permissions of a
    plain ``open``: 0666 minus the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _file_mode())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_config(directory: Path, config: RunConfig, run_id: str, profile: str) -> None:
    atomic_write_json(Path(directory) / CONFIG_FILE, {"run_id": run_id, "profile": profile, "config": config.to_dict()})


def write_env(directory: Path, env: dict[str, Any]) -> None:
    atomic_write_json(Path(directory) / ENV_FILE, env)


def append_metrics(directory: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk (a crash loses at most this line)."""
    path = Path(directory) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def write_result(
    directory: Path,
    *,
    run_id: str,
    profile: str,
    engine: str,
    toy_scale: bool,
    split: str,
    stats: list[float] | tuple[float, ...],
    ms_per_img: float | None = None,
    fps: float | None = None,
    device: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``result.json`` (last, atomically). ``stats`` are COCOeval's 12 numbers in order."""
    if len(stats) != len(COCO_STATS):
        raise ValueError(f"expected {len(COCO_STATS)} COCOeval stats, got {len(stats)}")
    result = {
        "run_id": run_id,
        "profile": profile,
        "engine": engine,
        "toy_scale": toy_scale,
        "split": split,
        "metrics": {name: float(value) for name, value in zip(COCO_STATS, stats)},
        "ms_per_img": ms_per_img,
        "fps": fps,
        "device": device,
        **(extra or {}),
    }
    atomic_write_json(Path(directory) / RESULT_FILE, result)
    return result


# ------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class RunRecord:
    """What the store knows about one run: a state, the result when done, a problem line."""

    run_id: str
    state: str
    result: dict[str, Any] = field(default_factory=dict)
    problem: str = ""

    def metric(self, name: str) -> float | None:
        """A COCO stat in percent (AP 0.402 -> 40.2), FPS as is; None when absent or -1."""
        if self.state != DONE:
            return None
        if name == "FPS":
            fps = self.result.get("fps")
            return float(fps) if isinstance(fps, (int, float)) else None
        value = self.result.get("metrics", {}).get(name)
        if not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
            return None
        return 100.0 * float(value)


def read_run(results_root: Path, profile: str, run_id: str) -> RunRecord:
    """State of one run from its files; never raises for partial or corrupt content."""
    directory = run_dir(results_root, profile, run_id)
    if not directory.is_dir():
        return RunRecord(run_id, MISSING)
    if not (directory / RESULT_FILE).exists():
        return RunRecord(run_id, INCOMPLETE, problem="no result.json yet")
    result, problem = read_result(directory)
    if problem:
        return RunRecord(run_id, CORRUPT, problem=problem)
    return RunRecord(run_id, DONE, result=result)


def read_result(directory: Path) -> tuple[dict[str, Any] | None, str]:
    """(``result.json`` of a run directory, "") when it is intact, else (None, a one-line
    problem naming the file). Never raises."""
    path = Path(directory) / RESULT_FILE
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{path}: unreadable ({' '.join(str(err).split())})"
    problem = _check_result(result)
    return (None, f"{path}: {problem}") if problem else (result, "")


def _check_result(result: Any) -> str:
    if not isinstance(result, dict):
        return "not a JSON object"
    metrics = result.get("metrics")
    if not isinstance(metrics, dict):
        return "no 'metrics' object"
    for name in COCO_STATS:
        value = metrics.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"metric {name!r} missing or not a number"
    return ""


def read_metrics(directory: Path) -> tuple[list[dict[str, Any]], str]:
    """All intact lines of ``metrics.jsonl`` and a problem line if some were not."""
    path = Path(directory) / METRICS_FILE
    if not path.exists():
        return [], ""
    records, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, (f"{path}: skipped {bad} unreadable line(s)" if bad else "")


def read_config(directory: Path) -> RunConfig | None:
    """The stored RunConfig, or None when the file is absent or unreadable."""
    path = Path(directory) / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunConfig.from_dict(data["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
