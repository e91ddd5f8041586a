"""The Triton depthwise conv (ablate.layers.dw_triton): equal to F.conv2d through Triton's interpreter
on CPU, never imported with ablate.layers, refused on CPU without the interpreter
(tests/_dw_triton_interpreted.py, in a fresh process: TRITON_INTERPRET must be set before triton's
first import, and timm imports it in every worker); compiled for Hopper without a GPU; never
picked by ``auto`` until a GPU measurement says so. tests/test_gpu.py runs it against cuDNN."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ablate.layers.large_kernel import IMPL_ENV, TRITON_MIN_KERNEL, choose_impl

TESTS = Path(__file__).resolve().parent


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", IMPL_ENV, "PYTEST_XDIST_WORKER")}
    clean["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent), clean.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env={**clean, **env},
                          cwd=TESTS.parent, timeout=600)


def test_triton_equals_native_through_the_interpreter_in_a_fresh_process() -> None:
    out = run(["-m", "pytest", "-q", "--noconftest", "-p", "no:cacheprovider", "-p", "no:xdist",
               str(TESTS / "_dw_triton_interpreted.py")], TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout and "skipped" not in out.stdout, out.stdout[-2000:]


def test_the_kernels_compile_for_hopper_without_a_gpu_and_a_late_interpreter_is_refused(tmp_path,
                                                                                        monkeypatch) -> None:
    """What the interpreter lets through but the compiler would not (types, constexpr use): the three
    kernels compiled ahead of time for sm_90 (H100/H200) down to a cubin, with the ptxas in Triton's
    wheel (a bf16 input summed in fp32; stride 2 and dilation 3: the strided grad-input's masks).
    Running them is tests/test_gpu.py's part. Here triton runs compiled (timm imports it without TRITON_INTERPRET), so
    setting the variable now is refused with one line instead of failing inside the interpreter."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from ablate.layers import LargeKernelDW, dw_triton

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not dw_triton._imported_interpreting(), "this pytest was started with TRITON_INTERPRET set"
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # compiled here, not read from an earlier run's cache
    conf = dict(SH=2, SW=2, PH=9, PW=9, DH=3, DW=3, KH=7, KW=7, ACC=tl.float32, BLOCK_P=64, BLOCK_K=8)
    args = {"x_ptr": "*bf16", "w_ptr": "*bf16", "b_ptr": "*bf16", "y_ptr": "*bf16", "dy_ptr": "*bf16",
            "dx_ptr": "*bf16", "part_ptr": "*fp32"}
    for fn, extra in zip(dw_triton._kernels(False), ({"HAS_BIAS": True}, {}, {})):
        constexprs = {k: v for k, v in {**conf, **extra}.items() if k in fn.arg_names}
        sig = {n: args.get(n, "constexpr" if n in constexprs else "i32") for n in fn.arg_names}
        compiled = triton.compile(ASTSource(fn, sig, constexprs), target=GPUTarget("cuda", 90, 32))
        assert compiled.asm["cubin"] and ".target sm_90" in compiled.asm["ptx"], fn.__name__

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1 was set after triton was first imported"):
        LargeKernelDW(2, 5, impl="triton")(torch.zeros(1, 2, 8, 8))


def test_auto_never_picks_triton_until_a_gpu_measurement_says_so(monkeypatch) -> None:
    monkeypatch.delenv(IMPL_ENV, raising=False)
    x = torch.zeros(1, 1, 4, 4)
    assert TRITON_MIN_KERNEL == {}  # bench/gpu_check.sh measures the CUDA crossover (docs/performance.md)
    assert choose_impl(None, x, (31, 31), (1, 1)) != "triton"
    assert choose_impl("triton", x, (3, 3), (1, 1)) == "triton"  # explicit: any size
    monkeypatch.setitem(TRITON_MIN_KERNEL, "cpu", 13)  # the rule a measured crossover switches on
    assert choose_impl(None, x, (13, 13), (1, 1)) == "triton"
    assert choose_impl(None, x, (13, 15), (2, 2)) == "triton"
    assert choose_impl(None, x, (11, 11), (1, 1)) != "triton"
    assert choose_impl(None, x, (7, 7), (3, 3)) != "triton"  # taps count (a direct sum), not the dilated extent
    assert choose_impl(None, x.double(), (31, 31), (1, 1)) != "triton"  # float64: not what it is tuned for
