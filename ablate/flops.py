"""Params and FLOPs as the paper counts them: FLOPs are multiply-adds (MACs) of one image.

``torch.utils.flop_counter`` counts 2 FLOPs per multiply-add, so we halve its total. It counts
convolutions and matmuls (not BN, activations or adds), which is the paper's convention.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: `human` serves commands that must not load it
    from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, image_size: int, in_chans: int = 3) -> int:
    """Multiply-adds of one forward pass on one ``in_chans x image_size x image_size`` image.

    Runs on a copy on the meta device: shapes only, no arithmetic, so RepLKNet at 224 costs
    milliseconds and the caller's model is untouched."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta").eval()
    x = torch.zeros(1, in_chans, image_size, image_size, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(x)
    return counter.get_total_flops() // 2


def human(n: float, unit: str = "") -> str:
    """4.0M / 15.3G style, the paper's rounding to one decimal."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}{unit}"
    return f"{n:.0f}{unit}"
