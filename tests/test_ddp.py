"""One trial on several workers: Ray Train's TorchTrainer (DDP, gloo on CPU) inside the Tune trial."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.expand import expand
from ablate.orchestrate import run_study
from ablate.store import COMPLETED, Store
from ablate.study import load_study
from conftest import tiny_study, write_study

pytestmark = pytest.mark.usefixtures("ray_session")  # one local Ray for the session


def test_two_gloo_workers_train_one_trial(tmp_path: Path, image_folder: Path) -> None:
    study = tiny_study("ddp", image_folder, axes={"grid": {"model.kwargs.kernel_size": [3]}},
                       resources={"cpus": 1, "gpus": 0, "workers": 2})
    study["recipe"].update(epochs=2, gpus=4)  # the recipe wants 4 devices: 2 workers accumulate 2 steps
    f = write_study(tmp_path / "ddp.yaml", study)
    assert expand(load_study(f), f)[0].config["recipe"]["accum_steps"] == 2
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    summary = run_study(f, store=store)
    t = store.load("ddp", history=True).trials[0]
    assert summary.completed == 1, t.error
    assert t.status == COMPLETED
    assert t.history["world_size"] == [(0, 2.0), (1, 2.0)]  # torch.distributed saw two ranks
    assert [e for e, _ in t.history["top1"]] == [0, 1]
