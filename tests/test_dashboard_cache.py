"""Issue 12.4: ``dashboard --out`` keeps each study's page blob (``ablate.dashboard.cache``) and builds
again only the studies whose results changed. The page is always the one built from scratch (but for
the time it says it was made); every kind of write a study gets (a trial started, an epoch, a finish,
a rerun, an analysis, a new trial, a changed study file) builds that study again and only it."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synth import big_studies  # noqa: E402

STAMP = re.compile(r"generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
NOW = {"ablate_version": "0.2.0", "git_commit": "fedcba9876543210", "git_dirty": False, "python": "3.11",
       "driver_host": "here"}


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(url, Store) of three small studies; a state folder of this test's own; builds counted by study."""
    from ablate.store import Store

    monkeypatch.setenv("ABLATE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("ABLATE_PAGE_CACHE", raising=False)
    monkeypatch.setattr("ablate.provenance.code", lambda: dict(NOW))
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = Store(url)
    store.import_records(big_studies(n_trials=240, n_studies=3, seeds=4, epochs=3, failed_every=11))
    yield url, store
    store.close()


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The studies whose blobs were built, in order."""
    import ablate.dashboard as D

    names: list[str] = []
    real = D._blobs

    def counting(store, wanted, artifacts):
        names.extend(wanted)
        return real(store, wanted, artifacts)

    monkeypatch.setattr(D, "_blobs", counting)
    return names


def page(url: str, tmp_path: Path, cache: bool = True) -> str:
    from ablate.dashboard import report
    from ablate.store_reads import open_reader

    return STAMP.sub("", report(open_reader(url), artifacts=tmp_path / "none", cache=cache))


def test_an_unchanged_database_builds_nothing_and_gives_the_same_page(db, built: list[str], tmp_path: Path) -> None:
    url, _ = db
    fresh = page(url, tmp_path, cache=False)
    built.clear()
    assert page(url, tmp_path) == fresh and sorted(built) == ["synthetic_00", "synthetic_01", "synthetic_02"]
    built.clear()
    assert page(url, tmp_path) == fresh and built == []
    assert len(list((tmp_path / "state" / "dashboard-pages").glob("*/*.blob"))) == 3


def _writes(store, study: str):
    """Each kind of write a study gets, one after another (the study's last arm is pending)."""
    pending = [t.trial_id for t in store.light_trials(study) if t.status == "pending"]
    first = [t.trial_id for t in store.light_trials(study) if t.status == "completed"][0]
    yield "start", lambda: store.start(study, pending[0])
    yield "epoch", lambda: store.add_metrics(study, pending[0], 0, {"top1": 12.5, "val_loss": 2.0, "train_loss": 2.1})
    yield "finish", lambda: store.finish(study, pending[0])
    yield "failed", lambda: (store.start(study, pending[1]), store.finish(study, pending[1], "RuntimeError: boom"))
    yield "analysis", lambda: store.add_analysis(study, first, {"shape_bias": 0.25})
    # the newest metric rows rewritten: SQLite may give them the same ids (the final rows' sum tells)
    yield "analysis again", lambda: store.add_analysis(study, first, {"shape_bias": 0.75})
    yield "rerun", lambda: store.rerun(study, [first])
    info = store.study_info(study)
    yield "new trial", lambda: store.register(study, info.description, info.spec, [_one_more(study)])
    yield "study file", lambda: store.register(study, "changed description", info.spec, [])


def _one_more(study: str) -> dict:
    """A trial of ``study`` the database does not have, as ``Store.register`` takes it."""
    from _synth import trial

    t = trial(study, {"model.kwargs.kernel_size": 99, "model.kwargs.dilation": 1, "recipe.lr": 0.01}, 0)
    return {"trial_id": t.trial_id, "params": t.params, "config": t.config, "seed": 0, "n_params": t.n_params,
            "flops": t.flops}


def test_a_write_to_one_study_builds_that_study_again_and_only_it(db, built: list[str], tmp_path: Path) -> None:
    url, store = db
    page(url, tmp_path)
    for what, write in _writes(store, "synthetic_02"):
        before = store.results_version()
        write()
        assert store.results_version() != before, what  # what the served page and this cache look at first
        built.clear()
        got = page(url, tmp_path)
        assert built == ["synthetic_02"], what
        assert got == page(url, tmp_path, cache=False), what


@pytest.mark.parametrize("damage", ["garbage", "other version", "truncated header", "other study"])
def test_a_damaged_or_foreign_file_is_built_again(db, built: list[str], tmp_path: Path, damage: str) -> None:
    url, _ = db
    fresh = page(url, tmp_path, cache=False)
    page(url, tmp_path)
    files = sorted((tmp_path / "state" / "dashboard-pages").glob("*/*.blob"))
    f = files[0]
    head, _, blob = f.read_text().partition("\n")
    if damage == "garbage":
        f.write_bytes(b"\x00\xff{")
    elif damage == "other version":
        f.write_text(json.dumps(dict(json.loads(head), version="x")) + "\n" + blob)
    elif damage == "truncated header":
        f.write_text(head[:10])
    else:  # another study's file under this one's name
        f.write_text(files[1].read_text())
    built.clear()
    assert page(url, tmp_path) == fresh and len(built) == 1


def test_studies_that_read_artifact_arrays_are_never_kept(db, built: list[str], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """ERF and kernel maps are read from files the database does not know about (``reads_artifacts``)."""
    url, _ = db
    monkeypatch.setattr("ablate.dashboard.appendix.reads_artifacts", lambda r: r.name == "synthetic_01")
    page(url, tmp_path)
    built.clear()
    page(url, tmp_path)
    assert built == ["synthetic_01"]


def test_dashboard_out_uses_it_and_can_be_told_not_to(db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate.cli import app

    url, _ = db
    out = tmp_path / "p.html"
    runs = []
    for env, says in (("0", ""), ("1", ""), ("1", "3 of 3 studies unchanged since the last page")):
        monkeypatch.setenv("ABLATE_PAGE_CACHE", env)
        r = CliRunner().invoke(app, ["dashboard", "--db", url, "--out", str(out), "--artifacts", str(tmp_path / "none")])
        assert r.exit_code == 0, r.output
        text = " ".join(r.output.split())  # as rich wraps it
        assert ("unchanged" in text) == bool(says) and says in text, text
        runs.append(STAMP.sub("", out.read_text()))
        kept = list((tmp_path / "state" / "dashboard-pages").glob("*/*.blob"))
        assert len(kept) == (0 if env == "0" else 3)
    assert runs[0] == runs[1] == runs[2]


def test_only_sqlite_files_are_cached(db, tmp_path: Path) -> None:
    from ablate.dashboard.cache import BlobCache
    from ablate.store import Store
    from ablate.store_reads import open_reader

    url, _ = db
    assert BlobCache.open(open_reader(url), None) is not None
    assert BlobCache.open(Store(url, create=False), None) is not None  # the same file through SQLAlchemy

    class Server:  # a PostgreSQL reader: its identity is no path
        url = "postgresql://u@127.0.0.1/x"

    assert BlobCache.open(Server(), None) is None


def test_study_versions_read_since_an_earlier_read_equal_a_full_read(db) -> None:
    """``Reader.study_versions`` given what an earlier call returned reads only the metric rows written since;
    after every kind of write its fingerprints are those of a read of every row."""
    _, store = db
    _, ids, top = store.study_versions()
    for what, write in _writes(store, "synthetic_02"):
        write()
        full = store.study_versions()
        since = store.study_versions(ids, top)
        assert since == full, what
        _, ids, top = since
