"""Conv + BatchNorm, the unit that structural re-parameterization fuses."""

from __future__ import annotations

import torch
from torch import nn


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the spatial size at stride 1 (odd effective kernels)."""
    return dilation * (kernel_size - 1) // 2


class ConvBN(nn.Sequential):
    """``conv`` then ``bn``; named children so fusion and checkpoints find them."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, dilation: int = 1, bias: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, same_padding(kernel_size, dilation),
                              dilation=dilation, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_chs)


def conv_bn_act(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
                dilation: int = 1, act: type[nn.Module] | None = nn.ReLU6) -> nn.Sequential:
    block = ConvBN(in_chs, out_chs, kernel_size, stride, groups, dilation)
    if act is not None:
        block.add_module("act", act(inplace=True))
    return block


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of one conv equivalent to conv->bn in eval mode:
    W' = W * gamma / sigma, b' = beta + (b - mu) * gamma / sigma."""
    gamma, beta = bn_affine(bn)
    std = (bn.running_var + bn.eps).sqrt()
    scale = gamma / std
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    return conv.weight * scale.reshape(-1, 1, 1, 1), beta + (bias - bn.running_mean) * scale


def bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(gamma, beta) of a BN, ones and zeros when it was built with ``affine=False``."""
    if bn.weight is not None and bn.bias is not None:
        return bn.weight, bn.bias
    return torch.ones_like(bn.running_mean), torch.zeros_like(bn.running_mean)
