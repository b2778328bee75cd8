"""Against a real one-node Slurm cluster started here (docs/design.md, "Environment"): submission through
submitit, requeue with resume, failures in `status`, concurrent `run`, dry runs.

The cluster's daemons are started and stopped by this module (by PID). Skipped with a
stated reason where Slurm is not installed, except in CI, where it must be.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster, available
from test_launch import gfl, job_states, make_env, wait_for

if not available():
    if os.environ.get("CI"):
        raise RuntimeError("Slurm (slurmctld, slurmd, munge) must be installed in CI: scripts/setup.sh does it")
    pytest.skip("Slurm is not installed here (scripts/setup.sh installs it with apt-get)", allow_module_level=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    yield c
    c.stop()


def squeue_ids() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def wait_queue_empty(timeout: float = 300) -> None:
    wait_for(lambda: not squeue_ids(), timeout=timeout, every=1)


def run_dirs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "res" / "smoke" / "runs").glob("*"))


def test_slurm_runs_complete_and_are_not_submitted_twice(cluster, tmp_path):
    env = make_env(tmp_path)
    first = gfl("run", "tiny", "--seeds", "1", "--launcher", "slurm", "--time-min", "10", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("as Slurm job") == 2
    wait_for(lambda: list(job_states(tmp_path).values()) == ["done", "done"], timeout=300, every=1)
    for d in run_dirs(tmp_path):
        assert (d / "result.json").exists()
        job = json.loads((d / "job.json").read_text())
        assert job["launcher"] == "slurm" and job["job_id"]
        assert (d / "job.out").exists()  # the Slurm log, linked into the run directory
    status = gfl("status", "tiny", "--seeds", "1", env=env)
    assert status.stdout.count(" done ") == 2
    again = gfl("run", "tiny", "--seeds", "1", "--launcher", "slurm", env=env)
    assert "0 run(s) to submit; skipped: done 2" in again.stdout and "as Slurm job" not in again.stdout


def test_slurm_runs_the_mmdet_engine(cluster, tmp_path):
    pytest.importorskip("mmdet", reason="the mmdet extra is not installed (bash scripts/mmdet_extra.sh)")
    env = make_env(tmp_path)
    first = gfl("run", "tiny", "--seeds", "1", "--engine", "mmdet", "--launcher", "slurm", "--time-min", "10", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("as Slurm job") == 2
    wait_for(lambda: list(job_states(tmp_path).values()) == ["done", "done"], timeout=300, every=1)
    for d in run_dirs(tmp_path):
        assert json.loads((d / "result.json").read_text())["engine"] == "mmdet"
        assert (d / "mmdet" / "last_checkpoint").exists()
    status = gfl("status", "tiny", "--seeds", "1", "--engine", "mmdet", env=env)
    assert status.stdout.count(" done ") == 2
    assert gfl("status", "tiny", "--seeds", "1", env=env).stdout.count(" missing ") == 2  # the native runs are other runs


def test_preempted_run_requeues_and_resumes(cluster, tmp_path):
    env = make_env(tmp_path, epochs=150)  # 300 iterations: long enough to interrupt mid-way
    out = gfl("run", "tiny", "--seeds", "1", "--launcher", "slurm", "--time-min", "20", env=env)
    assert out.returncode == 0, out.stderr
    first = run_dirs(tmp_path)[0]
    job_id = json.loads((first / "job.json").read_text())["job_id"]

    def training_started():
        path = first / "metrics.jsonl"
        return path.exists() and any(json.loads(x).get("type") == "iter" for x in path.read_text().splitlines())

    wait_for(training_started, timeout=240, every=0.5)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # what Slurm sends before a time limit

    def requeued_and_waiting():
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout
        return "PENDING" in out

    wait_for(requeued_and_waiting, timeout=120, every=0.5)
    # Slurm holds a requeued job back for a while before it is eligible again; let it start now.
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
    wait_for(lambda: (first / "result.json").exists(), timeout=400, every=1)
    records = [json.loads(x) for x in (first / "metrics.jsonl").read_text().splitlines()]
    resumes = [r for r in records if r.get("type") == "resume"]
    assert resumes and resumes[0]["iteration"] > 0, "the requeued job must continue, not restart from zero"
    assert json.loads((first / "job.json").read_text()).get("requeued", 0) >= 1
    iterations = [r["iteration"] for r in records if r.get("type") == "iter"]
    assert iterations[-1] == 299
    wait_queue_empty()


def test_failed_run_shows_its_error(cluster, tmp_path):
    env = make_env(tmp_path)
    env["GFL_REPRO_CACHE"] = "/proc/forbidden-cache"
    out = gfl("run", "tiny", "--seeds", "1", "--launcher", "slurm", env=env)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: list(job_states(tmp_path).values()) == ["failed", "failed"], timeout=300, every=1)
    status = gfl("status", "tiny", "--seeds", "1", env=env)
    assert status.stdout.count("failed") == 2 and "forbidden-cache" in status.stdout
    wait_queue_empty()


def test_concurrent_runs_submit_once_and_dry_run_submits_nothing(cluster, tmp_path):
    env = make_env(tmp_path)
    dry = gfl("run", "tiny", "--seeds", "1", "--launcher", "slurm", "--dry-run", env=env)
    assert "would run" in dry.stdout and not squeue_ids() and not run_dirs(tmp_path)
    exe = str(Path(gfl.__globals__["sys"].executable).with_name("gfl-repro"))
    procs = [subprocess.Popen([exe, "run", "tiny", "--seeds", "1", "--launcher", "slurm"], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert sum(o.count("as Slurm job") for o in outputs) == 2, outputs
    wait_for(lambda: list(job_states(tmp_path).values()) == ["done", "done"], timeout=300, every=1)
    wait_queue_empty()
