"""Table 11's ADE20K columns: params and FLOPs of UperNet on the ConvNeXt backbones at 2048x512.

What the paper counted (it follows Swin, whose numbers come from mmsegmentation's ``tools/get_flops.py``,
i.e. mmcv's ``get_model_complexity_info``, on the inference graph of the segmentor):

* Params: every parameter of the segmentor as trained: backbone (with ConvNeXt's per-output
  LayerNorms), UperHead *and* the auxiliary FCN head (mmcv counts all ``requires_grad`` parameters,
  though ``forward_dummy`` never runs the auxiliary head). Without it every row would be ~0.9M lower
  (ConvNeXt-T: 59.3M, which the paper would print 59M). Re-param branches, where a study has them,
  are merged first, like the ImageNet half's deploy form.
* FLOPs: one 3x512x2048 image (mmseg's ``--shape 2048 512``; the count is the same either way round),
  backbone + UperHead, no auxiliary head (inference), no final upsampling, in mmcv's convention:
  multiply-adds of convs and linears, plus conv biases, ReLU outputs and pooled inputs; SyncBN,
  ConvNeXt's LayerNorms, GELU and functional ops are not counted (``ablate.flops.count_macs_and_mmcv_flops``).
  Plain multiply-adds (``count_macs``, the ImageNet half's convention) are 0.2G lower per row, which
  prints two rows 1G under the paper (ConvNeXt-T 938G, ConvNeXt-B 1169G); both are reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import nn

ADE20K_CLASSES = 150
ADE20K_FLOPS_HW = (512, 2048)  # height, width: "compute the FLOPs with input of 2048x512, following Swin"


@dataclass(frozen=True)
class SegCounts:
    params: int  # the segmentor with its auxiliary head (what the paper prints)
    params_no_aux: int  # what inference keeps
    flops: int  # mmcv's convention (what the paper prints)
    macs: int  # multiply-adds only (ablate's ImageNet convention)


@dataclass(frozen=True)
class SegZooEntry:
    label: str
    model: str
    kwargs: dict[str, Any]
    paper_params: str
    paper_flops: str


K31, K7 = [31, 29, 27, 13], [7, 7, 7, 7]
SEG_ZOO: tuple[SegZooEntry, ...] = (  # Table 11, ADE20K columns
    SegZooEntry("ConvNeXt-T 7-7-7-7", "convnext_lk_tiny", {"kernel_sizes": K7}, "60M", "939G"),
    SegZooEntry("ConvNeXt-S 7-7-7-7", "convnext_lk_small", {"kernel_sizes": K7}, "82M", "1027G"),
    SegZooEntry("ConvNeXt-B 7-7-7-7", "convnext_lk_base", {"kernel_sizes": K7}, "122M", "1170G"),
    SegZooEntry("ConvNeXt-T 31-29-27-13", "convnext_lk_tiny", {"kernel_sizes": K31}, "64M", "973G"),
    SegZooEntry("ConvNeXt-S 31-29-27-13", "convnext_lk_small", {"kernel_sizes": K31}, "90M", "1081G"),
)


def build_upernet(model: dict[str, Any], num_classes: int = ADE20K_CLASSES, in_chans: int = 3,
                  drop_path_rate: float = 0.0) -> nn.Module:
    """UperNet on a study's ``model`` section (the backbone: registry name and kwargs; ``head``: UperNet's)."""
    from ablate.models.upernet import UperNet

    return UperNet(model["name"], num_classes, dict(model.get("kwargs") or {}), in_chans, drop_path_rate,
                   **dict(model.get("head") or {}))


def measure_upernet(model: dict[str, Any], num_classes: int = ADE20K_CLASSES, in_chans: int = 3,
                    hw: tuple[int, int] = ADE20K_FLOPS_HW) -> SegCounts:
    """Params and FLOPs of UperNet on ``model`` as Table 11 counts them (module docstring); memoized."""
    return _measure(json.dumps(model, sort_keys=True, default=str), num_classes, in_chans, tuple(hw))


@lru_cache(maxsize=64)
def _measure(model_json: str, num_classes: int, in_chans: int, hw: tuple[int, int]) -> SegCounts:
    from ablate.flops import count_macs_and_mmcv_flops, count_params
    from ablate.reparam import REPARAM_MODULES

    with torch.device("meta"):
        seg = build_upernet(json.loads(model_json), num_classes, in_chans)
    for m in list(seg.modules()):
        if isinstance(m, REPARAM_MODULES) and m.merged is None:
            m.merge()
    params = count_params(seg)
    aux = count_params(seg.aux_head) if seg.aux_head is not None else 0
    macs, flops = count_macs_and_mmcv_flops(seg, hw, in_chans, copy_model=False)
    return SegCounts(params, params - aux, flops, macs)
