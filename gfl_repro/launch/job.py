"""The job a launcher runs for one run: a submitit Checkpointable around :func:`gfl_repro.engines.execute`.

Everything the job needs is in its run directory (``config.json`` from submission,
``job.json`` for the data root), so the pickled callable is tiny and a requeued job simply
calls it again: ``execute`` resumes from the run's checkpoint.

Preemption and time limits (Slurm): submitit installs a handler for its signal (USR2 unless
``SUBMITIT_PREEMPT_SIGNAL`` says otherwise) that calls :meth:`TrainJob.checkpoint`, requeues
the job and exits at once — possibly in the middle of an optimiser step. So while training,
the job swaps in its own handler that only raises a flag; the trainer sees it after the
current iteration, writes a consistent checkpoint and returns; then the job hands over to
submitit's handler, which checkpoints (re-dumps this callable) and requeues. Plain crashes
leave the last epoch or interval checkpoint, and ``run --retry`` resumes from it.

Also runnable without submitit (the local launcher): ``python -m gfl_repro.launch.job RUN_DIR``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

import submitit

from ..distributed import job_environment
from ..engines import execute
from ..specs.run_config import RunConfig
from ..store import CONFIG_FILE, DONE
from .state import FAILED, PENDING, RUNNING, last_error_line, read_job, write_job

CHECKPOINT_EVERY = 50  # iterations; bounds the work a hard kill can lose


class TrainJob(submitit.helpers.Checkpointable):
    def __init__(self, run_dir: str) -> None:
        self.run_dir = str(run_dir)

    def __call__(self) -> dict | None:
        run_dir = Path(self.run_dir)
        meta = _read_meta(run_dir)
        env = job_environment()
        rank = env.global_rank if env else 0
        if rank == 0:
            fields = {"state": RUNNING, "pid": os.getpid(), "host": os.uname().nodename, "error": ""}
            if env is not None:
                fields["job_id"] = env.job_id
            write_job(run_dir, **fields)
        stop = threading.Event()
        previous = _intercept_preemption(stop) if env is not None else None
        try:
            result = execute(
                meta["config"], run_dir, run_id=meta["run_id"], profile=meta["profile"],
                data_root=Path(meta["data_root"]) if meta.get("data_root") else None,
                progress=False, should_stop=stop.is_set, checkpoint_interval=CHECKPOINT_EVERY,
            )
        except BaseException as err:  # record why, then let the launcher see the failure
            if rank == 0 and not isinstance(err, SystemExit):
                write_job(run_dir, state=FAILED, error=last_error_line(f"{type(err).__name__}: {err}"),
                          traceback=traceback.format_exc()[-4000:])
            raise
        if stop.is_set():  # stopped by the preemption signal: checkpoint written
            if rank == 0:
                write_job(run_dir, state=PENDING, requeued=read_job(run_dir).get("requeued", 0) + 1)
            if previous is not None and callable(previous):
                previous(_preempt_signal(), None)  # submitit: checkpoint() + requeue + exit
            return None
        if rank == 0:
            write_job(run_dir, state=DONE)
        return result

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on preemption / timeout: requeue this same callable."""
        return submitit.helpers.DelayedSubmission(TrainJob(self.run_dir))


def _read_meta(run_dir: Path) -> dict:
    """The run's config, run_id and profile (config.json) and data root (job.json)."""
    stored = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    return {"config": RunConfig.from_dict(stored["config"]), "run_id": stored["run_id"], "profile": stored["profile"],
            "data_root": read_job(run_dir).get("data_root")}


def _preempt_signal() -> int:
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, name if name.startswith("SIG") else f"SIG{name}")


def _intercept_preemption(stop: threading.Event):
    """Replace submitit's preemption handler by one that only sets ``stop``; return the old one."""
    sig = _preempt_signal()
    previous = signal.getsignal(sig)
    signal.signal(sig, lambda signum, frame: stop.set())
    return previous


def main(argv: list[str] | None = None) -> int:
    """Local launcher entry: run the job of one run directory in this process."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m gfl_repro.launch.job RUN_DIR", file=sys.stderr)
        return 2
    try:
        TrainJob(args[0])()
    except Exception:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
