"""Shared fixtures: the real catalogue, temporary result roots, fake finished runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gfl_repro.specs.catalogue import load_catalogue
from gfl_repro.specs.profiles import PROFILES
from gfl_repro.store import run_dir, write_config, write_result

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def catalogue():
    return load_catalogue(REPO / "experiments")


@pytest.fixture
def smoke():
    return PROFILES["smoke"]


def unwritable(tmp_path: Path) -> Path:
    """A directory path this process cannot create: under a read-only directory, or (as root,
    whom file modes do not stop) under /sys, where even root may not create files."""
    if os.geteuid() == 0:
        return Path("/sys/gfl-repro-unwritable") / tmp_path.name
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    return parent / "target"


def finish_run(results_root: Path, profile, experiment, row, ap: float = 0.3, fps: float | None = None,
               seed: int = 0, device: str = "cpu", evaluated_on: str | None = None) -> str:
    """Write the files of a finished run for ``row`` and ``seed`` (stats: AP=ap, the others derived)."""
    from gfl_repro.specs.run_config import run_id

    config = experiment.resolve(row, profile, seed=seed)
    rid = run_id(config)
    directory = run_dir(results_root, profile.name, rid)
    write_config(directory, config, rid, profile.name)
    stats = [ap, ap + 0.2, ap + 0.05, ap - 0.1, ap, ap + 0.1, 0.3, 0.4, 0.5, 0.2, 0.5, 0.6]
    write_result(
        directory, run_id=rid, profile=profile.name, engine="native", toy_scale=profile.toy_scale,
        split=experiment.split, stats=stats, fps=fps, ms_per_img=None if fps is None else 1000 / fps, device=device,
        extra={"evaluated_on": evaluated_on} if evaluated_on else None,
    )
    return rid
