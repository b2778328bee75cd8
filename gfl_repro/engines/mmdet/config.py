"""The mmdetection 3.3 config of a run: which stock config expresses it, and that config
edited with the run's settings (``gfl-repro run --engine mmdet``).

A run is expressible when one of mmdet's stock heads computes it with nothing but its
config knobs changed:

=============  ==========================================================  =====================
recipe         stock config (``mmdet/.mim/configs/``)                       the run's knobs
=============  ==========================================================  =====================
``gfl``        ``gfl/gfl_r50_fpn_1x_coco.py``                               QFL β, n = y_n (Δ = 1),
                                                                            λ0, λ1 (0 allowed)
``atss``       ``atss/atss_r50_fpn_1x_coco.py``                             FL γ, α, λ0, ATSS topk
``fcos``       ``fcos/fcos_r50-caffe_fpn_gn-head-center-normbbox-           FL γ, α, λ0
               centeronreg-giou_1x_coco.py``
``retinanet``  ``retinanet/retinanet_r50_fpn_1x_coco.py``                   FL γ, α, λ0
``foveabox``   ``foveabox/fovea_r50_fpn_4xb4-1x_coco.py``                   FL γ, α, λ0
``ssd512``     ``ssd/ssd512_coco.py``                                       —
=============  ==========================================================  =====================

plus, for every one: backbone (R-50/101, X-101-32x4d, DCNv2 in c3–c5), image scale and
multi-scale range, epochs and lr steps, batch size, lr, momentum, weight decay, warm-up,
test-time thresholds and seed. Anything else (Table 1a's other quality representations,
Table 1b's QFL variants, Table 2's Gaussian box and Δ ≠ 1, Table 3's mixes) needs the
native engine, and :func:`check_expressible` says so.

The stock config is loaded and edited, not rewritten, so what the run does not set stays
mmdet's (SSD's augmentation, FCOS's bias lr × 2 and gradient clipping, RetinaNet's anchors).
Two deliberate edits make it the *same model* as the native engine's: the FCOS backbone is
the pytorch-style ResNet with torchvision ImageNet weights (the native recipe's; mmdet's
uses caffe-style weights), and DCN is DCNv2 (mmdet's GFL configs use DCNv1).

At the smoke profile's toy scale the ResNet-family backbones are the native engine's tiny
ones (:data:`gfl_repro.models.backbone.BACKBONE_SPECS`), registered into mmdet's model
registry as :class:`TinyResNet` / :class:`TinyResNeXt`, with the native neck/head widths.
mmdet's VGG has no width setting, so SSD512 keeps the full VGG16 there.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

from ...models.backbone import BACKBONE_SPECS
from ...models.detector import WIDTH
from ...specs.run_config import RunConfig

STOCK_CONFIGS: dict[str, str] = {
    "gfl": "gfl/gfl_r50_fpn_1x_coco.py",
    "atss": "atss/atss_r50_fpn_1x_coco.py",
    "fcos": "fcos/fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.py",
    "retinanet": "retinanet/retinanet_r50_fpn_1x_coco.py",
    "foveabox": "foveabox/fovea_r50_fpn_4xb4-1x_coco.py",
    "ssd512": "ssd/ssd512_coco.py",
}
# (quality, cls_loss, box, box_loss) of each stock head
_STOCK_METHOD = {
    "gfl": ("joint", "qfl", "general", "giou"),
    "atss": ("centerness", "focal", "dirac", "giou"),
    "fcos": ("centerness", "focal", "dirac", "giou"),
    "retinanet": ("none", "focal", "dirac", "l1"),
    "foveabox": ("none", "focal", "dirac", "smooth_l1"),
    "ssd512": ("none", "softmax_ce", "dirac", "smooth_l1"),
}
IMAGENET_RGB = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)
MMDET_EXTRA_HINT = "install the mmdet extra: bash scripts/mmdet_extra.sh"
NATIVE_ONLY = "native only"
"""The state `status`, `show` and `collect` give an mmdet-engine row only the native engine can run."""


class NeedsNativeEngine(ValueError):
    """The run has no stock mmdet counterpart (one line saying why)."""


def stock_name(config: RunConfig) -> str:
    """The key of :data:`STOCK_CONFIGS` that expresses ``config``; raises :class:`NeedsNativeEngine`."""
    stock_augment = "ssd" if config.detector == "ssd512" else "flip"
    if config.augment != stock_augment:
        raise NeedsNativeEngine(f"needs the native engine (stock mmdet's {config.detector} trains with augment = "
                                f"{stock_augment!r}, this row with {config.augment!r})")
    if config.norm != "stock" and config.detector == "ssd512":
        raise NeedsNativeEngine("needs the native engine (stock mmdet's SSD VGG has no norm layers, this row's "
                                f"norm is {config.norm!r})")
    if config.norm == "bn":
        raise NeedsNativeEngine("needs the native engine (norm 'bn' is the native toy SSD's)")
    if config.precision != "fp32":
        raise NeedsNativeEngine(f"needs the native engine (precision {config.precision} is the native engine's; "
                                "mmdet's runs train in fp32)")
    for setting, flag in (("channels_last", "--channels-last"), ("compile", "--compile")):
        if getattr(config, setting):
            raise NeedsNativeEngine(f"needs the native engine ({flag} is the native engine's fast path)")
    method = (config.quality, config.cls_loss, config.box, config.box_loss)
    if config.detector == "atss":
        names = ("gfl", "atss")
    else:
        names = (config.detector,)
    for name in names:
        if method == _STOCK_METHOD[name]:
            break
    else:
        raise NeedsNativeEngine(
            f"needs the native engine (no stock mmdet {config.detector} head has quality={config.quality}, "
            f"cls_loss={config.cls_loss}, box={config.box}, box_loss={config.box_loss})")
    if name == "gfl" and config.bin_width != 1.0:
        raise NeedsNativeEngine(f"needs the native engine (stock mmdet's GFL head has bin width Δ = 1, "
                                f"this row has Δ = {config.bin_width:g})")
    if name == "ssd512" and config.box_loss_weight != 1.0:
        raise NeedsNativeEngine("needs the native engine (stock mmdet's SSD head has no box loss weight)")
    return name


def check_expressible(config: RunConfig) -> None:
    """Raise :class:`NeedsNativeEngine` unless a stock mmdet config expresses ``config``."""
    stock_name(config)


def expressible(config: RunConfig) -> bool:
    """Whether a stock mmdet config expresses ``config`` (see :func:`stock_name`)."""
    try:
        stock_name(config)
    except NeedsNativeEngine:
        return False
    return True


def shown_state(config: RunConfig, state: str) -> str:
    """The state `status`, `show` and `collect` print for a run: a missing mmdet-engine run
    that stock mmdet cannot express is :data:`NATIVE_ONLY`, anything else as it is."""
    if config.engine == "mmdet" and state == "missing" and not expressible(config):
        return NATIVE_ONLY
    return state


def stock_config_path(name: str) -> Path:
    """The stock config file shipped inside the installed mmdet package."""
    import mmdet

    return Path(mmdet.__file__).parent / ".mim" / "configs" / STOCK_CONFIGS[name]


# ------------------------------------------------------------------------------ building


def build_config(config: RunConfig, *, classes: Sequence[str], train_images: Path, train_annotations: Path,
                 val_images: Path, val_annotations: Path, work_dir: Path, pretrained: Path | None = None,
                 world_size: int = 1, num_workers: int = 0):
    """The mmengine ``Config`` that trains and tests ``config`` with mmdet's runner.

    ``classes`` are the dataset's category names (their order is the label order);
    ``pretrained`` the backbone's ImageNet weights (a local file; nothing is downloaded).
    The config has no validation or test loop: :mod:`gfl_repro.engines.mmdet.run` evaluates after
    training, with mmdet's test pipeline (``cfg.eval_dataloader``) and the native engine's COCOeval.
    """
    from mmengine.config import Config

    name = stock_name(config)
    cfg = Config.fromfile(str(stock_config_path(name)))
    model = cfg.model
    model.bbox_head.num_classes = len(classes)
    if name == "ssd512":
        _vgg_backbone(model, pretrained)
    else:
        _resnet_family(model, config, name, pretrained)
    _head(model, config, name)
    _test_cfg(model, config)
    _data(cfg, config, name, classes, train_images, train_annotations, val_images, val_annotations,
          world_size, num_workers)
    _schedule(cfg, config)
    _runtime(cfg, config, work_dir, world_size)
    return cfg


def _resnet_family(model, config: RunConfig, name: str, pretrained: Path | None) -> None:
    spec = BACKBONE_SPECS[(config.backbone, config.backbone_scale)]
    width = WIDTH[config.backbone_scale]
    backbone: dict[str, Any] = dict(
        num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1, norm_cfg=dict(type="BN", requires_grad=True),
        norm_eval=True, style="pytorch",
        init_cfg=dict(type="Pretrained", checkpoint=str(pretrained)) if pretrained else None,
    )
    if config.backbone_scale == "full":
        backbone.update(type="ResNeXt" if spec.groups > 1 else "ResNet", depth=sum(spec.layers) * 3 + 2)
    else:
        backbone.update(type="TinyResNeXt" if spec.groups > 1 else "TinyResNet", depth=tiny_depth(spec.layers),
                        base_channels=spec.base_channels)
    if spec.groups > 1:
        # mmdet's ResNeXt width is floor(planes * base_width / base_channels) * groups;
        # torchvision's (the native engine's) int(planes * width_per_group / 64) * groups
        backbone.update(groups=spec.groups, base_width=spec.width_per_group * spec.base_channels // 64)
    if config.dcn:
        backbone.update(dcn=dict(type="DCNv2", deform_groups=1, fallback_on_stride=False),
                        stage_with_dcn=(False, True, True, True))
    model.backbone = backbone
    model.neck.in_channels = [spec.base_channels * 4 * 2 ** i for i in range(4)]
    model.neck.out_channels = width["channels"]
    head = model.bbox_head
    head.in_channels = head.feat_channels = width["channels"]
    head.stacked_convs = width["convs"]
    if name in ("gfl", "atss", "fcos"):  # GroupNorm towers
        head.norm_cfg = dict(type="GN", num_groups=width["groups"], requires_grad=True)
    if name == "fcos":  # pytorch-style ImageNet weights, as the native recipe (see module doc)
        model.data_preprocessor.update(IMAGENET_RGB)


def _vgg_backbone(model, pretrained: Path | None) -> None:
    model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(pretrained)) if pretrained else None


def _head(model, config: RunConfig, name: str) -> None:
    head = model.bbox_head
    if config.norm == "gn" and name in ("retinanet", "foveabox"):  # towers as the native engine's with norm = "gn"
        head.norm_cfg = dict(type="GN", num_groups=WIDTH[config.backbone_scale]["groups"], requires_grad=True)
    if name == "gfl":
        head.loss_cls.beta = config.qfl_beta
        head.reg_max = int(round(config.reg_max))
        head.loss_dfl.loss_weight = config.dfl_weight
    elif name != "ssd512":
        head.loss_cls.gamma = config.focal_gamma
        head.loss_cls.alpha = config.focal_alpha
    if name != "ssd512":
        head.loss_bbox.loss_weight = config.box_loss_weight
    if name in ("gfl", "atss"):
        model.train_cfg.assigner.topk = config.atss_topk


def _test_cfg(model, config: RunConfig) -> None:
    test = model.test_cfg
    test.nms_pre = config.nms_pre
    test.score_thr = config.score_thr
    test.nms.iou_threshold = config.nms_iou
    test.max_per_img = config.max_per_img


def _resize_steps(pipeline: list, config: RunConfig, name: str, train: bool) -> list:
    """The pipeline with its resize step set to the run's image scale (mmdet's (w, h) order:
    ``(long side max, short side)`` with ``keep_ratio``; SSD's fixed square without)."""
    long_side, short_side = config.image_scale
    out = []
    for step in copy.deepcopy(list(pipeline)):
        if step["type"] == "Resize":
            if train and config.multiscale and name != "ssd512":
                low, high = config.multiscale_short
                step = dict(type="RandomResize", scale=[(long_side, low), (long_side, high)], keep_ratio=True)
            else:
                step["scale"] = (long_side, short_side)
        out.append(step)
    return out


def _data(cfg, config: RunConfig, name: str, classes: Sequence[str], train_images: Path, train_annotations: Path,
          val_images: Path, val_annotations: Path, world_size: int, num_workers: int) -> None:
    train_set = cfg.train_dataloader.dataset
    if train_set.type == "RepeatDataset":  # SSD: 24 epochs x 5 repeats == the run's 120 epochs
        train_set = train_set.dataset
    metainfo = dict(classes=tuple(classes))
    train_set.update(data_root="", ann_file=str(train_annotations), data_prefix=dict(img=f"{train_images}/"),
                     metainfo=metainfo, pipeline=_resize_steps(train_set.pipeline, config, name, train=True))
    val_set = copy.deepcopy(cfg.val_dataloader.dataset)
    val_set.update(data_root="", ann_file=str(val_annotations), data_prefix=dict(img=f"{val_images}/"),
                   metainfo=metainfo, test_mode=True,
                   pipeline=_resize_steps(val_set.pipeline, config, name, train=False))
    if config.batch_size % world_size:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by {world_size} processes")
    cfg.train_dataloader = dict(
        batch_size=config.batch_size // world_size, num_workers=num_workers, persistent_workers=num_workers > 0,
        sampler=dict(type="DefaultSampler", shuffle=True), batch_sampler=dict(type="AspectRatioBatchSampler"),
        dataset=train_set)
    cfg.eval_dataloader = dict(  # not an mmengine key: gfl_repro.engines.mmdet.run evaluates with it
        batch_size=1, num_workers=num_workers, persistent_workers=num_workers > 0, drop_last=False,
        sampler=dict(type="DefaultSampler", shuffle=False), dataset=val_set)
    for key in ("val_dataloader", "val_evaluator", "val_cfg", "test_dataloader", "test_evaluator", "test_cfg",
                "auto_scale_lr"):
        cfg.pop(key, None)


def _schedule(cfg, config: RunConfig) -> None:
    cfg.train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=config.epochs, val_interval=config.epochs + 1)
    optimizer = cfg.optim_wrapper.optimizer
    optimizer.update(type="SGD", lr=config.base_lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cfg.param_scheduler = [
        dict(type="LinearLR", start_factor=config.warmup_ratio, by_epoch=False, begin=0, end=config.warmup_iters),
        dict(type="MultiStepLR", begin=0, end=config.epochs, by_epoch=True, milestones=list(config.lr_steps),
             gamma=0.1),
    ]


def _runtime(cfg, config: RunConfig, work_dir: Path, world_size: int) -> None:
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=config.seed)
    cfg.resume = True  # picks up work_dir's last checkpoint when there is one
    cfg.load_from = None
    cfg.launcher = "pytorch" if world_size > 1 else "none"
    cfg.default_hooks.logger.interval = 10
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=1, max_keep_ckpts=1)
    cfg.default_hooks.pop("visualization", None)
    cfg.log_processor = dict(type="LogProcessor", window_size=10, by_epoch=True)


def tiny_depth(layers: Sequence[int]) -> str:
    """Registry key of a toy-scale ResNet with these blocks per stage, e.g. ``"tiny-1-1-2-1"``."""
    return "tiny-" + "-".join(str(n) for n in layers)


def register_tiny_backbones() -> None:
    """Register :class:`TinyResNet` / :class:`TinyResNeXt` (the smoke profile's backbones) with mmdet.

    They are mmdet's ResNet / ResNeXt with the native tiny specs' blocks per stage added to
    ``arch_settings`` (keyed by :func:`tiny_depth`); nothing else differs.
    """
    from mmdet.models.backbones import ResNet, ResNeXt
    from mmdet.registry import MODELS

    if MODELS.get("TinyResNet") is not None:
        return
    tiny = {tiny_depth(spec.layers): spec.layers for (_, scale), spec in BACKBONE_SPECS.items() if scale == "tiny"}

    class TinyResNet(ResNet):
        arch_settings = {**ResNet.arch_settings, **{k: (ResNet.arch_settings[50][0], v) for k, v in tiny.items()}}

    class TinyResNeXt(ResNeXt):
        arch_settings = {**ResNeXt.arch_settings, **{k: (ResNeXt.arch_settings[50][0], v) for k, v in tiny.items()}}

    MODELS.register_module(name="TinyResNet", module=TinyResNet)
    MODELS.register_module(name="TinyResNeXt", module=TinyResNeXt)


__all__ = ["NATIVE_ONLY", "NeedsNativeEngine", "STOCK_CONFIGS", "build_config", "check_expressible", "expressible",
           "register_tiny_backbones", "shown_state",
           "stock_name", "tiny_depth"]
