"""Parity cases: the same inputs through the native engine and through mmdetection 3.3.

Each component has ``<name>_inputs(seed)`` (deterministic tensors), ``<name>_native(inputs)``
and ``<name>_mmdet(inputs)`` returning a dict of tensors. ``tests/test_parity.py`` compares
native with mmdet live (when mmdet is installed) and with goldens that
``scripts/make_parity_goldens.py`` wrote from mmdet (always). fp32 throughout.
"""

from __future__ import annotations

import torch

SEEDS = (0, 1, 2)
NUM_CLASSES = 5
STRIDES = (8, 16, 32, 64, 128)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(1000 + seed)


def random_boxes(n: int, height: int, width: int, g: torch.Generator, min_size: float = 4.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * torch.tensor([width * 0.8, height * 0.8])
    wh = min_size + torch.rand(n, 2, generator=g) * torch.tensor([width * 0.6, height * 0.6])
    boxes = torch.cat([xy, xy + wh], dim=1)
    return torch.minimum(boxes, torch.tensor([width, height, width, height], dtype=torch.float32))


# ------------------------------------------------------------------------------ losses


def losses_inputs(seed: int) -> dict:
    g = _gen(seed)
    n = 300
    labels = torch.randint(0, NUM_CLASSES + 1, (n,), generator=g)  # NUM_CLASSES = background
    return {
        "logits": torch.randn(n, NUM_CLASSES, generator=g) * 3,
        "labels": labels,
        "quality": torch.rand(n, generator=g),
        "dfl_logits": torch.randn(n, 17, generator=g) * 2,
        "dfl_target": torch.rand(n, generator=g) * 15.9,
        "pred_boxes": random_boxes(n, 200, 300, g),
        "gt_boxes": random_boxes(n, 200, 300, g),
        "points": torch.rand(n, 2, generator=g) * torch.tensor([300.0, 200.0]),
        "reg_logits": torch.randn(n, 4 * 17, generator=g) * 2,
    }


def losses_native(x: dict) -> dict:
    from gfl_repro.models import box_ops, losses

    return {
        "qfl": losses.quality_focal_loss(x["logits"], x["labels"], x["quality"], beta=2.0),
        "dfl": losses.distribution_focal_loss(x["dfl_logits"], x["dfl_target"]),
        "giou": losses.giou_loss(x["pred_boxes"], x["gt_boxes"]),
        "integral": losses.integral(x["reg_logits"], reg_max=16),
        "bbox2distance": box_ops.bbox2distance(x["points"], x["gt_boxes"], max_dist=16, eps=0.1),
        "distance2bbox": box_ops.distance2bbox(x["points"], x["reg_logits"][:, :4].abs() * 20, max_shape=(200, 300)),
    }


def losses_mmdet(x: dict) -> dict:
    from mmdet.models.dense_heads.gfl_head import Integral
    from mmdet.models.losses import GIoULoss
    from mmdet.models.losses.gfocal_loss import distribution_focal_loss, quality_focal_loss
    from mmdet.structures.bbox import bbox2distance, distance2bbox

    return {
        "qfl": quality_focal_loss(x["logits"], (x["labels"], x["quality"]), beta=2.0, reduction="none"),
        "dfl": distribution_focal_loss(x["dfl_logits"], x["dfl_target"], reduction="none"),
        "giou": GIoULoss(reduction="none")(x["pred_boxes"], x["gt_boxes"]),
        "integral": Integral(16)(x["reg_logits"]),
        "bbox2distance": bbox2distance(x["points"], x["gt_boxes"], max_dis=16, eps=0.1),
        "distance2bbox": distance2bbox(x["points"], x["reg_logits"][:, :4].abs() * 20, max_shape=(200, 300)),
    }


# ------------------------------------------------------------------------------ assignment


def assign_inputs(seed: int) -> dict:
    g = _gen(seed)
    height, width = [int(v) for v in (torch.randint(4, 12, (2,), generator=g) * 32)]
    sizes = [(-(-height // s), -(-width // s)) for s in STRIDES]
    num_gts = int(torch.randint(0, 12, (1,), generator=g)) if seed else 0  # seed 0: an image without GTs
    return {
        "featmap_sizes": torch.tensor(sizes),
        "gt_boxes": random_boxes(num_gts, height, width, g),
        "gt_labels": torch.randint(0, NUM_CLASSES, (num_gts,), generator=g),
        "crowd_boxes": random_boxes(2, height, width, g),
    }


def assign_native(x: dict) -> dict:
    from gfl_repro.models.assigners.atss import atss_assign
    from gfl_repro.models.priors import grid_anchors

    levels = grid_anchors([tuple(s) for s in x["featmap_sizes"].tolist()], STRIDES, 8)
    result = atss_assign(torch.cat(levels), [len(a) for a in levels], x["gt_boxes"], x["gt_labels"],
                         x["crowd_boxes"], topk=9)
    return {"assigned_gt_inds": result.assigned_gt_inds, "assigned_labels": result.assigned_labels}


def assign_mmdet(x: dict) -> dict:
    from mmdet.models.task_modules.assigners import ATSSAssigner
    from mmdet.models.task_modules.prior_generators import AnchorGenerator
    from mmengine.structures import InstanceData

    gen = AnchorGenerator(strides=list(STRIDES), ratios=[1.0], octave_base_scale=8, scales_per_octave=1)
    levels = gen.grid_priors([tuple(s) for s in x["featmap_sizes"].tolist()], device="cpu")
    priors = InstanceData(priors=torch.cat(levels))
    gts = InstanceData(bboxes=x["gt_boxes"], labels=x["gt_labels"])
    ignore = InstanceData(bboxes=x["crowd_boxes"])
    result = ATSSAssigner(topk=9).assign(priors, [len(a) for a in levels], gts, ignore)
    return {"assigned_gt_inds": result.gt_inds, "assigned_labels": result.labels}


# ------------------------------------------------------------------------------ head losses

HEAD_CHANNELS = 64


def head_inputs(seed: int) -> dict:
    """Two images of random sizes (one without GTs when seed is 0), their FPN features."""
    g = _gen(seed)
    shapes = [tuple(int(v) for v in torch.randint(2, 6, (2,), generator=g) * 32) for _ in range(2)]
    batch_h, batch_w = max(s[0] for s in shapes), max(s[1] for s in shapes)
    feats = [torch.randn(2, HEAD_CHANNELS, -(-batch_h // s), -(-batch_w // s), generator=g) for s in STRIDES]
    out = {"img_shapes": torch.tensor(shapes), "batch_shape": torch.tensor([batch_h, batch_w])}
    for i, f in enumerate(feats):
        out[f"feat{i}"] = f
    for b, (h, w) in enumerate(shapes):
        n = 0 if (seed == 0 and b == 1) else int(torch.randint(1, 8, (1,), generator=g))
        out[f"gt_boxes{b}"] = random_boxes(n, h, w, g, min_size=8.0)
        out[f"gt_labels{b}"] = torch.randint(0, NUM_CLASSES, (n,), generator=g)
        out[f"crowd{b}"] = random_boxes(1, h, w, g)
    return out


def _head_state(kind: str, seed: int) -> dict:
    """Native head weights, randomised beyond the init so that every loss term is non-trivial."""
    head = _native_head(kind)
    g = _gen(seed + 50)
    with torch.no_grad():
        for name, p in head.named_parameters():
            if name.startswith(("cls_out", "reg_out", "quality_out")):
                p.copy_(torch.randn(p.shape, generator=g) * (0.02 if p.dim() > 1 else 0.5))
            elif name.startswith("scales"):
                p.fill_(1.0 + 0.1 * float(torch.randn(1, generator=g)))
            elif p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif kind == "fcos" and name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return head.state_dict()


def _native_head(kind: str):
    """The native head of a recipe ("gfl", "atss", "fcos") at the parity cases' width."""
    from gfl_repro.models.detector import build_head
    from gfl_repro.models.heads.base import HeadSpec
    from gfl_repro.specs.recipes import RECIPES
    from gfl_repro.specs.run_config import RunConfig

    spec = HeadSpec(num_classes=NUM_CLASSES, in_channels=HEAD_CHANNELS, feat_channels=HEAD_CHANNELS)
    return build_head(RunConfig(**RECIPES[kind]), spec)


def _targets(x: dict) -> list[dict]:
    return [{"boxes": x[f"gt_boxes{b}"], "labels": x[f"gt_labels{b}"], "ignore_boxes": x[f"crowd{b}"]} for b in range(2)]


def head_loss_native(kind: str, x: dict, state: dict) -> dict:
    head = _native_head(kind)
    head.load_state_dict(state)
    outputs = head([x[f"feat{i}"] for i in range(5)])
    return {k: v.detach() for k, v in head.loss(outputs, _targets(x)).items()}


def mmdet_head(kind: str, state: dict):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict

    from gfl_repro.engines.mmdet.convert import export_state_dict

    register_all_modules()
    anchor = dict(type="AnchorGenerator", ratios=[1.0], octave_base_scale=8, scales_per_octave=1, strides=list(STRIDES))
    train_cfg = ConfigDict(assigner=dict(type="ATSSAssigner", topk=9), allowed_border=-1, pos_weight=-1, debug=False)
    test_cfg = ConfigDict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.6),
                          max_per_img=100)
    common = dict(num_classes=NUM_CLASSES, in_channels=HEAD_CHANNELS, stacked_convs=4, feat_channels=HEAD_CHANNELS,
                  anchor_generator=anchor, train_cfg=train_cfg, test_cfg=test_cfg)
    if kind == "fcos":
        cfg = dict(type="FCOSHead", num_classes=NUM_CLASSES, in_channels=HEAD_CHANNELS, stacked_convs=4,
                   feat_channels=HEAD_CHANNELS, strides=list(STRIDES), norm_on_bbox=True, centerness_on_reg=True,
                   dcn_on_last_conv=False, center_sampling=True, conv_bias=True,
                   norm_cfg=dict(type="GN", num_groups=32, requires_grad=True),
                   loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                   loss_bbox=dict(type="GIoULoss", loss_weight=1.0),
                   loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
                   train_cfg=None, test_cfg=test_cfg)
    elif kind == "gfl":
        cfg = dict(type="GFLHead", reg_max=16,
                   loss_cls=dict(type="QualityFocalLoss", use_sigmoid=True, beta=2.0, loss_weight=1.0),
                   loss_dfl=dict(type="DistributionFocalLoss", loss_weight=0.25),
                   loss_bbox=dict(type="GIoULoss", loss_weight=2.0), **common)
    else:
        cfg = dict(type="ATSSHead",
                   bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
                   loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                   loss_bbox=dict(type="GIoULoss", loss_weight=2.0),
                   loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0), **common)
    head = MODELS.build(cfg)
    exported = export_state_dict({f"head.{k}": v for k, v in state.items()}, head_type=kind)
    missing = head.load_state_dict({k[len("bbox_head."):]: v for k, v in exported.items()}, strict=False)
    assert not missing.unexpected_keys and all("integral" in k for k in missing.missing_keys), missing
    return head


def head_loss_mmdet(kind: str, x: dict, state: dict) -> dict:
    from mmengine.structures import InstanceData

    head = mmdet_head(kind, state)
    cls_scores, bbox_preds, *rest = head([x[f"feat{i}"] for i in range(5)])
    batch_h, batch_w = x["batch_shape"].tolist()
    metas = [dict(img_shape=tuple(s), pad_shape=(batch_h, batch_w), batch_input_shape=(batch_h, batch_w),
                  scale_factor=(1.0, 1.0)) for s in x["img_shapes"].tolist()]
    gts = [InstanceData(bboxes=x[f"gt_boxes{b}"], labels=x[f"gt_labels{b}"]) for b in range(2)]
    ignores = [InstanceData(bboxes=x[f"crowd{b}"]) for b in range(2)]
    if kind == "gfl":
        raw = head.loss_by_feat(cls_scores, bbox_preds, gts, metas, ignores)
    elif kind == "fcos":
        raw = head.loss_by_feat(cls_scores, bbox_preds, rest[0], gts, metas)
    else:
        raw = head.loss_by_feat(cls_scores, bbox_preds, rest[0], gts, metas, ignores)
    return {k: (sum(v) if isinstance(v, (list, tuple)) else v).detach() for k, v in raw.items()}


# ------------------------------------------------------------------------------ whole detector
# A ResNet-50-shaped backbone at width 16 (so the case stays small), FPN and GFL head at 64
# channels; random mmdet weights with class bias 0 so that many boxes pass the threshold.

MODEL_CHANNELS = 64


def model_inputs(seed: int) -> dict:
    g = _gen(seed + 100)
    shapes = [tuple(int(v) for v in torch.randint(3, 8, (2,), generator=g) * 32) for _ in range(2)]
    batch_h, batch_w = max(s[0] for s in shapes), max(s[1] for s in shapes)
    images = torch.zeros(2, 3, batch_h, batch_w)
    for b, (h, w) in enumerate(shapes):
        images[b, :, :h, :w] = torch.randn(3, h, w, generator=g)
    scale = [(1.0 + 0.25 * b, 1.0 + 0.25 * b) for b in range(2)]
    return {"images": images, "img_shapes": torch.tensor(shapes), "scale_factors": torch.tensor(scale)}


def _mmdet_model(head: str = "gfl"):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict

    register_all_modules()
    anchor = dict(type="AnchorGenerator", ratios=[1.0], octave_base_scale=8, scales_per_octave=1, strides=list(STRIDES))
    cfg = dict(
        type="GFL",
        data_preprocessor=dict(type="DetDataPreprocessor", mean=[0.0] * 3, std=[1.0] * 3, bgr_to_rgb=False,
                               pad_size_divisor=32),
        backbone=dict(type="ResNet", depth=50, stem_channels=16, base_channels=16, num_stages=4, out_indices=(1, 2, 3),
                      frozen_stages=1, norm_cfg=dict(type="BN", requires_grad=True), norm_eval=True, style="pytorch"),
        neck=dict(type="FPN", in_channels=[128, 256, 512], out_channels=MODEL_CHANNELS, start_level=0,
                  add_extra_convs="on_output", num_outs=5),
        bbox_head=dict(type="GFLHead", num_classes=NUM_CLASSES, in_channels=MODEL_CHANNELS, stacked_convs=4,
                       feat_channels=MODEL_CHANNELS, anchor_generator=anchor, reg_max=16,
                       loss_cls=dict(type="QualityFocalLoss", use_sigmoid=True, beta=2.0, loss_weight=1.0),
                       loss_dfl=dict(type="DistributionFocalLoss", loss_weight=0.25),
                       loss_bbox=dict(type="GIoULoss", loss_weight=2.0)),
        train_cfg=dict(assigner=dict(type="ATSSAssigner", topk=9), allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.6),
                      max_per_img=100),
    )
    return MODELS.build(ConfigDict(cfg))


def model_state_mmdet(seed: int) -> dict:
    """A randomly initialised mmdet GFL model's state dict (mmdet key names)."""
    import logging

    from mmengine.logging import MMLogger

    MMLogger.get_current_instance().setLevel(logging.ERROR)  # init_weights reports every tensor
    torch.manual_seed(seed)
    model = _mmdet_model()
    model.init_weights()
    with torch.no_grad():
        model.bbox_head.gfl_cls.bias.zero_()
        for bn in (m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


def model_native(x: dict, mmdet_state: dict) -> dict:
    from gfl_repro.engines.mmdet.convert import convert_state_dict
    from gfl_repro.models.backbone import BackboneSpec, ResNetBackbone
    from gfl_repro.models.detector import Detector, build_head
    from gfl_repro.models.fpn import FPN
    from gfl_repro.models.heads.base import HeadSpec
    from gfl_repro.models.postprocess import PostprocessConfig
    from gfl_repro.specs.run_config import RunConfig

    model = Detector(
        ResNetBackbone(BackboneSpec((3, 4, 6, 3), base_channels=16)),
        FPN([128, 256, 512], MODEL_CHANNELS, num_outs=5),
        build_head(RunConfig(), HeadSpec(num_classes=NUM_CLASSES, in_channels=MODEL_CHANNELS, feat_channels=MODEL_CHANNELS)),
        PostprocessConfig(),
    )
    model.load_state_dict(convert_state_dict(mmdet_state), strict=True)
    model.eval()
    metas = [{"img_shape": tuple(s), "scale_factor": tuple(f)} for s, f in
             zip(x["img_shapes"].tolist(), x["scale_factors"].tolist())]
    return _flatten_detections(model.predict(x["images"], metas))


def model_mmdet(x: dict, mmdet_state: dict) -> dict:
    from mmdet.structures import DetDataSample

    model = _mmdet_model()
    model.load_state_dict(mmdet_state, strict=True)
    model.eval()
    batch_h, batch_w = x["images"].shape[-2:]
    samples = []
    for shape, factor in zip(x["img_shapes"].tolist(), x["scale_factors"].tolist()):
        sample = DetDataSample()
        ori = (round(shape[0] / factor[1]), round(shape[1] / factor[0]))
        sample.set_metainfo(dict(img_shape=tuple(shape), ori_shape=ori, scale_factor=tuple(factor),
                                 pad_shape=(batch_h, batch_w), batch_input_shape=(batch_h, batch_w)))
        samples.append(sample)
    with torch.no_grad():
        out = model.predict(x["images"], samples, rescale=True)
    return _flatten_detections([{"boxes": o.pred_instances.bboxes, "scores": o.pred_instances.scores,
                                 "labels": o.pred_instances.labels} for o in out])


def _flatten_detections(dets: list[dict]) -> dict:
    out = {}
    for b, d in enumerate(dets):
        for k in ("boxes", "scores", "labels"):
            out[f"{k}{b}"] = d[k].detach()
    return out


# ------------------------------------------------------------------------------ Table 1b heads
# RetinaNet, FoveaBox and SSD512 heads: every loss term (head_inputs / ssd_inputs, two images of
# their own padded sizes, one without GTs when the seed is 0) and the post-processed detections
# of the same weights (class biases near 0 so that many boxes pass the score threshold).

T1B_KINDS = ("retinanet", "foveabox", "ssd512")
SSD_CHANNELS = (16, 32, 16, 8, 8, 8, 8)
SSD_SIZES = (64, 32, 16, 8, 4, 2, 1)  # SSD512's levels for a 512 x 512 input
TEST_CFGS = {  # mmdet's test_cfg of each stock config
    "retinanet": dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=0.5, max_per_img=100),
    "foveabox": dict(nms_pre=1000, min_bbox_size=None, score_thr=0.05, nms=0.5, max_per_img=100),
    "ssd512": dict(nms_pre=1000, min_bbox_size=0, score_thr=0.02, nms=0.45, max_per_img=200),
}


def t1b_inputs(kind: str, seed: int) -> dict:
    if kind != "ssd512":
        x = head_inputs(seed)
        x["pad_shapes"] = torch.tensor([[-(-h // 32) * 32, -(-w // 32) * 32] for h, w in x["img_shapes"].tolist()])
        return x
    g = _gen(seed + 200)
    out = {"img_shapes": torch.tensor([[512, 512]] * 2), "batch_shape": torch.tensor([512, 512]),
           "pad_shapes": torch.tensor([[512, 512]] * 2)}
    for i, (c, s) in enumerate(zip(SSD_CHANNELS, SSD_SIZES)):
        out[f"feat{i}"] = torch.randn(2, c, s, s, generator=g)
    for b in range(2):
        n = 0 if (seed == 0 and b == 1) else int(torch.randint(1, 8, (1,), generator=g))
        out[f"gt_boxes{b}"] = random_boxes(n, 512, 512, g, min_size=16.0)
        out[f"gt_labels{b}"] = torch.randint(0, NUM_CLASSES, (n,), generator=g)
        out[f"crowd{b}"] = random_boxes(1, 512, 512, g)
    return out


def _t1b_native_head(kind: str):
    from gfl_repro.models.detector import build_head
    from gfl_repro.models.heads.base import HeadSpec
    from gfl_repro.specs.recipes import RECIPES
    from gfl_repro.specs.run_config import RunConfig

    spec = HeadSpec(num_classes=NUM_CLASSES, in_channels=HEAD_CHANNELS, feat_channels=HEAD_CHANNELS,
                    level_channels=SSD_CHANNELS if kind == "ssd512" else None)
    return build_head(RunConfig(**RECIPES[kind]), spec)


def t1b_state(kind: str, seed: int) -> dict:
    """Native head weights, randomised so that every term is non-trivial; class biases near 0."""
    head = _t1b_native_head(kind)
    g = _gen(seed + 70)
    with torch.no_grad():
        for name, p in head.named_parameters():
            scale = (0.02 if p.dim() > 1 else 0.1) if name.startswith(("cls_out", "reg_out")) else (
                0.05 if p.dim() > 1 else 0.02)
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return head.state_dict()


def _t1b_feats(kind: str, x: dict) -> list:
    return [x[f"feat{i}"] for i in range(len(SSD_SIZES) if kind == "ssd512" else len(STRIDES))]


def t1b_native(kind: str, x: dict, state: dict) -> dict:
    """Loss terms and detections of the native head."""
    from gfl_repro.models.postprocess import PostprocessConfig

    head = _t1b_native_head(kind)
    head.load_state_dict(state)
    targets = [{**t, "pad_shape": tuple(p)} for t, p in zip(_targets(x), x["pad_shapes"].tolist())]
    out = {k: v.detach() for k, v in head.loss(head(_t1b_feats(kind, x)), targets).items()}
    c = TEST_CFGS[kind]
    cfg = PostprocessConfig(nms_pre=c["nms_pre"], score_thr=c["score_thr"], nms_iou=c["nms"],
                            max_per_img=c["max_per_img"], min_bbox_size=c["min_bbox_size"])
    metas = [{"img_shape": tuple(s), "scale_factor": (1.0, 1.0)} for s in x["img_shapes"].tolist()]
    with torch.no_grad():
        dets = head.predict(head(_t1b_feats(kind, x)), metas, cfg)
    return {**out, **_flatten_detections(dets)}


def _t1b_mmdet_head(kind: str, state: dict):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict

    from gfl_repro.engines.mmdet.convert import export_state_dict

    register_all_modules()
    c = TEST_CFGS[kind]
    test_cfg = ConfigDict(nms_pre=c["nms_pre"], score_thr=c["score_thr"], nms=dict(type="nms", iou_threshold=c["nms"]),
                          max_per_img=c["max_per_img"], **({} if c["min_bbox_size"] is None else {"min_bbox_size": 0}))
    common = dict(num_classes=NUM_CLASSES, in_channels=HEAD_CHANNELS, stacked_convs=4, feat_channels=HEAD_CHANNELS,
                  test_cfg=test_cfg)
    if kind == "retinanet":
        cfg = dict(type="RetinaHead", **common,
                   anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=3,
                                         ratios=[0.5, 1.0, 2.0], strides=list(STRIDES)),
                   bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
                   loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                   loss_bbox=dict(type="L1Loss", loss_weight=1.0),
                   train_cfg=ConfigDict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4,
                                                      min_pos_iou=0, ignore_iof_thr=-1),
                                        sampler=dict(type="PseudoSampler"), allowed_border=-1, pos_weight=-1,
                                        debug=False))
    elif kind == "foveabox":
        cfg = dict(type="FoveaHead", **common, strides=list(STRIDES), base_edge_list=[16, 32, 64, 128, 256],
                   scale_ranges=((1, 64), (32, 128), (64, 256), (128, 512), (256, 2048)), sigma=0.4,
                   with_deform=False,
                   loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=1.5, alpha=0.4, loss_weight=1.0),
                   loss_bbox=dict(type="SmoothL1Loss", beta=0.11, loss_weight=1.0), train_cfg=ConfigDict())
    else:
        cfg = dict(type="SSDHead", num_classes=NUM_CLASSES, in_channels=SSD_CHANNELS, test_cfg=test_cfg,
                   anchor_generator=dict(type="SSDAnchorGenerator", scale_major=False, input_size=512,
                                         basesize_ratio_range=(0.1, 0.9), strides=[8, 16, 32, 64, 128, 256, 512],
                                         ratios=[[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]]),
                   bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
                   train_cfg=ConfigDict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.5,
                                                      min_pos_iou=0.0, ignore_iof_thr=-1, gt_max_assign_all=False),
                                        sampler=dict(type="PseudoSampler"), smoothl1_beta=1.0, allowed_border=-1,
                                        pos_weight=-1, neg_pos_ratio=3, debug=False))
    head = MODELS.build(cfg)
    if not hasattr(head, "loss_cls"):
        head.loss_cls = None  # mmdet 3.3's SSDHead lacks it, which its predict path reads (mmdetection#11780)
    exported = export_state_dict({f"head.{k}": v for k, v in state.items()}, head_type=kind)
    head.load_state_dict({k[len("bbox_head."):]: v for k, v in exported.items()}, strict=True)
    return head


def t1b_mmdet(kind: str, x: dict, state: dict) -> dict:
    from mmengine.structures import InstanceData

    head = _t1b_mmdet_head(kind, state)
    batch_h, batch_w = x["batch_shape"].tolist()
    metas = [dict(img_shape=tuple(s), pad_shape=tuple(p), batch_input_shape=(batch_h, batch_w), scale_factor=(1.0, 1.0))
             for s, p in zip(x["img_shapes"].tolist(), x["pad_shapes"].tolist())]
    gts = [InstanceData(bboxes=x[f"gt_boxes{b}"], labels=x[f"gt_labels{b}"]) for b in range(2)]
    ignores = [InstanceData(bboxes=x[f"crowd{b}"]) for b in range(2)]
    cls_scores, bbox_preds = head(_t1b_feats(kind, x))
    raw = head.loss_by_feat(cls_scores, bbox_preds, gts, metas, ignores)
    out = {k: (sum(v) if isinstance(v, (list, tuple)) else v).detach().reshape(()) for k, v in raw.items()}
    with torch.no_grad():
        cls_scores, bbox_preds = head(_t1b_feats(kind, x))
        results = head.predict_by_feat(cls_scores, bbox_preds, batch_img_metas=metas, rescale=True)
    dets = [{"boxes": r.bboxes, "scores": r.scores, "labels": r.labels} for r in results]
    return {**out, **_flatten_detections(dets)}
