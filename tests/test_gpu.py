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
