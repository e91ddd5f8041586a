"""One training step of a whole RepLKNet (forward, backward, SGD) with each depthwise-conv implementation.

The per-layer numbers of bench/depthwise_conv.py say what one conv costs; this says what a researcher
training the paper's model gets: images per second and peak memory of ``replknet_31b`` at 224 px with
the trainer's GPU settings (channels_last, ``cudnn.benchmark``, bf16 autocast by default), switching
``$ABLATE_DW_CONV`` (read at every call) between steps of the same model in one process, alternating
implementations over repeats. Run on a GPU machine:

    python bench/replknet_step.py --device cuda                    # native, auto, fft, triton
    python bench/replknet_step.py --device cuda --amp none         # float32

On a CPU it runs too (``--model replknet_31b --batch 2 --size 64`` to keep it short).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time

import timm
import torch
from torch import nn

import ablate.models  # noqa: F401  (registers the models in timm)
from ablate.layers.large_kernel import IMPL_ENV, choose_impl


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="replknet_31b")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--amp", default="bf16", choices=("bf16", "fp16", "none"))
    ap.add_argument("--impls", default=None, help="default native,auto,fft,triton on CUDA, native,auto,fft on CPU")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per implementation and repeat")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true",
                    help="then 3 steps of each implementation under torch.profiler: its 12 costliest ops")
    a = ap.parse_args()
    device = torch.device(a.device)
    impls = (a.impls or ("native,auto,fft,triton" if device.type == "cuda" else "native,auto,fft")).split(",")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = timm.create_model(a.model, num_classes=1000).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(a.batch, 3, a.size, a.size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (a.batch,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.amp)

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def steps(n: int) -> float:
        sync(device)
        start = time.perf_counter()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
        sync(device)
        return time.perf_counter() - start

    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{torch.get_num_threads()} thread(s)"
    print(f"# {platform.machine()}, torch {torch.__version__}, {a.device} ({where}), {a.model}, batch {a.batch}, "
          f"{a.size}px, amp {a.amp}, channels_last, cudnn.benchmark, {a.steps} steps x median of {a.repeats}")
    probe = torch.empty(1, 1, 1, 1, device=device, dtype=dtype or torch.float32)
    peak: dict[str, float] = {}
    for impl in impls:  # warm-up: cuDNN's algorithm search, Triton's compilation, the FFT plans
        os.environ[IMPL_ENV] = impl
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        steps(a.warmup)
        peak[impl] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    times: dict[str, list[float]] = {impl: [] for impl in impls}
    for r in range(a.repeats):
        for impl in impls if r % 2 == 0 else impls[::-1]:
            os.environ[IMPL_ENV] = impl
            times[impl].append(steps(a.steps))
    base = statistics.median(times[impls[0]])
    print(f"| impl | 31x31 stage-1 conv runs as | img/s | step ms | vs {impls[0]} | peak GiB |")
    print("|---|---|---|---|---|---|")
    for impl in impls:
        t = statistics.median(times[impl])
        runs_as = choose_impl(impl, probe, (31, 31), (1, 1))
        print(f"| {impl} | {runs_as} | {a.batch * a.steps / t:.1f} | {t / a.steps * 1e3:.1f} | {base / t:.2f}x | "
              f"{peak[impl]:.2f} |", flush=True)
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        for impl in impls:
            os.environ[IMPL_ENV] = impl
            with profile(activities=acts) as prof:
                steps(3)
            print(f"\n## {impl}: 3 steps, by {key}")
            print(prof.key_averages().table(sort_by=key, row_limit=12, max_name_column_width=60))


if __name__ == "__main__":
    main()
