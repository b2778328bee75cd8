"""A trained run as the analyses see it: its config, its detector loaded from the last
checkpoint, its datasets, and the head's dense per-prior outputs on a batch.

Everything here sits on the public methods of the dense head
(:class:`gfl_repro.models.heads.base.DenseHead`): ``forward``, ``priors``, ``assign``,
``flatten``, ``score`` and the box representation's ``decode_test``, so an analysis sees what
training and inference compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..datasets.coco import CocoDetection
from ..engines.environment import DataPaths, locate_data
from ..engines.native.checkpoints import CheckpointError, load_latest
from ..models.detector import Detector, build_detector
from ..models.heads.base import Targets
from ..specs.run_config import RunConfig
from ..store import read_config


class AnalysisError(RuntimeError):
    """An analysis cannot use this run or data (one line: what and why)."""


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    model: Detector  # eval mode, on ``device``
    data: DataPaths
    device: torch.device

    def val_set(self) -> CocoDetection:
        """The validation images as the run was evaluated on them (resize, no flip)."""
        return CocoDetection(self.data.val_images, self.data.val_annotations, train=False,
                             scale=tuple(self.config.image_scale))

    def train_set(self) -> CocoDetection:
        """The training set as the run trained on it (filtering, resize, multi-scale, flip); item
        ``i`` gets the augmentation of epoch 0."""
        return train_set(self.config, self.data)


def train_set(config: RunConfig, data: DataPaths) -> CocoDetection:
    return CocoDetection(data.train_images, data.train_annotations, train=True, scale=tuple(config.image_scale),
                         multiscale_range=tuple(config.multiscale_short) if config.multiscale else None,
                         seed=config.seed)


def loader_workers(config: RunConfig) -> int:
    """Data-loading processes for an analysis pass: none for the small synthetic set, 4 for COCO."""
    return 0 if config.dataset == "synthetic" else 4


def pick_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_run(run_dir: Path, data_root: Path | None = None, device: str | None = None) -> LoadedRun:
    """The run's detector with the weights of its newest checkpoint (read with
    ``weights_only=True``), in eval mode, and where its data is."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if config is None:
        raise AnalysisError(f"{run_dir}: no readable config.json")
    if config.engine != "native":
        raise AnalysisError(f"{run_dir}: analyses read native-engine checkpoints; this run used {config.engine}")
    try:
        payload = load_latest(run_dir)
    except CheckpointError as err:
        raise AnalysisError(str(err)) from None
    if payload is None:
        raise AnalysisError(f"{run_dir}: no checkpoint")
    # a DistributedDataParallel run saves its wrapper's state dict: keys start with "module."
    state = {k.removeprefix("module."): v for k, v in payload["model"].items()}
    if "head.cls_out.bias" not in state:
        raise AnalysisError(f"{run_dir}: the checkpoint holds no detector head")
    dev = pick_device(device)
    model = build_detector(config, num_classes=int(state["head.cls_out.bias"].shape[0]))
    model.load_state_dict(state)
    model.to(dev).eval()
    return LoadedRun(run_dir, config, model, locate_data(config, data_root, progress=False), dev)


@dataclass
class DenseRows:
    """Every prior of a batch, one row each, in the order of the head's :class:`Targets`."""

    cls_prob: Tensor  # (N, C) class probabilities (the head's test-time activation)
    quality: Tensor | None  # (N,) the quality branch's probability, when the head has one
    reg: Tensor  # (N, ch) regression outputs (a General box: logits of the distributions)
    targets: Targets  # the head's own assignment of the batch
    pos: Tensor  # (P,) rows of the positives

    def decoded_boxes(self, model: Detector, rows: Tensor, img_shape) -> Tensor:
        """Boxes of ``rows`` in input-image pixels, clipped to ``img_shape``, as at test time."""
        head, t = model.head, self.targets
        priors = t.priors[rows]
        return head.box.decode_test(self.reg[rows], priors, head.prior_centres(priors), None,
                                    t.strides[rows][:, None], img_shape)


@torch.no_grad()
def dense_rows(model: Detector, images: Tensor, targets: list[dict]) -> DenseRows:
    """Run ``model`` on a batch and return its outputs per prior beside the head's assignment."""
    head = model.head
    outputs = model(images)
    t = head.assign(head.priors(outputs), targets)
    C = head.num_classes
    quality = None
    if outputs.quality is not None:
        quality = head.flatten(outputs.quality, 1).squeeze(1).sigmoid()
    pos = torch.nonzero((t.labels >= 0) & (t.labels < C)).squeeze(1)
    return DenseRows(cls_prob=head.score(head.flatten(outputs.cls, C)), quality=quality,
                     reg=head.flatten(outputs.reg, head.box.channels), targets=t, pos=pos)


def to_device(images: Tensor, targets: list[dict], device: torch.device) -> tuple[Tensor, list[dict]]:
    moved = [{k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in t.items()} for t in targets]
    return images.to(device), moved


__all__ = ["AnalysisError", "DenseRows", "LoadedRun", "dense_rows", "load_run", "loader_workers", "pick_device",
           "to_device", "train_set"]
