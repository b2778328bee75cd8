"""The fully explicit configuration of one training run, and its identity.

A :class:`RunConfig` holds every setting that changes what a run computes. Specs
(``experiments/*.toml``) give a few overrides per row; :func:`gfl_repro.specs.spec.resolve`
fills in the rest from the detector's recipe and the profile. Two rows of different tables
that resolve to the same config share one ``run_id`` and therefore train once.

Defaults are mmdetection 3.3's ``gfl_r50_fpn_1x_coco`` at paper scale (``docs/design.md``
lists them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, fields
from typing import Any

DETECTORS = ("atss", "fcos", "retinanet", "foveabox", "ssd512")
QUALITIES = ("none", "centerness", "iou", "centerness_guided", "iou_guided", "joint")
BOX_REPRESENTATIONS = ("dirac", "gaussian", "general")
CLS_LOSSES = ("focal", "qfl", "softmax_ce")
BOX_LOSSES = ("giou", "l1", "smooth_l1")
BACKBONES = ("r50", "r101", "x101_32x4d", "vgg16")
SCHEDULES = ("1x", "2x", "ssd_120e")
SPLITS = ("minival", "test-dev")
DATASETS = ("coco2017", "synthetic")
BACKBONE_SCALES = ("full", "tiny")
ENGINES = ("native", "mmdet")
PRECISIONS = ("fp32", "bf16")
AUGMENTATIONS = ("flip", "ssd")
NORMS = ("stock", "gn", "bn")


@dataclass(frozen=True)
class RunConfig:
    """Every setting of one training + evaluation run (flat, hashable, JSON-able)."""

    # --- method: what the paper varies --------------------------------------------------
    detector: str = "atss"
    quality: str = "joint"  # how localization quality is represented (Table 1a, Fig. 6)
    cls_loss: str = "qfl"  # QFL (Eq. 2) for the joint representation, else FL (Eq. 1)
    qfl_beta: float = 2.0  # β of Eq. 2 (Table 1c)
    guided_eta: float = 1.5  # η of the IoU-balanced loss (ref. [28]) of the *_guided qualities
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    box: str = "general"  # Dirac delta / Gaussian / General distribution (Table 2a)
    dfl_weight: float = 0.25  # λ1 of Eq. 11; 0 means General without DFL
    kl_weight: float = 0.25  # weight of the Gaussian box's KL loss (ref. [10]), averaged over the 4 sides
    box_loss: str = "giou"  # GIoU for ATSS/FCOS/GFL; the stock losses of the other detectors
    box_loss_weight: float = 2.0  # λ0 of Eq. 11
    reg_max: float = 16.0  # y_n: top of the regression range in stride units (Table 2b)
    bin_width: float = 1.0  # Δ: spacing of the discretised range (Table 2c)
    # --- model -----------------------------------------------------------------------------
    backbone: str = "r50"
    dcn: bool = False  # modulated deformable conv (DCNv2) in stages c3-c5 (Table 4)
    backbone_scale: str = "full"  # "tiny" in the smoke profile: same family, toy width/depth
    # "gn": GroupNorm where the detector has no norm (RetinaNet/FoveaBox towers, SSD's VGG and extra
    # layers); "bn": BatchNorm in training mode there (SSD only: the smoke profile's toy SSD)
    norm: str = "stock"
    atss_topk: int = 9
    # --- data and schedule -------------------------------------------------------------------
    dataset: str = "coco2017"
    eval_split: str = "minival"
    image_scale: tuple[int, int] = (1333, 800)  # (long side max, short side)
    multiscale: bool = False
    multiscale_short: tuple[int, int] = (480, 800)  # short side range when multiscale
    augment: str = "flip"  # training augmentation: "flip" (GFL's), "ssd" (SSD512's expand + crop + colour)
    schedule: str = "1x"
    epochs: int = 12
    lr_steps: tuple[int, ...] = (8, 11)
    batch_size: int = 16
    base_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    # --- test-time post-processing -------------------------------------------------------------
    nms_pre: int = 1000
    score_thr: float = 0.05
    nms_iou: float = 0.6
    max_per_img: int = 100
    seed: int = 0
    # --- synthetic data (smoke profile only; ignored for COCO) --------------------------------
    synth_train: int = 0
    synth_val: int = 0
    # --- which implementation trains it (chosen by `run --engine`, never by a spec row) -----
    engine: str = "native"  # "mmdet": mmdetection 3.3 itself, for the rows its stock heads express
    # --- arithmetic of training and inference (chosen on the command line, never by a spec row) --
    precision: str = "fp32"  # the paper's and mmdet's; "bf16": bfloat16 autocast of the training forward pass
    channels_last: bool = False  # activations and conv weights in NHWC layout (`--channels-last`)
    compile: bool = False  # torch.compile (inductor) of backbone, neck and head (`--compile`)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        kwargs = {}
        for f in fields(cls):
            if f.name in data:
                value = data[f.name]
                kwargs[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


ARITHMETIC = ("precision", "channels_last", "compile")
"""Settings of how a run computes, not what: chosen on the command line, never by a spec row.
Each changes the rounding of float sums, so each is part of the run's identity."""


def run_id(config: RunConfig) -> str:
    """Stable identity of a run: 12 hex digits of SHA-256 over the settings that differ
    from RunConfig's defaults, as canonical JSON.

    Hashing only the differences (as dora does) keeps every existing run_id valid when a
    later version adds a setting whose default reproduces the old behaviour.
    """
    defaults = RunConfig().to_dict()
    changed = {k: v for k, v in config.to_dict().items() if v != defaults[k]}
    canonical = json.dumps(changed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


FIELD_TYPES: dict[str, type] = {}
for _f in fields(RunConfig):
    _default = _f.default if _f.default is not dataclasses.MISSING else None
    FIELD_TYPES[_f.name] = type(_default)

CHOICES: dict[str, tuple[str, ...]] = {
    "detector": DETECTORS,
    "quality": QUALITIES,
    "box": BOX_REPRESENTATIONS,
    "cls_loss": CLS_LOSSES,
    "box_loss": BOX_LOSSES,
    "backbone": BACKBONES,
    "schedule": SCHEDULES,
    "eval_split": SPLITS,
    "dataset": DATASETS,
    "backbone_scale": BACKBONE_SCALES,
    "engine": ENGINES,
    "precision": PRECISIONS,
    "augment": AUGMENTATIONS,
    "norm": NORMS,
}


def _between(low: float, high: float, low_open: bool = False, high_open: bool = False):
    """A range test and how it reads: ``[low, high]``, ``(low, high]``, ..."""
    text = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return (lambda v: (v > low if low_open else v >= low) and (v < high if high_open else v <= high)), text


def _at_least(low: float):
    return (lambda v: v >= low), f">= {low:g}"


def _positive():
    return (lambda v: v > 0), "> 0"


RANGES: dict[str, tuple[Any, str]] = {
    "qfl_beta": _at_least(0),
    "guided_eta": _at_least(0),
    "kl_weight": _at_least(0),
    "focal_gamma": _at_least(0),
    "focal_alpha": _between(0, 1),
    "dfl_weight": _at_least(0),
    "box_loss_weight": _at_least(0),
    "reg_max": _positive(),
    "bin_width": _positive(),
    "atss_topk": _at_least(1),
    "epochs": _at_least(1),
    "batch_size": _at_least(1),
    "base_lr": _positive(),
    "momentum": _between(0, 1, high_open=True),
    "weight_decay": _at_least(0),
    "warmup_iters": _at_least(0),
    "warmup_ratio": _between(0, 1, low_open=True),
    "nms_pre": _at_least(1),
    "score_thr": _between(0, 1, high_open=True),
    "nms_iou": _between(0, 1, low_open=True),
    "max_per_img": _at_least(1),
    "seed": _at_least(0),
    "synth_train": _at_least(0),
    "synth_val": _at_least(0),
}
"""Allowed values of the numeric settings: (test, how the range reads in an error)."""

PAIRS = ("image_scale", "multiscale_short")
"""Settings that are two positive pixel sizes."""


def check_field(name: str, value: Any) -> Any:
    """Validate one override value against RunConfig's field; return it normalised.

    Checks the type, the choices of text settings, the range of numeric ones (:data:`RANGES`;
    every float finite) and the shape of sizes and steps. Raises ValueError with a message
    naming the problem (the caller adds file/row context).
    """
    if name not in FIELD_TYPES:
        raise ValueError(f"unknown setting {name!r}")
    expected = FIELD_TYPES[name]
    if expected is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
    elif expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    elif expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    elif expected is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        if name in CHOICES and value not in CHOICES[name]:
            raise ValueError(f"{name} must be one of {', '.join(CHOICES[name])}; got {value!r}")
    elif expected is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                           for v in value):
            raise ValueError(f"{name} must be a list of integers, got {value!r}")
        value = tuple(value)
        _check_sizes(name, value)
    if name in RANGES:
        test, text = RANGES[name]
        if not test(value):
            raise ValueError(f"{name} must be {text}, got {value!r}")
    return value


def _check_sizes(name: str, value: tuple[int, ...]) -> None:
    if name in PAIRS:
        if len(value) != 2 or min(value) < 1:
            raise ValueError(f"{name} must be two positive pixel sizes, got {list(value)}")
        if name == "multiscale_short" and value[0] > value[1]:
            raise ValueError(f"{name} must be (low, high), got {list(value)}")
    elif name == "lr_steps" and any(v < 1 for v in value):
        raise ValueError(f"lr_steps must be epochs >= 1, got {list(value)}")


def check_consistency(config: RunConfig) -> None:
    """Reject combinations the engine cannot mean (raises ValueError)."""
    if config.quality == "joint" and config.cls_loss != "qfl":
        raise ValueError("quality = 'joint' needs cls_loss = 'qfl' (Eq. 2)")
    if config.cls_loss == "qfl" and config.quality != "joint":
        raise ValueError("cls_loss = 'qfl' trains the joint representation: set quality = 'joint'")
    if config.bin_width <= 0 or config.reg_max <= 0:
        raise ValueError("reg_max and bin_width must be positive")
    ratio = config.reg_max / config.bin_width
    if abs(ratio - round(ratio)) > 1e-9:
        raise ValueError(f"reg_max ({config.reg_max}) must be a multiple of bin_width ({config.bin_width})")
    if config.box != "general" and config.dfl_weight != 0:
        raise ValueError("dfl_weight applies only to box = 'general'; set it to 0")
    if config.cls_loss == "softmax_ce" and config.detector not in ("ssd512", "retinanet", "atss"):
        raise ValueError("cls_loss = 'softmax_ce' mines hard negatives per image, on the image-major targets "
                         "of ssd512, retinanet or atss")
    if config.detector == "ssd512" and config.backbone != "vgg16":
        raise ValueError("ssd512 uses the vgg16 backbone")
    if config.backbone == "vgg16" and config.detector != "ssd512":
        raise ValueError("the vgg16 backbone belongs to ssd512")
    if list(config.lr_steps) != sorted(set(config.lr_steps)):
        raise ValueError(f"lr_steps must strictly increase, got {list(config.lr_steps)}")
    if any(not 1 <= step <= config.epochs for step in config.lr_steps):
        raise ValueError(f"lr_steps must lie within 1..epochs ({config.epochs}), got {list(config.lr_steps)}")
    if config.multiscale and config.multiscale_short[0] > config.multiscale_short[1]:
        raise ValueError(f"multiscale_short must be (low, high), got {list(config.multiscale_short)}")
    if config.dataset == "synthetic" and min(config.synth_train, config.synth_val) < 1:
        raise ValueError(f"the synthetic dataset needs synth_train and synth_val >= 1, got {config.synth_train} "
                         f"and {config.synth_val}")


__all__ = ["RunConfig", "run_id", "check_field", "check_consistency", "CHOICES", "ENGINES", "PRECISIONS", "FIELD_TYPES", "RANGES"]
