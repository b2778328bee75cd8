"""Convert mmdetection (3.x or 2.x) detector checkpoints into the native engine's format and
back: GFL, ATSS, FCOS, RetinaNet, FoveaBox and SSD512.

Backbone and neck keys already match (the native ResNet keeps torchvision's / mmdet's names,
the FPN keeps mmdet's ``lateral_convs.i.conv`` / ``fpn_convs.i.conv``, SSD's VGG its
``features.i`` and its neck mmdet's ``l2_norm`` / ``extra_layers.i.j.conv``); only the head is
renamed:

====================================================  ==========================================
mmdet (``bbox_head.``)                                native (``head.``)
====================================================  ==========================================
``cls_convs.i.conv.weight`` (towers with GroupNorm)   ``cls_tower.{3i}.weight``
``cls_convs.i.gn.{weight,bias}``                      ``cls_tower.{3i+1}.{weight,bias}``
``cls_convs.i.conv.{weight,bias}`` (no norm:          ``cls_tower.{2i}.{weight,bias}``
RetinaNet, FoveaBox)
``reg_convs.i.…``                                     ``reg_tower.…`` (same patterns)
``gfl_cls`` / ``atss_cls`` / ``conv_cls`` /           ``cls_out``
``retina_cls`` / ``fovea_cls``
``gfl_reg`` / ``atss_reg`` / ``conv_reg`` /           ``reg_out``
``retina_reg`` / ``fovea_reg``
``atss_centerness`` / ``conv_centerness``             ``quality_out``
``scales.i.scale``                                    ``scales.i.scale``
``cls_convs.i.0.*`` / ``reg_convs.i.0.*`` (SSD)       the same names
``integral.project``                                  (dropped: a constant)
====================================================  ==========================================

Modulated deformable convs (mmcv ``ModulatedDeformConv2dPack``: ``conv2.weight``,
``conv2.conv_offset.*``) map one to one. mmdet's stock R-101/X-101 DCN configs use DCN v1
(18 offset channels, no mask), which the native DCNv2 layers cannot hold: converting such a
checkpoint is refused with a message saying so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from .safe_load import UnsafeCheckpoint, load_checkpoint

OUT_RENAMES = (
    (re.compile(r"^bbox_head\.(?:gfl|atss|conv|retina|fovea)_cls\.(weight|bias)$"), lambda m: f"head.cls_out.{m[1]}"),
    (re.compile(r"^bbox_head\.(?:gfl|atss|conv|retina|fovea)_reg\.(weight|bias)$"), lambda m: f"head.reg_out.{m[1]}"),
    (re.compile(r"^bbox_head\.(?:atss|conv)_centerness\.(weight|bias)$"), lambda m: f"head.quality_out.{m[1]}"),
    (re.compile(r"^bbox_head\.scales\.(\d+)\.scale$"), lambda m: f"head.scales.{m[1]}.scale"),
    (re.compile(r"^bbox_head\.(cls|reg)_convs\.(\d+)\.0\.(weight|bias)$"), lambda m: f"head.{m[1]}_convs.{m[2]}.0.{m[3]}"),
)
TOWER = re.compile(r"^bbox_head\.(cls|reg)_convs\.(\d+)\.(conv|gn)\.(weight|bias)$")
DROPPED = (re.compile(r"^bbox_head\.integral\.project$"), re.compile(r"\.num_batches_tracked$"))
EXPORT_NAMES = {  # head type -> mmdet names of (cls_out, reg_out, quality_out)
    "gfl": ("gfl_cls", "gfl_reg", None),
    "atss": ("atss_cls", "atss_reg", "atss_centerness"),
    "fcos": ("conv_cls", "conv_reg", "conv_centerness"),
    "retinanet": ("retina_cls", "retina_reg", None),
    "foveabox": ("conv_cls", "conv_reg", None),
    "ssd512": (None, None, None),
}


class CheckpointImportError(ValueError):
    """A checkpoint that cannot be converted (one line)."""


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmdet detector state dict -> native Detector state dict (see the module's table)."""
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    layers_per_conv = 3 if any(TOWER.match(k) and TOWER.match(k)[3] == "gn" for k in state) else 2
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if any(p.search(key) for p in DROPPED):
            continue
        if key.startswith(("backbone.", "neck.")):
            if re.search(r"\.conv2\.conv_offset\.weight$", key) and value.shape[0] == 18:
                raise CheckpointImportError(f"{key}: DCN v1 (18 offset channels) cannot load into the native DCNv2 layers")
            out[key] = value
            continue
        tower = TOWER.match(key)
        if tower:
            index = layers_per_conv * int(tower[2]) + (1 if tower[3] == "gn" else 0)
            out[f"head.{tower[1]}_tower.{index}.{tower[4]}"] = value
            continue
        for pattern, rename in OUT_RENAMES:
            match = pattern.match(key)
            if match:
                out[rename(match)] = value
                break
        else:
            raise CheckpointImportError(f"unexpected key {key!r}: not a dense detector checkpoint this engine knows")
    return out


def load_mmdet_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of an mmdet checkpoint file (2.x or 3.x).

    Read with ``weights_only=True`` and the allow-list of :mod:`gfl_repro.engines.mmdet.safe_load`
    (numpy values and mmengine's HistoryBuffer in ``meta`` / ``message_hub``): nothing in the
    file is executed, and a file naming any other type is refused in one line.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointImportError(f"{path}: no such file")
    try:
        data: Any = load_checkpoint(path)
    except UnsafeCheckpoint as err:
        raise CheckpointImportError(str(err)) from None
    except Exception as err:  # a broken or foreign file: say so in one line
        raise CheckpointImportError(f"{path}: cannot read as a torch checkpoint ({type(err).__name__})") from None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointImportError(f"{path}: no state_dict of tensors inside")
    return state


def import_checkpoint(src: Path, dst: Path) -> dict[str, Any]:
    """Convert ``src`` and save ``{"model": state_dict, "source": ...}`` to ``dst`` (weights_only-safe);
    what was converted: ``tensors``, the head ``kind`` and ``num_classes``."""
    from ...store import atomic_write

    dst = Path(dst)
    if dst.is_dir():
        raise CheckpointImportError(f"{dst} is a directory; give the path of the file to write")
    source = load_mmdet_checkpoint(src)
    state = convert_state_dict(source)
    payload = {"model": state, "source": str(src), "format": "gfl-repro native detector"}
    atomic_write(dst, lambda handle: torch.save(payload, handle))
    kind = head_kind(source)
    return {"tensors": len(state), "kind": kind, "num_classes": _num_classes(state, kind)}


def head_kind(mmdet_state: dict[str, torch.Tensor]) -> str:
    """Which dense head an mmdet state dict holds, from its key names."""
    keys = {k.removeprefix("module.") for k in mmdet_state}
    names = {k.split(".")[1] for k in keys if k.startswith("bbox_head.")}
    if "gfl_cls" in names:
        return "GFL"
    if "atss_cls" in names:
        return "ATSS"
    if "retina_cls" in names:
        return "RetinaNet"
    if "conv_centerness" in names:
        return "FCOS"
    if names & {"conv_cls", "fovea_cls"}:
        return "FoveaBox"
    if any(k.startswith("neck.l2_norm") for k in keys):
        return "SSD512"
    return "unknown"


def _num_classes(state: dict[str, torch.Tensor], kind: str) -> int | None:
    if "head.cls_out.weight" in state:  # RetinaNet: 9 anchors per location
        return int(state["head.cls_out.weight"].shape[0]) // (9 if kind == "RetinaNet" else 1)
    if "head.cls_convs.0.0.weight" in state:  # SSD: 4 anchors x (classes + background) at level 0
        return int(state["head.cls_convs.0.0.weight"].shape[0]) // 4 - 1
    return None


def export_state_dict(state: dict[str, torch.Tensor], head_type: str = "gfl") -> dict[str, torch.Tensor]:
    """The inverse of :func:`convert_state_dict`: native detector keys -> mmdet keys of the
    head ``head_type`` (a key of :data:`EXPORT_NAMES`: gfl, atss, fcos, retinanet, foveabox, ssd512)."""
    cls_name, reg_name, quality_name = EXPORT_NAMES[head_type]
    layers_per_conv = 3 if "head.cls_tower.1.weight" in state else 2  # GroupNorm after each conv, or ReLU only
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(("backbone.", "neck.")) or re.match(r"^head\.(cls|reg)_convs\.", key):
            out[key.replace("head.", "bbox_head.", 1) if key.startswith("head.") else key] = value
            continue
        match = re.match(r"^head\.(cls|reg)_tower\.(\d+)\.(weight|bias)$", key)
        if match:
            index, part = divmod(int(match[2]), layers_per_conv)
            out[f"bbox_head.{match[1]}_convs.{index}.{'conv' if part == 0 else 'gn'}.{match[3]}"] = value
            continue
        match = re.match(r"^head\.(cls_out|reg_out|quality_out|scales)\.(.+)$", key)
        names = {"cls_out": cls_name, "reg_out": reg_name, "quality_out": quality_name, "scales": "scales"}
        if not match or names[match[1]] is None:
            raise CheckpointImportError(f"unexpected native key {key!r} for a {head_type} head")
        out[f"bbox_head.{names[match[1]]}.{match[2]}"] = value
    return out
