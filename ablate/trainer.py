"""One trial's training, built from timm's parts: optimizer and scheduler factories, Mixup/CutMix,
soft-target / label-smoothing losses, EMA, drop path; top-1/top-5 on a held-out split.

No Ray here: the runner hands in ``report`` (called once per epoch with that epoch's metrics and,
when ``checkpoints`` is on, the full training state), and ``resume`` (a state to continue from),
so the trainer runs the same inside a Tune trial, a test, or a benchmark.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, accuracy
from torch import nn
from torch.utils.data import DataLoader

from ablate.data import Splits, build_splits
from ablate.models import build_model
from ablate.reparam import ReparamError, gate, has_mergeable  # noqa: F401  (ReparamError re-exported)

Report = Callable[..., None]  # report(metrics) or report(metrics, state)


@dataclass
class Distributed:
    """How the runner makes one trial data-parallel (Ray Train's prepare_model/prepare_data_loader
    for DDP); the trainer stays free of Ray."""

    wrap_model: Callable[[nn.Module], nn.Module]
    wrap_loader: Callable[[DataLoader], DataLoader]
    world_size: int
    rank: int


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "loader": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_loaders(splits: Splits, recipe: dict[str, Any], generator: torch.Generator) -> tuple[DataLoader, DataLoader]:
    workers = int(recipe.get("workers", 0))
    common = dict(batch_size=int(recipe["batch_size"]), num_workers=workers,
                  persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())
    train = DataLoader(splits.train, shuffle=True, drop_last=len(splits.train) > recipe["batch_size"],  # type: ignore[arg-type]
                       generator=generator, **common)
    val = DataLoader(splits.val, shuffle=False, **common)
    return train, val


def amp_dtype(recipe: dict[str, Any], device: torch.device) -> torch.dtype | None:
    amp = recipe.get("amp", "auto")
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, num_classes: int,
             memory_format: torch.memory_format = torch.contiguous_format,
             dtype: torch.dtype | None = None) -> dict[str, float]:
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    n, loss, top1, top5 = 0, 0.0, 0.0, 0.0
    k = min(5, num_classes)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True, memory_format=memory_format), y.to(device, non_blocking=True)
        with _autocast(device, dtype):
            out = model(x)
        out = out.float()
        a1, a5 = accuracy(out, y, topk=(1, k))
        loss += loss_fn(out, y).item()
        top1 += a1.item() * len(y)
        top5 += a5.item() * len(y)
        n += len(y)
    return {"val_loss": loss / max(n, 1), "top1": top1 / max(n, 1), "top5": top5 / max(n, 1)}


@torch.no_grad()
def reparam_check(model: nn.Module, loader: DataLoader, device: torch.device,
                  memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, float]:
    """Merge the trained model into its deploy form (``reparam.merge``) and gate it on one val batch:
    ``{"reparam_max_abs_diff": ...}`` (relative to the output scale), ``{}`` when there is nothing to
    merge; raises ``ReparamError`` past ``reparam.GATE_TOLERANCE`` so the trial is marked failed.

    Checked in float64 on a copy: equivalence is a property of the merge, and in float32 the
    rounding of a trained network's fused BNs alone reaches ~1e-4 over 17 blocks (seen here)."""
    if not has_mergeable(model):
        return {}
    model.zero_grad(set_to_none=True)  # training is over; don't deep-copy the gradients too
    x, _ = next(iter(loader))
    ref = copy.deepcopy(model).double()
    _, diff = gate(ref, x.to(device, dtype=torch.float64, memory_format=memory_format))
    return {"reparam_max_abs_diff": diff}


def load_pretrained(model: nn.Module, weights: str | dict[str, Any]) -> list[str]:
    """Load another trial's weights (a state dict or a file); tensors whose shape differs (a new
    classifier) keep their fresh init. Returns the names that were not loaded."""
    state = torch.load(weights, map_location="cpu", weights_only=True) if isinstance(weights, str) else weights
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return skipped


def restore(resume: dict[str, Any] | None, generator: torch.Generator, model: nn.Module,
            optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler, ema: Any = None) -> int:
    """Continue from a checkpoint (``resume``, the state a trainer reports each epoch): the model,
    optimizer, scheduler, grad scaler, EMA (when both the trainer and the checkpoint have one) and
    every RNG as they were after its epoch. Returns the epoch to start at: 0 without a checkpoint.
    One resume path for every trainer (classification and segmentation)."""
    if resume is None:
        return 0
    model.load_state_dict(resume["model"])
    optimizer.load_state_dict(resume["optimizer"])
    scheduler.load_state_dict(resume["scheduler"])
    scaler.load_state_dict(resume["scaler"])
    if ema is not None and resume.get("ema") is not None:
        ema.load_state_dict(resume["ema"])
    set_rng_state(resume["rng"], generator)
    return int(resume["epoch"]) + 1


def train(config: dict[str, Any], report: Report | None = None, device: str | None = None, *,
          resume: dict[str, Any] | None = None, checkpoints: bool = False,
          distributed: Distributed | None = None, init_state: dict[str, Any] | None = None) -> dict[str, float]:
    """Train the trial described by ``config`` (model, recipe, dataset, seed); return the last metrics.

    With ``checkpoints`` each epoch's ``report(metrics, state)`` carries everything needed to
    continue (model, optimizer, scheduler, EMA, scaler, epoch, RNG states); ``resume=state``
    continues after that epoch and, on CPU with fixed seeds, reaches the same metrics as an
    uninterrupted run. ``init_state``: weights to start from (``init_from``; new heads stay fresh).
    Files (checkpoints, weights) are the caller's: see ``ablate.trial_state``.
    A ``model.task: segmentation`` trial is ``ablate.seg_trainer``'s (the same interface)."""
    if config["model"].get("task") == "segmentation":
        from ablate.seg_trainer import train as train_segmentation

        return train_segmentation(config, report, device, resume=resume, checkpoints=checkpoints,
                                  distributed=distributed, init_state=init_state)
    recipe = config["recipe"]
    generator = seed_everything(int(config["seed"]))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    splits = build_splits(config["dataset"], {"auto_augment": recipe.get("auto_augment"), "re_prob": recipe.get("re_prob", 0.0)})
    model = build_model(config["model"], splits.num_classes, splits.in_chans, recipe.get("drop_path_rate", 0.0)).to(dev)
    if init_state is not None and resume is None:
        load_pretrained(model, init_state)
    memory_format = torch.channels_last if recipe.get("channels_last", True) else torch.contiguous_format
    model = model.to(memory_format=memory_format)  # large depthwise kernels run far faster in NHWC
    train_loader, val_loader = make_loaders(splits, recipe, generator)
    if recipe["epochs"] == 0:  # evaluate weights trained elsewhere (an imported checkpoint, init_from)
        metrics = {"epoch": 0.0, **evaluate(model, val_loader, dev, splits.num_classes, memory_format,
                                            amp_dtype(recipe, dev))}
        if report is not None:
            report(metrics, {"model": model.state_dict(), "epoch": 0}) if checkpoints else report(metrics)
        return metrics
    world = distributed.world_size if distributed else 1
    if distributed is not None:  # DistributedSampler: each rank sees its shard
        train_loader = distributed.wrap_loader(train_loader)
    accum = int(recipe.get("accum_steps", 1))
    steps = len(train_loader)
    if recipe.get("max_steps_per_epoch"):
        steps = min(steps, int(recipe["max_steps_per_epoch"]))
    updates = max(1, steps // accum)

    optimizer = create_optimizer_v2(model, opt=recipe["opt"], lr=recipe["lr"], weight_decay=recipe["weight_decay"],
                                    momentum=recipe["momentum"], layer_decay=recipe.get("layer_decay"))
    scheduler, _ = create_scheduler_v2(optimizer, sched=recipe["sched"], num_epochs=recipe["epochs"],
                                       warmup_epochs=recipe["warmup_epochs"], warmup_lr=recipe["warmup_lr"],
                                       min_lr=recipe["min_lr"], step_on_epochs=False, updates_per_epoch=updates)
    mixup = None
    if recipe.get("mixup", 0) > 0 or recipe.get("cutmix", 0) > 0:
        mixup = Mixup(mixup_alpha=recipe.get("mixup", 0.0), cutmix_alpha=recipe.get("cutmix", 0.0),
                      label_smoothing=recipe.get("label_smoothing", 0.0), num_classes=splits.num_classes)
        loss_fn: nn.Module = SoftTargetCrossEntropy()
    else:
        loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.get("label_smoothing", 0.0))
    ema = ModelEmaV3(model, decay=1 - recipe["ema_momentum"]) if recipe.get("ema_momentum") else None
    dtype = amp_dtype(recipe, dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    step_model = distributed.wrap_model(model) if distributed is not None else model
    if recipe.get("compile"):
        step_model = torch.compile(step_model)

    start_epoch = restore(resume, generator, model, optimizer, scheduler, scaler, ema)

    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, recipe["epochs"]):
        model.train()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        start, seen, loss_sum = time.perf_counter(), 0, 0.0
        optimizer.zero_grad(set_to_none=True)
        for step, (x, y) in enumerate(train_loader):
            if step >= updates * accum:
                break
            x, y = x.to(dev, non_blocking=True, memory_format=memory_format), y.to(dev, non_blocking=True)
            target = y
            if mixup is not None and len(y) % 2 == 0:
                x, target = mixup(x, y)
            elif mixup is not None:  # timm's Mixup needs an even batch; a soft one-hot keeps the loss
                target = torch.nn.functional.one_hot(y, splits.num_classes).float()
            with _autocast(dev, dtype):
                loss = loss_fn(step_model(x), target)
            scaler.scale(loss / accum).backward()
            if (step + 1) % accum == 0:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update(model)
                scheduler.step_update(epoch * updates + (step + 1) // accum)
            loss_sum += loss.item() * len(y)
            seen += len(y)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elapsed = time.perf_counter() - start
        scheduler.step(epoch + 1)
        train_loss = loss_sum / max(seen, 1)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss} at epoch {epoch}; lower recipe.lr")
        metrics = {"epoch": float(epoch), "train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"],
                   "epoch_time_s": elapsed, "img_per_s": world * seen / max(elapsed, 1e-9),
                   **evaluate(model, val_loader, dev, splits.num_classes, memory_format, dtype)}
        if distributed is not None:
            metrics["world_size"] = float(world)
        if resume is not None and epoch == start_epoch:
            metrics["resumed_after_epoch"] = float(start_epoch - 1)
        if dev.type == "cuda":
            metrics["peak_mem_gb"] = torch.cuda.max_memory_allocated(dev) / 1024**3
        if ema is not None:
            ema_m = evaluate(ema.module, val_loader, dev, splits.num_classes, memory_format, dtype)
            metrics.update({f"{k}_ema": v for k, v in ema_m.items()})
        if epoch == recipe["epochs"] - 1:  # after training: the deploy form must compute the same
            metrics.update(reparam_check(model, val_loader, dev, memory_format))
        if report is not None:
            if checkpoints:
                report(metrics, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                                 "ema": ema.state_dict() if ema is not None else None, "epoch": epoch,
                                 "rng": rng_state(generator)})
            else:
                report(metrics)
    return metrics
