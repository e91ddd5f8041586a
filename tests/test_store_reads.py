"""The store's read API (issue 13) on SQLite and PostgreSQL: final and best values by aggregate
queries, summaries without metric rows, histories only for the trials asked, chunked reads for
export; each checked against the values computed from every per-epoch row (the old read path).
Every test runs three ways: PostgreSQL and SQLite through SQLAlchemy ``text()`` (a writing
``Store``), and SQLite through ``sqlite3`` (``store_reads``, what read-only commands use); one test
holds all reads of the three to each other. Read-only commands on SQLite import no SQLAlchemy,
create no file, read beside a running writer and from a folder they cannot write."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from _synth import scale_record
from conftest import drop_schema, unprivileged_prefix
from ablate.store import COMPLETED, FAILED, Store, arm_key, display_epoch
from ablate.store_reads import DatabaseError, Reader, _SqliteSQL, open_reader

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "sqlite3", "postgresql"], scope="module")
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One database per backend for the module (migrating costs seconds); each test its own studies.
    ``sqlite3``: a Store whose reads run on ``sqlite3`` as ``open_reader``'s do (writes stay ORM)."""
    if request.param in ("sqlite", "sqlite3"):
        path = tmp_path_factory.mktemp("reads") / "r.db"
        s = Store(f"sqlite:///{path}")
        if request.param == "sqlite3":
            s._sql = _SqliteSQL(path, s.url)
    else:
        drop_schema(request.getfixturevalue("pg_url"))
        s = Store(request.getfixturevalue("pg_url"))
    yield s
    s.close()


@contextmanager
def recorded(reader: Reader):
    """The SQL text ``reader`` runs inside the block, on any backend."""
    queries: list[str] = []
    inner = reader._sql

    class Recorder:
        dialect = inner.dialect

        @contextmanager
        def snapshot(self):
            with inner.snapshot() as q:
                yield lambda sql, params=None: (queries.append(sql), q(sql, params))[1]

    reader._sql = Recorder()
    try:
        yield queries
    finally:
        reader._sql = inner


def _every_row(rec) -> dict[str, dict[str, list[tuple[int, float]]]]:
    return {t.trial_id: {m: sorted(h) for m, h in t.history.items()} for t in rec.trials}


def test_final_best_and_history_agree_with_every_row(store: Store) -> None:
    rec = scale_record("s1", 60, epochs=4, seeds=3)
    assert store.import_records([rec]) == 60
    truth = _every_row(rec)
    finals = store.final_values("s1")
    assert set(finals) == {t for t, h in truth.items() if h}  # pending trials have no metrics
    for tid, hist in truth.items():
        for m, points in hist.items():
            assert finals[tid][m] == points[-1]
    top1 = store.final_values("s1", metrics=["top1"])
    assert all(set(v) == {"top1"} for v in top1.values())
    best = store.best_values("s1", "top1", "max")
    worst_loss = store.best_values("s1", "val_loss", "min")
    for tid, hist in truth.items():
        if not hist:
            continue
        v = max(v for _, v in hist["top1"])
        assert best[tid] == (min(e for e, x in hist["top1"] if x == v), v)
        v = min(v for _, v in hist["val_loss"])
        assert worst_loss[tid][1] == v
    some = sorted(truth)[:5]
    assert store.histories("s1", some) == {t: truth[t] for t in some if truth[t]}
    assert store.histories("s1", some, metrics=["val_loss"]) == {t: {"val_loss": truth[t]["val_loss"]}
                                                                 for t in some if truth[t]}
    assert store.last_epochs("s1") == {t: h["top1"][-1][0] for t, h in truth.items() if h}
    assert display_epoch(0) == 1


def test_summaries_have_no_metric_rows_and_the_error_first_line(store: Store) -> None:
    rec = scale_record("s2", 30, epochs=2, seeds=2, failed_every=7)
    store.import_records([rec])
    with recorded(store) as queries:
        sums = store.trial_summaries("s2")
    assert [t.trial_id for t in sums] == [t.trial_id for t in rec.trials]  # insertion order
    assert queries and not any("metrics" in q for q in queries)
    failed = [t for t in sums if t.status == FAILED]
    assert failed and all(t.error == "FloatingPointError: training loss is nan at epoch 1" for t in failed)
    by_id = {t.trial_id: t for t in rec.trials}
    for t in sums:
        assert t.params == by_id[t.trial_id].params and t.seed == by_id[t.trial_id].seed
        assert t.arm == arm_key(t.params) and "seed" not in t.arm
        assert t.config is None
    two = store.trial_summaries("s2", [sums[3].trial_id, sums[1].trial_id], config=True)
    assert [t.trial_id for t in two] == [sums[1].trial_id, sums[3].trial_id]
    assert two[0].config == by_id[sums[1].trial_id].config
    assert store.configs("s2", [sums[0].trial_id]) == {sums[0].trial_id: by_id[sums[0].trial_id].config}
    with pytest.raises(KeyError):
        store.trial_summaries("nope")


def test_load_is_the_same_study_as_before(store: Store) -> None:
    rec = scale_record("s3", 24, epochs=3, seeds=2, failed_every=5)
    store.import_records([rec])
    got = store.load("s3", history=True)
    assert got.spec == rec.spec and len(got.trials) == 24
    for a, b in zip(got.trials, rec.trials):
        assert (a.trial_id, a.params, a.config, a.status, a.error, a.final) == \
            (b.trial_id, b.params, b.config, b.status, b.error, b.final)
        assert a.history == b.history
    assert all(t.history == {} for t in store.load("s3").trials)


def test_chunks_cover_every_trial_once_with_bounded_size(store: Store) -> None:
    store.import_records([scale_record("a", 25, epochs=2, seeds=1), scale_record("b", 7, epochs=2, seeds=1)])
    chunks = list(store.iter_trial_chunks(["a", "b"], chunk=10))
    assert [(s, len(ts)) for s, ts in chunks] == [("a", 10), ("a", 10), ("a", 5), ("b", 7)]
    whole = {t.trial_id: t for t in store.load("a", history=True).trials}
    for _, ts in chunks[:3]:
        for t in ts:
            assert t.history == whole[t.trial_id].history and t.final == whole[t.trial_id].final
    finals = [t for _, ts in store.iter_trial_chunks(["a"], metrics="final", chunk=4) for t in ts]
    assert len(finals) == 25
    assert all(t.final == whole[t.trial_id].final and all(len(h) == 1 for h in t.history.values()) for t in finals)
    pick = [t.trial_id for t in list(whole.values())[::6]]
    got = [t.trial_id for _, ts in store.iter_trial_chunks(["a"], pick, metrics="none") for t in ts]
    assert sorted(got) == sorted(pick)
    with pytest.raises(KeyError):
        list(store.iter_trial_chunks(["zzz"]))


def test_profile_is_recorded_at_registration(store: Store) -> None:
    rows = [{"trial_id": "t0", "params": {"k": 1, "seed": 0}, "config": {"seed": 0}, "seed": 0,
             "n_params": 1, "flops": 1}]
    store.register("s5", "", {"name": "s5", "profile": "demo"}, rows)
    store.register("s5", "", {"name": "s5", "profile": None}, rows + [dict(rows[0], trial_id="t1")])
    assert {t.trial_id: t.profile for t in store.trial_summaries("s5")} == {"t0": "demo", "t1": ""}
    assert store.trial_summaries("s5")[0].status != COMPLETED


def test_light_summaries_read_only_the_code_fields_of_the_provenance(store: Store) -> None:
    rows = [{"trial_id": f"t{i}", "params": {"k": i, "seed": 0}, "config": {"seed": 0}, "seed": 0,
             "n_params": 1, "flops": 1} for i in range(3)]
    store.register("s6", "", {"name": "s6", "profile": None}, rows)
    store.update_provenance("s6", "t0", {"ablate_version": "0.1", "git_commit": "abc", "git_dirty": True,
                                         "host": "h", "devices": ["cpu"]})
    store.update_provenance("s6", "t1", {"ablate_version": "0.1", "git_commit": None, "git_dirty": False})
    light = {t.trial_id: t for t in store.trial_summaries("s6", light=True)}
    assert light["t0"].provenance == {"ablate_version": "0.1", "git_commit": "abc", "git_dirty": True}
    assert light["t1"].provenance == {"ablate_version": "0.1", "git_dirty": False}
    assert light["t2"].provenance == {} and light["t2"].error is None and light["t2"].profile == ""
    full = {t.trial_id: t for t in store.trial_summaries("s6")}
    assert full["t0"].provenance["devices"] == ["cpu"]


# -- one set of queries, the same values everywhere ---------------------------------------------------
def _fill(store: Store, name: str) -> tuple[str, str]:
    """A study with failures, a pending trial, provenance and one rerun (an earlier attempt); returns
    (the rerun trial, a trial with provenance)."""
    rec = scale_record(name, 18, epochs=3, seeds=3, failed_every=5)
    store.import_records([rec])
    done = [t.trial_id for t in rec.trials if t.status == COMPLETED]
    store.update_provenance(name, done[1], {"ablate_version": "0.1", "git_commit": "abc", "git_dirty": True,
                                            "host": "h", "devices": ["cpu"]})
    store.rerun(name, [done[0]])
    return done[0], done[1]


def _plain(x: Any, times: bool) -> Any:
    """Records as comparable values: dataclasses as dicts without the database's own keys (``_pk``),
    and without the times writes stamp when ``times`` is False."""
    if dataclasses.is_dataclass(x):
        x = {k: v for k, v in dataclasses.asdict(x).items() if k != "_pk"}
    if isinstance(x, dict):
        drop = set() if times else {"archived_at", "started_at", "ended_at"}
        return {k: _plain(v, times) for k, v in x.items() if k not in drop}
    if isinstance(x, (list, tuple)):
        return [_plain(v, times) for v in x]
    return x


def _dump(r: Reader, name: str, rerun: str, prov: str, *, times: bool) -> dict[str, Any]:
    ids = [t.trial_id for t in r.trial_summaries(name)]
    some = ids[::4]
    out = {
        "studies": [s for s in r.studies() if s[0] == name], "info": r.study_info(name),
        "summaries": r.trial_summaries(name), "light": r.trial_summaries(name, light=True),
        "some": r.trial_summaries(name, some, config=True), "configs": r.configs(name, some),
        "final": r.final_values(name), "final_top1": r.final_values(name, ["top1"], some),
        "best": r.best_values(name, "top1"), "least_loss": r.best_values(name, "val_loss", "min", some),
        "hist": r.histories(name, some), "hist_loss": r.histories(name, some, ["val_loss"]),
        "last": r.last_epochs(name), "errors": r.trial_errors(name, ids),
        "chunks": [list(r.iter_trial_chunks([name], metrics=m, chunk=7)) for m in ("all", "final", "none")],
        "rerun": r.find_trial(rerun), "prov": r.find_trial(prov[:9]),
        "load": r.load(name, history=True), "many": r.load_many([name], history=True),
        "states": r.trial_states(name), "table": r.table_trials(name, ["top1", "val_loss"]),
    }
    assert out["rerun"][1].past_attempts and out["light"][0].provenance is not None
    assert [t.trial_id for t in out["table"]] == ids and not any(t.config for t in out["table"])  # read per arm later
    assert [t._arm for t in out["table"]] == [t.arm for t in out["light"]]
    assert [t.params for t in out["table"]] == [t.params for t in out["summaries"]]
    return _plain(out, times)


def test_every_read_gives_the_same_values_on_every_backend(store: Store, tmp_path: Path) -> None:
    """The same writes on a fresh SQLite file read through sqlite3 (``open_reader``) and on this
    backend (PostgreSQL, or SQLite through SQLAlchemy): every read method answers the same."""
    rerun, prov = _fill(store, "same")
    url = f"sqlite:///{tmp_path / 'ref.db'}"
    ref = Store(url)
    assert _fill(ref, "same") == (rerun, prov)
    ref.close()
    reader = open_reader(url)
    assert type(reader) is Reader  # sqlite3, no SQLAlchemy
    assert _dump(store, "same", rerun, prov, times=False) == _dump(reader, "same", rerun, prov, times=False)
    if store.dialect == "sqlite":  # the very same file: times and the change fingerprint too
        same = open_reader(store.url)
        assert _dump(store, "same", rerun, prov, times=True) == _dump(same, "same", rerun, prov, times=True)
        assert same.results_version() == store.results_version() and same.counts() == store.counts()
        assert same.attempt_count() == store.attempt_count() >= 1
    t = reader.find_trial(rerun)[1]
    assert t.started_at is None and t.past_attempts[0]["archived_at"].tzinfo is not None  # aware UTC times


def test_plan_reads_aggregates_not_histories(store: Store) -> None:
    """`ablate plan` counts each trial's stored epochs from its last epoch (an aggregate of the
    stored finals), the same count the per-epoch rows give, and reads no per-epoch row."""
    from ablate.cli import _existing_record

    rec = scale_record("planned", 12, epochs=4, seeds=2, failed_every=5)
    store.import_records([rec])
    if store.dialect == "sqlite":
        import ablate.store_reads as sr

        inner = sr.open_reader
        seen: list[str] = []

        def spy(url):
            r = inner(url)
            r._sql = _Spy(r._sql, seen)
            return r

        sr.open_reader = spy
        try:
            got, epochs, where = _existing_record(store.url, "planned")
        finally:
            sr.open_reader = inner
        metric_reads = [q for q in seen if "metrics" in q or "trial_finals" in q]
        # the last epochs from the stored finals (0005): no per-epoch row, not even of the index
        assert metric_reads and all("max(" in q and "value" not in q and "FROM metrics" not in q
                                    for q in metric_reads), metric_reads
    else:
        got, epochs, where = _existing_record(store.url, "planned")
    assert where == store.display_url
    assert epochs == {t.trial_id: max(len(h) for h in t.history.values()) for t in rec.trials if t.history}
    assert [t.trial_id for t in got.trials] == [t.trial_id for t in rec.trials]


class _Spy:
    def __init__(self, inner: Any, seen: list[str]):
        self.inner, self.seen, self.dialect = inner, seen, inner.dialect

    @contextmanager
    def snapshot(self):
        with self.inner.snapshot() as q:
            yield lambda sql, params=None: (self.seen.append(sql), q(sql, params))[1]


# -- the read-only entry point on SQLite --------------------------------------------------------------
READ_ONLY = [["studies"], ["table", "ro"], ["table", "ro", "--format", "csv"], ["show", "{trial}"],
             ["export", "ro", "--out", "{tmp}/e.csv"], ["dashboard", "--out", "{tmp}/r.html"]]


@pytest.fixture(scope="module")
def ro_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    d = tmp_path_factory.mktemp("ro")
    store = Store(f"sqlite:///{d / 'ro.db'}")
    rec = scale_record("ro", 12, epochs=3, seeds=3, failed_every=5)
    store.import_records([rec])
    store.close()
    return d / "ro.db", rec.trials[0].trial_id


PROBE = """
import json, runpy, sys
sys.argv = ["ablate", *json.loads(sys.argv[1])]
code = 0
try:
    runpy.run_module("ablate.cli", run_name="__main__")
except SystemExit as e:
    code = e.code or 0
print(json.dumps({"code": code, "sqlalchemy": sorted(m for m in sys.modules if m.split(".")[0] in
                  ("sqlalchemy", "alembic", "psycopg"))}))
"""


def _probe(args: list[str], db: Path, cwd: Path, prefix: list[str] = ()) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), ABLATE_DB=f"sqlite:///{db}", HOME=str(cwd),
               ABLATE_ARTIFACTS=str(cwd / "art"))
    r = subprocess.run([*prefix, sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True,
                       cwd=cwd, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: "-".join(a[:2]).replace("{", "").replace("}", ""))
def test_read_only_commands_on_sqlite_load_no_sqlalchemy_and_create_nothing(ro_db: tuple[Path, str],
                                                                             tmp_path: Path, args: list[str]) -> None:
    db, trial = ro_db
    args = [a.format(trial=trial[:8], tmp=tmp_path) for a in args]
    before = sorted(p.name for p in db.parent.iterdir())
    got = _probe(args, db, tmp_path)
    assert got == {"code": 0, "sqlalchemy": []}, got
    assert sorted(p.name for p in db.parent.iterdir()) == before == ["ro.db"]  # no -wal, -shm left, no file
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(a.rsplit("/", 1)[1] for a in args if "/" in a)


def test_a_kept_connection_sees_new_writes_and_holds_nothing_after(tmp_path: Path) -> None:
    """Inside ``Reader.kept()`` an SQLite reader keeps its thread's connection between reads (one
    read transaction each): a later read sees what was written since. After it nothing is held: no
    -wal/-shm stay behind, and a file replaced at the path is read anew."""
    def make(path: Path, names: list[str]) -> None:
        s = Store(f"sqlite:///{path}")
        s.import_records([scale_record(n, 4, epochs=2, seeds=2) for n in names])
        s.close()

    db = tmp_path / "r.db"
    make(db, ["a"])
    reader = open_reader(f"sqlite:///{db}")
    assert type(reader) is Reader
    with reader.kept():
        assert [n for n, _, _ in reader.studies()] == ["a"]
        kept = reader._sql._idle.con
        writer = Store(f"sqlite:///{db}")
        writer.import_records([scale_record("b", 4, epochs=2, seeds=2)])
        writer.close()
        assert [n for n, _, _ in reader.studies()] == ["a", "b"]  # the same connection, a new snapshot
        assert reader._sql._idle.con is kept
    assert reader._sql._idle.con is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.db"]
    make(tmp_path / "other.db", ["c"])
    os.replace(tmp_path / "other.db", db)
    assert [n for n, _, _ in reader.studies()] == ["c"]


def test_open_reader_errors_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(DatabaseError, match="no such file"):
        open_reader(f"sqlite:///{missing}")
    with pytest.raises(DatabaseError, match="folder .* does not exist"):
        open_reader(f"sqlite:///{tmp_path / 'no' / 'x.db'}")
    (tmp_path / "empty.db").touch()
    with pytest.raises(DatabaseError, match="holds no ablate results yet"):
        open_reader(f"sqlite:///{tmp_path / 'empty.db'}")
    (tmp_path / "junk.db").write_bytes(b"not sqlite " * 400)
    with pytest.raises(DatabaseError, match="not an SQLite database"):
        open_reader(f"sqlite:///{tmp_path / 'junk.db'}")
    sqlite3.connect(tmp_path / "other.db").executescript("CREATE TABLE invoices (id INTEGER PRIMARY KEY);")
    with pytest.raises(DatabaseError, match="not an ablate database .*invoices"):
        open_reader(f"sqlite:///{tmp_path / 'other.db'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "junk.db", "other.db"]
    assert (tmp_path / "empty.db").stat().st_size == 0


def test_reading_while_a_writer_holds_the_database(tmp_path: Path) -> None:
    """WAL: a reader answers from the last commit while a writer's transaction is open, and sees
    the commit once it is made; its query_only connection cannot write."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    store = Store(url)
    store.import_records([scale_record("w", 6, epochs=2, seeds=2)])
    reader = open_reader(url)
    writer = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO studies (name, description, spec, created_at, updated_at) "
                   "VALUES ('new', '', '{}', '2024-01-01', '2024-01-01')")
    assert [s[0] for s in reader.studies()] == ["w"] and len(reader.final_values("w")) == 5
    writer.execute("COMMIT")
    assert [s[0] for s in reader.studies()] == ["new", "w"]
    with pytest.raises(DatabaseError, match="read-only"), reader._sql.snapshot() as q:
        q("DELETE FROM studies")
    writer.close()
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.db"]


def test_read_only_commands_read_a_folder_they_cannot_write(ro_db: tuple[Path, str]) -> None:
    """As an unprivileged user, a database in a folder nobody may write (so no -shm can be made)
    is read as immutable: the table prints, nothing is created, SQLAlchemy is not loaded."""
    prefix = unprivileged_prefix()
    d = Path(tempfile.mkdtemp(prefix="ablate-ro-"))
    try:
        shutil.copy(ro_db[0], d / "ro.db")
        (d / "ro.db").chmod(0o444)
        d.chmod(0o555)
        out = Path(tempfile.mkdtemp(prefix="ablate-ro-out-"))
        out.chmod(0o777)
        got = _probe(["table", "ro", "--format", "csv", "--out", str(out / "t.csv")], d / "ro.db", out, prefix)
        assert got == {"code": 0, "sqlalchemy": []}, got
        assert (out / "t.csv").read_text().count("\n") > 3
        assert sorted(p.name for p in d.iterdir()) == ["ro.db"]
    finally:
        d.chmod(0o755)
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


def test_light_params_parse_once_per_arm_and_equal_the_stored_json() -> None:
    """The per-arm shortcut gives exactly the stored params (order included), and anything it
    cannot vouch for (seed not last, no seed, a non-integer seed) is parsed whole."""
    from ablate.store_reads import _light_params

    arms: dict = {}
    cases = ['{"k": 3, "lr": 0.1, "seed": 4}', '{"seed": 4, "k": 3, "lr": 0.1}', '{"k": 3, "lr": 0.1}',
             '{"k": 3, "lr": 0.1, "seed": true}', '{"k": [3, 5], "seed": 12}']
    with sqlite3.connect(":memory:") as con:
        for raw in cases:
            seed = con.execute("SELECT json_extract(:p, '$.seed')", {"p": raw}).fetchone()[0]  # as the seed column
            p, arm = _light_params(raw, seed, arms)
            assert p == json.loads(raw) and list(p) == list(json.loads(raw)) and arm == arm_key(p)
    assert len(arms) == 2  # the first four share one arm


def test_seedless_params_parse_once_per_arm_and_equal_the_stored_json() -> None:
    """What tables and the dashboard read of a trial's params on SQLite (``_seedless``): the stored
    params without the seed, in the stored order, and their arm key; the text before a trailing
    seed is parsed once per arm, anything else (seed not last, no seed, another seed than the
    trial's, a non-integer seed, compact separators) whole."""
    from ablate.store_reads import _seedless

    arms: dict = {}
    cases = [('{"k": 3, "lr": 0.1, "seed": 4}', 4), ('{"k": 3, "lr": 0.1, "seed": 5}', 5),
             ('{"seed": 4, "k": 3, "lr": 0.1}', 4), ('{"k": 3, "lr": 0.1}', 4), ('{"k": 3, "lr": 0.1, "seed": 4}', 7),
             ('{"k": 3, "lr": 0.1, "seed": true}', 4), ('{"k":3,"lr":0.1,"seed":4}', 4),
             ('{"k": [3, 5], "seed": 12}', 12), ('{"seed": 12}', 12)]
    for raw, seed in cases:
        want = {k: v for k, v in json.loads(raw).items() if k != "seed"}
        a, key = _seedless(raw, seed, arms)
        assert a == want and list(a) == list(want) and key == arm_key(want), raw
    assert len(arms) == 3  # '{"k": 3, "lr": 0.1', '{"k":3,"lr":0.1' and '{"k": [3, 5]': one parse each
    assert _seedless('{"k": 3, "lr": 0.1, "seed": 9}', 9, arms)[0] is arms['{"k": 3, "lr": 0.1'][0]  # shared


_OF_STUDY = "trial_pk IN (SELECT t.pk FROM trials t JOIN studies s ON s.id = t.study_id WHERE s.name = :n)"
_LAST_EPOCH_ROWS = ("SELECT m.trial_pk, m.name, m.epoch, m.value FROM metrics m JOIN (SELECT trial_pk, name, "
                    f"max(epoch) AS e FROM metrics WHERE {_OF_STUDY} GROUP BY trial_pk, name) f "
                    "ON m.trial_pk = f.trial_pk AND m.name = f.name AND m.epoch = f.e")


def _finals_and_last_rows(r: Reader, study: str) -> tuple[list[tuple], list[tuple]]:
    """(the rows of trial_finals, the metric rows at their trial's last epoch of that metric) of
    the trials of ``study``."""
    with r._sql.snapshot() as q:
        return (sorted(tuple(x) for x in q(f"SELECT trial_pk, name, epoch, value FROM trial_finals WHERE {_OF_STUDY}",
                                           {"n": study})),
                sorted(tuple(x) for x in q(_LAST_EPOCH_ROWS, {"n": study})))


def test_finals_table_is_the_last_epoch_rows_after_any_history_of_writes(store: Store) -> None:
    """``trial_finals`` (0005), which tables and ``final_values`` read, stays equal to the metric
    rows at each trial's last epoch through bulk import, resumed trials rewriting earlier epochs,
    re-reported epochs, metrics reported out of order or only some at a time, analyses and reruns."""
    rec = scale_record("mixed", 15, epochs=4, seeds=3, failed_every=4)
    store.import_records([rec])
    finals, rows = _finals_and_last_rows(store, "mixed")
    assert finals == rows and len(finals) == 3 * sum(bool(t.history) for t in rec.trials)
    done = [t.trial_id for t in rec.trials if t.status == COMPLETED]
    failed = [t for t in rec.trials if t.status == FAILED][0]
    pending = [t.trial_id for t in rec.trials if t.trial_id not in done and t.status != FAILED][0]
    last = failed.history["val_loss"][-1]
    # the failed trial resumes from an earlier checkpoint: epoch 0 again, its later epoch stays last
    store.start("mixed", failed.trial_id)
    store.add_metrics("mixed", failed.trial_id, 0, {"top1": 11.0, "val_loss": 1.1})
    assert store.final_values("mixed")[failed.trial_id]["val_loss"] == last
    # then it goes past its old last epoch, for one metric only, and reports that epoch twice
    store.add_metrics("mixed", failed.trial_id, 7, {"top1": 77.0})
    store.add_metrics("mixed", failed.trial_id, 7, {"top1": 78.0})
    # a pending trial reports a later epoch before an earlier one
    store.start("mixed", pending)
    store.add_metrics("mixed", pending, 2, {"top1": 2.0, "val_loss": 0.2})
    store.add_metrics("mixed", pending, 0, {"top1": 0.5, "val_loss": 0.9})
    store.add_metrics("mixed", pending, 1, {})
    # analyses of a completed trial, the second replacing the first
    store.add_analysis("mixed", done[0], {"erf_area": 0.5})
    store.add_analysis("mixed", done[0], {"erf_area": 0.25, "shape_bias": 0.1})
    # reruns: one trains again (one epoch so far), one is left pending
    assert store.rerun("mixed", done[1:3]) == 2
    store.start("mixed", done[1])
    store.add_metrics("mixed", done[1], 0, {"top1": 5.0})
    finals, rows = _finals_and_last_rows(store, "mixed")
    assert finals == rows
    got = store.final_values("mixed")
    assert got[failed.trial_id]["top1"] == (7, 78.0) and got[failed.trial_id]["val_loss"] == last
    assert got[pending] == {"top1": (2, 2.0), "val_loss": (2, 0.2)}
    assert got[done[0]]["erf_area"] == (3, 0.25) and got[done[0]]["shape_bias"] == (3, 0.1)
    assert got[done[1]] == {"top1": (0, 5.0)} and done[2] not in got
    # every read of finals is what the old read of every metric row gives
    whole = {t.trial_id: t.final for t in store.load_many(["mixed"])[0].trials}
    assert {t: {m: v for m, (_, v) in f.items()} for t, f in got.items()} == {t: f for t, f in whole.items() if f}
    names = ["top1", "val_loss", "erf_area"]
    assert {t.trial_id: t.final for t in store.table_trials("mixed", names)} == {
        t: {m: v for m, v in f.items() if m in names} for t, f in whole.items()}
    chunks = [t for _, ts in store.iter_trial_chunks(["mixed"], metrics="final", chunk=4) for t in ts]
    assert {t.trial_id: t.final for t in chunks} == whole
    with store._sql.snapshot() as q:  # the last epoch of any metric: what `ablate plan` resumes from
        last = dict(q("SELECT t.trial_id, max(m.epoch) FROM metrics m JOIN trials t ON t.pk = m.trial_pk "
                      "JOIN studies s ON s.id = t.study_id WHERE s.name = 'mixed' GROUP BY t.trial_id"))
    assert store.last_epochs("mixed") == last and last[failed.trial_id] == 7
