"""Durable trials with real Ray processes: `kill -9` of the driver mid-epoch, Ctrl-C (SIGINT), and
`kill -9` of the worker process training a trial. Each time the trial resumes from its last
completed epoch in the artifact store (epochs already stored are not trained again) and ends with
the same numbers as an uninterrupted run (CPU, fixed seeds)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from ablate.orchestrate import run_study
from ablate.store import COMPLETED, Store
from ablate.trial_state import COMPLETE
from conftest import kill_session, own_trial_workers, signal_each, tiny_study, write_study

pytestmark = pytest.mark.usefixtures("ray_session")

EPOCHS = 6  # a trial is frozen at most an epoch or two past those stored (see _drive): it cannot have ended
COMPARED = ("train_loss", "val_loss", "top1", "top5", "lr")


def _study(image_folder: Path, name: str, retries: int = 0) -> dict[str, Any]:
    s = tiny_study(name, image_folder, axes={"grid": {"model.kwargs.kernel_size": [5]}},
                   resources={"cpus": 1, "gpus": 0, "retries": retries})
    s["recipe"]["epochs"] = EPOCHS
    return s


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, image_folder: Path) -> dict[str, dict[int, dict[str, float]]]:
    """The uninterrupted run: per trial, per epoch, the compared metrics."""
    d = tmp_path_factory.mktemp("ref")
    f = write_study(d / "s.yaml", _study(image_folder, "durable"))
    store = Store(f"sqlite:///{d / 'ref.db'}")
    assert run_study(f, store=store, artifacts=str(d / "art")).completed == 1
    return _epochs(store, "durable")


def _epochs(store: Store, name: str) -> dict[str, dict[int, dict[str, float]]]:
    out: dict[str, dict[int, dict[str, float]]] = {}
    for t in store.load(name, history=True).trials:
        per = out.setdefault(t.trial_id, {})
        for metric, hist in t.history.items():
            for e, v in hist:
                per.setdefault(e, {})[metric] = v
    return out


def _drive(f: Path, db: Path, art: Path, until: Callable[[Store], bool], act: Callable[[subprocess.Popen, list[int]], None],
           address: str, timeout: float = 240, every: float = 0.3) -> tuple[Store, int | None]:
    """Start `ablate run` as its own process, joined to the session's Ray as to a cluster; wait until
    ``until(store)``, then ``act(driver, trial workers)``; returns the store and the driver's exit code
    (None if it had to be killed). The rerun is this process, on the same Ray.

    The trial's workers are frozen (SIGSTOP) while ``until`` is checked and stay frozen through
    ``act`` (they are thawed once the driver is gone): a trial reports each epoch and waits for the
    driver before the next, so it is where the database says (give or take an epoch) when ``act``
    comes, however slow the machine, instead of finishing between the check and the action."""
    env = dict(os.environ, ABLATE_ARTIFACTS=str(art))
    store = Store(f"sqlite:///{db}")  # the schema first: this test watches the database the driver writes
    proc = subprocess.Popen([sys.executable, "-m", "ablate.cli", "run", str(f), "--db", f"sqlite:///{db}",
                             "--address", address],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    code, frozen = None, []
    try:
        deadline = time.monotonic() + timeout
        while True:
            frozen = own_trial_workers()
            signal_each(frozen, signal.SIGSTOP)
            if until(store):
                break
            signal_each(frozen, signal.SIGCONT)
            if proc.poll() is not None:
                raise AssertionError(f"driver ended early: {proc.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, f"condition not reached within {timeout} s"
            time.sleep(every)
        assert frozen, "no Ray worker holding the trial was found"
        assert not list(art.rglob(COMPLETE)), "the trial had ended before its worker was frozen"
        act(proc, frozen)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            code = None
    finally:
        kill_session(proc.pid)
        proc.wait(timeout=30)
        signal_each(frozen, signal.SIGCONT)  # Ray ends the workers of a job that is gone
    return store, code


def _epochs_stored(store: Store, name: str, n: int = 1) -> bool:
    try:
        rec = store.load(name, history=True)
    except KeyError:
        return False
    return any(len(t.history.get("top1", [])) >= n for t in rec.trials)


def _check_resumed(store: Store, name: str, reference: dict[str, dict[int, dict[str, float]]]) -> None:
    rec = store.load(name, history=True)
    assert [t.status for t in rec.trials] == [COMPLETED]
    t = rec.trials[0]
    assert [e for e, _ in t.history["top1"]] == list(range(EPOCHS)), "every epoch stored exactly once"
    resumed = t.history.get("resumed_after_epoch")
    assert resumed and resumed[0][1] >= 0, "the trial started again from scratch instead of resuming"
    got = _epochs(store, name)[t.trial_id]
    want = reference[t.trial_id]
    for e in range(EPOCHS):
        for k in COMPARED:
            assert got[e][k] == want[e][k], (e, k, got[e][k], want[e][k])  # bit-identical


def test_kill_9_of_the_driver_mid_epoch_resumes_from_the_last_epoch(tmp_path: Path, image_folder: Path,
                                                                    reference: dict, ray_address: str) -> None:
    f = write_study(tmp_path / "s.yaml", _study(image_folder, "durable"))
    db, art = tmp_path / "r.db", tmp_path / "art"
    store, _ = _drive(f, db, art, lambda s: _epochs_stored(s, "durable", 2), lambda p, _: p.kill(), ray_address)
    before = store.load("durable", history=True).trials[0]
    assert before.status != COMPLETED
    stored = len(before.history["top1"])
    assert 2 <= stored < EPOCHS
    run_study(f, store=store, artifacts=str(art))
    _check_resumed(store, "durable", reference)
    resumed_after = store.load("durable", history=True).trials[0].history["resumed_after_epoch"][0][1]
    assert resumed_after >= stored - 1  # the stored epochs were not trained again


def test_ctrl_c_marks_interrupted_and_the_rerun_resumes(tmp_path: Path, image_folder: Path, reference: dict,
                                                        ray_address: str) -> None:
    """The worker is frozen when Ctrl-C arrives (see _drive), so the trial is certainly unfinished
    however slow the machine; Tune gives up on stopping it gracefully and kills it."""
    f = write_study(tmp_path / "s.yaml", _study(image_folder, "durable"))
    db, art = tmp_path / "r.db", tmp_path / "art"
    store, code = _drive(f, db, art, lambda s: _epochs_stored(s, "durable", 1),
                         lambda p, _: p.send_signal(signal.SIGINT), ray_address)
    t = store.load("durable", history=True).trials[0]
    assert t.status == "interrupted", t.status  # its own status, not "failed"
    assert code == 130, code
    stored = len(t.history["top1"])
    assert 0 < stored < EPOCHS
    run_study(f, store=store, artifacts=str(art))
    _check_resumed(store, "durable", reference)


def test_kill_9_of_the_worker_is_retried_from_its_checkpoint(tmp_path: Path, image_folder: Path,
                                                             reference: dict, ray_address: str) -> None:
    f = write_study(tmp_path / "s.yaml", _study(image_folder, "durable", retries=1))
    db, art = tmp_path / "r.db", tmp_path / "art"
    store, code = _drive(f, db, art, lambda s: _epochs_stored(s, "durable", 1),
                         lambda p, workers: signal_each(workers, signal.SIGKILL), ray_address)
    assert code == 0, "the driver should finish the study itself after Ray's retry"
    _check_resumed(store, "durable", reference)
