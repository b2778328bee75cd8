"""Two processes with DistributedDataParallel (gloo, CPU) compute the loss and gradients of one
process on the same global batch: the head's process-averaged normalisation plus DDP's
gradient averaging, with the sampler's per-rank slices of each global batch.

As in mmdetection, a normaliser is clamped to >= 1 after averaging over processes; the
models here start from class scores of 0.5 (not the focal-loss prior 0.01) so that the
box-loss weights per process sum to more than 1 and the clamp does not come into play."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gfl_repro.specs.catalogue import load_catalogue
from gfl_repro.datasets.coco import CocoDetection, EpochSampler, collate
from gfl_repro.datasets.synthetic import ensure_synthetic
from gfl_repro.distributed import wrap
from gfl_repro.models.detector import build_detector
from gfl_repro.specs.profiles import PROFILES

GLOBAL_BATCH = 4


def detector(label: str):
    torch.manual_seed(0)
    model = build_detector(config(label), num_classes=6)
    torch.nn.init.zeros_(model.head.cls_out.bias)
    return model


def config(label: str):
    exp = load_catalogue()["table3"]
    return exp.resolve(exp.row(label), PROFILES["smoke"])


def batch(data_dir, indices):
    data = CocoDetection(data_dir / "train", data_dir / "annotations" / "instances_train.json", train=True,
                         scale=(192, 160), flip_prob=0.0)
    return collate([data[i] for i in indices])


def losses_and_grads(model, images, targets):
    parts = model.loss(images, targets)
    sum(parts.values()).backward()
    inner = getattr(model, "module", model)
    grads = {n: p.grad.clone() for n, p in inner.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in parts.items()}, grads


def worker(rank: int, world: int, init_file: str, data_dir, label: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = wrap(detector(label), torch.device("cpu"))
    sampler = EpochSampler(8, shuffle=False, rank=rank, world_size=world, global_batch=GLOBAL_BATCH)
    mine = sampler.rank_order(0)[: GLOBAL_BATCH // world]
    parts, grads = losses_and_grads(model, *batch(data_dir, mine))
    torch.save({"parts": parts, "grads": grads, "indices": mine}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_two_process_ddp_equals_one_process(tmp_path):
    torch.set_num_threads(1)
    data_dir = ensure_synthetic(tmp_path / "cache", num_train=8, num_val=2, progress=False)
    for label in ("ATSS + QFL + DFL", "ATSS"):
        out = str(tmp_path / f"ranks-{label.replace(' ', '')}")
        mp.spawn(worker, args=(2, str(tmp_path / f"init-{len(label)}"), data_dir, label, out), nprocs=2, join=True)
        ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]
        assert ranks[0]["indices"] + ranks[1]["indices"] == list(range(GLOBAL_BATCH))

        single = detector(label)
        parts, grads = losses_and_grads(single, *batch(data_dir, range(GLOBAL_BATCH)))
        for name, value in parts.items():
            mean = (ranks[0]["parts"][name] + ranks[1]["parts"][name]) / 2
            assert abs(mean - value) <= 1e-5 * max(1.0, abs(value)), (label, name, mean, value)
        assert grads.keys() == ranks[0]["grads"].keys()
        for name, grad in grads.items():
            for r in range(2):
                torch.testing.assert_close(ranks[r]["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=f"{label} {name}")


def test_rank_slices_cover_every_global_batch_equally():
    per_rank = [EpochSampler(10, shuffle=True, seed=3, rank=r, world_size=2, global_batch=4) for r in range(2)]
    single = EpochSampler(10, shuffle=True, seed=3).order(5)
    slices = [s.rank_order(5) for s in per_rank]
    assert len(slices[0]) == len(slices[1]) == len(per_rank[0]) == 6  # 3 global batches of 2 per rank
    for b in range(2):  # the full global batches are exactly one process's batches
        assert slices[0][2 * b: 2 * b + 2] + slices[1][2 * b: 2 * b + 2] == single[4 * b: 4 * b + 4]
    assert set(slices[0] + slices[1]) == set(single)  # the padded last batch wraps around
