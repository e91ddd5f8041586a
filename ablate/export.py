"""Studies' trials and metrics in long format, for pandas users, streamed in chunks.

One row per (trial, epoch, metric), with the trial's axis values as ``param.<path>`` columns, its
seed, status, params, FLOPs and error, and ``final`` marking each metric's last epoch. Epochs count
from 1, as everywhere a person reads them. A trial with no metric yet (pending, or failed before
its first epoch) still has one row, with empty epoch/metric/value, so failures are not lost.

``export`` reads the database ``chunk`` trials at a time (``Reader.export_chunks``: plain rows, each
trial's params parsed once per arm, metric rows as the database hands them over) and appends each
chunk to the file, so memory stays bounded whatever the database's size. ``final=True`` writes
only each metric's last epoch; a subset of studies or trial ids can be asked for. The columns are
fixed before the first row: the distinct arms of the exported trials (one query) give the axes and
the type of each.

Each chunk becomes CSV text in pure Python, in exactly the format of pyarrow's CSV writer (every
string quoted, nulls empty, floats as Arrow prints them, timestamps in UTC with a ``Z``), which is
what this export wrote before: a CSV export imports neither pyarrow, numpy nor pandas (seconds of a
command typed at a prompt). A Parquet export parses that same text with pyarrow's CSV reader
against the fixed schema (floats are printed shortest-round-trip, so every value is read back
exactly) and writes it as one row group per chunk; building Arrow arrays from Python objects would
import pandas (pyarrow checks every input for a DataFrame), reading CSV does not.
"""

from __future__ import annotations

import io
import json
import math
import re
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:  # the caller hands over its reader: this module needs none of it at import
    from ablate.store_reads import Reader

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


def _param_types(store: Reader, studies: list[str] | None, trial_ids: list[str] | None) -> dict[str, str]:
    """{axis: arrow type name} over every exported trial: a column of lists or dicts (per-stage
    kernel sizes) or of mixed kinds becomes JSON text, so every row has one type. Read from the
    distinct arms (``Reader.distinct_params``), not from every trial."""
    kinds: dict[str, set[str]] = {}
    for params in store.distinct_params(studies, trial_ids):
        for k, v in params.items():
            if v is not None:
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


# -- values as pyarrow's CSV writer prints them ---------------------------------------------------
def _text(v: Any) -> str:
    return "" if v is None else '"' + str(v).replace('"', '""') + '"'


def _int(v: Any) -> str:
    return "" if v is None else str(int(v))


def _bool(v: Any) -> str:
    return "" if v is None else ("true" if v else "false")


def _float(v: Any) -> str:
    """Arrow's float text (double-conversion's shortest digits, as Python's repr): plain notation
    for decimal exponents -6..9, else ``d.ddde+N``; ``nan``, ``inf``, ``-inf``, ``-0``."""
    if v is None:
        return ""
    v = float(v)
    if 1e-4 <= abs(v) < 1e10:  # the common case: repr is fixed notation here, as Arrow's, but says 1.0
        r = repr(v)
        return r[:-2] if r.endswith(".0") else r
    if v != v:
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    sign = "-" if math.copysign(1.0, v) < 0 else ""
    if v == 0:
        return sign + "0"
    mantissa, _, exp = repr(abs(v)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + (int(exp) if exp else 0)  # value = 0.<digits> x 10^point
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    exponent = point - 1
    if -6 <= exponent < 10:
        if point <= 0:
            return f"{sign}0.{'0' * -point}{digits}"
        if point >= len(digits):
            return sign + digits + "0" * (point - len(digits))
        return f"{sign}{digits[:point]}.{digits[point:]}"
    rest = f".{digits[1:]}" if len(digits) > 1 else ""
    return f"{sign}{digits[0]}{rest}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"


_STORED_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")  # SQLite's text of a time, as SQLAlchemy writes it


def _time(v: datetime | str | None) -> str:
    """UTC with microseconds and ``Z`` (a naive time is taken as UTC, as Arrow does). Text is a time
    as SQLite stores it (naive, in UTC): in the form SQLAlchemy writes it, it is already this text
    but the ``Z`` (no parse and format of two times per trial); any other text is parsed."""
    if v is None:
        return ""
    if type(v) is str:
        if _STORED_TIME.fullmatch(v):
            return v + "Z"
        v = datetime.fromisoformat(v)
    if v.tzinfo is not None:
        v = v.astimezone(timezone.utc)
    return (f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}."
            f"{v.microsecond:06d}Z")


def _json(v: Any) -> str:
    return "" if v is None else _text(json.dumps(v))


_BY_KIND: dict[str, Callable[[Any], str]] = {"bool": _bool, "int": _int, "float": _float, "string": _text,
                                             "json": _json}


def header(params: dict[str, str]) -> str:
    """The CSV's first line: every column name, quoted."""
    return ",".join(_text(c) for c in TRIAL_COLUMNS + [f"param.{k}" for k in params] + POINT_COLUMNS) + "\n"


_LAST = (None, None, None, None)  # after the last point: every trial's last row of each metric is final


def _lines(study: str, trials: list[tuple], points: list[tuple], params: dict[str, str]) -> tuple[str, int]:
    """One chunk (``Reader.export_chunks``) as CSV text, one line per (trial, epoch, metric), and
    its line count. Each trial's cells are formatted once, each point's in one f-string: a point
    is final when the next one is another metric or trial (they come ordered by trial, metric and
    epoch), and its value, when not a whole number, takes the fast path of ``_float`` inline (10^5
    calls otherwise)."""
    study_cell = _text(study)
    by_kind = [(k, _BY_KIND[kind]) for k, kind in params.items()]
    arms: dict[int, str] = {}  # the axis cells of a params dict, once per arm (its trials share the dict)
    heads = {}
    for pk, tid, p, seed, status, n_params, flops, error, started, ended in trials:
        axes = arms.get(id(p))  # the dicts live as long as ``trials``: their ids are theirs meanwhile
        if axes is None:
            axes = arms[id(p)] = "".join(["," + f(p.get(k)) for k, f in by_kind])
        heads[pk] = ",".join([study_cell, _text(tid), _int(seed), _text(status), _int(n_params), _int(flops),
                              _text(error), _time(started), _time(ended)]) + axes
    cells: dict[str, str] = {}
    out: list[str] = []
    append = out.append
    after = iter(points)
    next(after, None)
    for (pk, e, m, v), (npk, _, nm, _) in zip(points, chain(after, (_LAST,))):
        if m is None:  # a trial without metric rows: one line, no point
            append(heads[pk] + ",,,,\n")
            continue
        cell = cells.get(m)
        if cell is None:
            cell = cells[m] = _text(m)
        if (1e-4 <= v < 1e10 or -1e10 < v <= -1e-4) and v % 1.0:  # repr is Arrow's text here but for
            # whole numbers (1.0 is Arrow's 1: ``_float``), formatted in the line itself (epochs from 1)
            append(f"{heads[pk]},{e + 1},{cell},{v!r},{'true' if nm != m or npk != pk else 'false'}\n")
        else:
            append(f"{heads[pk]},{e + 1},{cell},{_float(v)},{'true' if nm != m or npk != pk else 'false'}\n")
    return "".join(out), len(out)


def _parquet_writer(path: Path, params: dict[str, str]) -> tuple[Any, Callable[[str], None]]:
    """A Parquet writer and the function that appends one chunk of CSV text to it as a row group."""
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    schema = _schema(params)
    writer = pq.ParquetWriter(str(path), schema)
    # one thread: the threaded reader drops its last hold of the Python file object on one of pyarrow's
    # pool threads after read_csv returns, which then takes the GIL from a thread Python never saw; with
    # tracemalloc on (tests/test_results_scale.py) CPython 3.11 crashed there (a core dump showed it:
    # PyGILState_Ensure -> tracemalloc's traceback_new). The chunks are small: no slower (1.15 s against
    # 1.35 s for all 10,000 trials of bench/cli_startup.py's database)
    read = pa_csv.ReadOptions(column_names=schema.names, use_threads=False)
    parse = pa_csv.ParseOptions(newlines_in_values=True)
    convert = pa_csv.ConvertOptions(column_types=schema, null_values=[""], strings_can_be_null=True,
                                    quoted_strings_can_be_null=False)

    def write(text: str) -> None:
        writer.write_table(pa_csv.read_csv(io.BytesIO(text.encode()), read_options=read, parse_options=parse,
                                           convert_options=convert))

    return writer, write


def export(store: Reader, path: str | Path, fmt: str | None = None, *, studies: Iterable[str] | None = None,
           trial_ids: Iterable[str] | None = None, final: bool = False, chunk: int = CHUNK_TRIALS) -> int:
    """Write the long-format table of ``studies`` (all when None), optionally only ``trial_ids`` and
    only ``final`` values, to ``path`` (format from ``resolve_format``), ``chunk`` trials at a time.
    Returns the number of rows written. KeyError for a study the database does not hold."""
    path = Path(path)
    fmt = resolve_format(path, fmt)
    names = None if studies is None else list(studies)
    ids = None if trial_ids is None else list(trial_ids)
    with store.kept():  # a read per chunk: one connection
        return _export(store, path, fmt, names, ids, final, chunk)


def _export(store: Reader, path: Path, fmt: str, names: list[str] | None, ids: list[str] | None, final: bool,
            chunk: int) -> int:
    params = _param_types(store, names, ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")  # a failed export leaves no half-written file under the name
    rows = 0
    writer: Any
    if fmt == "csv":
        writer = open(tmp, "w", encoding="utf-8", newline="")
        writer.write(header(params))
        write = writer.write
    else:
        writer, write = _parquet_writer(tmp, params)
    try:
        for study, trials, points in store.export_chunks(names, ids, final=final, chunk=chunk):
            text, n = _lines(study, trials, points, params)
            if n:
                write(text)
                rows += n
        writer.close()
        tmp.replace(path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return rows
