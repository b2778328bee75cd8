"""Profiles map one experiment to one scale.

A profile edits the resolved config last: it chooses the data, the backbone scale, the
image size and what a named schedule means in epochs. ``smoke`` is toy scale on CPU with
synthetic data; ``paper`` is the paper's setting on COCO 2017.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable

from .run_config import RunConfig

DEFAULT_LR, DEFAULT_BATCH = RunConfig.base_lr, RunConfig.batch_size


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    toy_scale: bool  # numbers from this profile are not comparable with the paper's
    overrides: dict[str, Any] = field(default_factory=dict)
    # schedule name -> (epochs, lr step epochs)
    schedules: dict[str, tuple[int, tuple[int, ...]]] = field(default_factory=dict)
    # fields whose paper-scale value the profile rescales, e.g. SSD's 512 x 512 input
    fixed_size_scale: tuple[int, int] | None = None
    # seeds (0 .. default_seeds - 1) that `run`, `status`, `collect` and `report` use when
    # --seeds is not given: toy-scale effects need several seeds to separate from noise
    default_seeds: int = 1
    # when the profile changes the batch size: the recipe's lr scaled linearly to the new batch,
    # times this factor (None: the lr stays the recipe's)
    lr_scale: float | None = None
    # settings the profile changes for one detector only (applied after ``overrides``)
    detector_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def arithmetic_tags(self) -> tuple[str, ...]:
        """The non-default arithmetic of this profile's runs, e.g. ``("bf16", "channels-last")``;
        empty for the plain profile. ``collect``, ``plot`` and ``report`` tag their outputs with
        them, so a bf16 table never overwrites an fp32 one."""
        tags = [self.overrides["precision"]] if self.overrides.get("precision", "fp32") != "fp32" else []
        tags += [text for key, text in (("channels_last", "channels-last"), ("compile", "compiled"))
                 if self.overrides.get(key)]
        return tuple(tags)

    @property
    def variant(self) -> str:
        """:attr:`arithmetic_tags` as a directory-name suffix: ``""`` or e.g. ``"-bf16"``."""
        return "".join(f"-{tag}" for tag in self.arithmetic_tags)

    @property
    def tagged_name(self) -> str:
        """The name with :attr:`variant`: ``smoke``, ``smoke-bf16``, ... (a figures directory)."""
        return f"{self.name}{self.variant}"

    @property
    def label(self) -> str:
        name = f"{self.name} profile (toy scale, synthetic data)" if self.toy_scale else f"{self.name} profile"
        tags = [f"{tag} training" if tag == self.overrides.get("precision") else tag for tag in self.arithmetic_tags]
        return ", ".join([name, *tags])


PAPER = Profile(
    name="paper",
    description="COCO 2017, the paper's backbones and schedules, 8 GPUs x 2 images",
    toy_scale=False,
    overrides={"dataset": "coco2017", "backbone_scale": "full"},
    schedules={"1x": (12, (8, 11)), "2x": (24, (16, 22)), "ssd_120e": (120, (80, 110))},
    default_seeds=1,
)

SMOKE = Profile(
    name="smoke",
    description="synthetic COCO-format data, tiny backbones, small images, CPU, minutes",
    toy_scale=True,
    overrides={
        "dataset": "synthetic",
        "synth_train": 256,
        "synth_val": 64,
        "backbone_scale": "tiny",
        "image_scale": (192, 160),
        "multiscale_short": (128, 160),
        "batch_size": 8,
        "warmup_iters": 50,
        "nms_pre": 1000,
    },
    schedules={"1x": (12, (8, 11)), "2x": (24, (16, 22)), "ssd_120e": (12, (8, 11))},
    # SSD512's last level is a 4x4 conv (padding 1) on the 2x2 map of the level before it: 288 px
    # (9 x 32) is the smallest square input that leaves it an output (maps 36, 18, 9, 5, 3, 2, 1)
    fixed_size_scale=(288, 288),
    default_seeds=3,
    # twice the linearly scaled lr: GFL's 0.01 at batch 16 becomes 0.01 at batch 8 (a short
    # schedule on toy data), SSD512's 2e-3 at batch 64 becomes 5e-4
    lr_scale=2.0,
    # Trained from scratch for 372 iterations, heads without any normalisation barely learn
    # (RetinaNet 2.5 AP50 7.2, FoveaBox 3.8 / 11.2 against ATSS's 30.6 / 60.1): ATSS, FCOS and GFL
    # have GroupNorm in their towers, RetinaNet and FoveaBox do not. With it they learn as ATSS
    # does; the paper profile keeps every detector's stock head. SSD512's toy VGG (1/16 width,
    # one conv per stage: SSD_SCALES in models/detector.py), trained from scratch, gets BatchNorm
    # (training mode), flip-only augmentation and lr 2e-2 (docs/choices.md).
    detector_overrides={"retinanet": {"norm": "gn"}, "foveabox": {"norm": "gn"},
                        "ssd512": {"norm": "bn", "augment": "flip", "base_lr": 2e-2}},
)

PROFILES: dict[str, Profile] = {p.name: p for p in (SMOKE, PAPER)}
DEFAULT_PROFILE = "smoke"


def apply_profile(settings: dict[str, Any], profile: Profile, keep: Iterable[str] = ()) -> dict[str, Any]:
    """Return ``settings`` with the profile's scale applied (schedule -> epochs and steps).

    Fields named in ``keep`` (what a spec row set explicitly) are left as they are.
    """
    keep = set(keep)
    out = dict(settings)
    fixed_size = out.get("detector") == "ssd512"
    recipe_lr, recipe_batch = out.get("base_lr", DEFAULT_LR), out.get("batch_size", DEFAULT_BATCH)
    out.update({k: v for k, v in profile.overrides.items() if k not in keep})
    if profile.lr_scale is not None and "base_lr" not in keep:
        out["base_lr"] = recipe_lr * out.get("batch_size", recipe_batch) / recipe_batch * profile.lr_scale
    out.update({k: v for k, v in profile.detector_overrides.get(out.get("detector", "atss"), {}).items() if k not in keep})
    if fixed_size and profile.fixed_size_scale is not None and "image_scale" not in keep:
        out["image_scale"] = profile.fixed_size_scale
    epochs, steps = profile.schedules[out.get("schedule", "1x")]
    if "epochs" not in keep:
        out["epochs"] = epochs
    if "lr_steps" not in keep:
        out["lr_steps"] = steps
    return out


def with_arithmetic(profile: Profile, precision: str = "fp32", channels_last: bool = False,
                    compile: bool = False) -> Profile:
    """``profile`` whose runs compute at ``precision`` (``fp32``, the paper's, or ``bf16``), in
    channels-last layout and/or compiled with torch.compile. Each of these is part of a run's
    identity (they change float rounding), so both sets of results sit side by side."""
    settings = {"precision": precision, "channels_last": channels_last, "compile": compile}
    plain = RunConfig()
    changed = {k: v for k, v in settings.items() if v != getattr(plain, k)}
    if not changed:
        return profile
    return dataclasses.replace(profile, overrides={**profile.overrides, **changed})
