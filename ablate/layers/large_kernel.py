"""Depthwise large-kernel conv with an optional parallel small kernel (RepLKNet, Sec. 3 Guideline 3).

Training form: ``lk`` (KxK depthwise, dilation d) + BN, plus an optional ``small`` (kxk, dense) + BN
whose outputs are summed. ``merge()`` turns both into one KxK conv with bias for deployment.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ablate.layers.conv_bn import ConvBN, fuse_conv_bn


def dilate_kernel(kernel: torch.Tensor, dilation: int) -> torch.Tensor:
    """The dense kernel equivalent to a dilated one: zeros between taps (a *sparse* large kernel)."""
    if dilation == 1:
        return kernel
    k = kernel.shape[-1]
    size = dilation * (k - 1) + 1
    out = kernel.new_zeros(*kernel.shape[:-2], size, size)
    out[..., ::dilation, ::dilation] = kernel
    return out


class LargeKernelDW(nn.Module):
    def __init__(self, channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 small_kernel: int | None = None):
        super().__init__()
        if kernel_size % 2 == 0 or (small_kernel is not None and small_kernel % 2 == 0):
            raise ValueError(f"kernel sizes must be odd, got {kernel_size} and {small_kernel}")
        if small_kernel is not None and small_kernel > dilation * (kernel_size - 1) + 1:
            raise ValueError(f"small kernel {small_kernel} larger than the large one")
        self.channels, self.kernel_size, self.stride = channels, kernel_size, stride
        self.dilation, self.small_kernel = dilation, small_kernel
        self.lk = ConvBN(channels, channels, kernel_size, stride, groups=channels, dilation=dilation)
        self.small = ConvBN(channels, channels, small_kernel, stride, groups=channels) if small_kernel else None
        self.merged: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged is not None:
            return self.merged(x)
        out = self.lk(x)
        if self.small is not None:
            out = out + self.small(x)
        return out

    @torch.no_grad()
    def merged_kernel(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(kernel, bias, dilation) of the single equivalent conv. A dilated kernel stays dilated
        unless a small kernel must be added onto it; then it is expanded to its sparse dense form."""
        w, b = fuse_conv_bn(self.lk.conv, self.lk.bn)
        if self.small is None:
            return w, b, self.dilation
        w = dilate_kernel(w, self.dilation)
        sw, sb = fuse_conv_bn(self.small.conv, self.small.bn)
        pad = (w.shape[-1] - sw.shape[-1]) // 2
        return w + F.pad(sw, [pad] * 4), b + sb, 1

    @torch.no_grad()
    def merge(self) -> None:
        """Replace both branches by one conv with bias (deploy form)."""
        w, b, dilation = self.merged_kernel()
        size = w.shape[-1]
        conv = nn.Conv2d(self.channels, self.channels, size, self.stride, dilation * (size - 1) // 2,
                         dilation=dilation, groups=self.channels, bias=True).to(w.device, w.dtype)
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        self.merged = conv
        del self.lk
        self.small = None
