"""Parity with mmdetection 3.3, component by component (fp32, ≤ 1e-5 relative).

Live against mmdet when the `mmdet` extra is installed (skipped with the reason otherwise),
and always against goldens that `scripts/make_parity_goldens.py` produced with mmdet.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import parity_cases as cases

GOLDENS = Path(__file__).parent / "parity" / "goldens.pt"
HAS_MMDET = importlib.util.find_spec("mmdet") is not None and importlib.util.find_spec("mmcv") is not None
live = pytest.mark.skipif(not HAS_MMDET, reason="mmdet/mmcv not installed (scripts/mmdet_extra.sh installs them)")
RTOL, ATOL = 1e-5, 1e-6


def assert_same(native: dict, reference: dict, what: str) -> float:
    """Compare every tensor (integers exactly; floats to 1e-5 relative to the element or, for
    values near 0 such as a box corner at 0.7 px, to the tensor's magnitude); return the
    largest absolute difference."""
    assert native.keys() == reference.keys(), (what, native.keys(), reference.keys())
    worst = 0.0
    for key in native:
        a, b = native[key], reference[key]
        if a.dtype in (torch.int64, torch.int32, torch.bool):
            assert torch.equal(a.long(), b.long()), f"{what} {key}"
            continue
        scale = float(b.abs().max()) if b.numel() else 0.0
        torch.testing.assert_close(a.float(), b.float(), rtol=RTOL, atol=max(ATOL, RTOL * scale), msg=f"{what} {key}")
        if a.numel():
            worst = max(worst, float((a.float() - b.float()).abs().max()))
    return worst


def goldens() -> dict:
    if not GOLDENS.exists():
        pytest.fail(f"{GOLDENS} is missing: run scripts/make_parity_goldens.py with the mmdet extra installed")
    return torch.load(GOLDENS, weights_only=True)


# ---------------------------------------------------------------------------------- live


@live
@pytest.mark.parametrize("seed", cases.SEEDS)
def test_losses_and_box_ops_live(seed):
    x = cases.losses_inputs(seed)
    assert_same(cases.losses_native(x), cases.losses_mmdet(x), f"losses seed {seed}")


@live
@pytest.mark.parametrize("seed", range(8))
def test_atss_assignment_live(seed):
    x = cases.assign_inputs(seed)
    assert_same(cases.assign_native(x), cases.assign_mmdet(x), f"assignment seed {seed}")


@live
@pytest.mark.parametrize("kind", ["gfl", "atss", "fcos"])
@pytest.mark.parametrize("seed", cases.SEEDS)
def test_head_losses_live(kind, seed):
    x = cases.head_inputs(seed)
    state = cases._head_state(kind, seed)
    assert_same(cases.head_loss_native(kind, x, state), cases.head_loss_mmdet(kind, x, state), f"{kind} seed {seed}")


@live
@pytest.mark.parametrize("seed", cases.SEEDS)
def test_detector_detections_live(seed):
    """A random mmdet GFL model, imported, gives the same post-processed detections."""
    x = cases.model_inputs(seed)
    state = cases.model_state_mmdet(seed)
    native = cases.model_native(x, state)
    assert sum(v.numel() for k, v in native.items() if k.startswith("scores")) > 50
    assert_same(native, cases.model_mmdet(x, state), f"detector seed {seed}")


@live
@pytest.mark.parametrize("kind", cases.T1B_KINDS)
@pytest.mark.parametrize("seed", cases.SEEDS)
def test_table1b_heads_live(kind, seed):
    """RetinaNet, FoveaBox and SSD512: every loss term and the post-processed detections."""
    x = cases.t1b_inputs(kind, seed)
    state = cases.t1b_state(kind, seed)
    native = cases.t1b_native(kind, x, state)
    assert sum(v.numel() for k, v in native.items() if k.startswith("scores")) > 50
    assert_same(native, cases.t1b_mmdet(kind, x, state), f"{kind} seed {seed}")


# ---------------------------------------------------------------------------------- goldens


def test_goldens_cover_every_component():
    g = goldens()
    assert {k.split("/")[0] for k in g if k != "_meta"} == {
        "losses", "assign", "head_gfl", "head_atss", "head_fcos", "detector", "t1b_retinanet", "t1b_foveabox", "t1b_ssd512"}


@pytest.mark.parametrize("seed", cases.SEEDS)
def test_losses_and_box_ops_golden(seed):
    g = goldens()[f"losses/{seed}"]
    assert_same(cases.losses_native(g["inputs"]), g["mmdet"], f"losses seed {seed}")


@pytest.mark.parametrize("seed", range(8))
def test_atss_assignment_golden(seed):
    g = goldens()[f"assign/{seed}"]
    assert_same(cases.assign_native(g["inputs"]), g["mmdet"], f"assignment seed {seed}")


@pytest.mark.parametrize("kind", ["gfl", "atss", "fcos"])
@pytest.mark.parametrize("seed", cases.SEEDS)
def test_head_losses_golden(kind, seed):
    g = goldens()[f"head_{kind}/{seed}"]
    assert_same(cases.head_loss_native(kind, g["inputs"], g["state"]), g["mmdet"], f"{kind} seed {seed}")


@pytest.mark.parametrize("seed", cases.SEEDS[:1])
def test_detector_detections_golden(seed):
    g = goldens()[f"detector/{seed}"]
    assert_same(cases.model_native(g["inputs"], g["state"]), g["mmdet"], f"detector seed {seed}")


@pytest.mark.parametrize("kind", cases.T1B_KINDS)
@pytest.mark.parametrize("seed", cases.SEEDS)
def test_table1b_heads_golden(kind, seed):
    g = goldens()[f"t1b_{kind}/{seed}"]
    assert_same(cases.t1b_native(kind, g["inputs"], g["state"]), g["mmdet"], f"{kind} seed {seed}")
