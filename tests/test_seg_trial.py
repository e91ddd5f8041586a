"""A segmentation trial end to end: ImageNet-style trial -> init_from -> UperNet on a generated
ADE20K-layout set through ``run_study`` (what ``ablate run`` calls) on Ray, and an exact resume."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from ablate.orchestrate import run_study
from ablate.seg_synth import make_seg_folder
from ablate.seg_tables import render_beside
from ablate.seg_trainer import train
from ablate.store import Store
from conftest import write_study

TINY = {"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64], "kernel_sizes": [7, 7, 7, 7]}
HEAD = {"channels": 16, "aux_channels": 8}
SEG_RECIPE = {"opt": "adamw", "lr": 2.0e-3, "weight_decay": 0.05, "epochs": 3, "max_steps_per_epoch": 8,
              "batch_size": 4, "warmup_epochs": 0, "warmup_steps": 2, "amp": "none", "channels_last": False}


def COLUMNS(metric: str, source: str) -> list[dict[str, str]]:
    return [{"header": "Kernel size", "source": "model.kwargs.kernel_sizes"},
            {"header": "Architecture", "source": "model.name"}, {"header": metric, "source": source},
            {"header": "Params", "source": "params"}, {"header": "FLOPs", "source": "flops"}]


def _seg_config(root: Path) -> dict[str, Any]:
    return {"seed": 0, "model": {"name": "convnext_lk_tiny", "task": "segmentation", "kwargs": TINY, "head": HEAD},
            "dataset": {"name": "ade20k", "root": str(root), "image_size": 32},
            "recipe": {**SEG_RECIPE, "momentum": 0.9, "warmup_lr": 1e-6, "min_lr": 0.0, "drop_path_rate": 0.0}}


def test_segmentation_trial_learns_through_run(tmp_path: Path, image_folder: Path, ray_session: None) -> None:
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    imagenet = {"name": "cls", "model": {"name": "convnext_lk_tiny", "kwargs": TINY}, "seeds": [0],
                "recipe": {"epochs": 1, "batch_size": 8, "opt": "adamw", "lr": 1e-3, "warmup_epochs": 0},
                "dataset": {"name": "folder", "root": str(image_folder), "image_size": 32},
                "resources": {"cpus": 1, "gpus": 0},
                "table": {"columns": COLUMNS("Top-1", "metric:top1"), "beside": "seg",
                          "paper": [{"match": {"model.name": "convnext_lk_tiny"}, "Top-1": 81.0}]}}
    assert run_study(write_study(tmp_path / "cls.yaml", imagenet), store=store).completed == 1
    root = make_seg_folder(tmp_path / "ade")
    seg = {"name": "seg", "model": {"name": "convnext_lk_tiny", "task": "segmentation", "kwargs": TINY, "head": HEAD},
           "seeds": [0], "recipe": SEG_RECIPE, "dataset": {"name": "ade20k", "root": str(root), "image_size": 32},
           "resources": {"cpus": 1, "gpus": 0}, "metric": {"name": "miou", "mode": "max"},
           "init_from": {"study": "cls", "match_axes": ["model.name", "model.kwargs.kernel_sizes", "seed"]},
           "table": {"columns": COLUMNS("mIoU", "metric:miou"), "group": "ADE20K",
                     "paper": [{"match": {"model.name": "convnext_lk_tiny"}, "mIoU": 44.6}]}}
    assert run_study(write_study(tmp_path / "seg.yaml", seg), store=store).completed == 1
    trial = store.load("seg", history=True).trials[0]
    assert trial.status == "completed" and trial.n_params and trial.flops  # UperNet counted at 32x128
    loss, miou = [v for _, v in trial.history["train_loss"]], [v for _, v in trial.history["miou"]]
    assert len(loss) == len(miou) == 3
    assert loss[-1] < loss[0] and miou[-1] > miou[0], (loss, miou)
    assert 0 < trial.final["pixel_acc"] <= 100
    # Table 11's layout from the database: both halves side by side, each with the paper's figures
    md = render_beside(store.load("cls"), store.load("seg"), "md")
    head = md.splitlines()[2]
    assert head.startswith("| Kernel size | Architecture | ImageNet Top-1 |") and "| ADE20K mIoU |" in head
    assert "ImageNet Paper Top-1" in head and "ADE20K Paper mIoU" in head
    row = md.splitlines()[4]
    assert "7-7-7-7" in row and "81.0" in row and "44.6" in row and f"{trial.final['miou']:.2f}" in row


def test_segmentation_resume_is_exact(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = _seg_config(make_seg_folder(tmp_path / "ade", n_train=4, n_val=2))
    config["recipe"].update(epochs=2, max_steps_per_epoch=3)
    states: list[dict[str, Any]] = []
    whole = train(config, report=lambda m, s: states.append(copy.deepcopy(s)), device="cpu", checkpoints=True)
    resumed = train(config, device="cpu", resume=states[0])
    assert resumed["resumed_after_epoch"] == 0
    for k in ("train_loss", "val_loss", "miou", "pixel_acc"):
        assert resumed[k] == whole[k], k
