"""Params and FLOPs as the paper counts them: FLOPs are multiply-adds (MACs) of one image.

``torch.utils.flop_counter`` counts 2 FLOPs per multiply-add, so we halve its total. It counts
convolutions and matmuls (not BN, activations or adds), which is the paper's convention.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ablate.text import human  # noqa: F401  (formatting lives with text; kept here for callers)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, image_size: int, in_chans: int = 3) -> int:
    """Multiply-adds of one forward pass on one ``in_chans x image_size x image_size`` image.

    Runs on a copy on the meta device: shapes only, no arithmetic, so RepLKNet at 224 costs
    milliseconds and the caller's model is untouched."""
    meta = copy.deepcopy(model).to("meta").eval()
    x = torch.zeros(1, in_chans, image_size, image_size, device="meta")
    with FlopCounterMode(display=False) as counter:
        meta(x)
    return counter.get_total_flops() // 2
