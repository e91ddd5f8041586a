"""Issue 13: the table of a generated database, byte for byte, in every format, on every backend.

The expected texts in tests/data/tables/ were rendered by the table code as it was before its reads
and rendering were reworked for 10^5 trials (the commit that added this file), from every trial read
whole (configs and every metric row), so a change that alters one byte of a table, read as
``ablate table`` reads it, whole, or as the dashboard reads it, on SQLite through sqlite3 or
SQLAlchemy or on PostgreSQL, fails here. (The table's and the dashboard's reads of that time
differed from them in one thing, fixed since: with --all, an arm of undeclared seeds of a declared
arm had no config, so its derived cells were "–".) Four studies: a grid with a baseline, failures
and a pending trial (``big``), one whose ``table`` section is only a baseline (``other``: default
columns, Δ and the test), one without a ``table`` section (``plain``), and one with everything the
file decides (``mixed``: a profile, an undeclared seed, arm and profile, a seed registered twice,
results of other code, a derived column, paper rows).

Regenerate (only when a table is meant to change): ``python tests/test_tables_golden.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synth import scale_record, trial  # noqa: E402
from ablate.store_reads import FAILED, PENDING, StudyRecord  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "data" / "tables"
EXT = {"md": "md", "csv": "csv", "latex": "tex", "html": "html"}
K = "model.kwargs.kernel_size"
OTHER_CODE = {"ablate_version": "0.0.1", "git_commit": "0123456789abcdef", "git_dirty": False, "python": "3.11"}
CASES = [("big", f, False) for f in EXT] + [("big", "md", True), ("big", "csv", True)] + \
        [("other", f, False) for f in EXT] + [("plain", f, False) for f in EXT] + \
        [("mixed", f, a) for f in EXT for a in (False, True)]


def _table_spec(raw: dict) -> dict:
    from ablate.study import TableSpec

    return TableSpec.model_validate(raw).model_dump(mode="json")


def mixed_record() -> StudyRecord:
    """A study file's table with a profile, superseded and undeclared trials, and other code."""
    table = _table_spec({"columns": [{"header": "Kernel", "source": K}, {"header": "Max RF", "source": "derived:max_rf"},
                                     {"header": "Top-1", "source": "metric:top1"},
                                     {"header": "Val loss", "source": "metric:val_loss", "best": "min", "format": "{v:.3f}"},
                                     {"header": "Params", "source": "params"}, {"header": "FLOPs", "source": "flops"}],
                         "baseline": {K: 3}, "notes": ["A note of the file."],
                         "paper": [{"match": {K: 3}, "top1": 70.1}, {"match": {K: 5}, "top1": 71.0}]})
    spec = {"name": "mixed", "description": "", "model": {"name": "mobilenetv2_lk", "kwargs": {}},
            "axes": {"grid": {K: [3, 5, 9]}, "zip": [], "exclude": []}, "seeds": [0, 1, 2, 3],
            "dataset": {"name": "fashion_mnist", "image_size": 32}, "metric": {"name": "top1", "mode": "max"},
            "table": table, "profile": "fast"}
    out = []

    def add(k: int, seed: int, top1: float | None, *, profile: str = "fast", status: str = "completed",
            prov: dict | None = None, tid: str | None = None, error_kind: str | None = None) -> None:
        t = trial("mixed", {K: k}, seed, {} if top1 is None else {"top1": top1, "val_loss": 1.0 / top1},
                  status=status, n_params=1_234_567 * k, flops=98_765_432 * k)
        t.config["dataset"] = {"name": "fashion_mnist", "image_size": 32}
        t.profile, t.provenance, t.error_kind = profile, dict(prov or {}), error_kind
        t.history = {m: [(0, v / 2), (1, v)] for m, v in t.final.items()}
        if tid:
            t.trial_id = tid
        out.append(t)

    for s, v in enumerate([70.11, 70.52, 69.93, 70.38]):
        add(3, s, v, prov=OTHER_CODE if s == 2 else None)
    add(5, 0, 71.24)
    add(5, 1, 12.5, status=FAILED, error_kind="recurring")
    add(5, 2, None, status=PENDING)
    add(5, 3, 71.87)
    add(5, 1, 71.61, tid="mixed-5-1-again")  # registered again by a changed file: supersedes the failure
    add(7, 0, 72.02)  # an arm the file no longer declares
    add(3, 4, 70.95)  # a seed the file does not declare
    add(3, 0, 69.5, profile="", tid="mixed-3-0-base")  # the base profile: another table
    return StudyRecord("mixed", "synthetic mixed", spec, out)


def fill(store) -> None:
    table = _table_spec({"columns": [{"header": "LR", "source": "recipe.lr"},
                                     {"header": "Drop", "source": "model.kwargs.drop_rate"},
                                     {"header": "Top-1", "source": "metric:top1"},
                                     {"header": "Loss", "source": "metric:val_loss", "best": "min"},
                                     {"header": "FLOPs", "source": "flops"}],
                         "baseline": {"recipe.lr": 0.001, "model.kwargs.drop_rate": 0.0}})
    store.import_records([scale_record("big", 240, epochs=4, seeds=4, failed_every=13, table=table),
                          scale_record("other", 30, epochs=3, seeds=3, failed_every=7, table=_table_spec(
                              {"baseline": {"recipe.lr": 0.002, "model.kwargs.drop_rate": 0.01}})),
                          scale_record("plain", 20, epochs=2, seeds=2), mixed_record()])


def rendered(reader, read: str = "table") -> dict[str, str]:
    """{file name: text} of every case, rendered from ``reader`` as ``ablate table`` does (``read``
    "table"), from every trial read whole ("whole": configs and every per-epoch row, ``Reader.load``),
    or as the dashboard reads a study ("dashboard")."""
    from ablate.dashboard.data import load_study
    from ablate.tables import load_table_record, render

    load = {"table": load_table_record, "whole": lambda r, s: r.load(s, history=True), "dashboard": load_study}[read]
    out = {}
    for study, fmt, every in CASES:
        record = load(reader, study)
        out[f"{study}{'-all' if every else ''}.{EXT[fmt]}"] = render(record, fmt, all_arms=every)
    return out


def filled_reader(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                  fill: Callable[[Any], None], folder: str) -> Iterator[Any]:
    """A golden test's database, filled by ``fill``, read through the backend ``request.param`` names:
    sqlite3 (a read-only ``Reader``), SQLAlchemy on SQLite (a ``Store``) or PostgreSQL."""
    from ablate.store import Store
    from ablate.store_reads import Reader, open_reader

    if request.param == "postgresql":
        from conftest import drop_schema

        url = request.getfixturevalue("pg_url")
        drop_schema(url)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp(folder) / 'g.db'}"
    store = Store(url)
    fill(store)
    if request.param == "sqlite3":
        store.close()
        store = open_reader(url)
        assert type(store) is Reader
    yield store
    store.close()


@pytest.fixture(params=["sqlite3", "sqlalchemy", "postgresql"], scope="module")
def reader(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    yield from filled_reader(request, tmp_path_factory, fill, "golden")


@pytest.mark.parametrize("read", ["table", "whole", "dashboard"])
def test_tables_are_byte_identical_to_the_expected_ones(reader, read: str) -> None:
    got = rendered(reader, read)
    assert sorted(got) == sorted(p.name for p in GOLDEN.iterdir())
    for name, text in got.items():
        assert text == (GOLDEN / name).read_text(), name


if __name__ == "__main__":  # write the expected tables (SQLite through sqlite3, every trial read whole)
    import tempfile

    from ablate.store import Store
    from ablate.store_reads import open_reader

    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{d}/g.db"
        s = Store(url)
        fill(s)
        s.close()
        r = open_reader(url)
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in rendered(r, "whole").items():
            (GOLDEN / name).write_text(text)
        print(f"wrote {len(CASES)} tables to {GOLDEN}")
