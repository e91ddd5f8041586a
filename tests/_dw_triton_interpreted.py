"""The Triton depthwise conv (ablate.layers.dw_triton) computes what F.conv2d does, run on CPU through
Triton's interpreter: outputs and gradients (input, weight, bias) over kernel sizes up to 31x31,
rectangular kernels, strides, dilations, paddings, memory formats and dtypes. The interpreter runs
every program in Python, so the shapes are tiny; tests/test_gpu.py compares the compiled kernels to
cuDNN at RepLKNet's sizes.

Not collected by the suite itself (no ``test_`` prefix): TRITON_INTERPRET=1 must be set before triton
is first imported (triton wraps its own ``tl.zeros``/``tl.sum`` for one mode at import, and timm
imports triton in every worker), so tests/test_dw_triton.py runs this file in a fresh pytest:
``TRITON_INTERPRET=1 python -m pytest --noconftest tests/_dw_triton_interpreted.py``."""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ablate.layers import LargeKernelDW, large_kernel
from ablate.layers.large_kernel import IMPL_ENV, choose_impl, triton_depthwise_conv2d

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1 (see the docstring)"


def _cpu_error_without_the_interpreter() -> str:
    """What ``impl='triton'`` says to a CPU tensor when TRITON_INTERPRET is unset (at collection, before
    anything here imports triton: the refusal must come before importing it)."""
    saved = os.environ.pop("TRITON_INTERPRET")
    try:
        LargeKernelDW(2, 5, impl="triton")(torch.zeros(1, 2, 8, 8))
    except RuntimeError as e:
        return str(e)
    finally:
        os.environ["TRITON_INTERPRET"] = saved
    return ""


LAYERS_IMPORTED_TRITON = "triton" in sys.modules  # torch, hypothesis, pytest and ablate.layers so far
CPU_ERROR = _cpu_error_without_the_interpreter()
CPU_ERROR_IMPORTED_TRITON = "triton" in sys.modules


@pytest.fixture(autouse=True, scope="module")
def no_overflow_checks():
    """The interpreter checks every int32 add and multiply for overflow, half of its time here; at these
    sizes no offset comes near 2^31 (planes are offset in int64), so the tests run without it."""
    from triton.runtime.interpreter import interpreter_builder

    saved = interpreter_builder.options
    interpreter_builder.options = dataclasses.replace(saved, sanitize_overflow=False)
    yield
    interpreter_builder.options = saved


@pytest.fixture(autouse=True)
def nan_around_the_padded_input(monkeypatch):
    """The forward and grad-weight kernels load without masks from the zero-padded input: it is placed
    here inside a NaN-filled buffer, so a read past either end of it would turn the sums into NaN."""
    from ablate.layers import dw_triton

    padded = dw_triton._padded

    def inside_nans(*args):
        xp = padded(*args)
        buffer = torch.full((3 * xp.numel(),), float("nan"), dtype=xp.dtype)
        return buffer[xp.numel():2 * xp.numel()].view(xp.shape).copy_(xp)

    monkeypatch.setattr(dw_triton, "_padded", inside_nans)


def test_ablate_layers_does_not_import_triton_and_a_cpu_tensor_is_refused_before_it_is() -> None:
    assert not LAYERS_IMPORTED_TRITON
    assert CPU_ERROR.startswith("depthwise conv impl 'triton' runs on CUDA, or on CPU under TRITON_INTERPRET=1")
    assert not CPU_ERROR_IMPORTED_TRITON


TOL = {torch.float64: 1e-12, torch.float32: 2e-6}  # of the reference's largest magnitude


def run_both(x, w, b, stride, padding, dilation, dtype=None):
    """Output and gradients of the Triton conv (operands cast to ``dtype``) and of F.conv2d in float64
    of the same (rounded) numbers, for one random output gradient."""
    dtype = dtype or x.dtype
    ops = [t if t is None else t.to(dtype).requires_grad_() for t in (x, w, b)]
    ref = [t if t is None else t.detach().double().requires_grad_() for t in ops]
    y = triton_depthwise_conv2d(*ops, stride, padding, dilation)
    want = F.conv2d(*ref, stride, padding, dilation, groups=x.shape[1])
    dy = torch.randn(want.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    params = [i for i, t in enumerate(ops) if t is not None]
    got = [y, *torch.autograd.grad(y, [ops[i] for i in params], dy.to(dtype))]
    exp = [want, *torch.autograd.grad(want, [ref[i] for i in params], dy)]
    return got, exp


def assert_close(got, want, tol: float) -> None:
    for name, a, e in zip(["output", "grad input", "grad weight", "grad bias"], got, want):
        assert a.shape == e.shape, name
        err = (a.double() - e).abs().max() / e.abs().max().clamp_min(1.0)
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol:g}"


def operands(batch, channels, size, kernel, bias, seed, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, *size, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, 1, *kernel, generator=g, dtype=torch.float64)
    return x, w, torch.randn(channels, generator=g, dtype=torch.float64) if bias else None


@st.composite
def conv_cases(draw):
    kh, kw = draw(st.sampled_from([1, 3, 5, 7])), draw(st.sampled_from([1, 3, 5, 7]))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, dh * (kh - 1) // 2 + 1)), draw(st.integers(0, dw * (kw - 1) // 2 + 1))
    h, w = draw(st.integers(4, 12)), draw(st.integers(4, 12))
    assume(h + 2 * ph >= dh * (kh - 1) + 1 and w + 2 * pw >= dw * (kw - 1) + 1)
    return dict(batch=draw(st.integers(1, 2)), channels=draw(st.integers(1, 3)), size=(h, w), kernel=(kh, kw),
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)), channels_last=draw(st.booleans()),
                conv=((draw(st.integers(1, 2)), draw(st.integers(1, 2))), (ph, pw), (dh, dw)))


@settings(max_examples=8, deadline=None, derandomize=True)
@given(case=conv_cases(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_triton_equals_native_outputs_and_gradients(case, dtype):
    x, w, b = operands(case["batch"], case["channels"], case["size"], case["kernel"], case["bias"], case["seed"],
                       case["channels_last"])
    got, want = run_both(x, w, b, *case["conv"], dtype=dtype)
    assert_close(got, want, TOL[dtype])
    assert got[0].dtype == dtype
    if case["channels_last"] and x.shape[1] > 1 and got[0].shape[-1] > 1:  # keeps the caller's memory format
        assert got[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kernel,size,tile", [((31, 31), (8, 12), None), ((13, 13), (10, 12), 512),
                                              ((5, 13), (12, 12), None)])
def test_triton_large_kernels_with_replknet_padding(monkeypatch, kernel, size, tile) -> None:
    """RepLKNet's 31x31 (and 13x13) at padding k // 2, on maps smaller than the kernel as in its last
    stages; pixels in several blocks (the last one partial): 96 in 64 + 32 at 31x31, 120 in 4 x 32 at
    13x13 with a smaller tile, 144 in 128 + 16 at 5x13."""
    from ablate.layers import dw_triton

    if tile:
        monkeypatch.setattr(dw_triton, "TILE", tile)
    assert dw_triton._blocks(size[0] * size[1], kernel[1])[0] < size[0] * size[1]
    x, w, b = operands(1, 1, size, kernel, True, sum(kernel))
    got, want = run_both(x, w, b, 1, (kernel[0] // 2, kernel[1] // 2), 1, dtype=torch.float32)
    assert_close(got, want, TOL[torch.float32])


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_triton_in_half_types_accumulates_in_float32(dtype, tol) -> None:
    x, w, b = operands(2, 2, (8, 8), (5, 5), True, 7)
    got, want = run_both(x, w, b, 1, 2, 1, dtype=dtype)
    assert all(t.dtype == dtype for t in got)
    assert_close(got, want, tol)  # rounding of the result only: sums of 25 (and 128) terms in float32


def test_triton_under_autocast_runs_in_its_dtype_like_the_native_conv() -> None:
    x, w, b = operands(1, 2, (8, 8), (3, 3), True, 3)
    x, w, b = x.float(), w.float(), b.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = triton_depthwise_conv2d(x, w, b, 1, 1)
        want = F.conv2d(x, w, b, 1, 1, groups=2)
    assert got.dtype == want.dtype == torch.bfloat16
    assert (got.float() - want.float()).abs().max() <= 2e-2 * want.float().abs().max()


def test_layer_runs_the_triton_kernel_by_kwarg_or_env(monkeypatch) -> None:
    torch.manual_seed(0)
    ref = LargeKernelDW(2, 9, 1, 1, 3, impl="native").double()
    tri = LargeKernelDW(2, 9, 1, 1, 3, impl="triton").double()
    tri.load_state_dict(ref.state_dict())
    ref_state = ref.state_dict()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    (g_ref,) = torch.autograd.grad(ref(x).square().sum(), x)
    (g_tri,) = torch.autograd.grad(tri(x).square().sum(), x)
    assert_close([g_tri], [g_ref], TOL[torch.float64])
    ref_eval = ref.eval()(x)
    tri.eval().merge(), ref.merge()  # the deploy form: one conv with bias, also through Triton
    assert_close([tri(x)], [ref(x)], TOL[torch.float64])
    monkeypatch.setenv(IMPL_ENV, "triton")
    assert choose_impl(None, x, (31, 31), (1, 1)) == "triton"
    assert choose_impl("triton", x.to("meta"), (31, 31), (1, 1)) == "native"  # FLOP counting sees the conv
    calls = []

    def spy(*args):
        calls.append(args[1].shape)
        return triton_depthwise_conv2d(*args)

    monkeypatch.setattr(large_kernel, "triton_depthwise_conv2d", spy)
    layer = LargeKernelDW(2, 9, 1, 1, 3).double().eval()  # the layer's default: now $ABLATE_DW_CONV=triton
    layer.load_state_dict(ref_state)
    assert_close([layer(x)], [ref_eval], TOL[torch.float64])
    assert calls == [(2, 1, 9, 9)]  # the large kernel only; the small 3x3 beside it is a plain conv
