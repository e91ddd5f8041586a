"""ablate's trainer against a bare timm training loop: same model, batch, data, device, process.

Prints img/s of each (training steps only, data loading included, median over alternating
repeats) and the ratio ablate / bare. Run: `.venv/bin/python bench/trainer_throughput.py`
(add `--device cuda` on a GPU machine). Results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from timm.optim import create_optimizer_v2
from torch import nn
from torch.utils.data import DataLoader

import ablate.models  # noqa: F401  (registers models)
from ablate.data import build_splits
from ablate.models import build_model
from ablate.study import RecipeSpec
from ablate.trainer import train


def bare_timm_loop(cfg: dict, steps: int, device: torch.device) -> float:
    """The loop a researcher would write by hand with timm: no scheduler, no eval, no reporting."""
    torch.manual_seed(cfg["seed"])
    splits = build_splits(cfg["dataset"])
    model = build_model(cfg["model"], splits.num_classes, splits.in_chans).to(device)
    fmt = torch.channels_last if cfg["recipe"]["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = create_optimizer_v2(model, opt="sgd", lr=cfg["recipe"]["lr"], weight_decay=cfg["recipe"]["weight_decay"],
                              momentum=0.9)
    loader = DataLoader(splits.train, batch_size=cfg["recipe"]["batch_size"], shuffle=True, drop_last=True)
    loss_fn = nn.CrossEntropyLoss()
    seen, start = 0, time.perf_counter()
    for i, (x, y) in enumerate(loader):
        if i >= steps:
            break
        x, y = x.to(device, memory_format=fmt), y.to(device)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # ablate's loop reads the loss each step too
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def ablate_trainer(cfg: dict, steps: int, device: torch.device) -> float:
    cfg = dict(cfg, recipe=dict(cfg["recipe"], max_steps_per_epoch=steps))
    return train(cfg, device=str(device))["img_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kernel", type=int, default=9)
    ap.add_argument("--width", type=float, default=0.35)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--root", default=None, help="Fashion-MNIST folder (default: Debian's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    recipe = RecipeSpec(epochs=1, batch_size=args.batch, lr=0.05, warmup_epochs=0, amp="none").model_dump()
    cfg = {"model": {"name": "mobilenetv2_lk", "kwargs": {"kernel_size": args.kernel, "width_mult": args.width}},
           "recipe": recipe,
           "dataset": {"name": "fashion_mnist", "image_size": args.image_size, "root": args.root,
                       "train_subset": args.batch * (args.steps + 1), "val_subset": 64}, "seed": 0}
    bare_timm_loop(cfg, 3, device)  # warm-up: allocator, kernels, page cache
    a, b = [], []
    for _ in range(args.repeats):  # alternate so drift hits both equally
        b.append(bare_timm_loop(cfg, args.steps, device))
        a.append(ablate_trainer(cfg, args.steps, device))
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"host: {platform.processor() or platform.machine()}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    print(f"model mobilenetv2_lk k={args.kernel} width={args.width} @{args.image_size}px, batch {args.batch}, "
          f"{args.steps} steps x {args.repeats} repeats")
    print(f"bare timm loop : {mb:8.1f} img/s  (runs: {', '.join(f'{x:.1f}' for x in b)})")
    print(f"ablate trainer : {ma:8.1f} img/s  (runs: {', '.join(f'{x:.1f}' for x in a)})")
    print(f"ratio ablate/bare: {ma / mb:.3f}")


if __name__ == "__main__":
    main()
