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
