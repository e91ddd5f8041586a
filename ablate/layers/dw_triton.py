"""Depthwise conv2d in Triton: forward, grad-input and grad-weight kernels behind one autograd Function.

Why: a GPU's stock depthwise conv may be far from its compute floor at RepLKNet's 13x13..31x31
kernels (the paper needed its own CUDA kernel, Sec. 3 Guideline 1; bench/gpu_check.sh measures how
far cuDNN is here), and the FFT path pays transforms whatever the kernel. This is the direct sum,
tiled so every kernel tap is one vector FMA:

* forward: one program per (image, channel) plane and block of output pixels (flattened, so 7x7
  and 56x56 maps both fill a tile); it loops over kernel rows and is vectorised over output pixels x
  kernel columns ([BLOCK_P, BLOCK_K] gathers of x, one weight row each), summed over columns once at
  the end, in float32 (float64 for float64). It reads x zero-padded, with spare columns up to BLOCK_K,
  and weights zero-padded to BLOCK_K columns, so that no load is masked.
* grad-input: at stride 1 the forward kernel on the output gradient padded by dilation x (k - 1) -
  padding, with the flipped kernel; with a stride, a masked gather (only the taps where
  ``(ih + pad - i * dilation) % stride == 0`` contribute).
* grad-weight: one program per (channel, kernel row, batch split), reducing over its images and all
  output pixels of the padded x into a [BLOCK_P, BLOCK_K] accumulator; the batch splits' partial rows
  are summed by torch afterwards (a two-pass reduction: deterministic, no atomics). grad-bias is
  ``dy.sum`` (torch).

Supports any stride, dilation and zero padding (RepLKNet uses stride 1 and k // 2), square or
rectangular kernels of any size, float32, float16 and bfloat16 (float32 accumulation) and float64.
Tensors are computed in contiguous NCHW (a channels_last input is copied to NCHW, and that copy kept
for backward; the output is returned in the input's memory format: one memory pass, small beside a
large kernel's taps). Not twice-differentiable. GPU speed (H100, docs/performance.md): faster than
cuDNN from 7x7 (1.5x) to 31x31 (9x), slower at 3x3 and 5x5, and slower than the FFT from 9x9 on, so
``auto`` does not pick it.

Runs on CUDA (compiled), or on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``). The
variable must be set before triton is first imported: triton wraps its own library functions
(``tl.zeros``, ``tl.sum``) for one mode at its import, and timm (so any ablate model) imports
triton; a late setting is refused with a one-line error. Importing this module imports triton;
``ablate.layers`` imports it only when the ``triton`` implementation runs.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from ablate.layers.large_kernel import triton_interprets

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# Launch shape, unmeasured guesses (module attributes so bench/depthwise_conv.py --triton-configs sweeps them):
TILE = 2048  # elements of a program's [BLOCK_P, BLOCK_K] accumulator (2048 fp32: 16 registers a thread at 4 warps)
NUM_WARPS = 4
WEIGHT_PROGRAMS = 1024  # split the batch of grad-weight until (channels x kernel rows x splits) reaches this


def _forward_kernel(x_ptr, w_ptr, b_ptr, y_ptr, C, HP, WP, OH, OW,
                    SH: tl.constexpr, SW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                    KH: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
    # x zero-padded (HP x WP, including (BLOCK_K - KW) * DW spare columns on the right) and w zero-padded
    # to BLOCK_K columns: every load is in bounds, so none is masked (pixels past the end re-read the
    # last one; their sums are not stored)
    plane = tl.program_id(0)  # n * C + c
    c = plane % C
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    j = tl.arange(0, BLOCK_K)
    p_ok = p < OH * OW
    p_in = tl.minimum(p, OH * OW - 1)
    oh = p_in // OW
    ow = p_in % OW
    x_rows = x_ptr + plane.to(tl.int64) * HP * WP + (oh * (SH * WP) + ow * SW)[:, None] + (j * DW)[None, :]
    w_row = w_ptr + c * (KH * BLOCK_K) + j
    acc = tl.zeros((BLOCK_P, BLOCK_K), dtype=ACC)
    for i in range(KH):
        xv = tl.load(x_rows + i * (DH * WP)).to(ACC)
        wv = tl.load(w_row + i * BLOCK_K).to(ACC)
        acc += xv * wv[None, :]
    out = tl.sum(acc, axis=1)
    if HAS_BIAS:
        out += tl.load(b_ptr + c).to(ACC)
    tl.store(y_ptr + plane.to(tl.int64) * OH * OW + p, out.to(y_ptr.dtype.element_ty), mask=p_ok)


def _grad_input_kernel(dy_ptr, w_ptr, dx_ptr, C, H, W, OH, OW,
                       SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                       DH: tl.constexpr, DW: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                       ACC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
    plane = tl.program_id(0)
    c = plane % C
    q = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    j = tl.arange(0, BLOCK_K)
    q_ok = q < H * W
    ih = q // W
    iw = q % W
    nw = iw[:, None] + PW - j[None, :] * DW  # = ow * SW where input column iw meets kernel column j
    ow = nw // SW
    col_ok = q_ok[:, None] & (j < KW)[None, :] & (nw >= 0) & (ow < OW)
    if SW > 1:
        col_ok = col_ok & (nw % SW == 0)
    dy_cols = dy_ptr + plane.to(tl.int64) * OH * OW + ow  # [BLOCK_P, BLOCK_K], plus the output row below
    w_row = w_ptr + c * (KH * KW) + j
    acc = tl.zeros((BLOCK_P, BLOCK_K), dtype=ACC)
    for i in range(KH):
        nh = ih + PH - i * DH
        oh = nh // SH
        row_ok = (nh >= 0) & (oh < OH)
        if SH > 1:
            row_ok = row_ok & (nh % SH == 0)
        ok = col_ok & row_ok[:, None]
        g = tl.load(dy_cols + (oh * OW)[:, None], mask=ok, other=0.0).to(ACC)
        wv = tl.load(w_row + i * KW, mask=j < KW, other=0.0).to(ACC)
        acc += g * wv[None, :]
    out = tl.sum(acc, axis=1)
    tl.store(dx_ptr + plane.to(tl.int64) * H * W + q, out.to(dx_ptr.dtype.element_ty), mask=q_ok)


def _grad_weight_kernel(x_ptr, dy_ptr, part_ptr, N, C, HP, WP, OH, OW, SPLIT,
                        SH: tl.constexpr, SW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                        KH: tl.constexpr, KW: tl.constexpr,
                        ACC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
    # x zero-padded with spare columns as for the forward: x unmasked, dy masked past the last pixel
    c = tl.program_id(0)
    i = tl.program_id(1)  # kernel row
    s = tl.program_id(2)  # batch split: images s, s + SPLIT, ...
    j = tl.arange(0, BLOCK_K)
    P = OH * OW
    acc = tl.zeros((BLOCK_P, BLOCK_K), dtype=ACC)
    for p0 in range(0, P, BLOCK_P):  # offsets once per pixel block, reused for every image
        p = p0 + tl.arange(0, BLOCK_P)
        p_ok = p < P
        p_in = tl.minimum(p, P - 1)
        oh = p_in // OW
        ow = p_in % OW
        x_off = ((oh * SH + i * DH) * WP + ow * SW)[:, None] + (j * DW)[None, :]
        for n in range(s, N, SPLIT):
            plane = (n * C + c).to(tl.int64)
            xv = tl.load(x_ptr + plane * HP * WP + x_off).to(ACC)
            g = tl.load(dy_ptr + plane * P + p, mask=p_ok, other=0.0).to(ACC)
            acc += xv * g[:, None]
    tl.store(part_ptr + ((s * C + c) * KH + i) * KW + j, tl.sum(acc, axis=0), mask=j < KW)


def _imported_interpreting() -> bool:
    """Triton's own mode, fixed when triton was first imported: its library functions (``tl.zeros``,
    ``tl.sum``) were wrapped for the interpreter or the compiler then, and a kernel of the other mode
    cannot call them."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros, InterpretedFunction)


def _mode(x: torch.Tensor) -> bool:
    """Whether the kernels run interpreted for ``x``; a one-line error where they cannot run."""
    wanted = triton_interprets(x)  # $TRITON_INTERPRET and the device
    imported = _imported_interpreting()
    if wanted and not imported:
        raise RuntimeError("depthwise conv impl 'triton': TRITON_INTERPRET=1 was set after triton was first "
                           "imported without it (timm and torch.compile import it): set it before anything imports "
                           "triton, e.g. in a fresh process")
    return imported  # (on CUDA, a triton imported under the interpreter interprets, as triton itself does)


@functools.cache
def _kernels(interpret: bool) -> tuple:
    """The three kernels, wrapped at first use for the interpreter or the compiler (never at import)."""
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction as wrap
    else:
        wrap = triton.jit  # (TRITON_INTERPRET is off here: _mode refused otherwise)
    return tuple(wrap(fn) for fn in (_forward_kernel, _grad_input_kernel, _grad_weight_kernel))


def _blocks(pixels: int, kw: int) -> tuple[int, int]:
    block_k = triton.next_power_of_2(kw)
    block_p = max(16, min(TILE // block_k, 1024, triton.next_power_of_2(pixels)))
    return block_p, block_k


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _padded(x: torch.Tensor, padding, dilation, kw: int, block_k: int) -> torch.Tensor:
    """x zero-padded by ``padding``, plus the spare columns the forward and grad-weight kernels read past
    the kernel's last column (up to BLOCK_K), so that no load needs a mask."""
    (ph, pw), spare = padding, (block_k - kw) * dilation[1]
    return F.pad(x, (pw, pw + spare, ph, ph))


def _forward(kernel, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding,
             dilation, out: tuple[int, int]) -> torch.Tensor:
    """The forward kernel on NCHW ``x``: (N, C, *out)."""
    n, c = x.shape[:2]
    kh, kw = weight.shape[-2:]
    block_p, block_k = _blocks(out[0] * out[1], kw)
    xp = _padded(x, padding, dilation, kw, block_k)
    wp = F.pad(weight, (0, block_k - kw)).contiguous()  # (C, 1, kh, BLOCK_K), zero columns
    y = torch.empty(n, c, *out, device=x.device, dtype=x.dtype)
    kernel[(n * c, triton.cdiv(out[0] * out[1], block_p))](
        xp, wp, bias if bias is not None else wp, y, c, *xp.shape[-2:], *out, *stride, *dilation, kh,
        bias is not None, _acc(x.dtype), block_p, block_k, num_warps=NUM_WARPS)
    return y


class _DepthwiseConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        n, c, h, w = x.shape
        kh, kw = weight.shape[-2:]
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if oh <= 0 or ow <= 0:
            raise RuntimeError(f"input {h}x{w} padded by {ph},{pw} is smaller than the kernel "
                               f"{dh * (kh - 1) + 1}x{dw * (kw - 1) + 1} (dilated)")
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        interpret = _mode(x)
        x, weight = x.contiguous(), weight.contiguous()
        y = _forward(_kernels(interpret)[0], x, weight, bias, stride, padding, dilation, (oh, ow))
        ctx.save_for_backward(x, weight)  # unpadded: padded again in backward (a memory pass, less memory held)
        ctx.conf = (stride, padding, dilation, channels_last, interpret, bias is not None)
        return y.contiguous(memory_format=torch.channels_last) if channels_last else y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        stride, (ph, pw), dilation = ctx.conf[:3]
        channels_last, interpret, has_bias = ctx.conf[3:]
        forward, grad_input, grad_weight = _kernels(interpret)
        (sh, sw), (dh, dw) = stride, dilation
        n, c, h, w = x.shape
        kh, kw = weight.shape[-2:]
        oh, ow = dy.shape[-2:]
        dy = dy.contiguous()
        acc = _acc(x.dtype)
        dx = dw_ = db = None
        if ctx.needs_input_grad[0]:
            qh, qw = dh * (kh - 1) - ph, dw * (kw - 1) - pw
            if sh == sw == 1 and qh >= 0 and qw >= 0:  # the forward of dy padded by q with the flipped kernel
                dx = _forward(forward, dy, weight.flip(-2, -1), None, stride, (qh, qw), dilation, (h, w))
            else:  # strided (or padded beyond the kernel): the masked gather
                dx = torch.empty_like(x)
                block_p, block_k = _blocks(h * w, kw)
                grad_input[(n * c, triton.cdiv(h * w, block_p))](
                    dy, weight, dx, c, h, w, oh, ow, sh, sw, ph, pw, dh, dw, kh, kw, acc, block_p, block_k,
                    num_warps=NUM_WARPS)
            if channels_last:
                dx = dx.contiguous(memory_format=torch.channels_last)
        if ctx.needs_input_grad[1]:
            split = min(n, triton.cdiv(WEIGHT_PROGRAMS, c * kh))
            part = torch.empty(split, c, kh, kw, device=x.device,
                               dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
            block_p, block_k = _blocks(oh * ow, kw)
            xp = _padded(x, (ph, pw), dilation, kw, block_k)
            grad_weight[(c, kh, split)](
                xp, dy, part, n, c, *xp.shape[-2:], oh, ow, split, sh, sw, dh, dw, kh, kw, acc, block_p, block_k,
                num_warps=NUM_WARPS)
            dw_ = part.sum(0).unsqueeze(1).to(weight.dtype)
        if has_bias and ctx.needs_input_grad[2]:
            db = dy.sum((0, 2, 3), dtype=torch.float64 if dy.dtype == torch.float64 else torch.float32).to(dy.dtype)
        return dx, dw_, db, None, None, None


@torch.compiler.disable  # torch.compile breaks the graph here rather than tracing the kernels' launches (untested)
def triton_depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                            stride=1, padding=0, dilation=1) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, dilation, groups=C)`` for a depthwise ``weight``
    (C, 1, kh, kw) through the Triton kernels; differentiable in ``x``, ``weight`` and ``bias``.
    Under autocast the operands are cast to its dtype first, as autocast does for ``F.conv2d``."""
    if x.dim() != 4 or weight.dim() != 4 or weight.shape[:2] != (x.shape[1], 1):
        raise ValueError(f"depthwise conv needs x (N, C, H, W) and weight (C, 1, kh, kw), got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    dtypes = {t.dtype for t in (x, weight, bias) if t is not None}
    if len(dtypes) != 1 or x.dtype not in DTYPES:
        raise TypeError(f"depthwise conv impl 'triton': input, weight and bias of one dtype among "
                        f"{', '.join(str(d) for d in DTYPES)}, got {', '.join(sorted(map(str, dtypes)))}")
    return _DepthwiseConv2d.apply(x, weight, bias, _pair(stride), _pair(padding), _pair(dilation))
