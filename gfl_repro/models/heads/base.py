"""The dense-head interface and the loss and predict paths every dense head shares.

A head turns FPN features into per-level outputs and knows, for its detector:

=====================  ==================================================================
``forward``            features → :class:`HeadOutputs` (class logits, box regression,
                       quality branch when the quality representation has one)
``priors``             the anchors or points of each level
``assign``             :class:`Targets` of a batch (labels, the GT of each positive)
``frame``              where the positives' boxes live while their losses are computed
``centerness``         the geometric centerness target of positive priors
``cls_avg_factor``     the number the classification loss is divided by
``box_norm``           how the box losses are normalised
``score``              the activation of the class logits at test time (sigmoid, or
                       softmax without the background column)
=====================  ==================================================================

and composes two independent axes of the paper: the quality representation
(:mod:`gfl_repro.models.quality`, Table 1a) and the box representation
(:mod:`gfl_repro.models.box_representation`, Table 2a). :meth:`DenseHead.loss` is Eq. 11 for
any such pair: the quality's classification loss over every prior, the box representation's
losses over the positives weighted by the quality's box weights, and the quality branch's loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from ...distributed import reduce_mean
from ..box_ops import aligned_iou
from ..box_representation import BoxNorm, BoxRepresentation
from ..coders import Frame
from ..postprocess import PostprocessConfig, postprocess_image
from ..quality import ClsLossInputs, Quality, QualityTargets


@dataclass(frozen=True)
class HeadSpec:
    """The width of a head (the paper's 256-channel, 4-conv towers, or a toy version)."""

    num_classes: int
    in_channels: int = 256
    feat_channels: int = 256
    stacked_convs: int = 4
    norm_groups: int = 32
    level_channels: tuple[int, ...] | None = None  # per-level input widths (SSD's neck)


@dataclass
class HeadOutputs:
    """Per-level raw outputs, each (B, ch, H_l, W_l)."""

    cls: list[Tensor]
    reg: list[Tensor]
    quality: list[Tensor] | None

    def float(self) -> "HeadOutputs":
        """The same outputs in float32 (they are bfloat16 from a forward pass under autocast)."""
        return HeadOutputs([x.float() for x in self.cls], [x.float() for x in self.reg],
                           None if self.quality is None else [x.float() for x in self.quality])


@dataclass
class Targets:
    """Training targets of a batch, one row per prior, in the order of :meth:`DenseHead.flatten`."""

    labels: Tensor  # (N,) class index, num_classes = background
    label_weights: Tensor | None  # (N,) 0 for ignored priors; None: all count
    priors: Tensor  # (N, 4) anchors or (N, 2) points
    strides: Tensor  # (N,)
    boxes: Tensor  # (N, 4) the assigned GT box in pixels (or its distances, see the head), valid at positives
    cls_normaliser: Tensor  # 0-dim: the classification loss's avg_factor before averaging over processes
    num_images: int = 1
    encoded: Tensor | None = None  # (N, 4) regression targets the assigner encoded itself (FoveaBox)


def stack_assignments(assigned: list[Tensor], gt: list[dict], priors: Tensor, strides: Tensor,
                      num_classes: int) -> Targets:
    """Image-major :class:`Targets` from each image's assigned GT index per prior (0: negative,
    ``i + 1``: GT ``i``, -1: ignored, no loss). The classification normaliser is Σ over images of
    max(#positives, 1) (mmdet's sampler ``avg_factor``), kept on the device as a 0-dim tensor:
    nothing here reads a value back to the host."""
    labels, weights, boxes, counts = [], [], [], []
    for inds, target in zip(assigned, gt):
        gt_boxes, gt_labels = target["boxes"].to(priors), target["labels"].to(priors.device)
        pos = inds > 0
        if len(gt_labels):
            gt_index = (inds - 1).clamp(min=0)
            labels.append(torch.where(pos, gt_labels.long()[gt_index], num_classes))
            boxes.append(torch.where(pos[:, None], gt_boxes[gt_index], 0.0))
        else:
            labels.append(torch.full((len(priors),), num_classes, dtype=torch.long, device=priors.device))
            boxes.append(priors.new_zeros(len(priors), 4))
        counts.append(pos.sum().clamp(min=1))
        weights.append((inds >= 0).to(priors.dtype))
    B = len(gt)
    return Targets(labels=torch.cat(labels), label_weights=torch.cat(weights), priors=priors.repeat(B, 1),
                   strides=strides.repeat(B), boxes=torch.cat(boxes), cls_normaliser=torch.stack(counts).sum(),
                   num_images=B)


class Scale(nn.Module):
    """A learnable scalar multiplying one level's regression output (init 1)."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def conv_tower(in_channels: int, channels: int, depth: int, groups: int | None, bias: bool = False) -> nn.Sequential:
    """depth × (3×3 conv, GroupNorm, ReLU), as mmdet's ConvModule with GN (no conv bias
    unless ``bias``, FCOS's ``conv_bias=True``); with ``groups=None`` depth × (3×3 conv with
    bias, ReLU), mmdet's ConvModule without a norm (RetinaNet, FoveaBox)."""
    layers: list[nn.Module] = []
    for i in range(depth):
        conv_in = in_channels if i == 0 else channels
        if groups is None:
            layers += [nn.Conv2d(conv_in, channels, 3, padding=1, bias=True), nn.ReLU(inplace=True)]
        else:
            layers += [nn.Conv2d(conv_in, channels, 3, padding=1, bias=bias), nn.GroupNorm(groups, channels),
                       nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class DenseHead(nn.Module):
    """Two towers (classification, regression) of 3×3 conv + GroupNorm + ReLU per level, a
    class conv, a box conv times a learnable per-level scale, and a quality conv on the
    regression tower when the quality representation has a branch. Normal(0, 0.01) init,
    class bias for prior 0.01 (the focal-loss init). A head for another detector changes the
    class attributes below or overrides :meth:`build_layers` / :meth:`forward`."""

    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    conv_bias = False  # bias on the tower convs (FCOS)
    tower_norm = True  # GroupNorm in the towers (ATSS, FCOS); RetinaNet and FoveaBox have none
    uses_scales = True  # a learnable scale per level on the box output
    num_anchors = 1  # priors per location
    quality_weights_boxes = True  # box losses weighted by the quality (Eq. 11); False: the detector's own

    def __init__(self, spec: HeadSpec, quality: Quality, box: BoxRepresentation, tower_norm: bool | None = None) -> None:
        super().__init__()
        self.spec, self.quality, self.box = spec, quality, box
        if tower_norm is not None:  # a run's `norm = "gn"` on a head whose stock towers have none
            self.tower_norm = tower_norm
        self.build_layers()
        self.init_weights()

    @property
    def cls_channels(self) -> int:
        """Class outputs per prior: C, or C + 1 with the background last for a softmax loss."""
        return self.num_classes + (1 if self.quality.softmax else 0)

    def build_layers(self) -> None:
        spec, A = self.spec, self.num_anchors
        groups = min(spec.norm_groups, spec.feat_channels) if self.tower_norm else None
        self.cls_tower = conv_tower(spec.in_channels, spec.feat_channels, spec.stacked_convs, groups, self.conv_bias)
        self.reg_tower = conv_tower(spec.in_channels, spec.feat_channels, spec.stacked_convs, groups, self.conv_bias)
        self.cls_out = nn.Conv2d(spec.feat_channels, A * self.cls_channels, 3, padding=1)
        self.reg_out = nn.Conv2d(spec.feat_channels, A * self.box.channels, 3, padding=1)
        self.quality_out = nn.Conv2d(spec.feat_channels, A, 3, padding=1) if self.quality.branch else None
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides) if self.uses_scales else None

    def init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - 0.01) / 0.01))

    @classmethod
    def build(cls, config, spec: HeadSpec, quality: Quality, box: BoxRepresentation) -> "DenseHead":
        """The head for a run config (a head reads its own detector's settings here)."""
        return cls(spec, quality, box, tower_norm=True if config.norm == "gn" else None)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    # ------------------------------------------------------------------------- forward

    def forward(self, feats: Sequence[Tensor]) -> HeadOutputs:
        cls, reg, quality = [], [], []
        for level, feat in enumerate(feats):
            cls_feat = self.cls_tower(feat)
            reg_feat = self.reg_tower(feat)
            cls.append(self.cls_out(cls_feat))
            box = self.reg_out(reg_feat)
            if self.scales is not None:
                box = self.scales[level](box)
            reg.append(self.box.activate(box.float()))
            if self.quality_out is not None:
                quality.append(self.quality_out(reg_feat))
        return HeadOutputs(cls, reg, quality if self.quality_out is not None else None)

    # ------------------------------------------------------------------------- per detector

    def priors(self, outputs: HeadOutputs) -> list[Tensor]:
        """The priors of each level for these outputs' feature-map sizes (computed once per
        size and device, then reused: callers never modify them in place)."""
        sizes = tuple(tuple(x.shape[-2:]) for x in outputs.cls)
        key = (sizes, str(outputs.cls[0].device))
        cache = self.__dict__.setdefault("_prior_cache", {})
        if key not in cache:
            cache[key] = self.make_priors(list(sizes), outputs.cls[0].device)
        return cache[key]

    def make_priors(self, sizes: list[tuple[int, int]], device: torch.device) -> list[Tensor]:
        """Anchors ``(N_l, 4)`` or points ``(N_l, 2)`` of each level of feature-map ``sizes``."""
        raise NotImplementedError

    def assign(self, priors: list[Tensor], gt: list[dict], sizes: list[tuple[int, int]]) -> Targets:
        """Targets of a batch from the priors of each level (of feature-map ``sizes``)."""
        raise NotImplementedError

    def flatten(self, levels: list[Tensor], channels: int) -> Tensor:
        """[(B, ch, H, W)] per level → (N, ch) rows in the order of :class:`Targets`: image-major,
        (image, level, y, x, prior of the location), unless a head says otherwise."""
        B = levels[0].shape[0]
        return torch.cat([x.permute(0, 2, 3, 1).reshape(B, -1, channels) for x in levels], dim=1).reshape(-1, channels)

    def frame(self, t: Targets, pos: Tensor) -> Frame:
        raise NotImplementedError

    def centerness(self, t: Targets, pos: Tensor, frame: Frame) -> Tensor:
        raise NotImplementedError

    def cls_avg_factor(self, t: Targets) -> Tensor:
        """The classification loss's normaliser: ``t.cls_normaliser`` averaged over processes, >= 1
        (a float32 0-dim tensor on the device)."""
        return reduce_mean(t.cls_normaliser.float()).clamp(min=1.0)

    def box_norm(self, weights: Tensor, t: Targets, x: ClsLossInputs) -> BoxNorm:
        raise NotImplementedError

    def prior_centres(self, priors: Tensor) -> Tensor:
        """Points the distances of one level's priors are measured from, in pixels."""
        raise NotImplementedError

    # ------------------------------------------------------------------------- loss

    def loss(self, outputs: HeadOutputs, gt: list[dict]) -> dict[str, Tensor]:
        """Eq. 11 for this head's quality and box representations, named as mmdet names them.

        Always in float32, outside autocast: under ``--precision bf16`` only the network's
        forward pass runs in bfloat16; assignment, targets and losses stay as in the paper."""
        with torch.autocast(device_type=outputs.cls[0].device.type, enabled=False):
            return self.float32_loss(outputs.float(), gt)

    def float32_loss(self, outputs: HeadOutputs, gt: list[dict]) -> dict[str, Tensor]:
        C = self.num_classes
        t = self.assign(self.priors(outputs), gt, [tuple(x.shape[-2:]) for x in outputs.cls])
        cls = self.flatten(outputs.cls, self.cls_channels)
        reg = self.flatten(outputs.reg, self.box.channels)
        pos = torch.nonzero((t.labels >= 0) & (t.labels < C)).squeeze(1)
        x = ClsLossInputs(cls, t.labels, t.label_weights, pos, self.cls_avg_factor(t), t.num_images)

        pos_reg = reg[pos]
        frame = self.frame(t, pos)
        pred_boxes = self.box.decode(pos_reg, frame)
        q = QualityTargets(iou=aligned_iou(pred_boxes.detach(), frame.target_boxes).clamp(min=0),
                           centerness=self.centerness(t, pos, frame) if len(pos) else pred_boxes.new_zeros(0))

        losses = {"loss_cls": self.quality.cls_loss(x, q)}
        weights = self.quality.box_weights(x, q) if self.quality_weights_boxes else pos_reg.new_ones(len(pos))
        norm = self.box_norm(weights, t, x)
        if len(pos):
            losses.update(self.box.losses(pos_reg, pred_boxes, frame, weights, norm))
        else:
            losses.update({name: reg.sum() * 0 for name in self.box.loss_names()})
        if self.quality.branch:
            losses[self.quality.branch_loss_name] = self.quality.branch_loss(
                self.flatten(outputs.quality, 1).squeeze(1), x, q)
        return losses

    # ------------------------------------------------------------------------- predict

    def decode(self, level: int, priors: Tensor, reg: Tensor, img_shape: Sequence[int]) -> Tensor:
        """Boxes in input-image pixels for the given priors of one level."""
        return self.box.decode_test(reg, priors, self.prior_centres(priors), level, self.strides[level], img_shape)

    def score(self, logits: Tensor) -> Tensor:
        """Class probabilities at test time: sigmoid per class, or softmax over the classes and
        the background with the background column dropped (SSD)."""
        return logits.softmax(-1)[:, :-1] if self.quality.softmax else logits.sigmoid()

    @torch.no_grad()
    def predict(self, outputs: HeadOutputs, metas: list[dict], cfg: PostprocessConfig) -> list[dict[str, Tensor]]:
        """Detections per image in original-image pixels: dict(boxes (N,4), scores (N,), labels (N,)).

        The test score is the class probability, times the quality branch's probability when
        the quality representation has a branch (multiplied in after the score threshold and
        the top-k, as mmdet does)."""
        priors = self.priors(outputs)

        def rows(x: Tensor, b: int, channels: int) -> Tensor:
            return x[b].permute(1, 2, 0).reshape(-1, channels)

        results = []
        for b, meta in enumerate(metas):
            probs = [self.score(rows(x, b, self.cls_channels)) for x in outputs.cls]
            regs = [rows(x, b, self.box.channels) for x in outputs.reg]
            factors = None
            if outputs.quality is not None:
                factors = [rows(x, b, 1).reshape(-1).sigmoid() for x in outputs.quality]
            img_shape = tuple(meta["img_shape"])

            def decode(level: int, idx: Tensor, regs=regs, img_shape=img_shape) -> Tensor:
                return self.decode(level, priors[level][idx], regs[level][idx], img_shape)

            results.append(postprocess_image(probs, decode, factors, scale_factor=meta["scale_factor"], cfg=cfg))
        return results


__all__ = ["DenseHead", "HeadOutputs", "HeadSpec", "Scale", "Targets", "conv_tower", "stack_assignments"]
