"""Write tests/parity/goldens.pt: inputs and mmdetection 3.3's outputs for every parity case.

    .venv/bin/python scripts/make_parity_goldens.py     (needs the mmdet extra: scripts/mmdet_extra.sh)

The native side is not run here; tests/test_parity.py compares it with these files, so parity
is checked even where mmdet is not installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import parity_cases as cases  # noqa: E402


def main() -> None:
    import mmcv
    import mmdet

    out: dict[str, dict] = {}
    for seed in cases.SEEDS:
        x = cases.losses_inputs(seed)
        out[f"losses/{seed}"] = {"inputs": x, "mmdet": cases.losses_mmdet(x)}
    for seed in range(8):
        x = cases.assign_inputs(seed)
        out[f"assign/{seed}"] = {"inputs": x, "mmdet": cases.assign_mmdet(x)}
    for kind in ("gfl", "atss", "fcos"):
        for seed in cases.SEEDS:
            x = cases.head_inputs(seed)
            state = cases._head_state(kind, seed)
            out[f"head_{kind}/{seed}"] = {"inputs": x, "state": state, "mmdet": cases.head_loss_mmdet(kind, x, state)}
    for kind in cases.T1B_KINDS:
        for seed in cases.SEEDS:
            x = cases.t1b_inputs(kind, seed)
            state = cases.t1b_state(kind, seed)
            out[f"t1b_{kind}/{seed}"] = {"inputs": x, "state": state, "mmdet": cases.t1b_mmdet(kind, x, state)}
    for seed in cases.SEEDS[:1]:  # one detector case keeps the file small (its weights are stored)
        x = cases.model_inputs(seed)
        state = cases.model_state_mmdet(seed)
        out[f"detector/{seed}"] = {"inputs": x, "state": state, "mmdet": cases.model_mmdet(x, state)}
    path = ROOT / "tests" / "parity" / "goldens.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"_meta": {"mmdet": mmdet.__version__, "mmcv": mmcv.__version__, "torch": str(torch.__version__)}, **out}, path)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) with mmdet {mmdet.__version__}, mmcv {mmcv.__version__}")


if __name__ == "__main__":
    main()
