"""A one-node Slurm cluster for tests (docs/design.md, "Environment"): munged + slurmctld + slurmd on this host.

``SlurmCluster`` writes its configuration and state under a temporary directory, starts the
daemons, exports ``SLURM_CONF`` for the process, and stops exactly the processes it started
(by PID). ``available()`` says whether the Debian packages are installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "munged")


def _which(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)


def available() -> bool:
    return all(_which(b) for b in BINARIES) and os.geteuid() == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    def __init__(self, root: Path, cpus: int | None = None, memory_mb: int = 20000) -> None:
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 2
        self.memory_mb = memory_mb
        self.pids: list[int] = []
        self.conf = self.root / "slurm.conf"
        self._old_conf = os.environ.get("SLURM_CONF")

    def write_config(self) -> None:
        for d in ("state", "spool", "log", "munge"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        r = self.root
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=gfltest",
                    f"SlurmctldHost={self.host}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    "AuthType=auth/munge",
                    f"StateSaveLocation={r / 'state'}",
                    f"SlurmdSpoolDir={r / 'spool'}",
                    f"SlurmctldPidFile={r / 'slurmctld.pid'}",
                    f"SlurmdPidFile={r / 'slurmd.pid'}",
                    f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "ReturnToService=2",
                    "MpiDefault=none",
                    "SchedulerType=sched/backfill",
                    "SchedulerParameters=sched_interval=1",
                    "JobRequeue=1",
                    "KillWait=5",
                    "MinJobAge=3600",
                    f"NodeName={self.host} CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN",
                    f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _spawn(self, argv: list[str], env: dict) -> int:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.pids.append(proc.pid)
        return proc.pid

    def start(self, timeout: float = 60) -> "SlurmCluster":
        self.write_config()
        env = {**os.environ, "SLURM_CONF": str(self.conf)}
        munge_sock = self.root / "munge" / "munge.socket.2"
        if not Path("/run/munge/munge.socket.2").exists():
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            self._spawn(["runuser", "-u", "munge", "--", _which("munged"), "--foreground"], env)
        del munge_sock
        self._wait(lambda: Path("/run/munge/munge.socket.2").exists(), timeout, "munged")
        self._spawn([_which("slurmctld"), "-D", "-f", str(self.conf)], env)
        self._spawn([_which("slurmd"), "-D", "-f", str(self.conf)], env)
        os.environ["SLURM_CONF"] = str(self.conf)
        self._wait(self._node_ready, timeout, "slurm node")
        return self

    def _node_ready(self) -> bool:
        out = subprocess.run([_which("sinfo") or "sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready():
                return
            time.sleep(0.5)
        logs = "".join(p.read_text()[-1500:] for p in (self.root / "log").glob("*.log"))
        raise RuntimeError(f"{what} did not come up within {timeout:.0f}s\n{logs}")

    def stop(self) -> None:
        for pid in reversed(self.pids):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.time() + 15
        for pid in self.pids:
            while time.time() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.2)
            else:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.pids.clear()
        if self._old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._old_conf
