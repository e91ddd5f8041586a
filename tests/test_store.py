"""The result database on SQLite and on a real PostgreSQL: schema by migration (0001 -> 0002
carries old rows over), registration, skip-on-rerun bookkeeping, resumed trials keep their
epochs, completed results are append-only (only rerun replaces them, keeping the old attempt),
failures keep their error, claims with a lease."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import drop_schema
from sqlalchemy import text

from ablate.store import (COMPLETED, FAILED, INTERRUPTED, PENDING, RUNNING, TRANSIENT, Base, Store,
                          _alembic_config, head_revision, known_revisions)


@pytest.fixture
def store(db_url: str) -> Store:
    s = Store(db_url)
    yield s
    s.close()


def _trials(n: int = 3) -> list[dict]:
    return [{"trial_id": f"t{i}", "params": {"k": i, "seed": 0}, "config": {"model": {"name": "m"}, "seed": 0},
             "seed": 0, "n_params": 1000 + i, "flops": 10**9 + i} for i in range(n)]


def _schema(engine: Any) -> dict[str, Any]:
    """The database's schema as the server states it, names included: SQLite's own CREATE statements
    (whitespace collapsed); PostgreSQL's columns, constraint and index definitions from its catalog."""
    with engine.connect() as c:
        if c.dialect.name == "sqlite":
            return {(kind, name): " ".join((sql or "").split()) for kind, name, sql in
                    c.execute(text("SELECT type, name, sql FROM sqlite_master"))}
        cols = c.execute(text("SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, "
                              "column_default FROM information_schema.columns WHERE table_schema = 'public'"))
        cons = c.execute(text("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                              "WHERE connamespace = 'public'::regnamespace"))
        idx = c.execute(text("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"))
        return {"columns": sorted(map(tuple, cols)), "constraints": sorted(map(tuple, cons)),
                "indexes": sorted(map(tuple, idx))}


def _empty_again(url: str) -> str:
    """The same kind of database, empty: a new SQLite file beside the first, or the PostgreSQL emptied."""
    if url.startswith("sqlite"):
        return url.replace("test.db", "again.db")
    drop_schema(url)
    return url


def test_an_empty_database_gets_the_migrations_schema_in_one_step(db_url: str) -> None:
    """A new database is made at the head revision from the ORM (no alembic: ~0.4 s of a first run);
    it must be the very schema that running every migration makes (columns, types, constraints and
    their names, indexes), so later migrations apply to both alike."""
    from ablate.store import _upgrade, make_engine

    made = Store(db_url)
    fast = _schema(made.engine)
    with made.engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
    made.close()
    url = _empty_again(db_url)
    engine = make_engine(url)
    with engine.begin() as c:
        _upgrade(c)
    migrated = _schema(engine)
    engine.dispose()
    assert fast and fast == migrated


def test_first_run_on_a_new_database_does_not_import_alembic(tmp_path: Path) -> None:
    code = ("import sys; from ablate.store import Store; Store(sys.argv[1]); "
            "assert 'alembic' not in sys.modules, 'alembic imported'")
    subprocess.run([sys.executable, "-c", code, f"sqlite:///{tmp_path / 'new.db'}"], check=True)


def test_schema_comes_from_the_migration_and_matches_the_orm(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from ablate.store import _upgrade, make_engine

    engine = make_engine(db_url)
    with engine.begin() as c:
        _upgrade(c)
    with engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
    engine.dispose()
    Store(db_url).close()  # migrating again is a no-op


def test_revisions_read_from_file_names_are_alembics_history() -> None:
    """Read-only commands check the schema from db/versions' file names (no alembic import): the
    list must be alembic's own linear history, oldest first, so a migration named otherwise fails here."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_alembic_config())
    assert [s.revision for s in reversed(list(scripts.walk_revisions()))] == known_revisions()
    assert head_revision() == scripts.get_current_head()


def test_register_is_idempotent_and_reports_status(store: Store) -> None:
    assert store.register("s", "d", {"name": "s"}, _trials()) == {"t0": PENDING, "t1": PENDING, "t2": PENDING}
    store.start("s", "t0")
    store.add_metrics("s", "t0", 0, {"top1": 10.0, "loss": 2.0})
    store.finish("s", "t0")
    again = store.register("s", "d2", {"name": "s"}, _trials(4))
    assert again == {"t0": COMPLETED, "t1": PENDING, "t2": PENDING, "t3": PENDING}
    assert store.counts() == {"studies": 1, "trials": 4, "metrics": 2}
    assert store.load("s").description == "d2"


def test_restart_keeps_stored_epochs_and_errors_clear_on_the_new_attempt(store: Store) -> None:
    store.register("s", "", {}, _trials(2))
    store.start("s", "t1")
    store.add_metrics("s", "t1", 0, {"top1": 5.0})
    store.add_metrics("s", "t1", 1, {"top1": 6.0})
    store.finish("s", "t1", error="RuntimeError: boom", error_kind=TRANSIENT)
    rec = {t.trial_id: t for t in store.load("s", history=True).trials}
    assert rec["t1"].status == FAILED and "boom" in rec["t1"].error and rec["t1"].error_kind == TRANSIENT
    assert rec["t1"].final == {"top1": 6.0} and rec["t1"].history["top1"] == [(0, 5.0), (1, 6.0)]
    store.start("s", "t1")  # the rerun resumes: the epochs already stored stay, re-reported ones replace
    store.add_metrics("s", "t1", 1, {"top1": 6.5})
    rec = {t.trial_id: t for t in store.load("s", history=True).trials}
    assert rec["t1"].status == RUNNING and rec["t1"].error is None and rec["t1"].error_kind is None
    assert rec["t1"].history["top1"] == [(0, 5.0), (1, 6.5)] and rec["t1"].attempts == 2
    assert store.counts()["metrics"] == 2


def test_completed_results_are_append_only_until_an_explicit_rerun(store: Store) -> None:
    store.register("s", "", {}, _trials(1))
    store.start("s", "t0")
    store.update_provenance("s", "t0", {"host": "a", "torch": "2"})
    store.update_provenance("s", "t0", {"host": "b"})
    store.add_metrics("s", "t0", 0, {"top1": 1.0})
    store.finish("s", "t0")
    before = store.load("s", history=True).trials[0]
    assert before.provenance == {"host": "b", "torch": "2"}
    # a second driver, a race or a replayed journal cannot touch it
    assert store.start("s", "t0", "other:1:x") is False
    assert store.add_metrics("s", "t0", 0, {"top1": 99.0}) is False
    assert store.finish("s", "t0", error="late") is False
    after = store.load("s", history=True).trials[0]
    assert (after.status, after.history, after.attempts, after.ended_at) == (
        COMPLETED, before.history, 1, before.ended_at)
    # the explicit request keeps the old attempt
    assert store.rerun("s", ["t0", "nope"]) == 1
    assert store.rerun("s", ["t0"]) == 0  # pending now: nothing to replace
    fresh = store.load("s").trials[0]
    assert fresh.status == PENDING and fresh.final == {} and fresh.provenance == {}
    assert store.counts()["metrics"] == 0 and store.attempt_count() == 1
    study, rec = store.find_trial("t0")
    assert study == "s" and rec.past_attempts[0]["status"] == COMPLETED
    assert rec.past_attempts[0]["metrics"] == {"top1": [[0, 1.0]]}
    assert rec.past_attempts[0]["provenance"] == {"host": "b", "torch": "2"}


def test_reported_epoch_twice_replaces_instead_of_duplicating(store: Store) -> None:
    store.register("s", "", {}, _trials(1))
    store.start("s", "t0")
    store.add_metrics("s", "t0", 0, {"top1": 1.0, "top5": 2.0})
    store.add_metrics("s", "t0", 0, {"top1": 3.0})
    assert store.load("s").trials[0].final == {"top1": 3.0, "top5": 2.0}
    assert store.counts()["metrics"] == 2


def test_driver_stopping_mid_run_interrupts_only_its_own_trials(store: Store) -> None:
    store.register("s", "", {}, _trials(3))
    assert store.claim("s", ["t0", "t1"], "a:1:x", 60) == ["t0", "t1"]
    assert store.claim("s", ["t0", "t1", "t2"], "b:2:y", 60) == ["t2"]  # a's leases are live
    for t, owner in (("t0", "a:1:x"), ("t1", "a:1:x"), ("t2", "b:2:y")):
        store.start("s", t, owner)
    store.finish("s", "t1")
    assert store.mark_interrupted("s", "a:1:x") == 1
    status = store.register("s", "", {}, _trials(3))
    assert status == {"t0": INTERRUPTED, "t1": COMPLETED, "t2": RUNNING}  # b's trial untouched
    rec = {t.trial_id: t for t in store.load("s").trials}
    assert "interrupted" in rec["t0"].error and rec["t0"].error_kind == TRANSIENT
    assert store.release("b:2:y") == 1 and store.load("s").trials[2].status == INTERRUPTED


def test_claims_lease_renew_release_and_takeover(store: Store) -> None:
    import time

    store.register("s", "", {}, _trials(3))
    store.start("s", "t2")
    store.finish("s", "t2")
    # leases long enough to hold however slow the machine, until a's last heartbeat (0.3 s)
    assert store.claim("s", ["t0", "t1", "t2"], "a:1:x", 60) == ["t0", "t1"]  # completed: never claimed
    assert store.claim("s", ["t0", "t1"], "a:1:x", 60) == ["t0", "t1"]  # re-claiming one's own is fine
    assert store.claim("s", ["t0", "t1"], "b:2:y", 60) == []
    assert store.renew("a:1:x", 60) == 2 and store.renew("nobody", 1) == 0
    store.start("s", "t0", "a:1:x")
    assert store.start("s", "t1", "b:2:y") is False  # held by a
    assert store.renew("a:1:x", 0.3) == 2
    time.sleep(0.5)  # a stops renewing: its leases run out
    assert store.claim("s", ["t0", "t1"], "b:2:y", 60) == ["t0", "t1"]
    assert store.release("a:1:x") == 0  # a no longer holds anything
    states = store.trial_states("s")
    assert states["t0"].claimed_by == "b:2:y" and states["t0"].held_by_other("a:1:x")
    assert store.release("b:2:y") == 1  # t0 was running: interrupted; t1 only unclaimed
    states = store.trial_states("s")
    assert (states["t0"].status, states["t1"].status) == (INTERRUPTED, PENDING)
    assert all(st.claimed_by is None for st in states.values())


def test_find_trial_by_id_or_prefix(store: Store) -> None:
    store.register("a", "", {}, [dict(t, trial_id=f"abc{i}") for i, t in enumerate(_trials(2))])
    store.register("b", "", {}, [dict(_trials(1)[0], trial_id="xyz")])
    store.add_metrics("a", "abc1", 0, {"top1": 3.0})
    study, rec = store.find_trial("abc1")
    assert study == "a" and rec.history == {"top1": [(0, 3.0)]}
    assert store.find_trial("xy")[0] == "b"
    with pytest.raises(ValueError, match="several"):
        store.find_trial("abc")
    with pytest.raises(KeyError):
        store.find_trial("q")
    with pytest.raises(KeyError):
        store.find_trial("%")  # no LIKE wildcards from the user


def test_same_trial_id_in_two_studies_is_two_rows(store: Store) -> None:
    store.register("a", "", {}, _trials(1))
    store.register("b", "", {}, _trials(1))
    assert [n for n, _, _ in store.studies()] == ["a", "b"]
    assert store.counts()["trials"] == 2


def test_unknown_study_and_trial(store: Store) -> None:
    with pytest.raises(KeyError):
        store.load("nope")
    store.register("s", "", {}, _trials(1))
    with pytest.raises(KeyError):
        store.start("s", "zzz")


def test_default_url_is_ablate_db_in_cwd_or_ABLATE_DB(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate.store import default_db_url, normalize_url

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ABLATE_DB", raising=False)
    assert default_db_url() == f"sqlite:///{tmp_path / 'ablate.db'}"
    monkeypatch.setenv("ABLATE_DB", "postgresql://u@h/db")
    assert default_db_url() == "postgresql://u@h/db"
    assert normalize_url(default_db_url()) == "postgresql+psycopg://u@h/db"


def test_migration_from_0001_carries_old_rows_over(tmp_path: Path) -> None:
    """A database made by the first schema: its trials survive, and a trial the old driver
    recorded as failed with 'interrupted: the driver stopped' becomes interrupted."""
    import sqlite3

    from alembic import command

    from ablate.store import _alembic_config, make_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    with engine.begin() as c:
        command.upgrade(_alembic_config(c), "0001")
    engine.dispose()
    con = sqlite3.connect(tmp_path / "old.db")
    con.execute("INSERT INTO studies VALUES (1, 's', '', '{}', '2025-01-01', '2025-01-01')")
    for pk, status, error in ((1, "failed", "interrupted: the driver stopped"), (2, "failed", "boom"),
                              (3, "completed", None)):
        con.execute("INSERT INTO trials (pk, study_id, trial_id, params, config, seed, status, error, attempts) "
                    "VALUES (?, 1, ?, '{}', ?, 0, ?, ?, 1)", (pk, f"t{pk}", json.dumps({"seed": pk}), status, error))
    con.execute("INSERT INTO metrics (trial_pk, epoch, name, value) VALUES (3, 0, 'top1', 7.0)")
    con.commit()
    con.close()
    store = Store(url)
    from ablate.expand import trial_id  # migration 0003 then gives each trial the id of its config

    assert all(t.trial_id == trial_id(t.config) for t in store.load("s").trials)
    rec = {f"t{t.config['seed']}": t for t in store.load("s").trials}
    assert (rec["t1"].status, rec["t2"].status, rec["t3"].status) == (INTERRUPTED, FAILED, COMPLETED)
    assert rec["t3"].final == {"top1": 7.0} and rec["t1"].provenance == {} and rec["t3"].attempts == 1
