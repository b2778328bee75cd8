"""Named starting points for spec rows: each recipe is a stock detector configuration,
written as changes to :class:`gfl_repro.specs.run_config.RunConfig`'s defaults.

A spec row names a recipe and edits a few fields (detectron2 LazyConfig habit). The
recipes follow mmdetection 3.3's configs:

- ``atss``: ``atss_r50_fpn_1x_coco`` — Focal Loss, centerness branch, Dirac box, GIoU.
- ``gfl``: ``gfl_r50_fpn_1x_coco`` — ATSS with QFL (joint score) + DFL (General box).
- ``fcos``: ``fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco``
  (38.7 AP in mmdet's zoo, the closest to the paper's 38.5; the paper does not name its
  FCOS variant).
- ``retinanet``: ``retinanet_r50_fpn_1x_coco`` — 9 anchors, max-IoU assigner, L1 box loss,
  NMS at IoU 0.5.
- ``foveabox``: ``fovea_r50_fpn_4xb4-1x_coco`` — FL with γ = 1.5, α = 0.4, smooth-L1, NMS 0.5.
- ``ssd512``: ``ssd512_coco`` — VGG16, softmax CE with 3:1 hard negatives, 120 epochs (mmdet's
  24 epochs over the training set repeated 5 times), NMS 0.45, score ≥ 0.02, 200 per image.
"""

from __future__ import annotations

from typing import Any

_DIRAC_FL_CENTERNESS: dict[str, Any] = {
    "quality": "centerness",
    "cls_loss": "focal",
    "box": "dirac",
    "dfl_weight": 0.0,
}

RECIPES: dict[str, dict[str, Any]] = {
    "gfl": {"detector": "atss"},
    "atss": {"detector": "atss", **_DIRAC_FL_CENTERNESS},
    # the variant's schedule warms up from 1/3 of the lr; caffe-style backbone details are not modelled
    "fcos": {"detector": "fcos", **_DIRAC_FL_CENTERNESS, "box_loss_weight": 1.0, "warmup_ratio": 1.0 / 3.0},
    "retinanet": {
        "detector": "retinanet",
        "quality": "none",
        "cls_loss": "focal",
        "box": "dirac",
        "dfl_weight": 0.0,
        "box_loss": "l1",
        "box_loss_weight": 1.0,
        "nms_iou": 0.5,
    },
    "foveabox": {
        "detector": "foveabox",
        "quality": "none",
        "cls_loss": "focal",
        "focal_gamma": 1.5,
        "focal_alpha": 0.4,
        "box": "dirac",
        "dfl_weight": 0.0,
        "box_loss": "smooth_l1",
        "box_loss_weight": 1.0,
        "nms_iou": 0.5,
    },
    "ssd512": {
        "detector": "ssd512",
        "backbone": "vgg16",
        "quality": "none",
        "cls_loss": "softmax_ce",
        "box": "dirac",
        "dfl_weight": 0.0,
        "box_loss": "smooth_l1",
        "box_loss_weight": 1.0,
        "image_scale": [512, 512],
        "augment": "ssd",
        "schedule": "ssd_120e",
        "batch_size": 64,
        "base_lr": 0.002,
        "weight_decay": 5e-4,
        "score_thr": 0.02,
        "nms_iou": 0.45,
        "max_per_img": 200,
    },
}
