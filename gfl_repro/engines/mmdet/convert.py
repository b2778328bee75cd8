"""Convert mmdetection (3.x or 2.x) GFL / ATSS / FCOS checkpoints into the native engine's format.

Backbone and neck keys already match (the native ResNet keeps torchvision's / mmdet's names,
the FPN keeps mmdet's ``lateral_convs.i.conv`` / ``fpn_convs.i.conv``); only the head is
renamed:

===============================================  ===============================
mmdet (``bbox_head.``)                           native (``head.``)
===============================================  ===============================
``cls_convs.i.conv.weight``                      ``cls_tower.{3i}.weight``
``cls_convs.i.gn.{weight,bias}``                 ``cls_tower.{3i+1}.{weight,bias}``
``reg_convs.i.…``                                ``reg_tower.…`` (same pattern)
``gfl_cls.*`` / ``atss_cls.*`` / ``conv_cls.*``  ``cls_out.*``
``gfl_reg.*`` / ``atss_reg.*`` / ``conv_reg.*``  ``reg_out.*``
``atss_centerness.*`` / ``conv_centerness.*``    ``quality_out.*``
``scales.i.scale``                               ``scales.i.scale``
``integral.project``                             (dropped: a constant)
===============================================  ===============================

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

HEAD_RENAMES = (
    (re.compile(r"^bbox_head\.(cls|reg)_convs\.(\d+)\.conv\.(weight|bias)$"),
     lambda m: f"head.{m[1]}_tower.{3 * int(m[2])}.{m[3]}"),
    (re.compile(r"^bbox_head\.(cls|reg)_convs\.(\d+)\.gn\.(weight|bias)$"),
     lambda m: f"head.{m[1]}_tower.{3 * int(m[2]) + 1}.{m[3]}"),
    (re.compile(r"^bbox_head\.(?:gfl|atss|conv)_cls\.(weight|bias)$"), lambda m: f"head.cls_out.{m[1]}"),
    (re.compile(r"^bbox_head\.(?:gfl|atss|conv)_reg\.(weight|bias)$"), lambda m: f"head.reg_out.{m[1]}"),
    (re.compile(r"^bbox_head\.(?:atss|conv)_centerness\.(weight|bias)$"), lambda m: f"head.quality_out.{m[1]}"),
    (re.compile(r"^bbox_head\.scales\.(\d+)\.scale$"), lambda m: f"head.scales.{m[1]}.scale"),
)
DROPPED = (re.compile(r"^bbox_head\.integral\.project$"), re.compile(r"\.num_batches_tracked$"))


class CheckpointImportError(ValueError):
    """A checkpoint that cannot be converted (one line)."""


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmdet GFL/ATSS detector state dict -> native Detector state dict."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if any(p.search(key) for p in DROPPED):
            continue
        if key.startswith(("backbone.", "neck.")):
            if re.search(r"\.conv2\.conv_offset\.weight$", key) and value.shape[0] == 18:
                raise CheckpointImportError(f"{key}: DCN v1 (18 offset channels) cannot load into the native DCNv2 layers")
            out[key] = value
            continue
        for pattern, rename in HEAD_RENAMES:
            match = pattern.match(key)
            if match:
                out[rename(match)] = value
                break
        else:
            raise CheckpointImportError(f"unexpected key {key!r}: not a GFL/ATSS detector checkpoint")
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
    """Convert ``src`` and save ``{"model": state_dict, "source": ...}`` to ``dst`` (weights_only-safe)."""
    from ...store import atomic_write

    dst = Path(dst)
    if dst.is_dir():
        raise CheckpointImportError(f"{dst} is a directory; give the path of the file to write")
    state = convert_state_dict(load_mmdet_checkpoint(src))
    payload = {"model": state, "source": str(src), "format": "gfl-repro native detector"}
    atomic_write(dst, lambda handle: torch.save(payload, handle))
    head_keys = [k for k in state if k.startswith("head.")]
    kind = "ATSS (centerness)" if any(k.startswith("head.quality_out") for k in head_keys) else "GFL"
    bins = state["head.reg_out.weight"].shape[0] // 4 if "head.reg_out.weight" in state else None
    return {"tensors": len(state), "kind": kind, "reg_channels_per_side": bins,
            "num_classes": state["head.cls_out.weight"].shape[0] if "head.cls_out.weight" in state else None}


def export_state_dict(state: dict[str, torch.Tensor], head_type: str = "gfl") -> dict[str, torch.Tensor]:
    """The inverse of :func:`convert_state_dict`: native detector keys -> mmdet keys.

    ``head_type`` is ``"gfl"`` (GFLHead: ``gfl_cls`` / ``gfl_reg``), ``"atss"`` (ATSSHead:
    ``atss_cls`` / ``atss_reg`` / ``atss_centerness``) or ``"fcos"`` (FCOSHead: ``conv_cls`` /
    ``conv_reg`` / ``conv_centerness``).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(("backbone.", "neck.")):
            out[key] = value
            continue
        match = re.match(r"^head\.(cls|reg)_tower\.(\d+)\.(weight|bias)$", key)
        if match:
            index, part = divmod(int(match[2]), 3)
            out[f"bbox_head.{match[1]}_convs.{index}.{'conv' if part == 0 else 'gn'}.{match[3]}"] = value
            continue
        match = re.match(r"^head\.(cls_out|reg_out|quality_out|scales)\.(.+)$", key)
        if not match:
            raise CheckpointImportError(f"unexpected native key {key!r}")
        prefix = "conv" if head_type == "fcos" else head_type
        name = {"cls_out": f"{prefix}_cls", "reg_out": f"{prefix}_reg",
                "quality_out": "conv_centerness" if head_type == "fcos" else "atss_centerness",
                "scales": "scales"}[match[1]]
        out[f"bbox_head.{name}.{match[2]}"] = value
    return out
