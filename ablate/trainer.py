"""One trial's training: timm's optimizer and scheduler factories, top-1/top-5 on a held-out split.

No Ray here: the runner hands in ``report`` (called once per epoch with that epoch's metrics), so
the trainer runs the same inside a Tune trial, a test, or a benchmark.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any, Callable

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import accuracy
from torch import nn
from torch.utils.data import DataLoader

from ablate.data import Splits, build_splits
from ablate.models import build_model

Report = Callable[[dict[str, float]], None]


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_loaders(splits: Splits, recipe: dict[str, Any], generator: torch.Generator) -> tuple[DataLoader, DataLoader]:
    workers = int(recipe.get("workers", 0))
    common = dict(batch_size=int(recipe["batch_size"]), num_workers=workers,
                  persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())
    train = DataLoader(splits.train, shuffle=True, drop_last=len(splits.train) > recipe["batch_size"],  # type: ignore[arg-type]
                       generator=generator, **common)
    val = DataLoader(splits.val, shuffle=False, **common)
    return train, val


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, num_classes: int) -> dict[str, float]:
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    n, loss, top1, top5 = 0, 0.0, 0.0, 0.0
    k = min(5, num_classes)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = model(x)
        a1, a5 = accuracy(out, y, topk=(1, k))
        loss += loss_fn(out, y).item()
        top1 += a1.item() * len(y)
        top5 += a5.item() * len(y)
        n += len(y)
    return {"val_loss": loss / max(n, 1), "top1": top1 / max(n, 1), "top5": top5 / max(n, 1)}


def train(config: dict[str, Any], report: Report | None = None, device: str | None = None) -> dict[str, float]:
    """Train the trial described by ``config`` (model, recipe, dataset, seed); return the last metrics."""
    recipe = config["recipe"]
    generator = seed_everything(int(config["seed"]))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    splits = build_splits(config["dataset"])
    model = build_model(config["model"], splits.num_classes, splits.in_chans, recipe.get("drop_path_rate", 0.0)).to(dev)
    memory_format = torch.channels_last if recipe.get("channels_last", True) else torch.contiguous_format
    model = model.to(memory_format=memory_format)  # large depthwise kernels run far faster in NHWC
    train_loader, val_loader = make_loaders(splits, recipe, generator)
    steps = len(train_loader)
    if recipe.get("max_steps_per_epoch"):
        steps = min(steps, int(recipe["max_steps_per_epoch"]))

    optimizer = create_optimizer_v2(model, opt=recipe["opt"], lr=recipe["lr"], weight_decay=recipe["weight_decay"],
                                    momentum=recipe["momentum"])
    scheduler, _ = create_scheduler_v2(optimizer, sched=recipe["sched"], num_epochs=recipe["epochs"],
                                       warmup_epochs=recipe["warmup_epochs"], warmup_lr=recipe["warmup_lr"],
                                       min_lr=recipe["min_lr"], step_on_epochs=False, updates_per_epoch=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.get("label_smoothing", 0.0))

    metrics: dict[str, float] = {}
    for epoch in range(recipe["epochs"]):
        model.train()
        start, seen, loss_sum = time.perf_counter(), 0, 0.0
        for step, (x, y) in enumerate(train_loader):
            if step >= steps:
                break
            x, y = x.to(dev, non_blocking=True, memory_format=memory_format), y.to(dev, non_blocking=True)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step_update(epoch * steps + step + 1)
            loss_sum += loss.item() * len(y)
            seen += len(y)
        elapsed = time.perf_counter() - start
        scheduler.step(epoch + 1)
        train_loss = loss_sum / max(seen, 1)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss} at epoch {epoch}; lower recipe.lr")
        metrics = {"epoch": float(epoch), "train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"],
                   "epoch_time_s": elapsed, "img_per_s": seen / max(elapsed, 1e-9),
                   **evaluate(model, val_loader, dev, splits.num_classes)}
        if report is not None:
            report(metrics)
    return metrics
