"""init_from: fine-tune from another study's trial, named by id or by its axis values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ablate.artifacts import WEIGHTS, ArtifactStore
from ablate.models import build_model
from ablate.orchestrate import InitFromError, run_study
from ablate.trainer import load_pretrained
from conftest import tiny_study, write_study

pytestmark = pytest.mark.usefixtures("ray_session")  # one local Ray for the session


def test_completed_trials_leave_their_weights(ran_study: dict[str, Any]) -> None:
    for t in ran_study["store"].load("tiny").trials:
        files = ArtifactStore()
        state = files.load(files.path("tiny", t.trial_id, WEIGHTS))
        assert any(k.endswith("classifier.weight") for k in state)


def test_load_pretrained_keeps_a_new_head_fresh(tmp_path: Path) -> None:
    src = build_model({"name": "mobilenetv2_lk", "kwargs": {"width_mult": 0.1}}, 3, 3)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst = build_model({"name": "mobilenetv2_lk", "kwargs": {"width_mult": 0.1}}, 5, 3)
    skipped = load_pretrained(dst, str(tmp_path / "w.pt"))
    assert sorted(skipped) == ["classifier.bias", "classifier.weight"]
    assert torch.equal(dst.stem.conv.weight, src.stem.conv.weight)


def _ft(tmp_path: Path, root: Path, init_from: dict) -> Path:
    study = tiny_study("finetune", root, axes={"grid": {"model.kwargs.kernel_size": [3]}}, init_from=init_from)
    return write_study(tmp_path / "ft.yaml", study)


def test_fine_tune_from_a_trial_matched_by_axis_values(tmp_path: Path, ran_study: dict[str, Any],
                                                       image_folder: Path) -> None:
    store = ran_study["store"]
    f = _ft(tmp_path, image_folder, {"study": "tiny", "match": {"model.kwargs.kernel_size": 3, "seed": 1}})
    summary = run_study(f, store=store)
    assert summary.completed == 1
    t = store.load("finetune").trials[0]
    assert t.config["init_from"] == {"study": "tiny", "match": {"model.kwargs.kernel_size": 3, "seed": 1}}


@pytest.mark.parametrize("ref, message", [
    ({"study": "nope", "trial": "abc"}, "study 'nope' is not in"),
    ({"study": "tiny", "trial": "abc"}, "found 0"),
    ({"study": "tiny", "match": {"model.kwargs.kernel_size": 3}}, "found 2 (add seed to match)"),
])
def test_bad_references_fail_before_anything_runs(tmp_path: Path, ran_study: dict[str, Any], image_folder: Path,
                                                  ref: dict, message: str) -> None:
    store = ran_study["store"]
    before = store.counts()
    with pytest.raises(InitFromError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_study(_ft(tmp_path, image_folder, ref), store=store)
    assert store.counts() == before
