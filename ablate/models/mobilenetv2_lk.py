"""MobileNetV2 whose depthwise convs take any kernel size and dilation (RepLKNet Sec. 3, Appendix E).

The paper's Sec. 3 experiments replace every depthwise 3x3 of MobileNetV2 by a larger (or dilated)
one, optionally with a parallel small kernel for re-parameterization, and optionally without the
identity shortcuts. Everything else is the standard MobileNetV2 (Sandler et al. 2018).
"""

from __future__ import annotations

from typing import Sequence

import torch
from timm.layers import DropPath, make_divisible
from torch import nn

from ablate.layers import LargeKernelDW, conv_bn_act
from ablate.models._registry import ablate_model

# expansion t, channels c, repeats n, first stride s -- the seven stages of MobileNetV2
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def _per_stage(value: int | Sequence[int], name: str) -> list[int]:
    if isinstance(value, int):
        return [value] * len(STAGES)
    value = list(value)
    if len(value) != len(STAGES):
        raise ValueError(f"{name} needs one int or {len(STAGES)} (one per stage), got {len(value)}")
    return value


class InvertedResidual(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int, expand: int, kernel_size: int,
                 dilation: int, small_kernel: int | None, shortcut: bool, drop_path: float):
        super().__init__()
        mid = in_chs * expand
        self.expand = conv_bn_act(in_chs, mid, 1) if expand != 1 else nn.Identity()
        self.dw = LargeKernelDW(mid, kernel_size, stride, dilation, small_kernel)
        self.dw_act = nn.ReLU6(inplace=True)
        self.project = conv_bn_act(mid, out_chs, 1, act=None)
        self.use_shortcut = shortcut and stride == 1 and in_chs == out_chs
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.dw_act(self.dw(self.expand(x))))
        return x + self.drop_path(out) if self.use_shortcut else out


class MobileNetV2LK(nn.Module):
    """MobileNetV2 with configurable depthwise convs.

    kernel_size / dilation: one int for every depthwise conv, or seven (one per stage).
    small_kernel: size of a parallel re-param branch (None for none). shortcut: identity shortcuts.
    """

    def __init__(self, kernel_size: int | Sequence[int] = 3, dilation: int | Sequence[int] = 1,
                 small_kernel: int | None = None, shortcut: bool = True, width_mult: float = 1.0,
                 num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        kernels, dilations = _per_stage(kernel_size, "kernel_size"), _per_stage(dilation, "dilation")
        self.num_classes = num_classes
        stem = make_divisible(32 * width_mult, 8)
        self.stem = conv_bn_act(in_chans, stem, 3, 2)
        blocks: list[nn.Module] = []
        total = sum(n for _, _, n, _ in STAGES)
        in_chs = stem
        for (t, c, n, s), k, d in zip(STAGES, kernels, dilations):
            out_chs = make_divisible(c * width_mult, 8)
            for i in range(n):
                dpr = drop_path_rate * len(blocks) / total
                blocks.append(InvertedResidual(in_chs, out_chs, s if i == 0 else 1, t, k, d,
                                               small_kernel, shortcut, dpr))
                in_chs = out_chs
        self.blocks = nn.Sequential(*blocks)
        self.num_features = make_divisible(1280 * max(1.0, width_mult), 8)
        self.head = conv_bn_act(in_chs, self.num_features, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.drop(x))


ablate_model(MobileNetV2LK, "mobilenetv2_lk")
