"""A segmentation trial is as durable as a classification one: `kill -9` of the `ablate run` driver
after an evaluation is stored, then a rerun on the same Ray resumes the trial from its checkpoint
(evaluations already stored are not trained again) and stores every evaluation exactly once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ablate.orchestrate import run_study
from ablate.seg_synth import make_seg_folder
from ablate.store import COMPLETED, Store
from conftest import write_study
from test_durable import _drive

pytestmark = pytest.mark.usefixtures("ray_session")

EVALS = 3
TINY = {"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64], "kernel_sizes": [7, 7, 7, 7]}


def _study(root: Path) -> dict[str, Any]:
    return {"name": "segdurable", "model": {"name": "convnext_lk_tiny", "task": "segmentation", "kwargs": TINY,
                                            "head": {"channels": 16, "aux_channels": 8}},
            "seeds": [0], "dataset": {"name": "ade20k", "root": str(root), "image_size": 32},
            "recipe": {"opt": "adamw", "lr": 2.0e-3, "weight_decay": 0.05, "epochs": EVALS, "max_steps_per_epoch": 4,
                       "batch_size": 4, "warmup_epochs": 0, "warmup_steps": 1, "amp": "none", "channels_last": False},
            "resources": {"cpus": 1, "gpus": 0}, "metric": {"name": "miou", "mode": "max"}}


def _evaluations(store: Store) -> int:
    try:
        rec = store.load("segdurable", history=True)
    except KeyError:
        return 0
    return max((len(t.history.get("miou", [])) for t in rec.trials), default=0)


def test_kill_9_of_the_driver_resumes_the_segmentation_trial(tmp_path: Path, ray_address: str) -> None:
    root = make_seg_folder(tmp_path / "ade", n_train=4, n_val=2, size=(32, 48))
    f = write_study(tmp_path / "s.yaml", _study(root))
    db, art = tmp_path / "r.db", tmp_path / "art"
    store, _ = _drive(f, db, art, lambda s: _evaluations(s) >= 1, lambda p, _: p.kill(), ray_address)
    before = store.load("segdurable", history=True).trials[0]
    assert before.status != COMPLETED, "killed too late to test anything"
    stored = len(before.history["miou"])
    assert run_study(f, store=store, artifacts=str(art)).completed == 1
    t = store.load("segdurable", history=True).trials[0]
    assert t.status == COMPLETED
    for metric in ("miou", "pixel_acc", "train_loss", "val_loss"):
        assert [e for e, _ in t.history[metric]] == list(range(EVALS)), f"{metric}: every evaluation stored once"
    resumed = t.history.get("resumed_after_epoch")
    assert resumed, "the segmentation trial started again from scratch instead of resuming"
    assert resumed[0][1] >= stored - 1  # the stored evaluations were not trained again
    assert t.final["iteration"] == EVALS * 4
