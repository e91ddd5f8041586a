"""The store's read API (issue 13) on SQLite and PostgreSQL: final and best values by aggregate
queries, summaries without metric rows, histories only for the trials asked, chunked reads for
export; each checked against the values computed from every per-epoch row (the old read path)."""

from __future__ import annotations


import pytest
from sqlalchemy import event

from _synth import scale_record
from conftest import drop_schema
from ablate.store import COMPLETED, FAILED, Store, arm_key, display_epoch


@pytest.fixture(params=["sqlite", "postgresql"], scope="module")
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One database per backend for the module (migrating costs seconds); each test its own studies."""
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path_factory.mktemp('reads') / 'r.db'}")
    else:
        drop_schema(request.getfixturevalue("pg_url"))
        s = Store(request.getfixturevalue("pg_url"))
    yield s
    s.close()


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
    queries: list[str] = []
    listen = lambda *a: queries.append(a[2])  # noqa: E731
    event.listen(store.engine, "before_cursor_execute", listen)
    sums = store.trial_summaries("s2")
    event.remove(store.engine, "before_cursor_execute", listen)
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
