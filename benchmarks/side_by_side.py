"""Benchmark (not a test): the native engine beside mmdetection 3.3 on the same work.

    .venv/bin/python benchmarks/side_by_side.py [--device cpu|cuda] [--configs smoke r50]
        [--parts train infer assign memory split] [--pairs 7] [--precision fp32|bf16]
        [--channels-last] [--compile]

For each configuration (the smoke profile's GFL: tiny ResNet-50, batch 8 at 192×160; the
paper's GFL R-50: batch 2 at 1333×800) it builds mmdet's model from the same spec
(``gfl_repro.engines.mmdet.config``), converts its random weights into the native detector, and
first checks that both compute the same losses (1e-5 relative) and the same detections; only
then it times interleaved pairs and prints medians and the median of the per-pair ratios
mmdet / native (> 1: native faster):

* ``train``: one training step (forward, loss, backward, SGD step) on the same batch;
* ``infer``: inference with post-processing at batch 1 and batched;
* ``assign``: ATSS assignment of the anchors of a 1344×800 image with 20 and 100 GTs;
* ``split``: where a warm training step's time goes in each engine (torch.profiler, self time
  of the convolution operators, forward and backward, against everything else), and the
  ceiling that split puts on the ratio: mmdet's whole step over the native convolutions alone,
  the ratio the native engine would reach if everything but its convolutions took no time
  (on a CPU only);
* ``memory``: peak memory of a train step and of inference, each engine in a fresh process
  (both models are built there, from the same weights): on CPU the step's peak resident set
  above the resident set before it (sampled every millisecond during the step, so imports and
  the weights do not hide what the step itself needs: activations, gradients, optimizer state),
  on CUDA ``torch.cuda.max_memory_allocated``.

``--channels-last`` and ``--compile`` time the native engine's fast path (the run settings of
the same names; the first step of each part then includes the compilation, which the warm-up
pair absorbs). ``--precision bf16`` runs the native training step as a ``precision = "bf16"``
run does (its forward pass and losses under bfloat16 autocast), against mmdet in fp32; the
check of equal losses and detections, inference and memory stay in fp32. Needs the mmdet extra
(``scripts/mmdet_extra.sh``). Inputs are random tensors with a few boxes per image: the numbers
measure the models, not the data pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from bench_engine import gfl_config  # this directory's: GFL's recipe at a profile
from gfl_repro.specs.run_config import RunConfig

CONFIGS = {"smoke": dict(profile="smoke", batch=8, size=(160, 192)),
           "r50": dict(profile="paper", batch=2, size=(800, 1344))}
NUM_CLASSES = 80


def build_pair(config: RunConfig, device: torch.device):
    """(native detector, mmdet detector) with the same random weights, in train mode; the
    native one with the fast path ``config`` asks for."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from gfl_repro.engines.mmdet.config import build_config, register_tiny_backbones
    from gfl_repro.engines.mmdet.convert import convert_state_dict
    from gfl_repro.models.detector import build_detector

    register_all_modules(init_default_scope=True)
    register_tiny_backbones()
    cfg = build_config(config.replace(channels_last=False, compile=False), classes=[str(i) for i in range(NUM_CLASSES)], train_images=Path("/none"),
                       train_annotations=Path("/none.json"), val_images=Path("/none"),
                       val_annotations=Path("/none.json"), work_dir=Path("/tmp/gfl-bench"))
    torch.manual_seed(0)
    theirs = MODELS.build(cfg.model)
    with torch.no_grad():
        theirs.bbox_head.gfl_cls.bias.fill_(-2.0)  # enough detections above the score threshold
    ours = build_detector(config, num_classes=NUM_CLASSES)
    ours.load_state_dict(convert_state_dict(theirs.state_dict()), strict=True)
    return ours.to(device).train(), theirs.to(device).train()


def fake_batch(batch: int, height: int, width: int, device: torch.device, seed: int = 0):
    """Images, native targets and mmdet data samples for the same boxes."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, height, width, generator=g).to(device)
    targets, samples = [], []
    for _ in range(batch):
        xy = torch.rand(6, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
        wh = 16 + torch.rand(6, 2, generator=g) * torch.tensor([width * 0.3, height * 0.3])
        boxes = torch.cat([xy, xy + wh], 1).to(device)
        labels = torch.randint(0, NUM_CLASSES, (6,), generator=g).to(device)
        meta = {"img_shape": (height, width), "ori_shape": (height, width), "scale_factor": (1.0, 1.0),
                "pad_shape": (height, width), "batch_input_shape": (height, width)}
        targets.append({"boxes": boxes, "labels": labels, **meta})
        sample = DetDataSample(metainfo=meta)
        sample.gt_instances = InstanceData(bboxes=boxes, labels=labels)
        sample.ignored_instances = InstanceData(bboxes=boxes.new_zeros(0, 4))
        samples.append(sample)
    return images, targets, samples


def losses(ours, theirs, images, targets, samples) -> tuple[dict, dict]:
    mine = {k: float(v.detach()) for k, v in ours.loss(images, targets).items()}
    raw = theirs.loss(images, samples)
    other = {k: float((sum(v) if isinstance(v, (list, tuple)) else v).detach()) for k, v in raw.items()}
    return mine, other


def check_same(ours, theirs, images, targets, samples) -> str:
    """Both engines compute the same losses and detections (raises otherwise); a summary line."""
    mine, other = losses(ours, theirs, images, targets, samples)
    for name, value in mine.items():
        if abs(value - other[name]) > 1e-5 * max(abs(other[name]), 1e-3):
            raise AssertionError(f"loss {name}: native {value} vs mmdet {other[name]}")
    ours.eval(), theirs.eval()
    with torch.no_grad():
        a = ours.predict(images[:1], targets[:1])[0]
        b = theirs.predict(images[:1], samples[:1], rescale=True)[0].pred_instances
    ours.train(), theirs.train()
    if len(a["scores"]) != len(b.scores) or not torch.allclose(a["scores"], b.scores, rtol=1e-5, atol=1e-6):
        raise AssertionError("detections differ")
    worst = max(abs(v - other[k]) / max(abs(other[k]), 1e-12) for k, v in mine.items())
    return f"same losses (worst rel. diff {worst:.1e}) and {len(a['scores'])} identical detections"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleave(step_ours, step_theirs, device, pairs: int, warmup: int = 1) -> dict:
    for _ in range(warmup):
        step_ours(), step_theirs()
    ours, theirs = [], []
    for _ in range(pairs):
        ours.append(timed(step_ours, device))
        theirs.append(timed(step_theirs, device))
    ratios = [t / o for o, t in zip(ours, theirs)]
    return {"native_ms": 1000 * statistics.median(ours), "mmdet_ms": 1000 * statistics.median(theirs),
            "ratio": statistics.median(ratios)}


def train_steps(ours, theirs, images, targets, samples, precision: str = "fp32"):
    opt_a = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=1e-4, momentum=0.9, weight_decay=1e-4)
    opt_b = torch.optim.SGD([p for p in theirs.parameters() if p.requires_grad], lr=1e-4, momentum=0.9,
                            weight_decay=1e-4)

    def step_ours():
        opt_a.zero_grad(set_to_none=True)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            total = sum(ours.loss(images, targets).values())
        total.backward()
        opt_a.step()

    def step_theirs():
        opt_b.zero_grad(set_to_none=True)
        total, _ = theirs.parse_losses(theirs.loss(images, samples))
        total.backward()
        opt_b.step()

    return step_ours, step_theirs


def infer_steps(ours, theirs, images, targets, samples, batch: int):
    def step_ours():
        with torch.no_grad():
            ours.predict(images[:batch], targets[:batch])

    def step_theirs():
        with torch.no_grad():
            theirs.predict(images[:batch], samples[:batch], rescale=True)

    return step_ours, step_theirs


def assign_steps(gts: int, device):
    from mmdet.models.task_modules.assigners import ATSSAssigner
    from mmengine.structures import InstanceData

    from gfl_repro.models.assigners.atss import atss_assign
    from gfl_repro.models.priors import grid_anchors

    sizes = [(-(-800 // s), -(-1344 // s)) for s in (8, 16, 32, 64, 128)]
    levels = [a.to(device) for a in grid_anchors(sizes, (8, 16, 32, 64, 128), 8)]
    anchors, counts = torch.cat(levels), [len(a) for a in levels]
    g = torch.Generator().manual_seed(gts)
    xy = torch.rand(gts, 2, generator=g) * torch.tensor([1000.0, 600.0])
    boxes = torch.cat([xy, xy + 16 + torch.rand(gts, 2, generator=g) * 300], 1).to(device)
    labels = torch.randint(0, NUM_CLASSES, (gts,), generator=g).to(device)
    assigner = ATSSAssigner(topk=9)
    priors, gt = InstanceData(priors=anchors), InstanceData(bboxes=boxes, labels=labels)
    return (lambda: atss_assign(anchors, counts, boxes, labels)), (lambda: assigner.assign(priors, counts, gt))


def conv_split(step, repeats: int = 3) -> dict:
    """Median over ``repeats`` profiled warm steps (on a CPU) of the total and the convolution
    self time in ms: the operators whose name holds ``conv`` (``mkldnn_convolution``,
    ``convolution_backward``, ...) against all operators; and the names of the operators
    counted as convolutions."""
    step()
    totals, convs, names = [], [], set()
    for _ in range(repeats):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step()
        events = prof.key_averages()
        counted = [e for e in events if "conv" in e.key.lower()]
        totals.append(sum(e.self_cpu_time_total for e in events) / 1000)
        convs.append(sum(e.self_cpu_time_total for e in counted) / 1000)
        names |= {e.key for e in counted if e.self_cpu_time_total > 0}
    return {"total_ms": statistics.median(totals), "conv_ms": statistics.median(convs), "conv_ops": names}


def cpu_description() -> str:
    """The CPU's vector instructions as torch sees them (``AVX2``, ``AVX512``), and whether it has
    AMX bfloat16 tiles (Linux): what decides here whether ``--channels-last`` and bf16 pay."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        flags = []
    return f"CPU, {torch.backends.cpu.get_cpu_capability()}" + (" + AMX-BF16" if "amx_bf16" in flags else "")


def resident_mb() -> float:
    """This process's resident set now (Linux ``/proc/self/statm``), in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_resident_during(fn) -> float:
    """Run ``fn`` while a thread samples the resident set every millisecond; the highest sample."""
    peak, done = [resident_mb()], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident_mb())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], resident_mb())


def memory_child(engine: str, part: str, name: str, device: str, fast: dict) -> None:
    """In a fresh process: one step of ``part`` with ``engine``; print the step's peak memory in MB."""
    dev = torch.device(device)
    spec = CONFIGS[name]
    ours, theirs = build_pair(gfl_config(spec["profile"], **fast), dev)
    images, targets, samples = fake_batch(spec["batch"], *spec["size"], dev)
    if part == "train":
        fn = train_steps(ours, theirs, images, targets, samples)[0 if engine == "native" else 1]
    else:
        (ours if engine == "native" else theirs).eval()
        fn = infer_steps(ours, theirs, images, targets, samples, 1)[0 if engine == "native" else 1]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        fn()
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        before = resident_mb()
        peak = peak_resident_during(fn) - before
    print(json.dumps({"peak_mb": peak}))


def memory_pair(part: str, name: str, device: str, fast: dict) -> dict:
    out = {}
    for engine in ("native", "mmdet"):
        cmd = [sys.executable, __file__, "--memory-child", engine, part, name, "--device", device]
        cmd += [f"--{key.replace('_', '-')}" for key, on in fast.items() if on]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[engine] = json.loads(result.stdout.strip().splitlines()[-1])["peak_mb"]
    return {"native_mb": out["native"], "mmdet_mb": out["mmdet"], "ratio": out["mmdet"] / out["native"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--parts", nargs="+", default=["train", "infer", "assign", "memory"],
                        choices=["train", "infer", "assign", "memory", "split"])
    parser.add_argument("--pairs", type=int, default=7, help="interleaved timing pairs (3 for r50 on CPU)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="the native training step's arithmetic (mmdet's is fp32)")
    parser.add_argument("--channels-last", action="store_true", help="the native model in channels_last")
    parser.add_argument("--compile", action="store_true", help="the native model's dense path torch.compiled")
    parser.add_argument("--memory-child", nargs=3, metavar=("ENGINE", "PART", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    fast = {"channels_last": args.channels_last, "compile": args.compile}
    if args.memory_child:
        memory_child(*args.memory_child, args.device, fast)
        return
    device = torch.device(args.device)
    if "split" in args.parts and device.type != "cpu":
        parser.error("--parts split profiles CPU operators only (a GPU's kernels are not named by the "
                     "operators that launch them)")
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else cpu_description()}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, native training step: "
          f"{', '.join([args.precision] + [key for key, on in fast.items() if on])}")
    print(f"{'config':<7} {'what':<24} {'native':>12} {'mmdet':>12} {'mmdet/native':>13}")
    for name in args.configs:
        spec = CONFIGS[name]
        pairs = args.pairs if name == "smoke" or device.type == "cuda" else min(args.pairs, 3)
        ours, theirs = build_pair(gfl_config(spec["profile"], **fast), device)
        images, targets, samples = fake_batch(spec["batch"], *spec["size"], device)
        print(f"{name:<7} check: {check_same(ours, theirs, images, targets, samples)}")
        rows = []
        if "train" in args.parts:
            steps = train_steps(ours, theirs, images, targets, samples, args.precision)
            rows.append((f"train step ({args.precision})", interleave(*steps, device, pairs)))
        if "infer" in args.parts:
            ours.eval(), theirs.eval()
            for batch in (1, spec["batch"]):
                rows.append((f"inference batch {batch}", interleave(
                    *infer_steps(ours, theirs, images, targets, samples, batch), device, pairs)))
            ours.train(), theirs.train()
        for what, r in rows:
            print(f"{name:<7} {what:<24} {r['native_ms']:>9.1f} ms {r['mmdet_ms']:>9.1f} ms {r['ratio']:>12.2f}x")
        if "split" in args.parts:
            mine, other = (conv_split(step)
                           for step in train_steps(ours, theirs, images, targets, samples, args.precision))
            for engine, r in (("native", mine), ("mmdet", other)):
                print(f"{name:<7} {engine + ' step, profiled':<24} {r['total_ms']:>9.1f} ms, convolutions "
                      f"{r['conv_ms']:.1f} ms ({100 * r['conv_ms'] / r['total_ms']:.0f} %), "
                      f"the rest {r['total_ms'] - r['conv_ms']:.1f} ms")
            print(f"{name:<7} {'ceiling':<24} mmdet step / native convolutions alone = "
                  f"{other['total_ms'] / mine['conv_ms']:.2f}x")
        if "memory" in args.parts:
            for part in ("train", "infer"):
                r = memory_pair(part, name, args.device, fast)
                print(f"{name:<7} {'peak memory ' + part:<24} {r['native_mb']:>9.0f} MB {r['mmdet_mb']:>9.0f} MB "
                      f"{r['ratio']:>12.2f}x")
    if "assign" in args.parts:
        for gts in (20, 100):
            r = interleave(*assign_steps(gts, device), device, args.pairs)
            print(f"{'1344x800':<7} {f'ATSS assign, {gts} GTs':<24} {r['native_ms']:>9.1f} ms {r['mmdet_ms']:>9.1f} ms "
                  f"{r['ratio']:>12.2f}x")


if __name__ == "__main__":
    main()
