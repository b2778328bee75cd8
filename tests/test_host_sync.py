"""A training step's host synchronisations (what would make a GPU wait for the host).

The counter recognises them on any device, so these checks run on the CPU: for the paper's
detectors the loss and backward of a step make one, the gather of the positives; FoveaBox's
assignment adds one per image and SSD's hard negative mining one per batch (see
``docs/choices.md``)."""

from __future__ import annotations

import pytest
import torch

from gfl_repro.engines.native.host_sync import count_host_syncs
from gfl_repro.models.detector import build_detector
from test_fast_path import batch, smoke_config

POSITIVES = ("nonzero", "gfl_repro/models/heads/base.py")


def sites(syncs) -> set[tuple[str, str]]:
    """(operation, file) of each recorded site."""
    return {(op, where.rsplit(":", 1)[0]) for op, where in syncs.sites}


def test_counter_records_host_reads_and_data_dependent_sizes_only():
    x = torch.arange(6.0, requires_grad=True)
    mask = x.detach() > 2

    def syncing():
        x[mask].sum().backward()  # boolean indexing, and its backward
        copies = x.new_tensor([1.0, 2.0]), torch.tensor([3.0], device=x.device), x[[0, 2]]
        return x.detach().tolist(), int(x[0]), bool(x[1] > 0), x.sum().item(), torch.nonzero(mask), copies

    _, syncs = count_host_syncs(syncing)
    ops = sorted(op for op, _ in syncs.sites.elements())
    assert ops == ["__bool__", "__int__", "boolean mask assignment", "boolean mask indexing", "indexing with a list",
                   "item", "new_tensor from host data", "nonzero", "tensor from host data", "tolist"]
    assert {where.rsplit(":", 1)[0] for _, where in syncs.sites} == {"test_host_sync.py", "backward (IndexBackward0)"}

    def device_only():
        y = torch.where(mask, x, 0.0).masked_fill(~mask, 1.0)
        z = y[torch.tensor([0, 2])].clamp(min=1.0) / torch.as_tensor(3.0)
        return (z == torch.arange(2)).sum(), x.detach().scatter(0, torch.tensor([1]), torch.tensor([5.0]))

    assert count_host_syncs(device_only)[1].total == 0

    def host_side():  # tensors made from Python data without a device stay on the host on a GPU too
        sizes = torch.tensor([3.0, 1.0, 2.0])
        _, order = torch.sort(-sizes[[0, 2]])
        return order.tolist(), int(sizes.argmax())

    assert count_host_syncs(host_side) == (([0, 1], 0), count_host_syncs(lambda: None)[1])


ONE_SYNC = [("table3", None, "ATSS + QFL + DFL"), ("table1a", "ATSS", "centerness-branch"),
            ("table1a", "FCOS", "IoU-guided"), ("table2a", "ATSS", "Gaussian"), ("table2a", "FCOS", "General w/ DFL (ours)"),
            ("table1b", None, "RetinaNet"), ("table1b", None, "SSD512 + joint w/ QFL")]


@pytest.mark.parametrize("experiment,group,label", ONE_SYNC, ids=[lab for *_, lab in ONE_SYNC])
def test_a_training_step_syncs_once_to_gather_the_positives(experiment, group, label):
    config = smoke_config(experiment, group, label)
    torch.manual_seed(0)
    model = build_detector(config, num_classes=6).train()
    images, targets = batch(config)
    losses, syncs = count_host_syncs(lambda: model.loss(images, targets))
    _, backward = count_host_syncs(lambda: sum(losses.values()).backward())
    assert syncs.total == 1 and sites(syncs) == {POSITIVES}, syncs.lines()
    assert backward.total == 0, backward.lines()


def test_foveabox_reads_each_image_s_gt_cells_once_and_ssd_its_counts_once():
    """FoveaBox paints each GT's fovea on slices of the grid (one read per image with GTs);
    SSD's hard negative mining takes a per-image k (one read of the counts per batch)."""
    expected = {"FoveaBox": {POSITIVES: 1, ("tolist", "gfl_repro/models/assigners/fovea.py"): 1},
                "SSD512": {POSITIVES: 1, ("tolist", "gfl_repro/models/losses.py"): 1}}
    for label, sites_expected in expected.items():
        config = smoke_config("table1b", None, label)
        model = build_detector(config, num_classes=6).train()
        images, targets = batch(config)  # two images, the second without GTs
        _, syncs = count_host_syncs(lambda: sum(model.loss(images, targets).values()).backward())
        counted = {}
        for (op, where), n in syncs.sites.items():
            key = (op, where.rsplit(":", 1)[0])
            counted[key] = counted.get(key, 0) + n
        assert counted == sites_expected, syncs.lines()
