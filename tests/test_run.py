"""Real Ray end to end: a study into SQLite, its table, skip-on-rerun without duplicate rows,
failures kept with their error, and a driver killed mid-run whose rerun finishes what is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typing import Any

from ablate.orchestrate import run_study
from ablate.store import COMPLETED, FAILED, Store
from ablate.tables import render
from conftest import kill_session, tiny_study, write_study

pytestmark = pytest.mark.usefixtures("ray_session")  # one local Ray for the session


def test_study_runs_on_ray_into_sqlite(ran_study: dict[str, Any]) -> None:
    s = ran_study["summary"]
    assert (s.total, s.skipped, s.ran, s.completed, s.failed) == (4, 0, 4, 4, 0)
    rec = ran_study["store"].load("tiny", history=True)
    assert {t.status for t in rec.trials} == {COMPLETED}
    for t in rec.trials:
        assert {"top1", "top5", "train_loss", "val_loss", "lr", "img_per_s"} <= set(t.final)
        assert 0 <= t.final["top1"] <= 100 and t.n_params and t.flops
        assert t.started_at is not None and t.ended_at is not None and t.ended_at >= t.started_at
    assert len(rec.trials) == 4  # (other tests add studies to this shared database)


def test_table_from_the_database_has_mean_and_std_over_seeds(ran_study: dict[str, Any]) -> None:
    md = render(ran_study["store"].load("tiny"), "md")
    rows = [line for line in md.splitlines() if line.startswith("| 3x3") or line.startswith("| 5x5")]
    assert len(rows) == 2, md
    assert all("±" in r and "2/2" in r for r in rows), md
    csv = render(ran_study["store"].load("tiny"), "csv")
    assert "Kernel" in csv.splitlines()[0].split(",") and len(csv.splitlines()) == 3  # header + one row per arm
    assert r"\toprule" in render(ran_study["store"].load("tiny"), "latex")


def test_rerun_skips_completed_trials_and_writes_no_duplicates(ran_study: dict[str, Any]) -> None:
    store: Store = ran_study["store"]
    before = store.counts()
    again = run_study(ran_study["file"], store=store)
    assert (again.skipped, again.ran, again.completed) == (4, 0, 4)
    assert store.counts() == before


def test_failed_trial_keeps_its_error_and_rerun_redoes_only_it(tmp_path: Path, image_folder: Path) -> None:
    # a failure plan cannot foresee (an unknown optimizer is now refused at plan): the loss diverges
    f = write_study(tmp_path / "f.yaml", tiny_study("fails", image_folder, axes={"grid": {"recipe.lr": [0.05, 1.0e+30]}}))
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    first = run_study(f, store=store)
    assert (first.completed, first.failed) == (1, 1)
    by_lr = {t.config["recipe"]["lr"]: t for t in store.load("fails").trials}
    assert by_lr[0.05].status == COMPLETED
    assert by_lr[1.0e+30].status == FAILED and "lower recipe.lr" in by_lr[1.0e+30].error
    metrics = store.counts()["metrics"]
    second = run_study(f, store=store)
    assert (second.skipped, second.ran, second.failed) == (1, 1, 1)
    assert store.counts()["metrics"] == metrics and store.counts()["trials"] == 2




def test_driver_killed_mid_run_then_rerun_finishes_only_what_is_missing(tmp_path: Path, image_folder: Path) -> None:
    study = tiny_study("killed", image_folder, axes={"grid": {"model.kwargs.kernel_size": [3, 5, 7]}})
    study["recipe"]["epochs"] = 4
    f = write_study(tmp_path / "k.yaml", study)
    db = tmp_path / "r.db"
    proc = subprocess.Popen([sys.executable, "-m", "ablate.cli", "run", str(f), "--db", f"sqlite:///{db}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    store = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # wait until some trial has reported an epoch
            if db.exists():
                store = store or Store(f"sqlite:///{db}")
                if store.counts()["metrics"] > 0:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("no metrics within 180 s")
    finally:
        kill_session(proc.pid)
        proc.wait(timeout=30)
    assert store is not None
    killed = store.load("killed")
    assert any(t.status != COMPLETED for t in killed.trials), "killed too late to test anything"
    done_before = {t.trial_id: t.ended_at for t in killed.trials if t.status == COMPLETED}

    summary = run_study(f, store=store)
    assert summary.completed == 3 and summary.skipped == len(done_before)
    after = store.load("killed", history=True)
    for t in after.trials:
        assert t.status == COMPLETED
        assert [e for e, _ in t.history["top1"]] == [0, 1, 2, 3]  # every epoch once: no duplicates
        if t.trial_id in done_before:
            assert t.ended_at == done_before[t.trial_id]  # not rerun
    rows = sum(len(h) for t in after.trials for h in t.history.values())
    assert store.counts()["metrics"] == rows
    assert all(len({e for e, _ in h}) == len(h) for t in after.trials for h in t.history.values())
