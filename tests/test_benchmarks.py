"""The side-by-side harness's time split (``benchmarks/side_by_side.py --parts split``): the
convolution share it reports is the convolutions' and nothing else's."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from side_by_side import conv_split  # noqa: E402


def test_the_split_counts_convolutions_forward_and_backward_and_nothing_else():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(2, 8, 32, 32)
    big = torch.randn(256, 256)

    def conv_then_matmul():
        conv.zero_grad()
        y = conv(x)
        (y.sum() + (big @ big).sum()).backward()

    def matmul_only():
        ((big @ big) @ big).sum()

    with_conv = conv_split(conv_then_matmul, repeats=3)
    assert 0 < with_conv["conv_ms"] < with_conv["total_ms"]

    without = conv_split(matmul_only, repeats=3)
    assert without["conv_ms"] == 0 and without["total_ms"] > 0

    # the backward pass's convolutions are counted too, and matrix products never
    assert "aten::convolution_backward" in with_conv["conv_ops"]
    assert not any("mm" in name for name in with_conv["conv_ops"])
    forward_only = conv_split(lambda: conv(x).detach(), repeats=3)
    assert forward_only["conv_ms"] > 0 and "aten::convolution_backward" not in forward_only["conv_ops"]
