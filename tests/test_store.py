"""The result database on SQLite and on a real PostgreSQL: schema by migration, registration,
skip-on-rerun bookkeeping, partial metrics dropped on restart, failures keep their error."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from ablate.store import COMPLETED, FAILED, PENDING, RUNNING, Base, Store


def _fresh(url: str) -> Store:
    store = Store(url, create=False)
    with store.engine.begin() as c:
        Base.metadata.drop_all(c)
        c.execute(text("DROP TABLE IF EXISTS alembic_version"))
    store.close()
    return Store(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'r.db'}")
    else:
        s = _fresh(request.getfixturevalue("pg_url"))
    yield s
    s.close()


def _trials(n: int = 3) -> list[dict]:
    return [{"trial_id": f"t{i}", "params": {"k": i, "seed": 0}, "config": {"model": {"name": "m"}, "seed": 0},
             "seed": 0, "n_params": 1000 + i, "flops": 10**9 + i} for i in range(n)]


def test_schema_comes_from_the_migration_and_matches_the_orm(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    Store(store.url)  # migrating again is a no-op


def test_register_is_idempotent_and_reports_status(store: Store) -> None:
    assert store.register("s", "d", {"name": "s"}, _trials()) == {"t0": PENDING, "t1": PENDING, "t2": PENDING}
    store.start("s", "t0")
    store.add_metrics("s", "t0", 0, {"top1": 10.0, "loss": 2.0})
    store.finish("s", "t0")
    again = store.register("s", "d2", {"name": "s"}, _trials(4))
    assert again == {"t0": COMPLETED, "t1": PENDING, "t2": PENDING, "t3": PENDING}
    assert store.counts() == {"studies": 1, "trials": 4, "metrics": 2}
    assert store.load("s").description == "d2"


def test_restart_drops_partial_metrics_and_keeps_errors_until_rerun(store: Store) -> None:
    store.register("s", "", {}, _trials(2))
    store.start("s", "t1")
    store.add_metrics("s", "t1", 0, {"top1": 5.0})
    store.add_metrics("s", "t1", 1, {"top1": 6.0})
    store.finish("s", "t1", error="RuntimeError: boom")
    rec = {t.trial_id: t for t in store.load("s", history=True).trials}
    assert rec["t1"].status == FAILED and "boom" in rec["t1"].error
    assert rec["t1"].final == {"top1": 6.0} and rec["t1"].history["top1"] == [(0, 5.0), (1, 6.0)]
    store.start("s", "t1")  # the rerun
    rec = {t.trial_id: t for t in store.load("s").trials}
    assert rec["t1"].status == RUNNING and rec["t1"].error is None and rec["t1"].final == {}
    assert store.counts()["metrics"] == 0


def test_reported_epoch_twice_replaces_instead_of_duplicating(store: Store) -> None:
    store.register("s", "", {}, _trials(1))
    store.start("s", "t0")
    store.add_metrics("s", "t0", 0, {"top1": 1.0, "top5": 2.0})
    store.add_metrics("s", "t0", 0, {"top1": 3.0})
    assert store.load("s").trials[0].final == {"top1": 3.0, "top5": 2.0}
    assert store.counts()["metrics"] == 2


def test_driver_stopping_mid_run_leaves_trials_for_the_rerun(store: Store) -> None:
    store.register("s", "", {}, _trials(2))
    store.start("s", "t0")
    store.start("s", "t1")
    store.finish("s", "t1")
    assert store.mark_interrupted("s") == 1
    status = store.register("s", "", {}, _trials(2))
    assert status == {"t0": FAILED, "t1": COMPLETED}
    assert "interrupted" in store.load("s").trials[0].error


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
