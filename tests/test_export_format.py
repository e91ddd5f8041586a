"""ablate.export writes CSV text itself (no pyarrow, numpy or pandas for a CSV) and feeds the same
text through pyarrow's CSV reader for Parquet. Both must be what the export wrote before, when it
built Arrow tables from Python lists: the CSV byte for byte as pyarrow's CSV writer prints it, the
Parquet file with the same schema and values (and the same bytes)."""

from __future__ import annotations

import csv
import json
import math
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _synth import big_studies, trial
from ablate import export as ex
from ablate.store import FAILED, PENDING, Store, StudyRecord, TrialRecord


def _arrow_csv_lines(schema: pa.Schema, columns: dict[str, list[Any]]) -> list[str]:
    sink = pa.BufferOutputStream()
    w = pa_csv.CSVWriter(sink, schema)
    w.write_table(pa.table(columns, schema=schema))
    w.close()
    return sink.getvalue().to_pybytes().decode().split("\n")[1:-1]


def _bits(x: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", x))[0]


ANY_FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 2**64 - 1).map(_bits),
                      st.integers(-30, 30).flatmap(lambda e: st.floats(10.0 ** e / 3, 10.0 ** (e + 1))))


@settings(max_examples=30, deadline=None)
@given(st.lists(ANY_FLOAT, min_size=1, max_size=300))
def test_floats_print_as_arrow_prints_them(values):
    want = _arrow_csv_lines(pa.schema([("v", pa.float64())]), {"v": values})
    assert [ex._float(v) for v in values] == want


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=20)), min_size=1, max_size=50),
       st.lists(st.one_of(st.none(), st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=5)),
                                                                             timezone(timedelta(hours=-3, minutes=-30))])),
                          st.datetimes(min_value=datetime(1900, 1, 1))), min_size=1, max_size=50))
def test_text_and_times_print_as_arrow_prints_them(texts, times):
    schema = pa.schema([("s", pa.string())])
    want = _arrow_csv_lines(schema, {"s": texts})
    got = "".join(ex._text(s) + "\n" for s in texts).split("\n")[:-1]
    assert got == want
    want = _arrow_csv_lines(pa.schema([("t", pa.timestamp("us", tz="UTC"))]), {"t": times})
    assert [ex._time(t) for t in times] == want


# -- the whole export against the code it replaced -------------------------------------------------
def _old_columns(study: str, trials: list[TrialRecord], params: dict[str, str]) -> dict[str, list[Any]]:
    """The export's former chunk builder (Python lists -> pa.table), kept here as the reference."""
    cols: dict[str, list[Any]] = {c: [] for c in ex.TRIAL_COLUMNS + [f"param.{k}" for k in params] + ex.POINT_COLUMNS}
    for t in trials:
        points = [(m, e, v, i == len(h) - 1) for m, h in t.history.items() for i, (e, v) in enumerate(h)]
        n = len(points) or 1
        for c, v in (("study", study), ("trial_id", t.trial_id), ("seed", t.seed), ("status", t.status),
                     ("n_params", t.n_params), ("flops", t.flops), ("error", t.error),
                     ("started_at", t.started_at), ("ended_at", t.ended_at)):
            cols[c] += [v] * n
        for k, kind in params.items():
            v = t.params.get(k)
            if kind == "json" and v is not None:
                v = json.dumps(v)
            elif kind == "float" and v is not None:
                v = float(v)
            cols[f"param.{k}"] += [v] * n
        if not points:
            for c in ex.POINT_COLUMNS:
                cols[c].append(None)
            continue
        for m, e, v, last in points:
            cols["metric"].append(m)
            cols["epoch"].append(e + 1)
            cols["value"].append(v)
            cols["final"].append(last)
    return cols


def _old_param_types(store: Store, chunk: int) -> dict[str, str]:
    """The export's former first pass (every trial's params), kept here as the reference."""
    kinds: dict[str, set[str]] = {}
    for _, trials in store.iter_trial_chunks(None, None, metrics="none", chunk=chunk):
        for t in trials:
            for k, v in t.params.items():
                if k != "seed" and v is not None:
                    kinds.setdefault(k, set()).add("bool" if isinstance(v, bool) else "int" if isinstance(v, int)
                                                   else "float" if isinstance(v, float) else
                                                   "string" if isinstance(v, str) else "json")
    return {k: (ks.pop() if len(ks) == 1 and "json" not in ks else "float" if ks == {"int", "float"} else "json")
            for k, ks in sorted(kinds.items())}


def _old_export(store: Store, path: Path, fmt: str, final: bool, chunk: int) -> None:
    params = _old_param_types(store, chunk)
    assert ex._param_types(store, None, None) == params
    schema = ex._schema(params)
    writer = pa_csv.CSVWriter(str(path), schema) if fmt == "csv" else pq.ParquetWriter(str(path), schema)
    for study, trials in store.iter_trial_chunks(None, None, metrics="final" if final else "all", chunk=chunk):
        writer.write_table(pa.table(_old_columns(study, trials, params), schema=schema))
    writer.close()


def _fill(s: Store, portable: bool = False) -> None:
    """The studies below; ``portable``: without what SQLite and PostgreSQL store differently (an aware
    time of another zone: SQLite keeps its wall time, PostgreSQL converts it; -0.0: SQLite keeps 0)."""
    tz = timezone.utc if portable else timezone(timedelta(hours=2))
    odd = [trial("odd", {"model.kwargs.kernel_size": [31, 29, 27, 13], "recipe.lr": 0.1, "tag": 'a "b", c\nd',
                         "flag": True}, 0, history={"top1": [(0, -math.inf), (1, 1e-7)], "loss": [(0, math.inf)]}),
           trial("odd", {"model.kwargs.kernel_size": 5, "recipe.lr": 1, "tag": "", "flag": False}, 1,
                 history={"top1": [(0, 0.0 if portable else -0.0), (1, 1234567890123.0)]}, error="x,\"y\"\n", status=FAILED,
                 n_params=None, flops=None),
           trial("odd", {"model.kwargs.kernel_size": 7, "recipe.lr": 2.5e-5, "tag": None}, 2, status=PENDING)]
    odd[2] = TrialRecord(**{**odd[2].__dict__, "started_at": None, "ended_at": None})
    odd[0] = TrialRecord(**{**odd[0].__dict__, "started_at": datetime(2024, 5, 6, 7, 8, 9, 123, tzinfo=tz)})
    s.import_records(big_studies(n_trials=120, n_studies=2, seeds=3, epochs=4, failed_every=7)
                     + [StudyRecord("odd", "odd values", {"name": "odd"}, odd)])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Synthetic studies plus one with every awkward value: lists and mixed int/float axes, text
    with quotes, commas and newlines, infinite metrics (SQLite keeps no nan), a trial without metrics, no timestamps."""
    s = Store(f"sqlite:///{tmp_path_factory.mktemp('export') / 'e.db'}")
    _fill(s)
    yield s
    s.close()


@pytest.mark.parametrize("final", [False, True])
def test_csv_is_byte_for_byte_what_pyarrow_wrote(store: Store, tmp_path: Path, final: bool) -> None:
    new, old = tmp_path / "new.csv", tmp_path / "old.csv"
    n = ex.export(store, new, final=final, chunk=17)
    _old_export(store, old, "csv", final, 17)
    assert new.read_bytes() == old.read_bytes()
    with new.open(newline="") as f:
        assert n == sum(1 for _ in csv.reader(f)) - 1 > 100


@pytest.mark.parametrize("final", [False, True])
def test_parquet_holds_what_it_held(store: Store, tmp_path: Path, final: bool) -> None:
    new, old = tmp_path / "new.parquet", tmp_path / "old.parquet"
    n = ex.export(store, new, final=final, chunk=17)
    _old_export(store, old, "parquet", final, 17)
    a, b = pq.read_table(new), pq.read_table(old)
    assert a.schema == b.schema and a.num_rows == b.num_rows == n
    assert a.equals(b)  # nan == nan here: Arrow compares values, not IEEE
    assert pq.ParquetFile(new).metadata.num_row_groups == pq.ParquetFile(old).metadata.num_row_groups
    assert new.read_bytes() == old.read_bytes()


@pytest.mark.parametrize("final", [False, True])
def test_postgresql_exports_the_same_bytes_as_sqlite(pg_url: str, tmp_path: Path, final: bool) -> None:
    """The same studies in PostgreSQL: the same CSV, byte for byte (one SQL text serves both), for
    every study, some studies, and some trials."""
    from conftest import drop_schema

    drop_schema(pg_url)
    pg, store = Store(pg_url), Store(f"sqlite:///{tmp_path / 'e.db'}")
    try:
        _fill(pg, portable=True)
        _fill(store, portable=True)
        some = [t.trial_id for t in store.load("odd").trials][:2] + [t.trial_id for t in store.load("synthetic_01").trials][5:9]
        for kw in ({}, {"studies": ["odd", "synthetic_01"]}, {"trial_ids": some + ["no-such-trial"]}):
            a, b = tmp_path / "sqlite.csv", tmp_path / "pg.csv"
            n = ex.export(store, a, final=final, chunk=13, **kw)
            assert ex.export(pg, b, final=final, chunk=13, **kw) == n > 0
            assert a.read_bytes() == b.read_bytes(), kw
    finally:
        pg.close()
        store.close()
