"""The FFT path of large depthwise convs (ablate.layers.large_kernel) computes what F.conv2d does:
outputs and gradients (input, weight, bias) equal within float tolerance over sizes, strides,
dilations, paddings and dtypes (property tests); ``auto`` picks it only where it was measured to
pay; the layers keep their parameters, re-param and FLOP counts whichever path runs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from ablate.flops import count_macs
from ablate.layers.large_kernel import (FFT_MIN_KERNEL, auto_impl, FFT_MIN_TAPS, IMPL_ENV, LargeKernelDW, ParallelSmallKernel,
                                        choose_impl, depthwise_conv2d, fft_depthwise_conv2d)
from ablate.reparam import gate

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True)
TOL = {torch.float64: 1e-10, torch.float32: 2e-5}  # of the reference's largest magnitude


@st.composite
def conv_cases(draw):
    kh, kw = draw(st.sampled_from([1, 3, 5, 7, 9, 13])), draw(st.sampled_from([1, 3, 5, 7, 9, 13]))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, dh * (kh - 1) // 2 + 1)), draw(st.integers(0, dw * (kw - 1) // 2 + 1))
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    assume(h + 2 * ph >= dh * (kh - 1) + 1 and w + 2 * pw >= dw * (kw - 1) + 1)
    return dict(channels=draw(st.integers(1, 4)), batch=draw(st.integers(1, 2)), size=(h, w), kernel=(kh, kw),
                stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding=(ph, pw), dilation=(dh, dw),
                bias=draw(st.booleans()), channels_last=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def inputs(case: dict, dtype: torch.dtype):
    g = torch.Generator().manual_seed(case["seed"])
    c = case["channels"]
    x = torch.randn(case["batch"], c, *case["size"], generator=g, dtype=torch.float64)
    if case["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, 1, *case["kernel"], generator=g, dtype=torch.float64)
    b = torch.randn(c, generator=g, dtype=torch.float64) if case["bias"] else None
    return [t if t is None else t.to(dtype).requires_grad_() for t in (x, w, b)]


def outputs_and_grads(fn, x, w, b, case):
    y = fn(x, w, b, case["stride"], case["padding"], case["dilation"])
    g = torch.Generator().manual_seed(case["seed"] + 1)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype)
    params = [t for t in (x, w, b) if t is not None]
    return [y, *torch.autograd.grad(y, params, dy)]


def native(x, w, b, stride, padding, dilation):
    return F.conv2d(x, w, b, stride, padding, dilation, groups=x.shape[1])


def assert_close(got: list[torch.Tensor], want: list[torch.Tensor], tol: float) -> None:
    names = ["output", "grad input", "grad weight", "grad bias"]
    for name, a, e in zip(names, got, want):
        assert a.shape == e.shape and a.dtype == e.dtype, name
        scale = e.double().abs().max().clamp_min(1.0)
        err = (a.double() - e.double()).abs().max() / scale
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol:g}"


@PROPERTY
@given(case=conv_cases(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_fft_equals_native_outputs_and_gradients(case, dtype):
    x, w, b = inputs(case, dtype)
    want = outputs_and_grads(native, x, w, b, case)
    got = outputs_and_grads(fft_depthwise_conv2d, x, w, b, case)
    assert_close(got, want, TOL[dtype])
    if case["channels_last"] and x.shape[-1] > 1 and x.shape[1] > 1:  # keeps the caller's memory format
        assert got[0].is_contiguous(memory_format=torch.channels_last)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(case=conv_cases(), dtype=st.sampled_from([torch.bfloat16, torch.float16]))
def test_fft_in_half_types_computes_in_float32_and_matches_within_their_precision(case, dtype):
    x, w, b = inputs(case, dtype)
    up = [t if t is None else t.detach().float().requires_grad_() for t in (x, w, b)]
    want = outputs_and_grads(native, *up, case)  # the float32 conv of the same (rounded) numbers
    got = outputs_and_grads(fft_depthwise_conv2d, x, w, b, case)
    assert_close([t.float() for t in got], want, 2e-2 if dtype == torch.bfloat16 else 2e-3)
    assert got[0].dtype == dtype


def test_auto_picks_fft_from_the_measured_crossover_only_on_cpu_float(monkeypatch) -> None:
    monkeypatch.delenv(IMPL_ENV, raising=False)
    big, x = FFT_MIN_KERNEL["cpu"], torch.zeros(1, 1, 4, 4)
    assert choose_impl(None, x, (big, big), (1, 1)) == "fft"
    assert choose_impl(None, x, (big - 2, big - 2), (1, 1)) == "native"
    assert choose_impl(None, x, ((big + 1) // 2, (big + 1) // 2), (2, 2)) == "fft"  # effective size counts
    assert choose_impl(None, x, (FFT_MIN_TAPS - 2,) * 2, (big,) * 2) == "native"  # ... with taps enough
    assert choose_impl(None, x.bfloat16(), (big, big), (1, 1)) == "native"  # no half FFT on CPU
    assert choose_impl("fft", x.to("meta"), (31, 31), (1, 1)) == "native"  # FLOP counting sees the conv itself
    assert choose_impl("native", x, (31, 31), (1, 1)) == "native" and choose_impl("fft", x, (3, 3), (1, 1)) == "fft"
    monkeypatch.setenv(IMPL_ENV, "native")
    assert choose_impl(None, x, (31, 31), (1, 1)) == "native"
    assert choose_impl("auto", x, (31, 31), (1, 1)) == "fft"  # the module's own setting wins
    monkeypatch.setenv(IMPL_ENV, "fast")
    with pytest.raises(ValueError, match=IMPL_ENV):
        choose_impl(None, x, (31, 31), (1, 1))
    with pytest.raises(ValueError, match="impl"):
        LargeKernelDW(4, 13, impl="fast")


def test_auto_on_cuda_is_the_crossover_measured_on_an_h100() -> None:
    """docs/performance.md, "Large depthwise convs on a GPU" (bench/gpu_check.sh, H100, cuDNN 9.19): the
    FFT was faster than cuDNN from 13x13 in float32 (channels_last 6.4x, NCHW 2.0x) and in bfloat16
    (3.5x), slower at 7x7 in bfloat16 (0.25x) and NCHW (0.86x). So on CUDA ``auto`` takes the FFT from
    13, for half types too (autocast's activations; computed in float32), and never Triton, which the
    FFT beat at every size from 9 on."""
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert auto_impl("cuda", dtype, (13, 13), (1, 1)) == "fft"
        assert auto_impl("cuda", dtype, (31, 31), (1, 1)) == "fft"
        assert auto_impl("cuda", dtype, (7, 7), (1, 1)) == "native"
        assert auto_impl("cuda", dtype, (3, 3), (1, 1)) == "native"  # RepLKNet's small kernel, MobileNetV2's 3x3
        assert auto_impl("cuda", dtype, (3, 3), (6, 6)) == "native"  # sparse: 3 taps, effective 13
    assert auto_impl("cpu", torch.bfloat16, (31, 31), (1, 1)) == "native"  # no half FFT on CPU
    assert auto_impl("mps", torch.float32, (31, 31), (1, 1)) == "native"  # never measured there


def test_a_grouped_or_non_depthwise_conv_stays_native() -> None:
    conv = nn.Conv2d(4, 8, 13, padding=6, groups=4)  # channel multiplier 2: not what the FFT path computes
    x = torch.randn(1, 4, 16, 16)
    assert depthwise_conv2d(x, conv, "fft").equal(conv(x))


@pytest.mark.parametrize("small,dilation,stride", [(5, 1, 1), (None, 2, 1), (3, 1, 2)])
def test_large_kernel_layer_is_the_same_module_whichever_path_runs(small, dilation, stride) -> None:
    torch.manual_seed(0)
    ref = LargeKernelDW(6, 15, stride, dilation, small, impl="native")
    fft = LargeKernelDW(6, 15, stride, dilation, small, impl="fft")
    fft.load_state_dict(ref.state_dict())
    assert list(fft.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 6, 20, 20, dtype=torch.float64)
    ref, fft = ref.double().train(), fft.double().train()
    assert_close([fft(x)], [ref(x)], TOL[torch.float64])
    merged, diff = gate(fft.eval(), x)  # re-param of the FFT-path layer: the merged conv (also FFT) agrees
    assert diff <= 1e-9 and merged.merged is not None
    assert_close([merged(x)], [gate(ref.eval(), x)[0](x)], TOL[torch.float64])
    assert count_macs(fft, 32, 6) == count_macs(ref, 32, 6)  # FLOPs of the native conv on the meta device


def test_parallel_small_kernel_runs_the_wrapped_conv_through_the_fft() -> None:
    torch.manual_seed(0)
    lk = nn.Conv2d(5, 5, 17, padding=8, groups=5)
    ref = ParallelSmallKernel(lk, 5, impl="native").double()
    fft = ParallelSmallKernel(nn.Conv2d(5, 5, 17, padding=8, groups=5), 5, impl="fft").double()
    fft.load_state_dict(ref.state_dict())
    x = torch.randn(2, 5, 19, 19, dtype=torch.float64, requires_grad=True)
    (y_ref,) = torch.autograd.grad(ref(x).square().sum(), x)
    (y_fft,) = torch.autograd.grad(fft(x).square().sum(), x)
    assert_close([y_fft], [y_ref], TOL[torch.float64])
