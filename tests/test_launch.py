"""Launch options, dry runs, the local launcher's cap and state, and concurrent `run` calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gfl_repro.cli import cli
from gfl_repro.launch.errors import LaunchError
from gfl_repro.launch.slurm import slurm_options
from gfl_repro.specs.profiles import PROFILES

TINY = """
[experiment]
id = "tiny"
kind = "table"
paper_ref = "tiny"
title = "Two small runs"
split = "minival"
recipe = "gfl"
metrics = ["AP"]

[[row]]
label = "n = 16"
overrides = {{ synth_train = 8, synth_val = 4, epochs = {epochs}, lr_steps = [{epochs}], batch_size = 4, warmup_iters = 2 }}
paper = [40.2]

[[row]]
label = "n = 12"
overrides = {{ reg_max = 12, synth_train = 8, synth_val = 4, epochs = {epochs}, lr_steps = [{epochs}], batch_size = 4, warmup_iters = 2 }}
paper = [40.1]
"""


def make_env(tmp_path: Path, epochs: int = 1) -> dict:
    (tmp_path / "exp").mkdir(exist_ok=True)
    (tmp_path / "exp" / "tiny.toml").write_text(TINY.format(epochs=epochs))
    return {**os.environ, "GFL_REPRO_EXPERIMENTS": str(tmp_path / "exp"), "GFL_REPRO_RESULTS": str(tmp_path / "res"),
            "GFL_REPRO_CACHE": str(tmp_path / "cache"), "GFL_REPRO_LOCAL_GPUS": "none"}


def gfl(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("gfl-repro")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=timeout)


def job_states(tmp_path: Path) -> dict[str, str]:
    out = {}
    for path in (tmp_path / "res" / "smoke" / "runs").glob("*/job.json"):
        out[path.parent.name] = json.loads(path.read_text()).get("state")
    return out


def wait_for(predicate, timeout: float, every: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


# ------------------------------------------------------------------------------ options


def test_slurm_options_profile_defaults_file_and_flags(tmp_path):
    paper = slurm_options(PROFILES["paper"], None, {})
    assert (paper.gpus_per_node, paper.tasks_per_node, paper.nodes) == (8, 8, 1)
    smoke = slurm_options(PROFILES["smoke"], None, {})
    assert (smoke.gpus_per_node, smoke.tasks_per_node) == (0, 1)
    conf = tmp_path / "launcher.toml"
    conf.write_text('[slurm]\npartition = "gpu"\ntime_min = 90\nextra = ["--exclusive"]\nqos = "high"\n')
    opts = slurm_options(PROFILES["paper"], conf, {"time_min": 30, "account": "vision"})
    assert (opts.partition, opts.time_min, opts.account, opts.qos, opts.extra) == ("gpu", 30, "vision", "high", ("--exclusive",))
    params = opts.submitit_parameters()
    assert params["slurm_partition"] == "gpu" and params["timeout_min"] == 30 and params["tasks_per_node"] == 8
    assert params["slurm_additional_parameters"] == {"exclusive": True}


@pytest.mark.parametrize("flags, message", [
    ({"nodes": 0}, "nodes must be >= 1"),
    ({"gpus_per_node": -1}, "gpus_per_node must be >= 0"),
    ({"extra": ("exclusive",)}, "must look like --name"),
    ({"time_min": 0}, "time_min must be >= 1"),
])
def test_bad_slurm_options(flags, message):
    with pytest.raises(LaunchError, match=message):
        slurm_options(PROFILES["smoke"], None, flags)


def test_bad_launcher_config_file(tmp_path):
    conf = tmp_path / "l.toml"
    conf.write_text("[slurm]\ngpus = 8\n")
    with pytest.raises(LaunchError, match="unknown \\[slurm\\] option 'gpus'"):
        slurm_options(PROFILES["paper"], conf, {})
    conf.write_text('[slurm]\nnodes = "two"\n')
    with pytest.raises(LaunchError, match="nodes must be an integer"):
        slurm_options(PROFILES["paper"], conf, {})


@pytest.mark.parametrize("flags", [
    {"partition": "gpu\nrm -rf ~ #"}, {"partition": "gpu #x"}, {"account": "vision\r"}, {"qos": "high\x1b[2J"},
    {"constraint": "a100\n#SBATCH --exclusive"}, {"extra": ("--mail-user=a@b\nrm -rf ~",)},
    {"extra": ("--comment=\x07",)},
])
def test_slurm_values_cannot_add_lines_to_the_batch_script(flags):
    with pytest.raises(LaunchError, match="spaces or control characters"):
        slurm_options(PROFILES["paper"], None, flags)


@pytest.mark.parametrize("text, fragment", [
    ("slurm = 5\n", "'slurm' must be a table ([slurm]), got 5"),
    ('[slurm]\npartition = "gpu\\n<command> #"\n', "partition must be a name without spaces or control characters"),
    ("[slurm]\nextra = 5\n", "slurm option extra must be a list of sbatch flags"),
    ("[slrum]\npartition = 'gpu'\n", "unknown entry 'slrum'"),
    ("[slurm]\npartition = 5\n", "slurm option partition must be text, got 5"),
])
def test_bad_launcher_config_values_are_one_line(tmp_path, text, fragment):
    conf = tmp_path / "launcher.toml"
    conf.write_text(text)
    with pytest.raises(LaunchError) as err:
        slurm_options(PROFILES["paper"], conf, {})
    assert fragment in str(err.value) and "\n" not in str(err.value)
    result = CliRunner().invoke(cli, ["--results-dir", str(tmp_path / "res"), "run", "table3", "--launcher", "slurm",
                                      "--launcher-config", str(conf), "--dry-run"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and fragment in result.output


def test_a_results_path_with_a_newline_never_reaches_a_batch_script(tmp_path):
    from gfl_repro.launch.plan import plan_runs
    from gfl_repro.launch.slurm import submit_slurm
    from gfl_repro.specs.catalogue import load_catalogue

    plan = plan_runs([load_catalogue()["table3"]], PROFILES["smoke"], "native")
    with pytest.raises(LaunchError, match="holds a control character"):
        submit_slurm(plan.runs[:1], PROFILES["smoke"], tmp_path / "res\n#SBATCH --x", slurm_options(PROFILES["smoke"], None, {}),
                     None)
    assert not (tmp_path / "res\n#SBATCH --x").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--launcher", "slurmm"], "unknown launcher 'slurmm' (did you mean 'slurm'?)"),
    (["--launcher", "slurm", "--nodes", "0"], "nodes must be >= 1"),
    (["--launcher", "slurm", "--sbatch", "exclusive"], "must look like --name"),
    (["--launcher", "local", "--max-parallel", "0"], "--max-parallel must be >= 1"),
])
def test_bad_launch_flags_are_one_line(tmp_path, args, fragment):
    result = CliRunner().invoke(cli, ["--results-dir", str(tmp_path), "run", "table3", *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("gfl-repro: error:")


@pytest.mark.parametrize("launcher", ["local", "slurm", "inline"])
def test_dry_run_submits_nothing(tmp_path, launcher):
    env = make_env(tmp_path)
    result = gfl("run", "tiny", "--seeds", "1", "--launcher", launcher, "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert "2 run(s) to" in result.stdout and result.stdout.count("would run") == 2
    if launcher == "slurm":
        assert "slurm: one job array of 2" in result.stdout and "cpus_per_task=2" in result.stdout
    assert not (tmp_path / "res" / "smoke" / "runs").exists()


# ------------------------------------------------------------------------------ local launcher


def test_local_launcher_cap_state_and_idempotence(tmp_path):
    env = make_env(tmp_path)
    first = gfl("run", "tiny", "--seeds", "1", "--launcher", "local", "--max-parallel", "1", env=env)
    assert first.returncode == 0, first.stderr
    assert "2 run(s) to submit" in first.stdout
    seen_running = []

    def all_done():
        states = job_states(tmp_path)
        seen_running.append(sum(s == "running" for s in states.values()))
        return len(states) == 2 and all(s == "done" for s in states.values())

    wait_for(all_done, timeout=240, every=0.2)
    assert max(seen_running) == 1, "the cap of 1 was exceeded"
    status = gfl("status", "tiny", "--seeds", "1", "--format", "json", env=env)
    rows = json.loads(status.stdout)
    assert [r["state"] for r in rows] == ["done", "done"] and all(r["AP"] is not None for r in rows)
    again = gfl("run", "tiny", "--seeds", "1", "--launcher", "local", env=env)
    assert "0 run(s) to submit; skipped: done 2" in again.stdout


def test_local_failure_shows_in_status_and_retry_resubmits(tmp_path):
    env = make_env(tmp_path)
    env["GFL_REPRO_CACHE"] = "/proc/forbidden-cache"  # the job cannot create its dataset
    gfl("run", "tiny", "--seeds", "1", "--launcher", "local", env=env)
    wait_for(lambda: list(job_states(tmp_path).values()) == ["failed", "failed"], timeout=120)
    status = gfl("status", "tiny", "--seeds", "1", env=env)
    assert status.stdout.count("failed") == 2 and "Error" in status.stdout
    skip = gfl("run", "tiny", "--seeds", "1", "--launcher", "local", "--dry-run", env=env)
    assert "0 run(s) to submit; skipped: failed 2" in skip.stdout
    retry = gfl("run", "tiny", "--seeds", "1", "--launcher", "local", "--retry", "--dry-run", env=env)
    assert "2 run(s) to submit" in retry.stdout


def test_two_concurrent_runs_submit_each_run_once(tmp_path):
    env = make_env(tmp_path)
    exe = str(Path(sys.executable).with_name("gfl-repro"))
    procs = [subprocess.Popen([exe, "run", "tiny", "--seeds", "1", "--launcher", "local"], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    submitted = sum(int(o.split(" run(s) to submit")[0].split()[-1]) for o in outputs)
    assert submitted == 2, outputs
    wait_for(lambda: list(job_states(tmp_path).values()) == ["done", "done"], timeout=240)
