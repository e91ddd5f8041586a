"""The Triton depthwise conv (ablate.layers.dw_triton) computes what F.conv2d does, checked on CPU
through Triton's interpreter (TRITON_INTERPRET=1, read at each call, so no fresh process is needed
even where timm already imported triton): outputs and gradients (input, weight, bias) over kernel
sizes up to 31x31, rectangular kernels, strides, dilations, paddings, memory formats and dtypes. The
interpreter runs every program in Python, so the shapes are tiny; tests/test_gpu.py compares the
compiled kernels to cuDNN at RepLKNet's sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ablate.layers.large_kernel import IMPL_ENV, TRITON_MIN_KERNEL, LargeKernelDW, choose_impl, triton_depthwise_conv2d

TOL = {torch.float64: 1e-12, torch.float32: 2e-6}  # of the reference's largest magnitude
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


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


@settings(max_examples=10, deadline=None, derandomize=True)
@given(case=conv_cases(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_triton_equals_native_outputs_and_gradients(case, dtype):
    x, w, b = operands(case["batch"], case["channels"], case["size"], case["kernel"], case["bias"], case["seed"],
                       case["channels_last"])
    with pytest.MonkeyPatch.context() as mp:  # (hypothesis: no function-scoped fixtures)
        mp.setenv("TRITON_INTERPRET", "1")
        got, want = run_both(x, w, b, *case["conv"], dtype=dtype)
    assert_close(got, want, TOL[dtype])
    assert got[0].dtype == dtype
    if case["channels_last"] and x.shape[1] > 1 and got[0].shape[-1] > 1:  # keeps the caller's memory format
        assert got[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kernel,size,tile", [((31, 31), (8, 12), None), ((13, 13), (10, 12), 512),
                                              ((5, 13), (12, 12), None)])
def test_triton_large_kernels_with_replknet_padding(interpret, monkeypatch, kernel, size, tile) -> None:
    """RepLKNet's 31x31 (and 13x13) at padding k // 2, on maps smaller than the kernel as in its last
    stages; pixels in several blocks (the last one partial): 96 in 64 + 32 at 31x31, 120 in 4 x 32 at
    13x13 with a smaller tile, 144 in 128 + 16 at 5x13."""
    from ablate.layers import dw_triton

    if tile:
        monkeypatch.setattr(dw_triton, "TILE", tile)
    assert dw_triton._blocks(size[0] * size[1], kernel[1])[0] < size[0] * size[1]
    x, w, b = operands(1, 2, size, kernel, True, sum(kernel))
    got, want = run_both(x, w, b, 1, (kernel[0] // 2, kernel[1] // 2), 1, dtype=torch.float32)
    assert_close(got, want, TOL[torch.float32])


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_triton_in_half_types_accumulates_in_float32(interpret, dtype, tol) -> None:
    x, w, b = operands(2, 2, (8, 8), (5, 5), True, 7)
    got, want = run_both(x, w, b, 1, 2, 1, dtype=dtype)
    assert all(t.dtype == dtype for t in got)
    assert_close(got, want, tol)  # rounding of the result only: sums of 25 (and 128) terms in float32


def test_triton_under_autocast_runs_in_its_dtype_like_the_native_conv(interpret) -> None:
    x, w, b = operands(1, 2, (8, 8), (3, 3), True, 3)
    x, w, b = x.float(), w.float(), b.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = triton_depthwise_conv2d(x, w, b, 1, 1)
        want = F.conv2d(x, w, b, 1, 1, groups=2)
    assert got.dtype == want.dtype == torch.bfloat16
    assert (got.float() - want.float()).abs().max() <= 2e-2 * want.float().abs().max()


def test_layer_runs_the_triton_kernel_by_kwarg_or_env_and_auto_never_picks_it_unmeasured(interpret,
                                                                                       monkeypatch) -> None:
    torch.manual_seed(0)
    ref = LargeKernelDW(3, 9, 1, 1, 3, impl="native").double()
    tri = LargeKernelDW(3, 9, 1, 1, 3, impl="triton").double()
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64, requires_grad=True)
    (g_ref,) = torch.autograd.grad(ref(x).square().sum(), x)
    (g_tri,) = torch.autograd.grad(tri(x).square().sum(), x)
    assert_close([g_tri], [g_ref], TOL[torch.float64])
    tri.eval().merge(), ref.eval().merge()  # the deploy form: one conv with bias, also through Triton
    assert_close([tri(x)], [ref(x)], TOL[torch.float64])
    monkeypatch.setenv(IMPL_ENV, "triton")
    assert choose_impl(None, x, (31, 31), (1, 1)) == "triton"
    assert choose_impl("triton", x.to("meta"), (31, 31), (1, 1)) == "native"  # FLOP counting sees the conv
    monkeypatch.delenv(IMPL_ENV)
    assert "cpu" not in TRITON_MIN_KERNEL and "cuda" not in TRITON_MIN_KERNEL  # until bench/gpu_check.sh says
    assert choose_impl("auto", x.float(), (31, 31), (1, 1)) != "triton"
    monkeypatch.setitem(TRITON_MIN_KERNEL, "cpu", 13)  # the rule a measured crossover would switch on
    assert choose_impl("auto", x.float(), (13, 13), (1, 1)) == "triton"
    assert choose_impl("auto", x.float(), (11, 11), (1, 1)) != "triton"


def test_without_a_gpu_or_the_interpreter_triton_is_one_clear_error_and_not_imported() -> None:
    code = ("import sys, torch\n"
            "import ablate.layers\n"
            "from ablate.layers import LargeKernelDW\n"
            "print('imported:', 'triton' in sys.modules)\n"
            "try:\n"
            "    LargeKernelDW(2, 5, impl='triton')(torch.zeros(1, 2, 8, 8))\n"
            "except RuntimeError as e:\n"
            "    print('error:', e)\n"
            "print('imported:', 'triton' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", IMPL_ENV)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "imported: False"
    assert lines[1].startswith("error: depthwise conv impl 'triton' runs on CUDA, or on CPU under TRITON_INTERPRET=1")
    assert lines[2] == "imported: False"  # refused before importing it
