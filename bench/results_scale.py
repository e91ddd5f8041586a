"""Reads at 10^4-10^5 trials (issues 12 and 13): the read-only commands on generated databases.

Builds (or reuses) SQLite databases of one study with N trials, 10 epochs x 3 metrics each (bulk
insert through ``Store.import_records``, streamed), then times, each as a fresh subprocess (start-up
included, as a user meets it): ``ablate studies``, ``show``, ``table``, ``export`` to CSV and to
Parquet, ``export --final`` and ``dashboard --out``, with the peak RSS of each. As baselines
measured in the same run: ``python -c pass`` (start-up), and a raw SQL query of the same data in
one process: every metric row (what an export has to read) and the final rows (what a table
needs), fetched with sqlite3 and no ORM. Ratios are to those. The in-process table is split into
the store's reads (``store_reads``, sqlite3) and the rendering.

Run: `.venv/bin/python bench/results_scale.py --trials 10000 100000 --dir /tmp/ablate-bench`
(builds take minutes at 10^5; they are kept in --dir and reused). Results go in docs/performance.md.
``--only table`` times only the operations whose name contains one of the words given (here the
table's: in process, and ``ablate table`` in md and csv), with the same baselines.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the generator of synthetic studies the tests use


def build(path: Path, n: int) -> None:
    from _synth import scale_record

    from ablate.store import Store

    if path.exists():
        return
    t = time.monotonic()
    tmp = path.with_suffix(".building")
    for p in tmp.parent.glob(tmp.name + "*"):
        p.unlink()
    store = Store(f"sqlite:///{tmp}")
    store.import_records([scale_record("scale", n, epochs=10, seeds=10)])
    store.close()
    tmp.rename(path)
    print(f"built {path} ({n} trials) in {time.monotonic() - t:.0f} s", file=sys.stderr)


def raw_sql(path: Path) -> tuple[float, float, float]:
    """Seconds to fetch every metric row, the final rows (aggregated from the metric rows), and the
    final rows as stored in ``trial_finals`` (0005), with sqlite3 (no ORM, no Python objects beyond
    the tuples): the floor any reader of the same data pays."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    t = time.monotonic()
    rows = con.execute("SELECT trial_pk, name, epoch, value FROM metrics").fetchall()
    every = time.monotonic() - t
    t = time.monotonic()
    finals = con.execute("SELECT m.trial_pk, m.name, m.epoch, m.value FROM metrics m JOIN (SELECT trial_pk, name, "
                         "max(epoch) AS e FROM metrics GROUP BY trial_pk, name) f ON m.trial_pk = f.trial_pk "
                         "AND m.name = f.name AND m.epoch = f.e").fetchall()
    final = time.monotonic() - t
    t = time.monotonic()  # what reads of final values run since db/versions/0005: one stored row each
    stored = con.execute("SELECT trial_pk, name, epoch, value FROM trial_finals").fetchall()
    stored_s = time.monotonic() - t
    con.close()
    assert rows and finals and sorted(stored) == sorted(finals)
    return every, final, stored_s


def in_process(path: Path, out: Path, export_too: bool = True) -> tuple[float, float | None]:
    """Seconds of the table (aggregate reads + render) and of a Parquet export, in this process
    (imports done): the reads themselves, comparable with the raw SQL of the same run."""
    from ablate.export import export
    from ablate.store_reads import open_reader
    from ablate.tables import load_table_record, render

    store = open_reader(f"sqlite:///{path}")
    t = time.monotonic()
    record = load_table_record(store, "scale")
    reads = time.monotonic() - t
    render(record, "md")
    table = time.monotonic() - t
    print(f"  (in process: the table's reads {reads:.2f} s, rendering {table - reads:.2f} s)", file=sys.stderr)
    if not export_too:
        store.close()
        return table, None
    t = time.monotonic()
    export(store, out / "in-process.parquet", studies=["scale"])
    exported = time.monotonic() - t
    store.close()
    return table, exported


def measure(path: Path, out: Path, only: list[str] | None = None) -> list[tuple[str, float, float, str]]:
    """(operation, seconds, peak RSS MB, baseline) for one database. Each command in a fresh child:
    RUSAGE_CHILDREN's maximum then grows monotonically, so each is measured in its own child of a
    child (``bench/results_scale.py --one``) to read its own peak."""
    py = sys.executable
    url = f"sqlite:///{path}"
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    trial = con.execute("SELECT trial_id FROM trials ORDER BY pk LIMIT 1").fetchone()[0]
    con.close()
    ops = [("python -c pass", ["--pass"]),
           ("ablate studies", ["studies", "--db", url]),
           ("ablate show", ["show", trial[:8], "--db", url]),
           ("ablate table", ["table", "scale", "--db", url]),
           ("ablate table --format csv", ["table", "scale", "--db", url, "--format", "csv"]),
           ("ablate export (CSV)", ["export", "scale", "--db", url, "--out", str(out / "e.csv")]),
           ("ablate export (Parquet)", ["export", "scale", "--db", url, "--out", str(out / "e.parquet")]),
           ("ablate export --final (Parquet)", ["export", "scale", "--db", url, "--final", "--out",
                                                str(out / "f.parquet")]),
           ("ablate dashboard --out", ["dashboard", "--db", url, "--out", str(out / "report.html")])]
    if only:  # the interpreter's start stays: the ratio of the commands that read little
        ops = [(n, a) for n, a in ops if n == "python -c pass" or any(w in n for w in only)]
    res = []
    for name, args in ops:
        r = subprocess.run([py, __file__, "--one", *args], capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"{name} failed: {r.stderr[-2000:]}")
        wall, rss = map(float, r.stdout.split())
        base = ("start" if name in ("python -c pass", "ablate studies", "ablate show") else
                "final" if "table" in name or "final" in name or "dashboard" in name else "every")
        res.append((name, wall, rss, base))
    return res


def one(args: list[str]) -> None:
    """Run one ablate command as a child and print its wall time and peak RSS."""
    import resource

    t = time.monotonic()
    cmd = ["-c", "pass"] if args == ["--pass"] else ["-m", "ablate.cli", *args]
    proc = subprocess.run([sys.executable, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.monotonic() - t
    if proc.returncode:
        sys.stderr.write(proc.stderr.decode())
        raise SystemExit(proc.returncode)
    print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ablate-bench"))
    ap.add_argument("--only", nargs="+", metavar="WORD", help="only the operations whose name contains a WORD")
    ap.add_argument("--one", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    if a.one is not None:
        one(a.one)
        return
    a.dir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} at start, Python "
          f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    print("| trials | operation | seconds | peak RSS MB | raw SQL s (same data) | ratio |")
    print("|---|---|---|---|---|---|")
    for n in a.trials:
        path = a.dir / f"scale-{n}.db"
        build(path, n)
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)  # a database built before 0005: migrated first
        old = con.execute("SELECT version_num FROM alembic_version").fetchone()[0] < "0005"
        con.close()
        if old:
            from ablate.store import Store

            t = time.monotonic()
            Store(f"sqlite:///{path}").close()
            print(f"| {n} | migration to 0005 (trial_finals backfilled) | {time.monotonic() - t:.2f} | – | – | – |")
        every, final, stored = raw_sql(path)
        print(f"| {n} | raw SQL: every metric row / final rows aggregated / final rows stored (sqlite3, in process) "
              f"| {every:.2f} / {final:.2f} / {stored:.2f} | – | – | 1 |")
        table, exported = in_process(path, a.dir, export_too=not a.only or any(w in "export" for w in a.only))
        print(f"| {n} | table, in process (aggregate reads + render) | {table:.2f} | – | {final:.2f} (final) | "
              f"{table / final:.1f} |")
        if exported is not None:
            print(f"| {n} | export Parquet, in process | {exported:.2f} | – | {every:.2f} (every) | "
                  f"{exported / every:.1f} |", flush=True)
        start = None
        for name, wall, rss, base in measure(path, a.dir, a.only):
            if base == "start":  # commands that read little: as a ratio to the interpreter's start
                start = start or wall
                print(f"| {n} | `{name}` | {wall:.2f} | {rss:.0f} | {start:.2f} (python -c pass) | "
                      f"{wall / start:.1f} |", flush=True)
                continue
            ref = final if base == "final" else every
            print(f"| {n} | `{name}` | {wall:.2f} | {rss:.0f} | {ref:.2f} ({base}) | {wall / ref:.1f} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
