"""Studies' trials and metrics in long format, for pandas users, streamed in chunks.

One row per (trial, epoch, metric), with the trial's axis values as ``param.<path>`` columns, its
seed, status, params, FLOPs and error, and ``final`` marking each metric's last epoch. Epochs count
from 1, as everywhere a person reads them. A trial with no metric yet (pending, or failed before
its first epoch) still has one row, with empty epoch/metric/value, so failures are not lost.

``export`` reads the database ``chunk`` trials at a time (``Store.iter_trial_chunks``) and appends
each chunk to the file (pyarrow's CSV writer, or one Parquet row group per chunk), so memory stays
bounded whatever the database's size. ``final=True`` writes only each metric's last epoch; a
subset of studies or trial ids can be asked for. The columns are fixed before the first row: a first
pass over the trials (no metric rows) finds the axes and the type of each.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ablate.store_reads import Reader, TrialRecord

EXPORT_FORMATS = ("csv", "parquet")
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
TRIAL_COLUMNS = ["study", "trial_id", "seed", "status", "n_params", "flops", "error", "started_at", "ended_at"]
POINT_COLUMNS = ["epoch", "metric", "value", "final"]
BASE_COLUMNS = TRIAL_COLUMNS + POINT_COLUMNS
CHUNK_TRIALS = 1000


def resolve_format(path: str | Path, fmt: str | None = None) -> str:
    """The format to write ``path`` in: ``fmt``, else its suffix (.csv, .parquet / .pq), else csv for
    a name without a suffix. A suffix that says another format (``-o x.json``, or ``x.parquet`` with
    ``--format csv``) is a ValueError: a file whose name lies about its content misleads every reader."""
    path = Path(path)
    if fmt is not None and fmt not in EXPORT_FORMATS:
        raise ValueError(f"--format: one of {', '.join(EXPORT_FORMATS)}, got '{fmt}'")
    suffix = path.suffix.lower()
    implied = SUFFIXES.get(suffix)
    if suffix and implied is None:
        known = ", ".join(SUFFIXES)
        raise ValueError(f"--out: a file ending in {known} (or no suffix with --format), got '{path.name}'; "
                         f"ablate export writes {' or '.join(EXPORT_FORMATS)}")
    if fmt is not None and implied is not None and implied != fmt:
        raise ValueError(f"--out: '{path.name}' says {implied} but --format is {fmt}; make them agree")
    return fmt or implied or "csv"


def _param_types(store: Reader, studies: list[str] | None, trial_ids: list[str] | None,
                 chunk: int) -> dict[str, str]:
    """{axis: arrow type name} over every exported trial: a column of lists or dicts (per-stage
    kernel sizes) or of mixed kinds becomes JSON text, so every row has one type."""
    kinds: dict[str, set[str]] = {}
    for _, trials in store.iter_trial_chunks(studies, trial_ids, metrics="none", chunk=chunk):
        for t in trials:
            for k, v in t.params.items():
                if k != "seed" and v is not None:
                    kinds.setdefault(k, set()).add("bool" if isinstance(v, bool) else "int" if isinstance(v, int)
                                                   else "float" if isinstance(v, float) else
                                                   "string" if isinstance(v, str) else "json")
    out = {}
    for k, ks in sorted(kinds.items()):
        out[k] = (ks.pop() if len(ks) == 1 and "json" not in ks else
                  "float" if ks == {"int", "float"} else "json")
    return out


def _schema(params: dict[str, str]):
    import pyarrow as pa

    arrow = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "string": pa.string(), "json": pa.string()}
    ts = pa.timestamp("us", tz="UTC")
    fields = [("study", pa.string()), ("trial_id", pa.string()), ("seed", pa.int64()), ("status", pa.string()),
              ("n_params", pa.int64()), ("flops", pa.int64()), ("error", pa.string()), ("started_at", ts),
              ("ended_at", ts)]
    fields += [(f"param.{k}", arrow[t]) for k, t in params.items()]
    fields += [("epoch", pa.int64()), ("metric", pa.string()), ("value", pa.float64()), ("final", pa.bool_())]
    return pa.schema(fields)


def _columns(study: str, trials: list[TrialRecord], params: dict[str, str]) -> dict[str, list[Any]]:
    """One chunk of trials as columns (lists), one entry per (trial, epoch, metric)."""
    cols: dict[str, list[Any]] = {c: [] for c in TRIAL_COLUMNS + [f"param.{k}" for k in params] + POINT_COLUMNS}
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
            for c in POINT_COLUMNS:
                cols[c].append(None)
            continue
        for m, e, v, last in points:
            cols["metric"].append(m)
            cols["epoch"].append(e + 1)  # counted from 1
            cols["value"].append(v)
            cols["final"].append(last)
    return cols


def export(store: Reader, path: str | Path, fmt: str | None = None, *, studies: Iterable[str] | None = None,
           trial_ids: Iterable[str] | None = None, final: bool = False, chunk: int = CHUNK_TRIALS) -> int:
    """Write the long-format table of ``studies`` (all when None), optionally only ``trial_ids`` and
    only ``final`` values, to ``path`` (format from ``resolve_format``), ``chunk`` trials at a time.
    Returns the number of rows written. KeyError for a study the database does not hold."""
    import pyarrow as pa

    path = Path(path)
    fmt = resolve_format(path, fmt)
    names = None if studies is None else list(studies)
    ids = None if trial_ids is None else list(trial_ids)
    params = _param_types(store, names, ids, chunk)
    schema = _schema(params)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")  # a failed export leaves no half-written file under the name
    rows = 0
    writer: Any
    if fmt == "csv":
        from pyarrow import csv as pa_csv

        writer = pa_csv.CSVWriter(str(tmp), schema)
    else:
        import pyarrow.parquet as pq

        writer = pq.ParquetWriter(str(tmp), schema)
    try:
        for study, trials in store.iter_trial_chunks(names, ids, metrics="final" if final else "all", chunk=chunk):
            batch = pa.table(_columns(study, trials, params), schema=schema)
            writer.write_table(batch)
            rows += batch.num_rows
        writer.close()
        tmp.replace(path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return rows
