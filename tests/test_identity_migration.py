"""db/versions/0003: a database written before trial ids left out speed-only settings keeps its
trials under their new ids; rows that now share an id become one trial, the other kept in
trial_attempts (nothing deleted)."""

from __future__ import annotations

from pathlib import Path

from _old_schema import old_database
from ablate.expand import trial_id
from ablate.store import Store


def test_old_ids_are_carried_over_and_speed_only_twins_merge(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    base = {"model": {"name": "mobilenetv2_lk", "kwargs": {"kernel_size": 3}}, "dataset": {"name": "folder"},
            "recipe": {"lr": 0.1, "epochs": 1, "resolution": None}, "seed": 0}
    fast = {**base, "recipe": {**base["recipe"], "workers": 8}}
    slow = {**base, "recipe": {**base["recipe"], "workers": 0}}
    other = {**base, "recipe": {**base["recipe"], "lr": 0.2, "workers": 0}}
    rows = [("aaaaaaaaaaaa", fast, "completed"), ("bbbbbbbbbbbb", slow, "failed"), ("cccccccccccc", other, "completed")]
    old_database(url, "0002",  # the schema as the previous ablate left it
                 [dict(pk=pk, study_id=1, trial_id=old_id, params={}, config=cfg, seed=0, status=status, attempts=1)
                  for pk, (old_id, cfg, status) in enumerate(rows, start=1)],
                 [dict(trial_pk=pk, epoch=0, name="top1", value=float(pk)) for pk in range(1, len(rows) + 1)])

    store = Store(url)  # migrates to head
    rec = store.load("s", history=True)
    ids = {t.trial_id: t for t in rec.trials}
    assert set(ids) == {trial_id(slow), trial_id(other)} and trial_id(fast) == trial_id(slow)
    merged = ids[trial_id(fast)]
    assert merged.status == "completed" and merged.final["top1"] == 1.0  # the completed twin stays
    assert store.attempt_count() == 1  # the failed twin is kept, not deleted
    _, whole = store.find_trial(trial_id(fast))
    assert whole.past_attempts[0]["status"] == "failed"
    assert whole.past_attempts[0]["metrics"] == {"top1": [[0, 2.0]]}
    assert ids[trial_id(other)].final["top1"] == 3.0
