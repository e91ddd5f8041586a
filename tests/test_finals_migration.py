"""db/versions/0005: a database of revision 0004 gets ``trial_finals`` filled from its metric rows
(each metric's row at the trial's last epoch), on SQLite and PostgreSQL, and reads give the same
final values as the metric rows did."""

from __future__ import annotations

import sqlalchemy as sa

from _old_schema import old_database
from ablate.store import Store
from conftest import drop_schema


def test_upgrade_fills_finals_from_the_last_epoch_rows(db_url: str) -> None:
    rows = {1: [(0, "top1", 1.0), (1, "top1", 2.0), (0, "loss", 0.9), (1, "loss", 0.5), (3, "erf", 0.25)],
            2: [(2, "top1", 9.0), (0, "top1", 3.0)],  # written out of order
            3: []}  # no metrics: no finals
    old_database(db_url, "0004",  # the schema as the previous ablate left it
                 [dict(pk=pk, study_id=1, trial_id=f"t{pk}", params={"seed": pk}, config={"seed": pk}, seed=pk,
                       status="completed", attempts=1) for pk in rows],
                 [dict(trial_pk=pk, epoch=epoch, name=name, value=value)
                  for pk, ms in rows.items() for epoch, name, value in ms])

    store = Store(db_url)  # migrates to head
    try:
        with store.engine.connect() as conn:
            finals = sorted(tuple(r) for r in conn.execute(sa.text("SELECT trial_pk, name, epoch, value FROM trial_finals")))
        assert finals == [(1, "erf", 3, 0.25), (1, "loss", 1, 0.5), (1, "top1", 1, 2.0), (2, "top1", 2, 9.0)]
        assert store.final_values("s") == {"t1": {"erf": (3, 0.25), "loss": (1, 0.5), "top1": (1, 2.0)},
                                           "t2": {"top1": (2, 9.0)}}
        assert [t.final for t in store.table_trials("s", ["top1", "loss"])] == [{"top1": 2.0, "loss": 0.5},
                                                                               {"top1": 9.0}, {}]
    finally:
        store.close()
    if not db_url.startswith("sqlite"):
        drop_schema(db_url)
