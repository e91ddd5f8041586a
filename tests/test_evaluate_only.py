"""``recipe.epochs: 0``: a study evaluates and keeps weights trained elsewhere (Table 10's released
checkpoints) without training them, so its analyses can run; without weights it is a study error."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import ablate.models  # noqa: F401 - registers ablate's models
from ablate.artifacts import ArtifactStore
from ablate.orchestrate import run_study
from ablate.store import COMPLETED, Store
from ablate.study import StudyError, load_study
from conftest import tiny_study, write_study

KWARGS = {"width_mult": 0.1, "kernel_size": 3}


def _study(root: Path, **model_kwargs) -> dict:
    s = tiny_study("evalonly", root, recipe={"epochs": 0, "batch_size": 8, "lr": 0.05, "warmup_epochs": 0})
    s["model"] = {"name": "mobilenetv2_lk", "kwargs": {**KWARGS, **model_kwargs}}
    s["axes"] = {"grid": {"model.kwargs.kernel_size": [3]}}
    return s


def test_epochs_0_evaluates_the_given_weights_and_keeps_them(tmp_path: Path, image_folder: Path,
                                                             ray_session: None) -> None:
    torch.manual_seed(7)
    trained_elsewhere = timm.create_model("mobilenetv2_lk", num_classes=3, in_chans=3, **KWARGS)
    ckpt = tmp_path / "released.pt"
    torch.save(trained_elsewhere.state_dict(), ckpt)
    f = write_study(tmp_path / "s.yaml", _study(image_folder, pretrained=True,
                                                 pretrained_cfg_overlay={"file": str(ckpt)}))
    store, art = Store(f"sqlite:///{tmp_path / 'r.db'}"), tmp_path / "art"
    assert run_study(f, store=store, artifacts=str(art)).completed == 1
    t = store.load("evalonly", history=True).trials[0]
    assert t.status == COMPLETED and [e for e, _ in t.history["top1"]] == [0], "one evaluation, no training"
    assert "train_loss" not in t.history
    kept = ArtifactStore(str(art)).load(ArtifactStore(str(art)).path("evalonly", t.trial_id, "model.pt"))
    want = trained_elsewhere.state_dict()
    assert kept.keys() == want.keys() and all(torch.equal(kept[k], want[k]) for k in want), \
        "the final weights are the imported ones, untouched"
    again = run_study(f, store=store, artifacts=str(art))
    assert (again.skipped, again.ran) == (1, 0)  # done: nothing to rerun


def test_epochs_0_without_weights_is_a_study_error(tmp_path: Path, image_folder: Path) -> None:
    f = write_study(tmp_path / "s.yaml", _study(image_folder))
    with pytest.raises(StudyError, match=r"recipe\.epochs.*weights to evaluate"):
        load_study(f)
