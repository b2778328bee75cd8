"""Benchmark (not a test): train-step time and inference ms/img of the native engine.

    .venv/bin/python benchmarks/bench_engine.py [--device cuda] [--steps 5] [--skip-full]
        [--channels-last] [--compile] [--profile 15]

Configurations: the smoke profile's GFL (tiny backbone, batch 8 at 192×160) and the paper's
GFL R-50 (batch 2 per device at 1333×800 for a train step, batch 1 for inference). Inputs are
random tensors with a few boxes each, so the numbers measure the model, not the data
pipeline. Prints one table row per configuration. ``--channels-last`` and ``--compile`` time
the fast path (the run settings of the same names); ``--profile N`` then prints the N operators
with the most self time in one training step of each configuration (torch.profiler).
"""

from __future__ import annotations

import argparse
import time

import torch

from gfl_repro.specs.run_config import RunConfig
from gfl_repro.models.detector import build_detector
from gfl_repro.specs.profiles import PROFILES, apply_profile
from gfl_repro.specs.recipes import RECIPES


def gfl_config(profile: str, **fast: bool) -> RunConfig:
    """GFL's recipe at ``profile``, with the fast-path settings ``fast`` (channels_last, compile)."""
    return RunConfig.from_dict(apply_profile(dict(RECIPES["gfl"]), PROFILES[profile])).replace(**fast)


def fake_batch(batch: int, height: int, width: int, device: torch.device):
    images = torch.randn(batch, 3, height, width, device=device)
    targets = []
    for _ in range(batch):
        boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.9], [0.05, 0.6, 0.3, 0.95]], device=device)
        boxes = boxes * torch.tensor([width, height, width, height], device=device)
        targets.append({"boxes": boxes, "labels": torch.tensor([0, 1, 2], device=device),
                        "img_shape": (height, width), "ori_shape": (height, width), "scale_factor": (1.0, 1.0)})
    return images, targets


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn, device, steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def bench(name: str, config: RunConfig, train_batch: int, size: tuple[int, int], device, steps: int,
          profile_rows: int = 0) -> dict:
    model = build_detector(config, num_classes=80).to(device)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    images, targets = fake_batch(train_batch, *size, device)

    def train_step():
        model.train()
        loss = sum(model.loss(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    one, one_targets = fake_batch(1, *size, device)

    def infer():
        model.eval()
        model.predict(one, one_targets)

    step_s = time_it(train_step, device, steps)
    if profile_rows:
        print_profile(name, train_step, device, profile_rows)
    infer_s = time_it(infer, device, steps)
    return {"config": name, "train batch": train_batch, "input": f"{size[1]}x{size[0]}",
            "s/train step": step_s, "ms/img (infer)": 1000 * infer_s, "FPS": 1.0 / infer_s}


def print_profile(name: str, step, device: torch.device, rows: int) -> None:
    """The operators with the most self time in one (warm) training step."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step()
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"one training step of {name}, top {rows} operators by self time:")
    print(prof.key_averages().table(sort_by=key, row_limit=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--skip-full", action="store_true", help="only the smoke configuration")
    parser.add_argument("--channels-last", action="store_true", help="the fast path's NHWC layout")
    parser.add_argument("--compile", action="store_true", help="the fast path's torch.compile")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N operators of a step")
    args = parser.parse_args()
    fast = {"channels_last": args.channels_last, "compile": args.compile}
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    rows = [bench("smoke GFL (tiny)", gfl_config("smoke", **fast), 8, (160, 192), device, args.steps, args.profile)]
    if not args.skip_full:
        rows.append(bench("paper GFL R-50", gfl_config("paper", **fast), 2, (800, 1333), device,
                          max(2, args.steps // 2), args.profile))
    print(f"device: {name}; fast path: {', '.join(k for k, on in fast.items() if on) or 'none'}")
    header = list(rows[0])
    print(" | ".join(f"{h:>16}" for h in header))
    for row in rows:
        print(" | ".join(f"{row[h]:>16.3f}" if isinstance(row[h], float) else f"{row[h]:>16}" for h in header))


if __name__ == "__main__":
    main()
