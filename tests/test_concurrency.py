"""Several drivers and processes on one database, with real processes (SQLite and PostgreSQL):
schema creation and registration races, two studies side by side on one SQLite file, two
`ablate run` of one study started together, and a second driver that takes over the trials of
a first one killed with SIGKILL. Every case ends with every trial trained once and nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ablate.artifacts import ArtifactStore
from ablate.store import COMPLETED, Store
from ablate.trial_state import COMPLETE, HISTORY_KEY
from conftest import kill_session, own_trial_workers, signal_each, tiny_study, write_study

ABLATE = [sys.executable, "-m", "ablate.cli"]
ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A driver's environment: its own state folder and artifact store (trial ids are content hashes, so
    a study run again under the session's shared ABLATE_ARTIFACTS would find its trials complete there)."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               ABLATE_STATE_DIR=str(tmp_path / "state"), ABLATE_LEASE_S="3", ABLATE_ARTIFACTS=str(tmp_path / "art"))
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


# The race tests load ablate/store.py by itself: `import ablate` loads torch and timm (15 s of CPU
# per process on a busy 2-core machine), which the store does not need.
LOAD_STORE = textwrap.dedent(f"""
    import importlib.util, os, sys, time
    spec = importlib.util.spec_from_file_location("ablate_store", {str(ROOT / "ablate" / "store.py")!r})
    store_mod = importlib.util.module_from_spec(spec)
    sys.modules["ablate_store"] = store_mod
    spec.loader.exec_module(store_mod)
    Store = store_mod.Store
""")

REGISTER = LOAD_STORE + textwrap.dedent("""
    url, name, barrier, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    open(os.path.join(barrier, name), "w").close()
    while len(os.listdir(barrier)) < n:  # all processes hit the fresh database at once
        time.sleep(0.01)
    s = Store(url)
    trials = [{"trial_id": f"t{i}", "params": {}, "config": {}, "seed": 0, "n_params": 1, "flops": 1} for i in range(5)]
    s.register(name, "", {"name": name}, trials)
    s.register("shared", "", {"name": "shared"}, trials)
    print("ok")
""")


def test_many_processes_create_the_schema_and_register_at_once(db_url: str, tmp_path: Path) -> None:
    n = 6
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", REGISTER, db_url, f"study{i}", str(barrier), str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
             for i in range(n)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [e[-800:] for _, e in outs]
    store = Store(db_url, create=False)
    assert store.counts() == {"studies": n + 1, "trials": 5 * (n + 1), "metrics": 0}
    store.close()


SIDE_BY_SIDE = LOAD_STORE + textwrap.dedent("""
    url, name = sys.argv[1], sys.argv[2]
    s = Store(url)
    s.register(name, "", {}, [{"trial_id": f"t{i}", "params": {}, "config": {}, "seed": 0} for i in range(4)])
    owner = f"x:{name}:0"
    for i in range(4):
        assert s.claim(name, [f"t{i}"], owner, 30) == [f"t{i}"]
        s.start(name, f"t{i}", owner)
        for epoch in range(40):
            s.add_metrics(name, f"t{i}", epoch, {"top1": float(epoch), "loss": 1.0 / (epoch + 1)})
            s.renew(owner, 30)
        s.finish(name, f"t{i}")
    s.release(owner)
""")


def test_two_studies_side_by_side_on_one_sqlite_file_never_see_database_is_locked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'two.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", SIDE_BY_SIDE, url, name], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env(tmp_path)) for name in ("a", "b", "c")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-800:] for _, e in outs]
    assert not any("locked" in e for _, e in outs)
    store = Store(url, create=False)
    assert store.counts() == {"studies": 3, "trials": 12, "metrics": 3 * 4 * 40 * 2}


# -- real `ablate run` drivers ------------------------------------------------------------------
def _study(tmp_path: Path, image_folder: Path, name: str, epochs: int = 2) -> Path:
    study = tiny_study(name, image_folder, axes={"grid": {"model.kwargs.kernel_size": [3, 5, 7]}})
    study["recipe"]["epochs"] = epochs
    if epochs > 4:  # lr 0.05 diverges over many epochs of the tiny net
        study["recipe"]["lr"] = 0.005
    return write_study(tmp_path / f"{name}.yaml", study)


def _driver(f: Path, url: str, tmp_path: Path, log: str, address: str) -> subprocess.Popen:
    """A real `ablate run` in its own process, joining the test session's Ray as a cluster."""
    return subprocess.Popen(ABLATE + ["run", str(f), "--db", url, "--address", address], stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / log, "w"), env=_env(tmp_path), start_new_session=True)




def _assert_trained_once(store: Store, name: str, epochs: int) -> None:
    rec = store.load(name, history=True)
    assert len(rec.trials) == 3
    for t in rec.trials:
        assert t.status == COMPLETED, (t.trial_id, t.status, t.error)
        for metric in ("top1", "train_loss"):  # reported every epoch: each epoch once
            assert [e for e, _ in t.history[metric]] == list(range(epochs)), (t.trial_id, metric, t.history)
    states = store.trial_states(name)
    assert all(st.claimed_by is None for st in states.values())  # every claim released


def test_two_drivers_started_together_train_each_trial_once(db_url: str, tmp_path: Path, image_folder: Path,
                                                           ray_address: str) -> None:
    f = _study(tmp_path, image_folder, "together")
    Store(db_url).close()  # the schema exists; registration still races
    procs = [_driver(f, db_url, tmp_path, f"d{i}.log", ray_address) for i in range(2)]
    try:
        for p in procs:
            p.wait(timeout=420)
    finally:
        for p in procs:
            kill_session(p.pid)
    logs = [(tmp_path / f"d{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p in procs] == [0, 0], [x[-1500:] for x in logs]
    store = Store(db_url, create=False)
    _assert_trained_once(store, "together", 2)
    assert [t.attempts for t in store.load("together").trials] == [1, 1, 1]  # nobody trained a trial twice
    ran = [int(x.split(" run now")[0].rsplit(" ", 1)[1]) for x in logs]
    assert sum(ran) == 3, logs


EPOCHS_TAKEOVER = 3


def _until(what: str, cond, proc: subprocess.Popen, log: Path, timeout: float = 240, every: float = 0.1) -> None:
    """Poll ``cond()`` (database errors count as not yet) while ``proc`` lives."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return
        except Exception:  # the database or the study is not there yet
            pass
        assert time.monotonic() < deadline and proc.poll() is None, f"{what}: {log.name}: {log.read_text()[-2000:]}"
        time.sleep(every)


def _freeze(proc: subprocess.Popen, db: Path) -> None:
    """SIGSTOP ``proc``, never while it holds SQLite's write lock (a frozen writer would block the
    other driver's writes): if the lock is taken, let it run a moment and try again."""
    import sqlite3

    for _ in range(200):
        os.kill(proc.pid, signal.SIGSTOP)
        con = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # locked: the frozen driver is mid-write
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            con.close()
    raise AssertionError("the first driver always held the write lock")


def _checkpointed(arts: ArtifactStore, study: str, trials) -> dict[str, list[dict[str, float]]]:
    """Per trial with a checkpoint and not finished, the epochs in its latest checkpoint."""
    out = {}
    for tid in trials:
        ckpt = None if arts.exists(arts.path(study, tid, COMPLETE)) else arts.latest_checkpoint(study, tid)
        if ckpt is not None:
            out[tid] = list(ckpt.state[HISTORY_KEY])
    return out


def _frozen_when(what: str, cond, proc: subprocess.Popen, db: Path, log: Path, timeout: float = 240) -> None:
    """Poll ``cond()`` with ``proc`` frozen (see _freeze) and return it frozen once it holds: the run
    is where the database says, however slow the machine, not a few trials further."""
    deadline = time.monotonic() + timeout
    while True:
        _freeze(proc, db)
        try:
            if cond():
                return
        except Exception:  # the study is not there yet
            pass
        os.kill(proc.pid, signal.SIGCONT)
        assert time.monotonic() < deadline and proc.poll() is None, f"{what}: {log.name}: {log.read_text()[-2000:]}"
        time.sleep(0.2)


def test_second_driver_waits_then_takes_over_from_a_killed_first(tmp_path: Path, image_folder: Path,
                                                                 ray_address: str) -> None:
    """Staggered: the second driver starts once the first holds every trial (SQLite here; the claim
    logic is the same SQL on PostgreSQL, which the started-together test covers with real drivers).

    The first is frozen (SIGSTOP) once it has completed a trial, so that it is certainly mid-run, alive
    and holding its claims however long the second takes to start (its lease outlasts that start-up);
    then, with the second waiting for it, it is killed with SIGKILL and the second takes over, resuming
    each unfinished trial from the last checkpoint the first left (not from scratch)."""
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    f = _study(tmp_path, image_folder, "takeover", epochs=EPOCHS_TAKEOVER)
    log1, log2 = tmp_path / "first.log", tmp_path / "second.log"
    first = subprocess.Popen(ABLATE + ["run", str(f), "--db", db_url, "--address", ray_address],
                             stdout=subprocess.DEVNULL, stderr=open(log1, "w"),
                             env=_env(tmp_path, ABLATE_LEASE_S="600"), start_new_session=True)
    second = None
    store = Store(db_url)
    try:
        _until("the first claims every trial", lambda: all(st.claimed_by for st in store.trial_states("takeover").values()) and
               len(store.trial_states("takeover")) == 3, first, log1)
        second = _driver(f, db_url, tmp_path, "second.log", ray_address)  # registers while the first trains
        arts = ArtifactStore(str(tmp_path / "art"))  # both drivers' (_env)

        def one_done_one_checkpointed() -> bool:
            status = {t.trial_id: t.status for t in store.load("takeover").trials}
            return COMPLETED in status.values() and any(s != COMPLETED and arts.checkpoints("takeover", tid)
                                                        for tid, s in status.items())

        _frozen_when("the first completes a trial and checkpoints another", one_done_one_checkpointed,
                     first, tmp_path / "shared.db", log1)  # alive, holding its leases, training nothing
        before = {t.trial_id: (t.status, t.ended_at, t.history) for t in store.load("takeover", history=True).trials}
        assert any(s == COMPLETED for s, _, _ in before.values()) and any(s != COMPLETED for s, _, _ in before.values())
        _until("the second waits for the first", lambda: "running under another driver" in log2.read_text(), second, log2, every=0.2)
        time.sleep(1)  # a few claim polls (lease 3 s: every 0.75 s) with the first alive: it only waits
        assert second.poll() is None and not any(
            st.claimed_by and st.claimed_by.split(":")[1] == str(second.pid)
            for st in store.trial_states("takeover").values()), "the second took trials of a live driver"
        # the first driver's trial workers go with it, frozen first: what they left is final
        trainers = own_trial_workers()  # the second holds no trial: they are the first's
        signal_each(trainers, signal.SIGSTOP)
        held = _checkpointed(arts, "takeover", before)
        assert held, "no unfinished trial had a checkpoint to resume from"
        signal_each(trainers, signal.SIGKILL)
        kill_session(first.pid)
        first.wait(timeout=30)
        second.wait(timeout=420)
    finally:
        for p in (first, second):
            if p is not None:
                kill_session(p.pid)
    out2 = log2.read_text()
    assert second.returncode == 0, out2[-2000:]
    summary = [x for x in out2.splitlines() if x.startswith("3 trials:")]
    assert summary and "running under another driver" in summary[0], out2[-2000:]
    _assert_trained_once(store, "takeover", EPOCHS_TAKEOVER)
    after = {t.trial_id: t for t in store.load("takeover", history=True).trials}
    for tid, (status, ended, hist) in before.items():
        if status == COMPLETED:  # finished by the first driver: kept exactly, not trained again
            assert after[tid].ended_at == ended and after[tid].history == hist and after[tid].attempts == 1
        elif tid in held:  # taken over mid-trial: its checkpointed epochs are the first's, not trained again
            done = held[tid]
            got = after[tid].history
            for m in ("train_loss", "epoch_time_s"):  # a wall time: equal only if it is the same run's
                assert got[m][:len(done)] == [(int(e["epoch"]), e[m]) for e in done], (tid, m, got[m], done)
            if len(done) < EPOCHS_TAKEOVER:  # ...and training resumed after them
                assert got.get("resumed_after_epoch") == [(len(done), len(done) - 1.0)], (tid, got)
            else:  # every epoch was checkpointed: nothing to train again
                assert "resumed_after_epoch" not in got, (tid, got)
