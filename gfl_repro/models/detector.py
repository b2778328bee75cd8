"""A dense detector that reads top to bottom: backbone → FPN → head.

``build_detector(config, num_classes)`` turns a :class:`~gfl_repro.specs.run_config.RunConfig`
into the model (what each detector is made of: :mod:`gfl_repro.models.registry`); the trainer
calls ``model.loss(images, targets)`` and the evaluator ``model.predict(images, targets)``.
Targets are the dicts of :mod:`gfl_repro.datasets.coco` (boxes and labels in input-image
pixels, ``img_shape``, ``scale_factor``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..specs.run_config import RunConfig
from .backbone import build_backbone
from .box_representation import build_box_representation
from .fpn import FPN
from .heads.base import DenseHead, HeadSpec
from .postprocess import PostprocessConfig
from .quality import build_quality
from .registry import DETECTORS, check_supported
from .ssd_neck import SSDNeck
from .vgg import VGG16_DEPTHS, SSDVGG, load_vgg_pretrained

# Neck and head width per backbone scale: the paper's 256-channel, 4-conv towers, or a toy
# version for the CPU smoke profile.
WIDTH = {"full": dict(channels=256, convs=4, groups=32), "tiny": dict(channels=64, convs=2, groups=16)}
# SSD's VGG16 and extra layers per backbone scale: the paper's, or the smoke profile's toy, whose
# VGG divides every channel count by 16 and keeps one 3x3 conv per stage (VGG16 has 2, 2, 3, 3, 3;
# the tiny ResNets keep one block per stage) and whose extra layers are divided by 4: 128 and 64
# channels, the tiny FPN's width (at 1/16 their 8-channel bottlenecks leave the five upper levels
# nothing to classify with). Measurements: docs/choices.md.
SSD_SCALES = {"full": dict(vgg_width=1, vgg_depths=VGG16_DEPTHS, extra_width=1),
              "tiny": dict(vgg_width=16, vgg_depths=(1, 1, 1, 1, 1), extra_width=4)}


class Detector(nn.Module):
    def __init__(self, backbone: nn.Module, neck: nn.Module, head: DenseHead, test_cfg: PostprocessConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.test_cfg = test_cfg
        self.memory_format = torch.contiguous_format

    def forward(self, images: Tensor, targets: list[dict] | None = None):
        """Head outputs; with ``targets``, the loss dict (the form DistributedDataParallel calls)."""
        images = images.contiguous(memory_format=self.memory_format)
        outputs = self.head(self.neck(self.backbone(images)))
        return outputs if targets is None else self.head.loss(outputs, targets)

    def loss(self, images: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        return self(images, targets)

    @torch.no_grad()
    def predict(self, images: Tensor, targets: list[dict]) -> list[dict[str, Tensor]]:
        """Detections per image in original-image pixels: dict(boxes (N,4), scores (N,), labels (N,))."""
        return self.head.predict(self(images), targets, self.test_cfg)


def build_head(config: RunConfig, spec: HeadSpec) -> DenseHead:
    """The head of ``config.detector`` with the quality and box representations ``config`` names."""
    check_supported(config)
    entry = DETECTORS[config.detector]
    box = build_box_representation(config, entry.coder(), entry.smooth_l1_beta)
    return entry.head.build(config, spec, build_quality(config), box)


def build_detector(config: RunConfig, num_classes: int, pretrained: str | Path | None = None) -> Detector:
    check_supported(config)
    entry = DETECTORS[config.detector]
    width = WIDTH[config.backbone_scale]
    if entry.neck == "ssd":
        scale = SSD_SCALES[config.backbone_scale]
        norm = None if config.norm == "stock" else config.norm
        backbone = SSDVGG(scale["vgg_width"], norm=norm, depths=scale["vgg_depths"])
        if pretrained is not None:
            load_vgg_pretrained(backbone, pretrained)
        neck = SSDNeck(backbone.out_channels, scale["extra_width"], norm=norm)
        spec = HeadSpec(num_classes=num_classes, level_channels=neck.out_channels)
    else:
        backbone = build_backbone(config.backbone, scale=config.backbone_scale, dcn=config.dcn, pretrained=pretrained)
        neck = FPN(list(backbone.out_channels), width["channels"], num_outs=5,
                   relu_before_extra_convs=entry.relu_before_extra_convs, extra_on_input=entry.neck == "fpn_on_input")
        spec = HeadSpec(num_classes=num_classes, in_channels=width["channels"], feat_channels=width["channels"],
                        stacked_convs=width["convs"], norm_groups=width["groups"])
    test_cfg = PostprocessConfig.from_config(config, min_bbox_size=entry.min_bbox_size)
    detector = Detector(backbone, neck, build_head(config, spec), test_cfg)
    if config.channels_last:
        use_channels_last(detector)
    if config.compile:
        compile_dense_path(detector)
    return detector


def use_channels_last(detector: Detector) -> None:
    """Conv weights and the input images in NHWC layout (``--channels-last``): the layout the
    CPU's oneDNN convolutions and CUDA tensor cores prefer, so no layout conversions surround
    each convolution. The same math, a different summation order."""
    detector.to(memory_format=torch.channels_last)
    detector.memory_format = torch.channels_last


def compile_dense_path(detector: Detector) -> None:
    """``torch.compile`` (inductor) of the backbone, the neck and the head's forward
    (``--compile``): the per-pixel work, whose shapes depend only on the padded image size.
    Target assignment and the losses stay eager (their shapes depend on the boxes). In place
    (``nn.Module.compile``), so parameter names and checkpoints are unchanged. The first
    iteration at each new input size compiles (``dynamic=False``); a compiled run pads every
    batch to a fixed canvas (``engines.native.run.compile_canvas``), so there are at most three
    sizes: landscape, portrait, and a batch of both."""
    for part in (detector.backbone, detector.neck, detector.head):
        part.compile(dynamic=False)


__all__ = ["Detector", "WIDTH", "build_detector", "build_head", "check_supported"]
