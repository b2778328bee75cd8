"""The training loop: mmengine's lr schedule, optimiser, resume bit-exactness, failure modes."""

from __future__ import annotations

import math
import random
import threading

import numpy as np
import pytest
import torch
from torch import nn

from gfl_repro.specs.run_config import RunConfig
from gfl_repro.engines.native.schedule import lr_at
from gfl_repro.store import read_metrics
from gfl_repro.engines.errors import NonFiniteLoss
from gfl_repro.engines.native.checkpoints import CheckpointError, checkpoint_path, load_checkpoint
from gfl_repro.engines.native.fit import fit
from gfl_repro.engines.native.loop import build_optimizer


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from threads, and oversubscribed cores make them crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ schedule

COCO_ITERS = 7330  # ceil(117266 / 16): iterations per epoch of COCO train2017 at batch 16


def _mmengine_formula(g: int, e: int, base=0.01, warmup=500, ratio=0.001, steps=(8, 11)) -> float:
    """Hand-derived closed form (see gfl_repro.engines.native.schedule): LinearLR reaches 1 at step end-1."""
    w = ratio + (1 - ratio) * min(g, warmup - 1) / (warmup - 1)
    return base * w * 0.1 ** sum(m <= e for m in steps)


def _mmengine_chained(epochs: int, iters: int, base: float, warmup: int, ratio: float, steps) -> list[list[float]]:
    """Replay mmengine's recurrences step by step: LinearLR (by iteration, begin=0, end=warmup)
    and MultiStepLR (by epoch), both multiplying the optimiser's current lr; each is stepped once
    when built, then after every iteration / epoch (ParamSchedulerHook)."""
    lr = base
    total = warmup - 1  # LinearLR.total_iters = end - begin - 1
    lin_step = ms_step = -1

    def linear_step():
        nonlocal lr, lin_step
        if lin_step + 1 < warmup:  # begin <= global_step < end
            lin_step += 1
            k = lin_step
            lr = lr * ratio if k == 0 else lr * (1 + (1 - ratio) / (total * ratio + (k - 1) * (1 - ratio)))
        else:
            lin_step += 1

    def multistep_step():
        nonlocal lr, ms_step
        ms_step += 1
        lr = lr * 0.1 ** list(steps).count(ms_step)

    linear_step()
    multistep_step()
    used = []
    for _ in range(epochs):
        row = []
        for _ in range(iters):
            row.append(lr)
            linear_step()
        used.append(row)
        multistep_step()
    return used


def test_lr_at_key_iterations_of_the_1x_schedule():
    cfg = RunConfig()
    assert lr_at(0, 0, cfg, COCO_ITERS) == pytest.approx(1e-5, rel=1e-12)
    assert lr_at(0, 0, cfg, COCO_ITERS) == pytest.approx(_mmengine_formula(0, 0), rel=1e-12)
    assert lr_at(250, 0, cfg, COCO_ITERS) == pytest.approx(0.01 * (0.001 + 0.999 * 250 / 499), rel=1e-12)
    assert lr_at(498, 0, cfg, COCO_ITERS) < 0.01
    assert lr_at(499, 0, cfg, COCO_ITERS) == pytest.approx(0.01, rel=1e-12)  # end of warmup: step 499
    assert lr_at(500, 0, cfg, COCO_ITERS) == pytest.approx(0.01, rel=1e-12)
    assert lr_at(COCO_ITERS - 1, 7, cfg, COCO_ITERS) == pytest.approx(0.01, rel=1e-12)
    assert lr_at(0, 8, cfg, COCO_ITERS) == pytest.approx(0.001, rel=1e-12)  # decay from 0-based epoch 8
    assert lr_at(COCO_ITERS - 1, 10, cfg, COCO_ITERS) == pytest.approx(0.001, rel=1e-12)
    assert lr_at(0, 11, cfg, COCO_ITERS) == pytest.approx(1e-4, rel=1e-12)
    for g, e in [(0, 0), (1, 0), (123, 0), (499, 0), (7 * COCO_ITERS, 7), (8 * COCO_ITERS + 5, 8)]:
        assert lr_at(g - e * COCO_ITERS, e, cfg, COCO_ITERS) == pytest.approx(_mmengine_formula(g, e), rel=1e-12)
    with pytest.raises(ValueError):
        lr_at(COCO_ITERS, 0, cfg, COCO_ITERS)  # iteration is within the epoch


def test_lr_at_matches_mmengine_chained_recurrence_with_milestones_inside_warmup():
    cfg = RunConfig(base_lr=0.02, warmup_iters=10, warmup_ratio=0.001, lr_steps=(2, 3), epochs=5)
    used = _mmengine_chained(5, 3, 0.02, 10, 0.001, (2, 3))
    for e, row in enumerate(used):
        for i, expected in enumerate(row):
            assert lr_at(i, e, cfg, 3) == pytest.approx(expected, rel=1e-12), (e, i)
    assert lr_at(0, 0, RunConfig(warmup_iters=0), 10) == 0.01


# ------------------------------------------------------------------------------ toy model + data


class TinyNet(nn.Module):
    """A few convs + BN + dropout; uses the torch, numpy and python RNGs in its loss."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
            nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.Dropout(0.2),
        )
        self.head = nn.Linear(6, 2)
        self.frozen = nn.Parameter(torch.ones(1), requires_grad=False)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))

    def loss(self, images, targets):
        out = self(images)
        jitter = 1.0 + 1e-3 * float(np.random.rand()) + 1e-3 * random.random()
        return {
            "loss_cls": ((out[:, 0] - targets[:, 0]) ** 2).mean() * jitter,
            "loss_bbox": (out[:, 1] - targets[:, 1]).abs().mean(),
        }


def _batches(seed: int, epoch: int, n: int = 6, batch: int = 4):
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    images = torch.randn(n * batch, 3, 8, 8, generator=g)
    targets = torch.stack([images.mean(dim=(1, 2, 3)) * 3, images[:, 0].std(dim=(1, 2))], dim=1)
    return images, targets


def make_list_loader(epoch):
    images, targets = _batches(0, epoch)
    return [(images[i:i + 4], targets[i:i + 4]) for i in range(0, len(images), 4)]


def make_dataloader(epoch):
    """A DataLoader that shuffles with the *global* torch RNG (no generator): fit isolates it."""
    images, targets = _batches(0, 0)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, targets), batch_size=4, shuffle=True)


def make_generator_loader(epoch):
    """No len(): fit cannot know where the epoch ends until the iterator is exhausted."""
    yield from make_list_loader(epoch)


START_CALLS = []


def make_start_loader(epoch, start=0):
    """Accepts ``start``: a resume asks for the remaining batches only."""
    START_CALLS.append((epoch, start))
    return make_list_loader(epoch)[start:]


def _cfg(**changes):
    base = dict(base_lr=0.05, warmup_iters=4, warmup_ratio=0.1, lr_steps=(2,), epochs=3, seed=3)
    base.update(changes)
    return RunConfig(**base)


def _model(seed=0):
    torch.manual_seed(seed)
    return TinyNet()


# ------------------------------------------------------------------------------ optimiser


def test_build_optimizer_decays_all_trainable_params_with_base_lr():
    model = _model()
    opt = build_optimizer(model, RunConfig(base_lr=0.005))
    (group,) = opt.param_groups
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(group["params"]) == len(trainable) and all(a is b for a, b in zip(group["params"], trainable))
    assert group["lr"] == group["initial_lr"] == 0.005
    assert group["momentum"] == 0.9 and group["weight_decay"] == 1e-4  # on biases and BN too
    assert not any(p is model.frozen for p in group["params"])


# ------------------------------------------------------------------------------ fit


def test_fit_lowers_the_loss_and_follows_the_schedule(tmp_path):
    cfg = _cfg(base_lr=0.05, warmup_iters=0, lr_steps=(), epochs=4)
    seen = []
    fit(_model(), make_list_loader, cfg, tmp_path, device="cpu", progress=True, amp=True,
        on_iteration=seen.append)
    assert len(seen) == 24 and [s["iteration"] for s in seen] == list(range(24))
    first = np.mean([s["loss"] for s in seen[:6]])
    last = np.mean([s["loss"] for s in seen[-6:]])
    assert last < 0.7 * first
    cfg2 = _cfg()
    seen2 = []
    fit(_model(), make_list_loader, cfg2, tmp_path / "b", device="cpu", progress=False, epochs=3,
        on_iteration=seen2.append, grad_clip=0.5)
    iter_records = [r for r in read_metrics(tmp_path / "b")[0] if r["type"] == "iter"]
    assert [r["iteration"] for r in iter_records] == [5, 9, 11, 17]  # every 10 and at epoch ends
    assert all(r["grad_norm"] > 0 and r["time"] > 0 for r in iter_records)
    for s in seen2:
        assert s["lr"] == pytest.approx(lr_at(s["iter"], s["epoch"], cfg2, 6), rel=1e-12)
    assert set(seen2[0]) >= {"loss", "loss_cls", "loss_bbox", "lr", "epoch", "iter", "iteration"}


RESUME_CASES = [
    (make_list_loader, 9), (make_dataloader, 9), (make_start_loader, 9), (make_generator_loader, 9),
    (make_list_loader, 11), (make_generator_loader, 11),  # 11: last batch of 0-based epoch 1
]


@pytest.mark.parametrize("loader,stop_at", RESUME_CASES,
                         ids=["list", "global-rng-dataloader", "start-kwarg", "no-len", "list-epoch-end", "no-len-epoch-end"])
def test_resume_after_requested_stop_is_bit_exact(tmp_path, loader, stop_at):
    cfg = _cfg()
    full = _model()
    fit(full, loader, cfg, tmp_path / "full", device="cpu", progress=False, log_interval=4)

    stop = threading.Event()

    def stop_in_epoch_2(info):  # 0-based epoch 1 = global iterations 6..11
        if info["iteration"] == stop_at:
            stop.set()

    first = _model()
    fit(first, loader, cfg, tmp_path / "split", device="cpu", progress=False, log_interval=4,
        on_iteration=stop_in_epoch_2, should_stop=stop.is_set)
    ckpt = load_checkpoint(checkpoint_path(tmp_path / "split"))
    assert ckpt["global_iter"] == stop_at + 1
    assert ckpt["epoch"] * 6 + ckpt["iter_in_epoch"] == stop_at + 1

    START_CALLS.clear()
    resumed = _model(seed=123)  # different init: the weights must come from the checkpoint
    fit(resumed, loader, cfg, tmp_path / "split", device="cpu", progress=False, log_interval=4)
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    if loader is make_start_loader:
        assert START_CALLS[0] == (1, stop_at - 5)

    # metrics continue after the resume instead of restarting from zero
    records, problem = read_metrics(tmp_path / "split")
    assert not problem
    kinds = [r["type"] for r in records]
    assert kinds[0] == "start" and "resume" in kinds and kinds[-1] == "end"
    at = kinds.index("resume")
    assert records[at]["iteration"] == stop_at + 1
    before = [r["iteration"] for r in records[:at] if r["type"] == "iter"]
    after = [r["iteration"] for r in records[at:] if r["type"] == "iter"]
    assert before[-1] == stop_at and after[0] > stop_at and after == sorted(after) and after[-1] == 17
    # epoch statistics survive the interruption exactly
    full_records, _ = read_metrics(tmp_path / "full")
    epochs_full = [r for r in full_records if r["type"] == "epoch"]
    epochs_split = [r for r in records if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs_split] == [0, 1, 2]
    for a, b in zip(epochs_full, epochs_split):
        assert (a["loss"], a["loss_cls"], a["iters"]) == (b["loss"], b["loss_cls"], b["iters"])

    # a finished run is not trained further, but the model gets its final weights
    again = _model(seed=5)
    fit(again, loader, cfg, tmp_path / "split", device="cpu", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), full.state_dict().values()))
    assert read_metrics(tmp_path / "split")[0] == records


def test_resume_after_crash_from_interval_checkpoint_is_bit_exact(tmp_path):
    cfg = _cfg()
    full = _model()
    fit(full, make_list_loader, cfg, tmp_path / "full", device="cpu", progress=False)

    def crash(info):
        if info["iteration"] == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_model(), make_list_loader, cfg, tmp_path / "crash", device="cpu", progress=False,
            checkpoint_interval=4, on_iteration=crash)
    assert load_checkpoint(checkpoint_path(tmp_path / "crash"))["global_iter"] == 8
    resumed = _model(seed=9)
    fit(resumed, make_list_loader, cfg, tmp_path / "crash", device="cpu", progress=False, checkpoint_interval=4)
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


class NanAt(TinyNet):
    def __init__(self, at: int):
        super().__init__()
        self.calls, self.at = 0, at

    def loss(self, images, targets):
        parts = super().loss(images, targets)
        if self.calls == self.at:
            parts["loss_bbox"] = parts["loss_bbox"] * float("nan")
        self.calls += 1
        return parts


def test_non_finite_loss_names_iteration_and_part_and_keeps_last_checkpoint(tmp_path):
    cfg = _cfg()
    torch.manual_seed(0)
    with pytest.raises(NonFiniteLoss) as info:
        fit(NanAt(8), make_list_loader, cfg, tmp_path, device="cpu", progress=False, checkpoint_interval=1)
    message = str(info.value)
    assert "loss became non-finite at iteration 8: loss_bbox=nan" in message
    assert "loss_cls" not in message
    assert info.value.iteration == 8 and info.value.epoch == 1 and info.value.iter == 2
    ckpt = load_checkpoint(checkpoint_path(tmp_path))
    # checkpointed after every iteration, but not after the failed one: the state before it
    assert (ckpt["epoch"], ckpt["iter_in_epoch"], ckpt["global_iter"]) == (1, 2, 8)
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    records, _ = read_metrics(tmp_path)
    assert records[-1]["type"] == "error" and records[-1]["iteration"] == 8


def test_checkpoint_loads_with_weights_only(tmp_path):
    cfg = _cfg(epochs=1)
    model = _model()
    fit(model, make_list_loader, cfg, tmp_path, device="cpu", progress=False)
    path = checkpoint_path(tmp_path)
    assert path == tmp_path / "checkpoints" / "last.pt"
    assert not [p for p in path.parent.iterdir() if p.name != "last.pt"]  # no temp files left
    ckpt = torch.load(path, weights_only=True)
    assert (ckpt["epoch"], ckpt["iter_in_epoch"], ckpt["global_iter"]) == (1, 0, 6)
    assert set(ckpt["rng"]) >= {"torch", "numpy", "python"}
    assert ckpt["config"]["seed"] == cfg.seed
    fresh = TinyNet()
    fresh.load_state_dict(ckpt["model"])
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    assert math.isclose(ckpt["optimizer"]["param_groups"][0]["initial_lr"], cfg.base_lr)
    with pytest.raises(CheckpointError, match="another config"):
        fit(_model(), make_list_loader, cfg.replace(base_lr=0.1, epochs=2), tmp_path, device="cpu", progress=False)


# ------------------------------------------------------------------------------ damaged checkpoints, no training


def _stop_at_end_of_epoch(epoch: int):
    """should_stop for fit: True after the last batch of 0-based ``epoch`` (6 batches per epoch)."""
    seen = []
    return seen.append, lambda: bool(seen) and seen[-1]["iteration"] == 6 * (epoch + 1) - 1


def test_truncated_last_checkpoint_falls_back_to_the_previous_one(tmp_path):
    from gfl_repro.engines.native.checkpoints import previous_path

    cfg = _cfg()
    full = _model()
    fit(full, make_list_loader, cfg, tmp_path / "full", device="cpu", progress=False)
    record, stop = _stop_at_end_of_epoch(1)
    fit(_model(), make_list_loader, cfg, tmp_path / "cut", device="cpu", progress=False, on_iteration=record,
        should_stop=stop)
    last, previous = checkpoint_path(tmp_path / "cut"), previous_path(tmp_path / "cut")
    assert load_checkpoint(last)["epoch"] == 2 and load_checkpoint(previous)["epoch"] == 1
    last.write_bytes(last.read_bytes()[:1000])  # a disk that filled up mid-write
    resumed = _model(seed=7)
    with pytest.warns(UserWarning, match=r"unreadable checkpoint \(.*last.pt.*\); resuming from previous.pt"):
        fit(resumed, make_list_loader, cfg, tmp_path / "cut", device="cpu", progress=False)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)  # epoch 1 trained again from the previous checkpoint: the same weights


def test_no_readable_checkpoint_is_one_line(tmp_path):
    from gfl_repro.engines.native.checkpoints import previous_path

    directory = tmp_path / "checkpoints"
    directory.mkdir()
    checkpoint_path(tmp_path).write_bytes(b"\x80\x02garbage")
    previous_path(tmp_path).write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        fit(_model(), make_list_loader, _cfg(), tmp_path, device="cpu", progress=False)
    message = str(err.value)
    assert message.startswith("no readable checkpoint: ") and "last.pt" in message and "previous.pt" in message
    assert "\n" not in message


def test_a_checkpoint_missing_its_training_state_is_refused(tmp_path):
    torch.save({"format": 1, "model": _model().state_dict()}, tmp_path / "x.pt")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "x.pt").rename(checkpoint_path(tmp_path))
    with pytest.raises(CheckpointError, match="not a complete training checkpoint .no optimizer, epoch"):
        fit(_model(), make_list_loader, _cfg(), tmp_path, device="cpu", progress=False)


def test_non_finite_loss_before_any_checkpoint_says_so(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(NonFiniteLoss) as info:
        fit(NanAt(0), make_list_loader, _cfg(), tmp_path, device="cpu", progress=False)
    message = str(info.value)
    assert "at iteration 0" in message and "no checkpoint had been written yet" in message
    assert "the last checkpoint is kept" not in message
    assert not checkpoint_path(tmp_path).exists()


def test_an_epoch_without_batches_is_never_done(tmp_path):
    from gfl_repro.engines.errors import NothingTrained

    with pytest.raises(NothingTrained, match="epoch 0 of training yielded no batch"):
        fit(_model(), lambda epoch: [], _cfg(), tmp_path, device="cpu", progress=False)
    assert not checkpoint_path(tmp_path).exists()  # nothing marks the run trained
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        fit(_model(), make_list_loader, _cfg(), tmp_path, device="cpu", progress=False, epochs=0)
