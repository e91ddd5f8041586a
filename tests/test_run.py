"""Real Ray end to end: a study into SQLite, its table, skip-on-rerun without duplicate rows,
failures kept with their error. (A driver killed mid-run: tests/test_durable.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typing import Any

from ablate.orchestrate import run_study
from ablate.store import COMPLETED, FAILED, Store
from ablate.tables import render
from conftest import tiny_study, write_study

pytestmark = pytest.mark.usefixtures("ray_session")  # one local Ray for the session


def test_study_runs_on_ray_into_sqlite(ran_study: dict[str, Any]) -> None:
    s = ran_study["summary"]
    assert (s.total, s.skipped, s.ran, s.completed, s.failed) == (4, 0, 4, 4, 0)
    assert s.own_ray is False  # it ran on the session's Ray, already up: nothing started for it
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
    assert "kernel" in csv.splitlines()[0].split(",") and len(csv.splitlines()) == 3  # header (snake_case) + one row per arm
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


def test_local_ray_workers_run_at_the_drivers_priority() -> None:
    """Ray runs its workers 15 nice levels below the process that started it unless told otherwise; a local
    Ray's trials would then wait behind any other work on the machine (issue 12: measured under load, 1.9 s
    per trial against the plain loop's 0.8 s at the same CPU time). ablate's local Ray tells it otherwise."""
    import os

    import ray

    assert ray.get(ray.remote(lambda: os.nice(0)).remote(), timeout=120) == os.nice(0)


def test_local_ray_starts_no_autoscaler_or_log_monitor() -> None:
    """A local Ray of ablate is one node whose drivers print no worker output: Ray's autoscaler monitor and
    its log monitor would only take CPU from the trials (issue 12, bench/local_ray_start.py: with them, Ray's
    processes took 6.6 CPU s against 5.2, and ``ray.shutdown`` 1.5 s against 0.4). The node's own record of
    what it started shows neither."""
    import ray
    from ray._private import ray_constants

    started = set(ray._private.worker._global_node.all_processes)
    assert {ray_constants.PROCESS_TYPE_GCS_SERVER, ray_constants.PROCESS_TYPE_RAYLET} <= started, started
    assert not started & {ray_constants.PROCESS_TYPE_MONITOR, ray_constants.PROCESS_TYPE_LOG_MONITOR}, started
    # and the patch that leaves them out is gone once Ray is up: a later node (a cluster's) is Ray's default
    from ray._private.parameter import RayParams

    params = RayParams()
    assert params.no_monitor is False and params.include_log_monitor is None
    from ray._private import services

    assert "prompt_node_registration" not in services.get_node.__qualname__  # nor the node-registration poll


def test_a_local_start_asks_ray_for_its_node_once_the_node_has_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray 2.60's node start asks the GCS for its raylet's record once and, if it is not there yet, sleeps a
    whole second before asking again (~0.5 s of every local start spent waiting: docs/performance.md).
    ``prompt_node_registration`` reads the node table until the record is there, then lets Ray ask; a node
    that never shows is left to Ray's own call after the patience runs out; and Ray's function is back after."""
    import time

    import ray
    from ray._private import services

    from ablate import _local_ray

    asked: list[tuple[str, str, float]] = []
    monkeypatch.setattr(services, "get_node", lambda gcs, node: asked.append((gcs, node, time.monotonic())) or "ray's")
    ctx = ray.get_runtime_context()
    gcs, registered = ctx.gcs_address, ctx.get_node_id()
    unknown = ray.NodeID.from_random().hex()
    with _local_ray.prompt_node_registration(poll_s=0.01, patience_s=0.5):
        assert services.get_node(gcs, registered) == "ray's"
        t0 = time.monotonic()
        assert services.get_node(gcs, unknown) == "ray's"  # not there: Ray's call still decides
        waited = time.monotonic() - t0
    assert [a[:2] for a in asked] == [(gcs, registered), (gcs, unknown)]
    assert 0.5 <= waited < 10, waited  # it looked for the record for its patience, then asked
    assert services.get_node(gcs, registered) == "ray's" and services.get_node.__name__ == "<lambda>"  # restored


def test_a_short_run_with_its_own_ray_tells_of_ray_up(tmp_path: Path, image_folder: Path) -> None:
    """`ablate run` as a user first types it, in a process of its own: a local Ray started for the run and
    stopped after it, the study stored, and (the run being short) a line saying that `ablate ray up` keeps a
    Ray for the next runs. The rerun has nothing to train, starts no Ray and says nothing of it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # no address, not the session's token
    env["ABLATE_STATE_DIR"] = str(tmp_path / "state")  # no `ablate ray up` head recorded there
    f = write_study(tmp_path / "s.yaml", tiny_study("own", image_folder, axes={"grid": {}}, model={
        "name": "mobilenetv2_lk", "kwargs": {"width_mult": 0.1, "kernel_size": 3}}))
    db = f"sqlite:///{tmp_path / 'r.db'}"
    cmd = [sys.executable, "-m", "ablate.cli", "run", str(f), "--db", db]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "tip: this run started a Ray of its own" in r.stderr and "`ablate ray up` keeps one" in r.stderr, r.stderr
    assert [t.status for t in Store(db).load("own").trials] == [COMPLETED]
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "1 already completed, 0 run now" in again.stderr, again.stderr[-2000:]
    assert "tip:" not in again.stderr
