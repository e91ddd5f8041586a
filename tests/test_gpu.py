"""GPU path of the trainer: bf16 autocast, channels_last, cudnn.benchmark, peak memory per epoch.
Runs only where CUDA exists (the device machine); on CPU-only machines it is skipped."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ablate.study import RecipeSpec
from ablate.trainer import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (GPU-only path)")


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_trainer_on_gpu_with_autocast(image_folder: Path, amp: str) -> None:
    recipe = RecipeSpec(epochs=2, batch_size=8, lr=0.05, warmup_epochs=0, amp=amp, ema_momentum=0.1).model_dump()
    cfg = {"model": {"name": "mobilenetv2_lk", "kwargs": {"width_mult": 0.25, "kernel_size": 13, "small_kernel": 3}},
           "recipe": recipe, "dataset": {"name": "folder", "root": str(image_folder), "image_size": 32}, "seed": 0}
    reports: list[dict] = []
    final = train(cfg, report=reports.append, device="cuda")
    assert torch.backends.cudnn.benchmark
    assert len(reports) == 2 and all(math.isfinite(r["train_loss"]) for r in reports)
    assert final["peak_mem_gb"] > 0 and final["img_per_s"] > 0 and "top1_ema" in final
    assert final["reparam_max_abs_diff"] < 1e-4


def test_a_cuda_trial_resumes_from_the_artifact_store(image_folder: Path, tmp_path: Path) -> None:
    """Durable trials on the GPU path: the checkpoint written after epoch 0 (CUDA tensors, CUDA RNG
    state) is read back on CPU-side storage and training continues on the GPU from epoch 1."""
    from ablate.artifacts import ArtifactStore
    from ablate.trial_state import TrialState

    recipe = RecipeSpec(epochs=3, batch_size=8, lr=0.05, warmup_epochs=0, amp="bf16", ema_momentum=0.1).model_dump()
    cfg = {"model": {"name": "mobilenetv2_lk", "kwargs": {"width_mult": 0.25, "kernel_size": 13, "small_kernel": 3}},
           "recipe": recipe, "dataset": {"name": "folder", "root": str(image_folder), "image_size": 32}, "seed": 0}
    runtime = {"artifacts": str(tmp_path / "art"), "study": "gpu", "keep": ["final"], "metric": "top1", "mode": "max"}

    class Killed(Exception):
        pass

    first = TrialState("t1", runtime)

    def die_after_epoch_0(m: dict, s: dict) -> None:
        first.on_epoch(m, s, last=False)
        raise Killed

    with pytest.raises(Killed):
        train(cfg, report=die_after_epoch_0, device="cuda", checkpoints=True)
    again = TrialState("t1", runtime)
    state = again.resume()
    assert state is not None and state["epoch"] == 0 and "cuda" in state["rng"] and len(again.history) == 1
    seen: list[dict] = []

    def report(m: dict, s: dict) -> None:
        again.on_epoch(m, s, last=int(m["epoch"]) == 2)
        seen.append(m)

    train(cfg, report=report, device="cuda", resume=state, checkpoints=True)
    assert [m["epoch"] for m in seen] == [1, 2] and seen[0]["resumed_after_epoch"] == 0
    assert all(math.isfinite(m["train_loss"]) for m in seen)
    again.on_complete()
    files = ArtifactStore(runtime["artifacts"])
    assert files.exists(files.path("gpu", "t1", "model.pt")) and files.checkpoints("gpu", "t1") == []


@pytest.mark.parametrize("kernel", [13, 31])
def test_fft_depthwise_conv_equals_cudnn_and_prints_their_speed(kernel: int) -> None:
    """The FFT path of large depthwise convs on CUDA: outputs and gradients equal to cuDNN's conv
    (float32, TF32 off), and fwd+bwd timings of both printed (run with -s) for FFT_MIN_KERNEL['cuda'];
    bench/depthwise_conv.py --device cuda gives the full table."""
    import time

    import torch.nn.functional as F

    from ablate.layers.large_kernel import fft_depthwise_conv2d
    from ablate.reparam import full_fp32

    g = torch.Generator().manual_seed(kernel)
    x = torch.randn(32, 64, 56, 56, generator=g).cuda().contiguous(memory_format=torch.channels_last).requires_grad_()
    w = (torch.randn(64, 1, kernel, kernel, generator=g) / kernel).cuda().requires_grad_()
    b = torch.randn(64, generator=g).cuda().requires_grad_()
    dy = torch.randn(32, 64, 56, 56, generator=g).cuda().contiguous(memory_format=torch.channels_last)

    def native(x, w, b):
        return F.conv2d(x, w, b, 1, kernel // 2, 1, groups=64)

    def fft(x, w, b):
        return fft_depthwise_conv2d(x, w, b, 1, kernel // 2, 1)

    results, times = {}, {}
    with full_fp32():
        for name, fn in (("native", native), ("fft", fft)):
            y = fn(x, w, b)
            results[name] = [y, *torch.autograd.grad(y, (x, w, b), dy)]
            spent = []
            for _ in range(5):
                torch.cuda.synchronize()
                start = time.perf_counter()
                y = fn(x, w, b)
                torch.autograd.grad(y, (x, w, b), dy)
                torch.cuda.synchronize()
                spent.append(time.perf_counter() - start)
            times[name] = sorted(spent)[2]
    for a, e, what in zip(results["fft"], results["native"], ("output", "grad input", "grad weight", "grad bias")):
        err = ((a - e).abs().max() / e.abs().max().clamp_min(1.0)).item()
        assert err < 1e-4, f"{what}: {err:.3g}"
    print(f"\n{torch.cuda.get_device_name()} depthwise {kernel}x{kernel} fwd+bwd (batch 32, 64 ch, 56x56, float32, "
          f"channels_last): native {times['native'] * 1e3:.2f} ms, fft {times['fft'] * 1e3:.2f} ms, "
          f"native/fft {times['native'] / times['fft']:.2f}x")


@pytest.mark.parametrize("batch,channels,size,kernel,stride,dilation,dtype", [
    (32, 64, 56, 31, 1, 1, torch.float32),  # RepLKNet-31B stage 1 kernel, the setting
    (32, 512, 14, 13, 1, 1, torch.float32),
    (32, 128, 28, 31, 1, 1, torch.bfloat16),  # the trainer's bf16 autocast
    (4, 32, 28, 7, 2, 3, torch.float32),  # strided, dilated (sparse) kernel: the masked paths
])
def test_triton_depthwise_conv_equals_cudnn(batch, channels, size, kernel, stride, dilation, dtype) -> None:
    """The compiled Triton kernels (ablate.layers.dw_triton; tests/test_dw_triton.py checks them on CPU
    through the interpreter): outputs and gradients equal to cuDNN's conv (IEEE FP32 for both: the
    half-type input is compared with cuDNN's float32 conv of the same numbers), channels_last in and
    out. bench/depthwise_conv.py --device cuda times them."""
    import torch.nn.functional as F

    from ablate.layers.large_kernel import triton_depthwise_conv2d
    from ablate.reparam import full_fp32

    g = torch.Generator().manual_seed(kernel)
    x = torch.randn(batch, channels, size, size, generator=g).to("cuda", dtype)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    w = (torch.randn(channels, 1, kernel, kernel, generator=g) / kernel).to("cuda", dtype).requires_grad_()
    b = torch.randn(channels, generator=g).to("cuda", dtype).requires_grad_()
    pad = dilation * (kernel - 1) // 2
    out = (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    dy = torch.randn(batch, channels, out, out, generator=g).to("cuda", dtype)
    ref = [t.detach().float().requires_grad_() for t in (x, w, b)]
    with full_fp32():
        y = triton_depthwise_conv2d(x, w, b, stride, pad, dilation)
        got = [y, *torch.autograd.grad(y, (x, w, b), dy)]
        y_ref = F.conv2d(*ref, stride, pad, dilation, groups=channels)
        want = [y_ref, *torch.autograd.grad(y_ref, ref, dy.float())]
    assert got[0].is_contiguous(memory_format=torch.channels_last) and got[0].dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for a, e, what in zip(got, want, ("output", "grad input", "grad weight", "grad bias")):
        assert a.shape == e.shape, what
        err = ((a.float() - e).abs().max() / e.abs().max().clamp_min(1.0)).item()
        assert err < tol, f"{what}: {err:.3g}"


def test_auto_runs_replknet_blocks_through_the_fft_under_bf16_autocast(monkeypatch) -> None:
    """The trainer's GPU setting (bf16 autocast, channels_last): ``auto`` sends a 31x31 depthwise conv to
    the FFT (FFT_MIN_KERNEL['cuda'], FFT_AUTO_DTYPES) and the 5x5 small kernel to cuDNN, and the block's
    output and gradients stay those of the native block within bf16 rounding."""
    from ablate.layers import large_kernel
    from ablate.layers.large_kernel import LargeKernelDW

    calls: list[tuple[int, ...]] = []
    real = large_kernel.fft_depthwise_conv2d

    def counting(x, w, *args):
        calls.append(tuple(w.shape[-2:]))
        return real(x, w, *args)

    monkeypatch.setattr(large_kernel, "fft_depthwise_conv2d", counting)
    torch.manual_seed(0)
    block = LargeKernelDW(64, 31, small_kernel=5).cuda().to(memory_format=torch.channels_last).train()
    # bf16 in, as a block inside an autocast network receives it (the previous conv's output)
    x = torch.randn(8, 64, 28, 28, device="cuda").bfloat16().contiguous(memory_format=torch.channels_last)
    outs = {}
    for impl in ("native", "auto"):
        monkeypatch.setenv(large_kernel.IMPL_ENV, impl)
        block.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = block(xi)
        y.float().square().mean().backward()
        outs[impl] = [y.float(), xi.grad.float(), block.lk.conv.weight.grad.float()]
    assert calls == [(31, 31)]
    for a, e, what in zip(outs["auto"], outs["native"], ("output", "grad input", "grad weight")):
        err = ((a - e).abs().max() / e.abs().max()).item()
        assert err < 3e-2, f"{what}: {err:.3g}"
