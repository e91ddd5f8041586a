"""Depthwise large-kernel convs with an optional parallel small kernel (RepLKNet, Sec. 3 Guideline 3).

Two training-time forms, both merged into a single conv for deployment by ``merge()``:

* ``LargeKernelDW`` (RepLKNet, MobileNetV2): ``lk`` (KxK depthwise, dilation d) + BN, plus an optional
  ``small`` (kxk depthwise) + BN; the outputs are summed.
* ``ParallelSmallKernel`` (ConvNeXt): wraps an existing conv that has a bias and no norm after it and
  adds a parallel small kernel without bias or norm, so the merge is an exact kernel sum.

Both run their large depthwise conv through ``depthwise_conv2d``, which computes it natively
(``F.conv2d``) or through an FFT (``torch.fft``): the cost of the FFT does not grow with the kernel,
so from a crossover size on it is several times faster (bench/depthwise_conv.py). Parameters, state
dict keys and the re-parameterized form are the same either way; only the arithmetic differs (by
float rounding). ``impl`` (module kwarg) or ``$ABLATE_DW_CONV``: ``native``, ``fft``, ``triton`` or
``auto``. ``triton`` (ablate.layers.dw_triton, imported only when it runs) is a direct Triton kernel
for CUDA, or for CPU tensors under ``TRITON_INTERPRET=1`` (tests); ``auto`` picks it only from a
measured crossover (``TRITON_MIN_KERNEL``: empty, since on an H100 and an H200 the FFT beat it at
every size where either beat cuDNN; docs/performance.md).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from ablate.layers.conv_bn import ConvBN, fuse_conv_bn

IMPLS = ("native", "fft", "triton", "auto")
IMPL_ENV = "ABLATE_DW_CONV"
# Smallest effective kernel (dilation * (k - 1) + 1) for which ``auto`` takes the FFT, per device
# type, from bench/depthwise_conv.py (fwd + bwd; docs/performance.md). CPU: float32 channels_last, 1
# thread. CUDA (H100, cuDNN 9.19, bench/gpu_check.sh): the FFT wins from 13 in every layout and dtype
# measured (float32 channels_last 6.4x at 13 and 51x at 31; bfloat16 3.5x / 17x; float32 NCHW 2.0x /
# 8.7x), while at 7 bfloat16 is 4x faster natively. A device type missing here (meta: FLOP counting,
# which counts native convs) is native.
FFT_MIN_KERNEL = {"cpu": 13, "cuda": 13}
# ... and at least this many taps a side: a sparse 3x3 at dilation 6 (effective 13) is still cheaper natively
FFT_MIN_TAPS = 5
FFT_DTYPES = (torch.float32, torch.float64)  # torch.fft on CPU has no half types: those stay native in auto
# ... on CUDA half types too (autocast's bf16/fp16 activations): the FFT computes them in float32 and
# casts back, and was still 3.5x (13x13) to 17x (31x31) faster than cuDNN's bfloat16 conv
FFT_AUTO_DTYPES = {"cpu": FFT_DTYPES, "cuda": (torch.float16, torch.bfloat16, *FFT_DTYPES)}
# Smallest kernel (taps a side: a direct sum's cost follows the taps, not the dilated extent as the
# FFT's does) for which ``auto`` takes the Triton kernel, per device type. Empty: bench/gpu_check.sh on
# an H100 found the FFT faster than Triton from 9x9 on (31x31: 1.7 ms against 9.6 ms), and Triton's
# wins below 13 small (1.5x over cuDNN at 7x7 fp32). Checked before FFT_MIN_KERNEL, so a device
# type naming both would take Triton. Never "cpu": the interpreter is for tests only.
TRITON_MIN_KERNEL: dict[str, int] = {}
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def default_impl() -> str:
    """``$ABLATE_DW_CONV`` if set, else ``auto``."""
    impl = os.environ.get(IMPL_ENV, "auto") or "auto"
    if impl not in IMPLS:
        raise ValueError(f"{IMPL_ENV}={impl!r}: one of {', '.join(IMPLS)}")
    return impl


def choose_impl(impl: str | None, x: torch.Tensor, kernel_size: tuple[int, int], dilation: tuple[int, int]) -> str:
    """``native``, ``fft`` or ``triton`` for this input: ``auto`` takes Triton or the FFT from the device's
    measured crossover (TRITON_MIN_KERNEL, FFT_MIN_KERNEL), else native."""
    impl = impl or default_impl()
    if impl not in IMPLS:
        raise ValueError(f"depthwise conv impl {impl!r}: one of {', '.join(IMPLS)}")
    if not isinstance(x, torch.Tensor) or x.is_meta:
        return "native"  # torch.fx tracing (re-param's BN fusion), FLOP counting: they see the conv itself
    if impl != "auto":
        return impl
    return auto_impl(x.device.type, x.dtype, kernel_size, dilation)


def auto_impl(device_type: str, dtype: torch.dtype, kernel_size: tuple[int, int], dilation: tuple[int, int]) -> str:
    """What ``auto`` runs for a depthwise conv of this kernel on this device type and dtype: Triton or the
    FFT from the measured crossovers (TRITON_MIN_KERNEL, FFT_MIN_KERNEL, FFT_AUTO_DTYPES), else native.
    Apart from ``choose_impl`` so the policy of every device type can be checked on any machine."""
    size = min(d * (k - 1) + 1 for k, d in zip(kernel_size, dilation))
    taps = min(kernel_size)
    triton_from = TRITON_MIN_KERNEL.get(device_type)
    if triton_from is not None and taps >= triton_from and dtype in TRITON_DTYPES:
        return "triton"
    crossover = FFT_MIN_KERNEL.get(device_type)
    dtypes = FFT_AUTO_DTYPES.get(device_type, FFT_DTYPES)
    if crossover is None or size < crossover or taps < FFT_MIN_TAPS or dtype not in dtypes:
        return "native"
    return "fft"


def _fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c 7^d >= n: sizes pocketfft and cuFFT transform fastest."""
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def fft_depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                         stride=1, padding=0, dilation=1) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, dilation, groups=C)`` for a depthwise ``weight``
    of shape (C, 1, kh, kw), through a real FFT; differentiable in ``x``, ``weight`` and ``bias``.

    Cross-correlation with zero padding is a circular one on a grid of N >= H + padding (and >= the
    kernel and the output) with the kernel rolled back by the padding: x is zero-filled to N by rfft2 itself, the
    product is X * conj(W), and the valid outputs are the first rows and columns (every stride-th:
    computed densely, then subsampled). Half types are computed in float32 and cast back."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    w = dilate_kernel(weight, (dh, dw))
    kh, kw = w.shape[-2:]
    h, wd = x.shape[-2:]
    out_h, out_w = h + 2 * ph - kh + 1, wd + 2 * pw - kw + 1
    if out_h <= 0 or out_w <= 0:
        raise RuntimeError(f"input {h}x{wd} padded by {ph},{pw} is smaller than the kernel {kh}x{kw}")
    n = (_fft_size(max(h + ph, kh, out_h)), _fft_size(max(wd + pw, kw, out_w)))
    compute = x.dtype if x.dtype in FFT_DTYPES else torch.float32
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    spec_x = torch.fft.rfft2(x.to(compute), s=n)
    w = torch.roll(F.pad(w.to(compute), [0, n[1] - kw, 0, n[0] - kh]), shifts=(-ph, -pw), dims=(-2, -1))
    spec_w = torch.fft.rfft2(w, s=n).reshape(1, -1, n[0], n[1] // 2 + 1)
    y = torch.fft.irfft2(spec_x * spec_w.conj(), s=n)[..., :out_h:sh, :out_w:sw]
    if bias is not None:
        y = y + bias.to(compute).reshape(1, -1, 1, 1)
    y = y.to(x.dtype)
    return y.contiguous(memory_format=torch.channels_last) if channels_last else y.contiguous()


def triton_interprets(x: torch.Tensor) -> bool:
    """Whether the Triton kernels run through Triton's interpreter for ``x`` (``$TRITON_INTERPRET``,
    read at each call); False on CUDA; a one-line error on a device where they cannot run."""
    if os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes"):
        return True
    if x.device.type == "cuda":
        return False
    raise RuntimeError(f"depthwise conv impl 'triton' runs on CUDA, or on CPU under TRITON_INTERPRET=1 "
                       f"(Triton's interpreter, slow: for tests); got a {x.device.type} tensor")


def triton_depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                            stride=1, padding=0, dilation=1) -> torch.Tensor:
    """``ablate.layers.dw_triton.triton_depthwise_conv2d``, imported at the first call (triton is a
    heavy import and only torch's CUDA wheels bring it); a one-line error where it cannot run."""
    triton_interprets(x)  # before importing triton: a CPU-only run fails at once
    try:
        from ablate.layers.dw_triton import triton_depthwise_conv2d as conv
    except ImportError as e:
        raise RuntimeError(f"depthwise conv impl 'triton' needs the triton package: {e}") from e
    return conv(x, weight, bias, stride, padding, dilation)


def depthwise_conv2d(x: torch.Tensor, conv: nn.Conv2d, impl: str | None = None) -> torch.Tensor:
    """``conv(x)``, through the FFT or Triton where ``impl`` (or ``$ABLATE_DW_CONV``, default ``auto``)
    says so and ``conv`` is a depthwise conv (groups = in = out channels) with zero, numeric padding;
    any other conv runs natively whatever ``impl`` says."""
    depthwise = (conv.groups == conv.in_channels == conv.out_channels and conv.padding_mode == "zeros"
                 and not isinstance(conv.padding, str))
    chosen = choose_impl(impl, x, conv.kernel_size, conv.dilation) if depthwise else "native"
    if chosen == "native":
        return conv(x)
    fn = fft_depthwise_conv2d if chosen == "fft" else triton_depthwise_conv2d
    return fn(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation)


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
                 small_kernel: int | None = None, impl: str | None = None):
        super().__init__()
        if impl is not None and impl not in IMPLS:
            raise ValueError(f"impl {impl!r}: one of {', '.join(IMPLS)}")
        self.impl = impl  # None: $ABLATE_DW_CONV, else auto (read at each forward)
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
            return depthwise_conv2d(x, self.merged, self.impl)
        out = self.lk.bn(depthwise_conv2d(x, self.lk.conv, self.impl))
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

    def __init__(self, lk: nn.Conv2d, small_kernel: int, impl: str | None = None):
        super().__init__()
        if impl is not None and impl not in IMPLS:
            raise ValueError(f"impl {impl!r}: one of {', '.join(IMPLS)}")
        self.impl = impl
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
            return depthwise_conv2d(x, self.merged, self.impl)
        return depthwise_conv2d(x, self.lk, self.impl) + self.small(x)

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
