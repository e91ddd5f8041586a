"""All of a study's trials and metrics in long format, for pandas users.

One row per (trial, epoch, metric), with the trial's axis values as ``param.<path>`` columns, its
seed, status, params, FLOPs and error, and ``final`` marking each metric's last epoch. A trial with
no metric yet (pending, or failed before its first epoch) still has one row, with empty
epoch/metric/value, so failures are not lost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ablate.store import StudyRecord

EXPORT_FORMATS = ("csv", "parquet")
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
BASE_COLUMNS = ["study", "trial_id", "seed", "status", "n_params", "flops", "error", "started_at", "ended_at",
                "epoch", "metric", "value", "final"]


def long_rows(record: StudyRecord) -> list[dict[str, Any]]:
    axes: list[str] = []
    for t in record.trials:
        axes += [k for k in t.params if k != "seed" and k not in axes]
    # a column of lists/dicts (per-stage kernel sizes) becomes JSON text so every row has one type
    jsonish = {k for k in axes if any(isinstance(t.params.get(k), (list, dict)) for t in record.trials)}
    rows: list[dict[str, Any]] = []
    for t in record.trials:
        base: dict[str, Any] = {"study": record.name, "trial_id": t.trial_id, "seed": t.seed, "status": t.status,
                                "n_params": t.n_params, "flops": t.flops, "error": t.error,
                                "started_at": t.started_at, "ended_at": t.ended_at}
        for k in axes:
            v = t.params.get(k)
            base[f"param.{k}"] = json.dumps(v) if k in jsonish and v is not None else v
        history = t.history or {m: [(None, v)] for m, v in t.final.items()}
        if not history:
            rows.append({**base, "epoch": None, "metric": None, "value": None, "final": None})
        for metric, points in history.items():
            last = len(points) - 1
            rows += [{**base, "epoch": e, "metric": metric, "value": v, "final": i == last}
                     for i, (e, v) in enumerate(points)]
    return rows


def to_frame(record: StudyRecord):
    """A pandas DataFrame in long format (needs the record loaded with ``history=True``)."""
    import pandas as pd

    rows = long_rows(record)
    cols = BASE_COLUMNS[:9] + sorted({k for r in rows for k in r if k.startswith("param.")}) + BASE_COLUMNS[9:]
    df = pd.DataFrame(rows, columns=cols)
    df["epoch"] = df["epoch"].astype("Int64")
    for c in ("n_params", "flops", "seed"):
        df[c] = df[c].astype("Int64")
    df["value"] = df["value"].astype("float64")
    df["final"] = df["final"].astype("boolean")
    return df


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


def export(record: StudyRecord, path: str | Path, fmt: str | None = None) -> int:
    """Write the long-format table to ``path`` (format from ``resolve_format``).
    Returns the number of rows written."""
    path = Path(path)
    fmt = resolve_format(path, fmt)
    df = to_frame(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return len(df)
