"""One segmentation trial: UperNet on a study's backbone, trained by iterations, scored by mIoU.

The schedule is mmsegmentation's (``IterBasedRunner``): ``recipe.epochs`` evaluations, each after
``recipe.max_steps_per_epoch`` iterations (80K iterations = 10 x 8000), AdamW (timm's, norms and biases
without weight decay), poly decay to ``min_lr`` with power 1.0 after ``warmup_steps`` linear warmup
iterations from ``warmup_lr``, per-pixel cross-entropy ignoring 255 on the decode head plus 0.4 x the
auxiliary head's. Each "epoch" the runner sees is one evaluation interval: the trial reports
``train_loss``, ``val_loss``, ``miou`` and ``pixel_acc`` and, with ``checkpoints``, its full state, and
resumes after the last complete interval exactly as a classification trial resumes after an epoch
(every interval starts a fresh pass over the shuffled training set, so the RNG states are all it needs).

``init_state`` (``init_from`` an ImageNet trial) loads into the backbone (``UperNet.load_backbone``);
the decode and auxiliary heads start fresh. Stage-wise lr decay (``recipe.layer_decay``) is not
applied to UperNet: the recipe the paper follows (RepLKNet's) has none.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from timm.scheduler import PolyLRScheduler
from torch import nn
from torch.utils.data import DataLoader

from ablate.seg_data import IGNORE_INDEX, build_seg_splits
from ablate.seg_metrics import confusion_matrix, scores
from ablate.seg_zoo import build_upernet
from ablate.trainer import Distributed, Report, _autocast, amp_dtype, restore, rng_state, seed_everything

AUX_WEIGHT = 0.4  # the auxiliary FCN head's loss weight in the UperNet configs


def _load_init(model: nn.Module, state: dict[str, Any]) -> None:
    if any(k.startswith("backbone.") for k in state):  # another segmentation trial: the whole model
        model.load_state_dict(state)
    else:  # a classifier (an ImageNet trial): its backbone
        model.load_backbone(state)  # type: ignore[operator]


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, num_classes: int,
             dtype: torch.dtype | None = None) -> dict[str, float]:
    """Whole-image inference at the val scale, logits upsampled to each mask; mIoU over the split."""
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    loss, pixels = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with _autocast(device, dtype):
            logits = model(x)
        logits = F.interpolate(logits.float(), size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss += F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum").item()
        pixels += int((y != IGNORE_INDEX).sum())
        cm += confusion_matrix(logits.argmax(1), y, num_classes)
    return {"val_loss": loss / max(pixels, 1), **scores(cm.cpu())}


def train(config: dict[str, Any], report: Report | None = None, device: str | None = None, *,
          resume: dict[str, Any] | None = None, checkpoints: bool = False,
          distributed: Distributed | None = None, init_state: dict[str, Any] | None = None) -> dict[str, float]:
    """Train the segmentation trial ``config`` describes; the interface of ``ablate.trainer.train``."""
    recipe = config["recipe"]
    if not recipe.get("max_steps_per_epoch"):
        raise ValueError("recipe.max_steps_per_epoch: a segmentation trial needs the iterations between "
                         "evaluations (the ade20k-upernet-80k recipe: 8000)")
    generator = seed_everything(int(config["seed"]))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    splits = build_seg_splits(config["dataset"])
    model = build_upernet(config["model"], splits.num_classes, splits.in_chans,
                          recipe.get("drop_path_rate", 0.0)).to(dev)
    if init_state is not None and resume is None:
        _load_init(model, init_state)
    if distributed is not None and distributed.world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the configs' SyncBN
    workers = int(recipe.get("workers", 0))
    train_loader = DataLoader(splits.train, batch_size=int(recipe["batch_size"]), shuffle=True,
                              drop_last=len(splits.train) > recipe["batch_size"], generator=generator,
                              num_workers=workers, persistent_workers=workers > 0)
    val_loader = DataLoader(splits.val, batch_size=1, shuffle=False, num_workers=workers)
    if distributed is not None:
        train_loader = distributed.wrap_loader(train_loader)
    per_eval, evals = int(recipe["max_steps_per_epoch"]), int(recipe["epochs"])
    accum = int(recipe.get("accum_steps", 1))
    optimizer = create_optimizer_v2(model, opt=recipe["opt"], lr=recipe["lr"], weight_decay=recipe["weight_decay"],
                                    momentum=recipe["momentum"])
    scheduler = PolyLRScheduler(optimizer, t_initial=per_eval * evals, power=1.0, lr_min=recipe.get("min_lr", 0.0),
                                warmup_t=int(recipe.get("warmup_steps") or 0), warmup_lr_init=recipe.get("warmup_lr", 0.0),
                                t_in_epochs=False)
    dtype = amp_dtype(recipe, dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    step_model = distributed.wrap_model(model) if distributed is not None else model
    world = distributed.world_size if distributed else 1

    start = restore(resume, generator, model, optimizer, scheduler, scaler)
    scheduler.step_update(start * per_eval)

    metrics: dict[str, float] = {}
    for interval in range(start, evals):
        model.train()
        t0, seen, loss_sum, it = time.perf_counter(), 0, 0.0, iter(train_loader)
        for step in range(per_eval):  # one iteration: accum_steps micro-batches (the recipe's total batch)
            optimizer.zero_grad(set_to_none=True)
            for _ in range(accum):
                try:
                    x, y = next(it)
                except StopIteration:  # another pass over the training set within the interval
                    it = iter(train_loader)
                    x, y = next(it)
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                with _autocast(dev, dtype):
                    out = step_model(x)
                    main, aux = out if isinstance(out, tuple) else (out, None)
                    loss = F.cross_entropy(main.float(), y, ignore_index=IGNORE_INDEX)
                    if aux is not None:
                        loss = loss + AUX_WEIGHT * F.cross_entropy(aux.float(), y, ignore_index=IGNORE_INDEX)
                scaler.scale(loss / accum).backward()
                loss_sum += loss.item() * len(y)
                seen += len(y)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step_update(interval * per_eval + step + 1)
        elapsed = time.perf_counter() - t0
        train_loss = loss_sum / max(seen, 1)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss} at evaluation {interval}; lower recipe.lr")
        metrics = {"epoch": float(interval), "iteration": float((interval + 1) * per_eval), "train_loss": train_loss,
                   "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": elapsed,
                   "img_per_s": world * seen / max(elapsed, 1e-9),
                   **evaluate(model, val_loader, dev, splits.num_classes, dtype)}
        if resume is not None and interval == start:
            metrics["resumed_after_epoch"] = float(start - 1)
        if report is not None:
            if checkpoints:
                report(metrics, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "ema": None,
                                 "epoch": interval, "rng": rng_state(generator)})
            else:
                report(metrics)
    return metrics
