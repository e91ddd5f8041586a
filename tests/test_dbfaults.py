"""Database faults: a bad, unreachable, foreign or read-only database is one line and exit 2 with
the password masked and nothing created; `run` on a read-only database whose trials are all
complete prints the table; results written while PostgreSQL is stopped wait in a local journal
and reach the database once it is back (a real cluster stopped and started during a real run);
a dead driver's journal is replayed by the next run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.store import COMPLETED, Store
from ablate.trial_state import COMPLETE
from conftest import make_image_folder, signal_each, tiny_study, unprivileged_prefix, wait_for_epoch, write_study

ROOT = Path(__file__).resolve().parent.parent


def _one_line_exit_2(args: list[str], *secrets: str) -> str:
    r = CliRunner().invoke(app, args)
    msg = r.stderr.strip()
    assert r.exit_code == 2, (args, r.output, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert len(msg.splitlines()) <= 2 and "Traceback" not in r.output, msg  # one line (soft-wrapped at most)
    assert not any(s in r.output for s in secrets), msg
    return " ".join(msg.split())


@pytest.mark.parametrize("cmd", ["studies", "table", "export", "dashboard", "run"])
def test_missing_folder_is_an_error_and_nothing_is_created(tmp_path: Path, cmd: str, image_folder: Path) -> None:
    url = f"sqlite:///{tmp_path / 'typo' / 'dir' / 'x.db'}"
    args = {"studies": ["studies"], "table": ["table", "s"], "export": ["export", "s", "-o", str(tmp_path / "e.csv")],
            "dashboard": ["dashboard", "-o", str(tmp_path / "r.html")],
            "run": ["run", str(write_study(tmp_path / "s.yaml", tiny_study("s", image_folder)))]}[cmd]
    msg = _one_line_exit_2(args + ["--db", url])
    assert str(tmp_path / "typo" / "dir") in msg and "does not exist" in msg, msg
    assert not (tmp_path / "typo").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["s.yaml"])


def test_read_only_commands_never_create_a_database(tmp_path: Path) -> None:
    db = tmp_path / "missing.db"
    for args in (["studies"], ["table", "s"], ["export", "s", "-o", str(tmp_path / "e.csv")],
                 ["dashboard", "-o", str(tmp_path / "r.html")]):
        msg = _one_line_exit_2(args + ["--db", f"sqlite:///{db}"])
        assert "no such file" in msg and str(db) in msg
    assert list(tmp_path.iterdir()) == []
    empty = tmp_path / "empty.db"
    empty.touch()  # an empty file is an empty SQLite database
    assert "no ablate results" in _one_line_exit_2(["studies", "--db", f"sqlite:///{empty}"])
    assert empty.stat().st_size == 0 and [p.name for p in tmp_path.iterdir()] == ["empty.db"]  # no schema


def test_bad_files_schemes_and_foreign_databases(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all, just text" * 100)
    assert "not an SQLite database" in _one_line_exit_2(["studies", "--db", f"sqlite:///{junk}"])
    assert junk.read_bytes().startswith(b"this is not")
    assert "unknown database URL scheme" in _one_line_exit_2(["studies", "--db", "nosuchdb://u:pw@h/x"], "pw@")
    assert "not a database URL" in _one_line_exit_2(["studies", "--db", "::::"])
    import sqlite3

    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).executescript("CREATE TABLE invoices (id INTEGER PRIMARY KEY); INSERT INTO invoices VALUES (1);")
    for args in (["studies"], ["table", "x"]):
        msg = _one_line_exit_2(args + ["--db", f"sqlite:///{foreign}"])
        assert "not an ablate database" in msg and "invoices" in msg, msg
    assert [r[0] for r in sqlite3.connect(foreign).execute("SELECT name FROM sqlite_master")] == ["invoices"]


def test_unreachable_postgresql_is_one_line_with_the_password_masked() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    msg = _one_line_exit_2(["studies", "--db", f"postgresql://ablate:s3cret@127.0.0.1:{port}/x"], "s3cret")
    assert "unreachable" in msg and f"127.0.0.1:{port}" in msg and "***" in msg, msg


def test_wrong_password_and_missing_database(pg_url: str) -> None:
    from sqlalchemy.engine import make_url

    u = make_url(pg_url)
    wrong = u.set(password="not-the-password").render_as_string(hide_password=False)
    assert "wrong user name or password" in _one_line_exit_2(["studies", "--db", wrong], "not-the-password")
    missing = u.set(database="ablate_no_such_db").render_as_string(hide_password=False)
    assert "does not exist" in _one_line_exit_2(["studies", "--db", missing], f":{u.password}@")


# -- read-only database ------------------------------------------------------------------------
def test_run_on_a_read_only_database_with_every_trial_complete_prints_the_table() -> None:
    from ablate.orchestrate import register_plan
    from ablate.plan import make_plan

    d = Path(tempfile.mkdtemp(prefix="ablate-ro-"))
    try:
        imgs = make_image_folder(d / "imgs", n_train=2, n_val=1)
        f = write_study(d / "s.yaml", tiny_study("ro", imgs))
        url = f"sqlite:///{d / 'ro.db'}"
        store = Store(url)
        plan = make_plan(f)
        register_plan(store, plan)
        for p in plan.trials:
            store.start("ro", p.trial.id)
            store.add_metrics("ro", p.trial.id, 0, {"top1": 50.0 + p.trial.config["model"]["kwargs"]["kernel_size"]})
            store.finish("ro", p.trial.id)
        store.close()
        for x in [d, *d.rglob("*")]:
            x.chmod(0o555 if x.is_dir() else 0o444)  # the file and its folder
        before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
        env = dict(os.environ, PYTHONPATH=str(ROOT), ABLATE_STATE_DIR=str(d / "state"), HOME=str(d))
        r = subprocess.run(unprivileged_prefix() + [sys.executable, "-m", "ablate.cli", "run", str(f), "--db", url],
                           capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "2 already completed, 0 run now" in r.stderr and "| 3x3" in r.stdout and "53" in r.stdout, r.stdout
        assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before  # nothing written, nothing created
        # a read-only database with work to do: one line, exit 2
        (d / "ro.db").chmod(0o644)
        Store(url).rerun("ro", [plan.trials[0].trial.id])
        (d / "ro.db").chmod(0o444)
        for x in d.glob("ro.db-*"):
            x.chmod(0o444)
        r = subprocess.run(unprivileged_prefix() + [sys.executable, "-m", "ablate.cli", "run", str(f), "--db", url],
                           capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert "read-only" in r.stderr, r.stderr
    finally:
        for x in [d, *d.rglob("*")]:
            x.chmod(0o755)
        shutil.rmtree(d, ignore_errors=True)


# -- journal -----------------------------------------------------------------------------------
def test_a_dead_drivers_journal_is_replayed_by_the_next_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate.journal import journal_path, replay_leftovers

    monkeypatch.setenv("ABLATE_STATE_DIR", str(tmp_path / "state"))
    store = Store(f"sqlite:///{tmp_path / 'j.db'}")
    store.register("s", "", {}, [{"trial_id": t, "params": {}, "config": {}, "seed": 0} for t in ("a", "b")])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner = f"{socket.gethostname()}:{dead.pid}:0000"  # a driver of this host that is gone
    alive = f"{socket.gethostname()}:{os.getppid()}:1111"
    events = [("start", {"study": "s", "trial_id": "a", "owner": owner, "at": "2026-01-01T00:00:00+00:00"}),
              *[("add_metrics", {"study": "s", "trial_id": "a", "epoch": e, "values": {"top1": float(e)}})
                for e in range(3)],
              ("finish", {"study": "s", "trial_id": "a", "error": None, "error_kind": None})]
    for who in (owner, alive):
        p = journal_path(who)
        p.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"url": store.display_url, "owner": who, "event": ev, "args": a}) for ev, a in events]
        lines.insert(3, lines[2])  # an event written twice (a replay cut short): no harm
        p.write_text("\n".join(lines) + "\n{\"cut short")
    assert replay_leftovers(store) == 6
    assert not journal_path(owner).exists() and journal_path(alive).exists()  # a live driver's is its own
    t = {x.trial_id: x for x in store.load("s", history=True).trials}
    assert t["a"].status == COMPLETED and t["a"].history["top1"] == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert t["a"].attempts == 1 and t["b"].status == "pending"
    assert replay_leftovers(store) == 0


@pytest.fixture
def own_cluster(pg_url: str):
    """A PostgreSQL cluster of this test's own (the shared one serves other tests), stopped and
    started at will; dropped at the end."""
    if os.geteuid() != 0 or not shutil.which("pg_createcluster"):
        pytest.fail("ABLATE_TEST_PG is set but pg_createcluster (as root) is not available")
    ver = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(x) for x in v.split(".")])[-1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"abfault{os.getpid()}"
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True, text=True, timeout=120)  # noqa: E731
    run("pg_createcluster", ver, name, "-p", str(port), "--start", "--", "--auth-host=md5", "--auth-local=peer")
    try:
        psql = lambda q: run("su", "postgres", "-c", f'psql -p {port} -qtAX -c "{q}"')  # noqa: E731
        psql("CREATE ROLE ablate LOGIN PASSWORD 'ablate'")
        psql("CREATE DATABASE ablate_fault OWNER ablate")

        def ctl(action: str) -> None:
            run("pg_ctlcluster", ver, name, action, *(["-m", "fast"] if action == "stop" else []))
            if action == "start":
                for _ in range(60):
                    if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode == 0:
                        return
                    time.sleep(0.5)
                raise AssertionError("the test's PostgreSQL did not come back")

        yield f"postgresql://ablate:ablate@127.0.0.1:{port}/ablate_fault", ctl
    finally:
        subprocess.run(["pg_dropcluster", ver, name, "--stop"], capture_output=True, timeout=120)


def test_journaling_sink_keeps_results_while_postgresql_is_down(own_cluster, tmp_path: Path) -> None:
    from ablate.journal import JournalingSink

    url, ctl = own_cluster
    store = Store(url)
    store.register("s", "", {}, [{"trial_id": "a", "params": {}, "config": {}, "seed": 0}])
    sink = JournalingSink(store, path=tmp_path / "j.jsonl", backoff=(0.2, 1.0))
    sink.start("s", "a")
    sink.add_metrics("s", "a", 0, {"top1": 1.0})
    ctl("stop")
    sink.add_metrics("s", "a", 1, {"top1": 2.0})  # no exception: journaled
    sink.add_metrics("s", "a", 1, {"top1": 2.5})
    sink.finish("s", "a")
    assert sink.pending == 3 and sink.journaled == 3
    ctl("start")
    assert sink.close(timeout=30) == 0 and not (tmp_path / "j.jsonl").exists()
    t = store.load("s", history=True).trials[0]
    assert t.status == COMPLETED and t.history["top1"] == [(0, 1.0), (1, 2.5)] and t.attempts == 1
    assert store.counts()["metrics"] == 2


def _journaled_epochs(state: Path) -> int:
    """Epoch results waiting in the drivers' journals under ``state``."""
    n = 0
    for p in state.glob("journal-*"):
        try:
            n += p.read_text().count('"add_metrics"')
        except OSError:  # replayed and removed meanwhile
            pass
    return n


def test_postgresql_restarted_mid_run_loses_nothing(own_cluster, tmp_path: Path, image_folder: Path) -> None:
    """The trial workers are frozen from the first stored epoch until PostgreSQL is down, so epochs are
    certainly left to train (and be journaled) while it is, however slow the machine."""
    url, ctl = own_cluster
    study = tiny_study("pgdown", image_folder)
    study["recipe"]["epochs"] = 4
    f = write_study(tmp_path / "s.yaml", study)
    art = tmp_path / "art"
    env = dict(os.environ, PYTHONPATH=str(ROOT), ABLATE_STATE_DIR=str(tmp_path / "state"), ABLATE_LEASE_S="30",
               ABLATE_ARTIFACTS=str(art))
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "driver.log"
    proc = subprocess.Popen([sys.executable, "-m", "ablate.cli", "run", str(f), "--db", url],
                            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env=env, start_new_session=True)
    frozen: list[int] = []
    try:
        store, frozen = wait_for_epoch(url, log, freeze_session=proc.pid)
        store.close()
        assert frozen and len(list(art.rglob(COMPLETE))) < 2, "both trials had ended before their workers froze"
        ctl("stop")
        signal_each(frozen, signal.SIGCONT)
        deadline = time.monotonic() + 120
        while not _journaled_epochs(tmp_path / "state"):
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2500:]
            time.sleep(0.2)  # training goes on; its epochs go to the journal
        ctl("start")
        out, _ = proc.communicate(timeout=400)
    finally:
        signal_each(frozen, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
    err = log.read_text()
    assert proc.returncode == 0, err[-2500:]
    assert "waited in a local journal" in err and "all written since" in err, err[-2500:]
    store = Store(url, create=False)
    rec = store.load("pgdown", history=True)
    for t in rec.trials:
        assert t.status == COMPLETED and t.attempts == 1, (t.trial_id, t.status, t.error)
        assert [e for e, _ in t.history["top1"]] == [0, 1, 2, 3]
    assert "| 3x3" in out
    assert not list((tmp_path / "state").glob("journal-*"))
