"""Benchmark (not a test): wall time of every run of the catalogue at a profile, from its files.

    .venv/bin/python benchmarks/catalogue_timing.py [--profile smoke] [--results-dir results] [--run]

With ``--run`` it first runs every experiment (``gfl-repro run`` of all tables and figures at
the profile's default seeds) and draws every figure (``gfl-repro plot``), timing each command.
Then, for every row of every experiment, it prints the wall time of its runs: from the first
``start`` record of ``metrics.jsonl`` to ``result.json`` being written (training, evaluation and
the speed measurement), summed over resumptions' gaps it does not see (a resumed run counts its
pause). Rows shared by several tables are listed once per table, timed once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from gfl_repro.specs.catalogue import default_results_dir, load_catalogue
from gfl_repro.specs.profiles import PROFILES
from gfl_repro.store import RESULT_FILE, read_metrics, run_dir


def run_seconds(directory: Path) -> float | None:
    """Seconds from the run's first start record to its result file (None when not done)."""
    result = directory / RESULT_FILE
    if not result.exists():
        return None
    records, _ = read_metrics(directory)
    starts = [r["wall_time"] for r in records if r.get("type") in ("start", "resume") and "wall_time" in r]
    return result.stat().st_mtime - min(starts) if starts else None


def timed_command(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gfl_repro.cli", *args], check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--run", action="store_true", help="run every experiment and draw every figure first")
    args = parser.parse_args(argv)
    results = args.results_dir or default_results_dir()
    profile = PROFILES[args.profile]
    catalogue = load_catalogue()
    if args.run:
        for name in catalogue:
            seconds = timed_command(["--results-dir", str(results), "run", name, "--profile", profile.name, "--quiet"])
            print(f"gfl-repro run {name}: {seconds:.0f} s", flush=True)
        seconds = timed_command(["--results-dir", str(results), "plot", "--profile", profile.name])
        print(f"gfl-repro plot: {seconds:.0f} s", flush=True)
    total, seen = 0.0, set()
    print(f"{'experiment':<10} {'row':<40} {'seed':>4} {'run':<12} {'wall s':>8}")
    for exp in catalogue.values():
        for row, config, rid in exp.runs(profile, seeds=profile.default_seeds):
            seconds = run_seconds(run_dir(results, profile.name, rid))
            shown = "not done" if seconds is None else f"{seconds:8.1f}"
            print(f"{exp.id:<10} {row.display[:40]:<40} {config.seed:>4} {rid:<12} {shown:>8}")
            if seconds is not None and rid not in seen:
                seen.add(rid)
                total += seconds
    print(json.dumps({"profile": profile.name, "distinct_runs_done": len(seen), "total_wall_s": round(total, 1)}))


if __name__ == "__main__":
    main()
