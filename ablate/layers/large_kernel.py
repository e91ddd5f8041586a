"""Depthwise large-kernel convs with an optional parallel small kernel (RepLKNet, Sec. 3 Guideline 3).

Two training-time forms, both merged into a single conv for deployment by ``merge()``:

* ``LargeKernelDW`` (RepLKNet, MobileNetV2): ``lk`` (KxK depthwise, dilation d) + BN, plus an optional
  ``small`` (kxk depthwise) + BN; the outputs are summed.
* ``ParallelSmallKernel`` (ConvNeXt): wraps an existing conv that has a bias and no norm after it and
  adds a parallel small kernel without bias or norm, so the merge is an exact kernel sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ablate.layers.conv_bn import ConvBN, fuse_conv_bn


def dilate_kernel(kernel: torch.Tensor, dilation: int | tuple[int, int]) -> torch.Tensor:
    """The dense kernel equivalent to a dilated one: zeros between taps (a *sparse* large kernel)."""
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    if dh == 1 and dw == 1:
        return kernel
    kh, kw = kernel.shape[-2:]
    out = kernel.new_zeros(*kernel.shape[:-2], dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    out[..., ::dh, ::dw] = kernel
    return out


def centered_sum(*kernels: tuple[torch.Tensor, int | tuple[int, int]]) -> torch.Tensor:
    """One dense kernel equal to the sum of centred kernels of any odd sizes and dilations.

    Each ``(kernel, dilation)`` is first expanded to its dense (sparse) form, then zero-padded to the
    largest size, so a 3x3 lands on the centre of a 13x13 -- valid when every conv uses the
    "same" padding ``dilation * (k - 1) // 2`` and the same stride."""
    dense = [dilate_kernel(w, d) for w, d in kernels]
    h = max(w.shape[-2] for w in dense)
    wd = max(w.shape[-1] for w in dense)
    out = None
    for w in dense:
        ph, pw = (h - w.shape[-2]) // 2, (wd - w.shape[-1]) // 2
        w = F.pad(w, [pw, pw, ph, ph])
        out = w if out is None else out + w
    assert out is not None
    return out


def _deploy_conv(template: nn.Conv2d | ConvBN, weight: torch.Tensor, bias: torch.Tensor,
                 dilation: int, stride) -> nn.Conv2d:
    conv = template if isinstance(template, nn.Conv2d) else template.conv
    kh, kw = weight.shape[-2:]
    out = nn.Conv2d(conv.in_channels, conv.out_channels, (kh, kw), stride,
                    (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2), dilation=dilation,
                    groups=conv.groups, bias=True, device=weight.device, dtype=weight.dtype)
    out.weight.copy_(weight)
    out.bias.copy_(bias)
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
        sw, sb = fuse_conv_bn(self.small.conv, self.small.bn)
        return centered_sum((w, self.dilation), (sw, 1)), b + sb, 1

    @torch.no_grad()
    def merge(self) -> None:
        """Replace both branches (and their BNs) by one conv with bias (deploy form)."""
        if self.merged is not None:
            return
        w, b, dilation = self.merged_kernel()
        self.merged = _deploy_conv(self.lk, w, b, dilation, self.stride)
        del self.lk
        self.small = None


class ParallelSmallKernel(nn.Module):
    """``lk`` (an existing conv, e.g. ConvNeXt's ``conv_dw``: bias, no norm after it) plus a parallel
    ``small`` kxk conv of the same groups and stride, without bias or norm; outputs summed.

    Without a BN in the branch the merge is an exact kernel sum (the large conv's bias covers both),
    so it adds no normalisation the host architecture does not have."""

    def __init__(self, lk: nn.Conv2d, small_kernel: int):
        super().__init__()
        if type(lk) is not nn.Conv2d:
            raise ValueError(f"ParallelSmallKernel needs a plain nn.Conv2d with static padding, "
                             f"got {type(lk).__name__}")
        kh, kw = lk.kernel_size
        dh, dw = lk.dilation
        size_h, size_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        if small_kernel % 2 == 0 or kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"kernel sizes must be odd, got {lk.kernel_size} and {small_kernel}")
        if small_kernel > min(size_h, size_w):
            raise ValueError(f"small kernel {small_kernel} larger than the large one {lk.kernel_size}")
        if lk.padding != ((size_h - 1) // 2, (size_w - 1) // 2) or lk.padding_mode != "zeros":
            raise ValueError(f"the large conv must use 'same' zero padding to re-parameterize, got {lk.padding}")
        self.lk = lk
        self.small_kernel = small_kernel
        self.small = nn.Conv2d(lk.in_channels, lk.out_channels, small_kernel, lk.stride, small_kernel // 2,
                               groups=lk.groups, bias=False, device=lk.weight.device, dtype=lk.weight.dtype)
        self.merged: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged is not None:
            return self.merged(x)
        return self.lk(x) + self.small(x)

    @torch.no_grad()
    def merged_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = centered_sum((self.lk.weight, self.lk.dilation), (self.small.weight, 1))
        b = self.lk.bias if self.lk.bias is not None else w.new_zeros(w.shape[0])
        return w, b.clone()

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged is not None:
            return
        w, b = self.merged_kernel()
        self.merged = _deploy_conv(self.lk, w, b, 1, self.lk.stride)
        del self.lk
        self.small = None  # type: ignore[assignment]
