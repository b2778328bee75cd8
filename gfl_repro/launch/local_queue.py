"""The local launcher's supervisor: runs queued run directories as child processes, at most
``cap`` at a time, each pinned to its own GPU when there are GPUs.

    python -m gfl_repro.launch.local_queue CAP RUN_DIR...

Started detached by ``gfl-repro run --launcher local``; every child is
``python -m gfl_repro.launch.job RUN_DIR`` with its output in ``RUN_DIR/job.log``. State lives in each
run's ``job.json``: the supervisor records its pid (so ``status`` can tell a dead queue), the
child records its own pid, ``running``/``done``/``failed``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .state import FAILED, last_error_line, read_job, write_job


def supervise(cap: int, run_dirs: list[Path], poll_s: float = 0.5) -> int:
    for directory in run_dirs:
        write_job(directory, supervisor_pid=os.getpid())
    slots = list(range(cap))
    queue = list(run_dirs)
    running: dict[int, tuple[subprocess.Popen, Path, int]] = {}
    failures = 0
    while queue or running:
        while queue and slots:
            directory, slot = queue.pop(0), slots.pop(0)
            env = dict(os.environ)
            if os.environ.get("GFL_REPRO_LOCAL_GPUS", "auto") != "none" and _gpu_count():
                env["CUDA_VISIBLE_DEVICES"] = str(slot)
            with open(directory / "job.log", "a") as log:
                proc = subprocess.Popen([sys.executable, "-m", "gfl_repro.launch.job", str(directory)], stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            running[proc.pid] = (proc, directory, slot)
        time.sleep(poll_s)
        for pid, (proc, directory, slot) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[pid]
            slots.append(slot)
            if code != 0:
                failures += 1
                if read_job(directory).get("state") != FAILED:  # died before it could say why
                    tail = (directory / "job.log").read_text(errors="replace")[-2000:]
                    write_job(directory, state=FAILED, error=last_error_line(tail) or f"exit status {code}")
    return 1 if failures else 0


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or not args[0].isdigit() or int(args[0]) < 1:
        print("usage: python -m gfl_repro.launch.local_queue CAP RUN_DIR...", file=sys.stderr)
        return 2
    return supervise(int(args[0]), [Path(a) for a in args[1:]])


if __name__ == "__main__":
    sys.exit(main())
