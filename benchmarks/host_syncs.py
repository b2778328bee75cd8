"""Benchmark (not a test): host synchronisations of one training step, for every detector of the catalogue.

    .venv/bin/python benchmarks/host_syncs.py [--profile smoke] [--batch 8] [--sites]

For each distinct model of the catalogue's table rows (a row's detector, quality and box
representation, losses, norm and backbone), one training step's loss and backward run on the
CPU on a random batch with three boxes per image, and every operation that would make a GPU
wait for the host is counted (:mod:`gfl_repro.engines.native.host_sync`: values read to the
host, outputs whose size depends on the data). ``--sites`` lists where they are. The training
loop adds one of its own per step, after backward: it reads the losses to log them and to stop
on a non-finite one.
"""

from __future__ import annotations

import argparse

import torch

from bench_engine import fake_batch
from gfl_repro.engines.native.host_sync import count_host_syncs
from gfl_repro.models.detector import build_detector
from gfl_repro.specs.catalogue import load_catalogue
from gfl_repro.specs.profiles import PROFILES

MODEL_FIELDS = ("detector", "quality", "cls_loss", "box", "box_loss", "norm", "dcn", "backbone", "backbone_scale")


def distinct_models(profile: str):
    """(experiment, row label, config) for the first row of each distinct model."""
    seen = set()
    for name, experiment in load_catalogue().items():
        for row in experiment.rows:
            config = experiment.resolve(row, PROFILES[profile])
            key = tuple(getattr(config, f) for f in MODEL_FIELDS)
            if key not in seen:
                seen.add(key)
                yield name, " / ".join(x for x in (row.group, row.label) if x), config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke", choices=sorted(PROFILES))
    parser.add_argument("--batch", type=int, default=8, help="images per step")
    parser.add_argument("--sites", action="store_true", help="list where the synchronisations are")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{'experiment':10} {'row':36} {'detector':10} {'backbone':14} {'loss':>5} {'backward':>8}")
    for name, label, config in distinct_models(args.profile):
        width, height = config.image_scale if config.detector == "ssd512" else (192, 160)
        model = build_detector(config, num_classes=80).train()
        images, targets = fake_batch(args.batch, height, width, torch.device("cpu"))
        losses, in_loss = count_host_syncs(lambda: model.loss(images, targets))
        _, in_backward = count_host_syncs(lambda: sum(losses.values()).backward())
        backbone = config.backbone + (" DCN" if config.dcn else "")
        print(f"{name:10} {label[:36]:36} {config.detector:10} {backbone:14} {in_loss.total:5d} {in_backward.total:8d}",
              flush=True)
        if args.sites:
            for line in in_loss.lines() + in_backward.lines():
                print(" " * 12 + line)


if __name__ == "__main__":
    main()
