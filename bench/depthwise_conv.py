"""Forward + backward of one depthwise conv, native (F.conv2d) against the FFT path of
ablate.layers.large_kernel, at kernel sizes 3..31: seconds of each and the ratio native / fft.

Same input, kernel and output gradient for both; A/B alternated over `--repeats`, median reported;
the largest output difference is printed beside each row. Defaults are the issue's setting: batch
32, 64 channels, 56x56, float32, 1 thread, channels_last. `auto` in the table is what the layer's
default picks at that size on this device (FFT_MIN_KERNEL). Run:
`.venv/bin/python bench/depthwise_conv.py` (`--device cuda` on a GPU). Results go in
docs/performance.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from ablate.layers.large_kernel import choose_impl, fft_depthwise_conv2d


def step(fn, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, grad: torch.Tensor, k: int, stride: int) -> float:
    for t in (x, w, b):
        t.grad = None
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    y = fn(x, w, b, stride, k // 2, 1)
    y.backward(grad)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def native(x, w, b, stride, padding, dilation):
    return F.conv2d(x, w, b, stride, padding, dilation, groups=x.shape[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", default="3,5,7,9,13,17,21,27,31")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--size", type=int, default=56)
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--nchw", action="store_true", help="contiguous NCHW input instead of channels_last")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    fmt = torch.contiguous_format if a.nchw else torch.channels_last
    print(f"# {platform.machine()}, torch {torch.__version__}, {a.device}, {a.threads} thread(s), batch {a.batch}, "
          f"{a.channels} ch, {a.size}x{a.size}, stride {a.stride}, {a.dtype}, "
          f"{'NCHW' if a.nchw else 'channels_last'}, median of {a.repeats}")
    print("| kernel | native fwd+bwd s | fft fwd+bwd s | native / fft | auto picks | max |y_fft - y_native| |")
    print("|---|---|---|---|---|---|")
    for k in (int(s) for s in a.kernels.split(",")):
        g = torch.Generator().manual_seed(k)
        x = torch.randn(a.batch, a.channels, a.size, a.size, generator=g).to(a.device, dtype)
        x = x.contiguous(memory_format=fmt).requires_grad_()
        w = (torch.randn(a.channels, 1, k, k, generator=g) / k).to(a.device, dtype).requires_grad_()
        b = torch.randn(a.channels, generator=g).to(a.device, dtype).requires_grad_()
        out = (a.size + 2 * (k // 2) - k) // a.stride + 1
        grad = torch.randn(a.batch, a.channels, out, out, generator=g).to(a.device, dtype).contiguous(memory_format=fmt)
        with torch.no_grad():
            want = native(x, w, b, a.stride, k // 2, 1)
            diff = (fft_depthwise_conv2d(x, w, b, a.stride, k // 2, 1) - want).abs().max()
        step(native, x, w, b, grad, k, a.stride), step(fft_depthwise_conv2d, x, w, b, grad, k, a.stride)  # warm-up
        tn, tf = [], []
        for _ in range(a.repeats):
            tn.append(step(native, x, w, b, grad, k, a.stride))
            tf.append(step(fft_depthwise_conv2d, x, w, b, grad, k, a.stride))
        mn, mf = statistics.median(tn), statistics.median(tf)
        print(f"| {k}x{k} | {mn:.3f} | {mf:.3f} | {mn / mf:.2f}x | {choose_impl('auto', x, (k, k), (1, 1))} | "
              f"{diff.item():.1e} |", flush=True)


if __name__ == "__main__":
    main()
