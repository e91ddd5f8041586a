"""Forward + backward of one depthwise conv, native (F.conv2d: cuDNN on CUDA) against the FFT path and
the Triton kernel of ablate.layers, at kernel sizes 3..31: seconds of each and the ratios native / other.

Same input, kernel and output gradient for every implementation; A/B alternated over `--repeats`,
median reported; beside each row the largest relative difference to native of the output and the
three gradients (input, weight, bias). Defaults are the issue's setting: batch 32, 64 channels,
56x56, float32, channels_last, 1 thread on CPU. `auto` is what the layer's default picks there.

On CUDA it also measures, in the same process, the FP32 rate of a large SGEMM (TF32 off: the CUDA
cores a direct depthwise kernel runs on) and the copy bandwidth, and reports each row's floor: the
larger of its FLOPs (3 x 2 x N x C x OH x OW x kh x kw: forward, grad-input and grad-weight) over
that rate and its tensor traffic (x, y, dy, dx: 5 passes) over that bandwidth (`--floor`: the same on
a CPU). cuDNN runs at torch's defaults (TF32 allowed for convs); the differences are taken against
native under IEEE FP32; `--max-rel-diff` makes a larger one exit 1.

Runs: `.venv/bin/python bench/depthwise_conv.py` (CPU: native, fft); on a GPU `python3
bench/depthwise_conv.py --device cuda` (native, fft, triton), `--stages` for RepLKNet-31B's four
stage shapes, `--triton-configs 1024x4,2048x4,4096x8` for a sweep of the Triton launch (TILE x
num_warps). bench/gpu_check.sh runs the GPU set. Results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from ablate.layers.large_kernel import choose_impl, fft_depthwise_conv2d, triton_depthwise_conv2d

# RepLKNet-31B at 224px (Table 5/6 of the paper): channels, map size, kernel of each stage
REPLKNET_31B_STAGES = [(128, 56, 31), (256, 28, 29), (512, 14, 27), (1024, 7, 13)]


def native(x, w, b, stride, padding, dilation):
    return F.conv2d(x, w, b, stride, padding, dilation, groups=x.shape[1])


IMPLS = {"native": native, "fft": fft_depthwise_conv2d, "triton": triton_depthwise_conv2d}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def step(fn, x, w, b, grad, k: int, stride: int, inner: int) -> float:
    """Seconds of one fwd + bwd (the mean of ``inner`` back to back, between two syncs)."""
    sync(x.device.type)
    start = time.perf_counter()
    for _ in range(inner):
        for t in (x, w, b):
            t.grad = None
        y = fn(x, w, b, stride, k // 2, 1)
        y.backward(grad)
    sync(x.device.type)
    return (time.perf_counter() - start) / inner


def results(fn, x, w, b, grad, k: int, stride: int) -> list[torch.Tensor]:
    """Output and gradients (input, weight, bias) of one untimed pass (IEEE FP32 on CUDA): the warm-up
    (Triton compiles here, cuDNN picks its algorithm) and what the differences are taken from."""
    with full_fp32(x.device.type):
        y = fn(x, w, b, stride, k // 2, 1)
        return [y.detach(), *torch.autograd.grad(y, (x, w, b), grad)]


def rel_diff(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    """Largest relative difference over the output and the three gradients."""
    return max(((a.float() - e.float()).abs().max() / e.float().abs().max().clamp_min(1e-30)).item()
               for a, e in zip(got, want))


def full_fp32(device: str):
    if device != "cuda":
        return contextlib.nullcontext()
    from ablate.reparam import full_fp32 as ieee
    return ieee()


def rates(device: str) -> tuple[float, float]:
    """(FP32 FLOP/s of a large SGEMM with TF32 off, copy bytes/s read + written) on this device:
    8192^3 and 1 GiB on a GPU, 1024^3 and 64 MiB on a CPU (at the benchmark's threads)."""
    n, numel = (8192, 2**28) if device == "cuda" else (1024, 2**24)
    a = torch.randn(n, n, device=device)
    with full_fp32(device):
        a @ a
        sync(device)
        start = time.perf_counter()
        for _ in range(3):
            a @ a
        sync(device)
    flops = 3 * 2 * n**3 / (time.perf_counter() - start)
    src = torch.ones(numel, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(device)
    start = time.perf_counter()
    for _ in range(5):
        dst.copy_(src)
    sync(device)
    bandwidth = 5 * 2 * src.numel() * 4 / (time.perf_counter() - start)
    del a, src, dst
    return flops, bandwidth


def operands(a, channels: int, size: int, k: int, dtype, fmt):
    g = torch.Generator().manual_seed(k)
    x = torch.randn(a.batch, channels, size, size, generator=g).to(a.device, dtype)
    x = x.contiguous(memory_format=fmt).requires_grad_()
    w = (torch.randn(channels, 1, k, k, generator=g) / k).to(a.device, dtype).requires_grad_()
    b = torch.randn(channels, generator=g).to(a.device, dtype).requires_grad_()
    out = (size + 2 * (k // 2) - k) // a.stride + 1
    grad = torch.randn(a.batch, channels, out, out, generator=g).to(a.device, dtype).contiguous(memory_format=fmt)
    return x, w, b, grad, out


def measure(a, impls: list[str], x, w, b, grad, k: int) -> dict[str, float]:
    """Median seconds of fwd + bwd per implementation (warmed up by ``results`` before)."""
    inner = 1 if a.device == "cpu" else 5
    spent: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(a.repeats):
        for name in impls:
            spent[name].append(step(IMPLS[name], x, w, b, grad, k, a.stride, inner))
    return {name: statistics.median(t) for name, t in spent.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", default="3,5,7,9,13,17,21,27,31")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--size", type=int, default=56)
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=None, help="default 3 on CPU, 10 on CUDA")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--impls", default=None, help="default native,fft on CPU, native,fft,triton on CUDA")
    ap.add_argument("--stages", action="store_true", help="RepLKNet-31B's stage shapes instead of --kernels")
    ap.add_argument("--triton-configs", default="", help="e.g. 1024x4,2048x4,4096x8: Triton TILE x num_warps sweep")
    ap.add_argument("--nchw", action="store_true", help="contiguous NCHW input instead of channels_last")
    ap.add_argument("--floor", action="store_true", help="the floor columns on CPU too (always on CUDA)")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="torch.backends.cudnn.benchmark = True (as ablate's trainer sets on CUDA): cuDNN times its algorithms")
    ap.add_argument("--max-rel-diff", type=float, default=None,
                    help="exit 1 if any implementation differs from native by more (a correctness gate)")
    a = ap.parse_args()
    a.repeats = a.repeats or (3 if a.device == "cpu" else 10)
    torch.set_num_threads(a.threads)
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    dtype = getattr(torch, a.dtype)
    fmt = torch.contiguous_format if a.nchw else torch.channels_last
    impls = (a.impls or ("native,fft" if a.device == "cpu" else "native,fft,triton")).split(",")
    others = [n for n in impls if n != "native"]
    cuda = a.device == "cuda"
    floors = cuda or a.floor
    where = torch.cuda.get_device_name() if cuda else f"{a.threads} thread(s)"
    print(f"# {platform.machine()}, torch {torch.__version__}, {a.device} ({where}), batch {a.batch}, stride "
          f"{a.stride}, {a.dtype}, {'NCHW' if a.nchw else 'channels_last'}, median of {a.repeats}"
          f"{', cudnn.benchmark' if a.cudnn_benchmark else ''}")
    flops = bandwidth = None
    if floors:
        flops, bandwidth = rates(a.device)
        print(f"# floor: FP32 SGEMM (TF32 off) {flops / 1e9:.0f} GFLOP/s, copy {bandwidth / 1e9:.0f} GB/s "
              f"(read + written), measured here")
    unit, scale = ("ms", 1e3) if cuda else ("s", 1.0)
    head = ["shape", *(f"{n} {unit}" for n in impls), *(f"native / {n}" for n in others)]
    if floors:
        head += [f"floor {unit}", "native / floor", *(f"{n} / floor" for n in others)]
    head += ["auto picks", *(f"max rel diff {n}" for n in others)]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    shapes = REPLKNET_31B_STAGES if a.stages else [(a.channels, a.size, int(s)) for s in a.kernels.split(",")]
    worst = 0.0
    for channels, size, k in shapes:
        x, w, b, grad, out = operands(a, channels, size, k, dtype, fmt)
        outs = {n: results(IMPLS[n], x, w, b, grad, k, a.stride) for n in impls}
        diffs = [rel_diff(outs[n], outs["native"]) for n in others]
        worst = max([worst, *diffs])
        del outs
        t = measure(a, impls, x, w, b, grad, k)
        row = [f"{channels} ch {size}x{size} k{k}", *(f"{t[n] * scale:.3f}" for n in impls),
               *(f"{t['native'] / t[n]:.2f}x" for n in others)]
        if floors:
            floor = max(3 * 2 * a.batch * channels * out * out * k * k / flops,
                        5 * a.batch * channels * size * size * x.element_size() / bandwidth)
            row += [f"{floor * scale:.3g}", *(f"{t[n] / floor:.1f}" for n in impls)]
        row += [choose_impl("auto", x, (k, k), (1, 1)), *(f"{d:.1e}" for d in diffs)]
        print("| " + " | ".join(row) + " |", flush=True)
    if a.triton_configs:
        sweep(a, shapes, dtype, fmt, a.triton_configs.split(","), unit, scale)
    if a.max_rel_diff is not None and worst > a.max_rel_diff:
        raise SystemExit(f"largest relative difference to native {worst:.2e} > --max-rel-diff {a.max_rel_diff:g}")


def sweep(a, shapes, dtype, fmt, configs: list[str], unit: str, scale: float) -> None:
    """fwd + bwd of the Triton kernel at each launch config (TILE x num_warps), for the largest kernels."""
    from ablate.layers import dw_triton

    print(f"\n| shape | {' | '.join(f'triton {c} {unit}' for c in configs)} |")
    print("|" + "---|" * (len(configs) + 1))
    saved = dw_triton.TILE, dw_triton.NUM_WARPS
    for channels, size, k in [s for s in shapes if s[2] >= 13]:
        x, w, b, grad, _ = operands(a, channels, size, k, dtype, fmt)
        row = []
        for config in configs:
            dw_triton.TILE, dw_triton.NUM_WARPS = (int(v) for v in config.split("x"))
            results(triton_depthwise_conv2d, x, w, b, grad, k, a.stride)  # compiles this config
            row.append(measure(a, ["triton"], x, w, b, grad, k)["triton"] * scale)
        print(f"| {channels} ch {size}x{size} k{k} | " + " | ".join(f"{v:.3f}" for v in row) + " |", flush=True)
    dw_triton.TILE, dw_triton.NUM_WARPS = saved


if __name__ == "__main__":
    main()
