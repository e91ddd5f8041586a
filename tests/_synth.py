"""Synthetic studies for table and dashboard tests: StudyRecords built in memory (no training),
with known per-seed values so statistics can be checked by hand, a generator of large databases,
and tiny learnable image folders (tests and bench/orchestration.py)."""

from __future__ import annotations

import hashlib
import json
import math
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ablate.store import COMPLETED, FAILED, PENDING, StudyRecord, TrialRecord

CLASSES = ("red", "green", "blue")


def make_image_folder(root: Path, n_train: int = 8, n_val: int = 4, size: int = 16, seed: int = 0) -> Path:
    """ImageNet layout with three colour classes plus noise: learnable in a few steps."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for ci, cls in enumerate(CLASSES):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                img[..., ci] += 180
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def _tid(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12]


def trial(study: str, params: dict[str, Any], seed: int, final: dict[str, float] | None = None, *,
          status: str = COMPLETED, n_params: int | None = 4_000_000, flops: int | None = 300_000_000,
          model: dict[str, Any] | None = None, history: dict[str, list[tuple[int, float]]] | None = None,
          error: str | None = None) -> TrialRecord:
    """A trial whose config has ``params`` (config paths) applied to a small MobileNetV2 config."""
    config: dict[str, Any] = {"model": model or {"name": "mobilenetv2_lk", "kwargs": {"kernel_size": 3, "dilation": 1}},
                              "recipe": {"epochs": 3}, "dataset": {"name": "folder"}, "seed": seed}
    config = json.loads(json.dumps(config))
    for path, v in params.items():
        node = config
        *head, last = path.split(".")
        for p in head:
            node = node.setdefault(p, {})
        node[last] = v
    now = datetime(2024, 1, 1, tzinfo=timezone.utc)
    return TrialRecord(_tid(study, params, seed), dict(params, seed=seed), config, seed, status, n_params, flops,
                       error, now, now, dict(final or {}), dict(history or {}))


def record(name: str, trials: list[TrialRecord], table: dict[str, Any] | None = None,
           metric: dict[str, Any] | None = None) -> StudyRecord:
    spec = {"name": name, "metric": metric or {"name": "top1", "mode": "max"}, "table": table, "profile": None}
    return StudyRecord(name, f"synthetic {name}", spec, trials)


def big_studies(n_trials: int = 10_000, n_studies: int = 10, seeds: int = 4, epochs: int = 10,
                failed_every: int = 97, seed: int = 0) -> list[StudyRecord]:
    """``n_trials`` trials over ``n_studies`` kernel-size x dilation x lr studies, ``seeds`` seeds per arm,
    ``epochs`` epochs of top1 / val_loss / train_loss each; every ``failed_every``-th trial failed."""
    rng = random.Random(seed)
    per = n_trials // n_studies
    arms_per = per // seeds
    out = []
    k = 0
    for si in range(n_studies):
        name = f"synthetic_{si:02d}"
        trials = []
        for a in range(arms_per):
            ks = [3, 5, 7, 9, 13, 17, 21, 27, 31][a % 9]
            dil = 1 + (a // 9) % 3
            lr = round(0.01 * (1 + a // 27), 4)
            params = {"model.kwargs.kernel_size": ks, "model.kwargs.dilation": dil, "recipe.lr": lr}
            quality = 60 + 10 * math.log(ks) - 4 * (dil - 1) - 30 * abs(lr - 0.05)
            for s in range(seeds):
                k += 1
                hist: dict[str, list[tuple[int, float]]] = {"top1": [], "val_loss": [], "train_loss": []}
                for e in range(epochs):
                    frac = 1 - math.exp(-(e + 1) / 3)
                    hist["top1"].append((e, quality * frac + rng.gauss(0, 0.5)))
                    hist["val_loss"].append((e, 2.5 * (1 - frac) + 0.3 + rng.gauss(0, 0.02)))
                    hist["train_loss"].append((e, 2.4 * (1 - frac) + 0.2 + rng.gauss(0, 0.02)))
                status, err = COMPLETED, None
                if k % failed_every == 0:
                    status, err = FAILED, "FloatingPointError: training loss is nan at epoch 4; lower recipe.lr"
                    hist = {m: h[:4] for m, h in hist.items()}
                elif si == n_studies - 1 and a == arms_per - 1:
                    status, hist = PENDING, {}
                t = trial(name, params, s, {m: h[-1][1] for m, h in hist.items()}, status=status,
                          n_params=int(3.5e6 + 2e4 * ks * ks), flops=int(3e8 + 1e6 * ks * ks), history=hist, error=err)
                trials.append(t)
        table = {"columns": [{"header": "Max RF", "source": "derived:max_rf"},
                             {"header": "Kernel size", "source": "model.kwargs.kernel_size", "format": "{v}×{v}"},
                             {"header": "Dilation", "source": "model.kwargs.dilation", "dash_if": 1},
                             {"header": "LR", "source": "recipe.lr"},
                             {"header": "Top-1", "source": "metric:top1"},
                             {"header": "Params", "source": "params"},
                             {"header": "FLOPs", "source": "flops"}],
                 "baseline": {"model.kwargs.kernel_size": 3, "model.kwargs.dilation": 1, "recipe.lr": 0.01}}
        out.append(record(name, trials, table))
    return out


def scale_record(name: str, n_trials: int, *, epochs: int = 10, seeds: int = 10, failed_every: int = 0,
                 seed: int = 0, table: dict[str, Any] | None = None):
    """A study of ``n_trials`` trials (``seeds`` per arm over an lr x drop-rate grid) whose ``trials``
    is a generator: ``Store.import_records`` writes it chunk by chunk, so 10^5 trials take little
    memory. ``epochs`` epochs of top1 / val_loss / train_loss each; every ``failed_every``-th trial
    failed at half its epochs; the last trial is pending. The spec declares the grid and the seeds."""
    arms = -(-n_trials // seeds)
    side = max(1, math.ceil(math.sqrt(arms)))
    lrs = [round(0.001 * (i + 1), 4) for i in range(side)]
    drops = [round(0.01 * i, 3) for i in range(-(-arms // side))]
    spec = {"name": name, "description": "", "model": {"name": "resnet18", "kwargs": {}},
            "axes": {"grid": {"recipe.lr": lrs, "model.kwargs.drop_rate": drops}, "zip": [], "exclude": []},
            "seeds": list(range(seeds)), "dataset": {"name": "fashion_mnist", "image_size": 32},
            "recipe": {"epochs": epochs}, "metric": {"name": "top1", "mode": "max"}, "table": table, "profile": None}

    def trials():
        rng = random.Random(seed)
        k = 0
        for lr in lrs:
            for drop in drops:
                for s in range(seeds):
                    if k >= n_trials:
                        return
                    k += 1
                    quality = 80 - 2000 * abs(lr - 0.01) - 10 * drop
                    hist: dict[str, list[tuple[int, float]]] = {"top1": [], "val_loss": [], "train_loss": []}
                    for e in range(epochs):
                        frac = 1 - math.exp(-(e + 1) / 3)
                        hist["top1"].append((e, round(quality * frac + rng.gauss(0, 0.5), 6)))
                        hist["val_loss"].append((e, round(2.5 * (1 - frac) + 0.3 + rng.gauss(0, 0.02), 6)))
                        hist["train_loss"].append((e, round(2.4 * (1 - frac) + 0.2 + rng.gauss(0, 0.02), 6)))
                    status, err = COMPLETED, None
                    if failed_every and k % failed_every == 0:
                        status = FAILED
                        err = (f"FloatingPointError: training loss is nan at epoch {epochs // 2}\n"
                               "  ablate/trainer.py:120 in train_one_epoch")
                        hist = {m: h[:epochs // 2] for m, h in hist.items()}
                    elif k == n_trials:
                        status, hist = PENDING, {}
                    params = {"recipe.lr": lr, "model.kwargs.drop_rate": drop}
                    t = trial(name, params, s, {m: h[-1][1] for m, h in hist.items()}, status=status,
                              n_params=11_000_000, flops=37_000_000, history=hist, error=err,
                              model={"name": "resnet18", "kwargs": {}})
                    t.config["recipe"]["epochs"] = epochs
                    t.config["dataset"] = {"name": "fashion_mnist", "image_size": 32}
                    yield t

    rec = StudyRecord(name, f"synthetic {name}", spec, [])
    rec.trials = trials() if n_trials > 5000 else list(trials())  # type: ignore[assignment]
    return rec
