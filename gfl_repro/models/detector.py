"""A dense detector that reads top to bottom: backbone → FPN → ATSS-family head.

``build_detector(config, num_classes)`` turns a :class:`~gfl_repro.config.RunConfig` into
the model; the trainer calls ``model.loss(images, targets)`` and the evaluator
``model.predict(images, targets)``. Targets are the dicts of
:mod:`gfl_repro.datasets.coco` (boxes and labels in input-image pixels, ``img_shape``,
``scale_factor``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..specs.run_config import RunConfig
from .backbone import build_backbone
from .fpn import FPN
from .fcos_head import FCOSConfig, FCOSHead
from .head import DenseHead, HeadConfig
from .postprocess import PostprocessConfig, postprocess_image

NATIVE_DETECTORS = ("atss", "fcos")
NATIVE_BOXES = ("dirac", "general")

# Neck and head width per backbone scale: the paper's 256-channel, 4-conv towers, or a toy
# version for the CPU smoke profile.
WIDTH = {"full": dict(channels=256, convs=4, groups=32), "tiny": dict(channels=64, convs=2, groups=16)}


def check_supported(config: RunConfig) -> None:
    """Raise ValueError naming what the native engine cannot build yet."""
    if config.detector not in NATIVE_DETECTORS:
        raise ValueError(f"detector {config.detector!r} is not in the native engine yet (it has: {', '.join(NATIVE_DETECTORS)})")
    if config.box not in NATIVE_BOXES:
        raise ValueError(f"box = {config.box!r} is not in the native engine yet (it has: {', '.join(NATIVE_BOXES)})")
    if config.box_loss != "giou":
        raise ValueError(f"box_loss = {config.box_loss!r} is not in the native engine yet (it has: giou)")
    if config.detector == "fcos" and (config.quality, config.box) != ("centerness", "dirac"):
        raise ValueError(f"FCOS with quality = {config.quality!r}, box = {config.box!r} is not in the native engine "
                         "yet (it has: the centerness branch with a Dirac box)")


class Detector(nn.Module):
    def __init__(self, backbone: nn.Module, neck: nn.Module, head: DenseHead | FCOSHead,
                 test_cfg: PostprocessConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.test_cfg = test_cfg

    def forward(self, images: Tensor, targets: list[dict] | None = None):
        """Head outputs; with ``targets``, the loss dict (the form DistributedDataParallel calls)."""
        outputs = self.head(self.neck(self.backbone(images)))
        return outputs if targets is None else self.head.loss(outputs, targets)

    def loss(self, images: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        return self(images, targets)

    @torch.no_grad()
    def predict(self, images: Tensor, targets: list[dict]) -> list[dict[str, Tensor]]:
        """Detections per image in original-image pixels: dict(boxes (N,4), scores (N,), labels (N,))."""
        outputs = self(images)
        anchors = self.head.anchors(outputs)
        results = []
        for b, meta in enumerate(targets):
            probs = [x[b].permute(1, 2, 0).reshape(-1, x.shape[1]).sigmoid() for x in outputs.cls]
            regs = [x[b].permute(1, 2, 0).reshape(-1, x.shape[1]) for x in outputs.reg]
            factors = None
            if outputs.quality is not None:
                factors = [x[b].reshape(-1).sigmoid() for x in outputs.quality]
            img_shape = tuple(meta["img_shape"])

            def decode(level: int, idx: Tensor, regs=regs, img_shape=img_shape) -> Tensor:
                return self.head.decode(level, anchors[level][idx], regs[level][idx], img_shape)

            results.append(
                postprocess_image(probs, decode, factors, scale_factor=meta["scale_factor"], cfg=self.test_cfg)
            )
        return results


def build_detector(config: RunConfig, num_classes: int, pretrained: str | Path | None = None) -> Detector:
    check_supported(config)
    width = WIDTH[config.backbone_scale]
    backbone = build_backbone(config.backbone, scale=config.backbone_scale, dcn=config.dcn, pretrained=pretrained)
    # mmdet's FCOS neck puts a ReLU before the second extra conv (P6 -> P7); GFL/ATSS's does not
    neck = FPN(list(backbone.out_channels), width["channels"], num_outs=5,
               relu_before_extra_convs=config.detector == "fcos")
    if config.detector == "fcos":
        head = FCOSHead(FCOSConfig(
            num_classes=num_classes, in_channels=width["channels"], feat_channels=width["channels"],
            stacked_convs=width["convs"], norm_groups=width["groups"], focal_gamma=config.focal_gamma,
            focal_alpha=config.focal_alpha, box_loss_weight=config.box_loss_weight))
        return Detector(backbone, neck, head, PostprocessConfig.from_config(config))
    head = DenseHead(
        HeadConfig(
            num_classes=num_classes,
            quality=config.quality,
            box=config.box,
            reg_max=config.reg_max,
            bin_width=config.bin_width,
            in_channels=width["channels"],
            feat_channels=width["channels"],
            stacked_convs=width["convs"],
            norm_groups=width["groups"],
            atss_topk=config.atss_topk,
            qfl_beta=config.qfl_beta,
            focal_gamma=config.focal_gamma,
            focal_alpha=config.focal_alpha,
            box_loss_weight=config.box_loss_weight,
            dfl_weight=config.dfl_weight,
        )
    )
    return Detector(backbone, neck, head, PostprocessConfig.from_config(config))
