"""The dashboard at 10^4 and 10^5 trials, as ratios to a raw SQL query of the same data.

Builds an SQLite database per size with bulk inserts (one study, an lr x drop-rate grid, 10 seeds
per arm, 10 epochs x 3 metrics per trial: ``tests/_synth.scale_record``), then times, in the same
process and alternating with the baseline:

* ``raw SQL``: the data the page shows, by one hand-written query through sqlite3 (every trial's
  id, params, seed, status and final value of every metric: max epoch per trial and metric,
  joined back), fetched into Python tuples: the least any page over these results must do;
* ``page build``: ``ablate.dashboard.report`` (the static page ``ablate dashboard --out`` writes);
* ``served, first``: ``GET /`` of a fresh ``dashboard --serve`` (builds the page);
* ``served, cached``: ``GET /`` again with nothing changed (the cache; one fingerprint query);
* ``served, version``: ``GET /api/version`` (what the open page polls);
* ``served, curves``: ``GET /api/curves`` for 12 arms (per-epoch rows of their trials only);
* ``browser``: the static page opened in a fresh headless Chromium until its on-screen plots are
  drawn (when /usr/bin/chromium exists).

Run: `.venv/bin/python bench/dashboard_scale.py [--sizes 10000 100000] [--repeats 3]`.
Results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

RAW_SQL = """
SELECT t.trial_id, t.params, t.seed, t.status, m.name, m.value
FROM (SELECT trial_pk, name, max(epoch) AS e FROM metrics GROUP BY trial_pk, name) AS last
JOIN metrics AS m ON m.trial_pk = last.trial_pk AND m.name = last.name AND m.epoch = last.e
JOIN trials AS t ON t.pk = last.trial_pk
"""


def make_db(path: Path, n: int) -> None:
    from _synth import scale_record

    from ablate.store import Store

    store = Store(f"sqlite:///{path}")
    t = time.perf_counter()
    store.import_records([scale_record("scale", n, epochs=10, seeds=10, failed_every=97)])
    print(f"  built {n:,} trials in {time.perf_counter() - t:.1f}s ({path.stat().st_size / 1e6:.0f} MB)", flush=True)
    store.close()


def raw_sql(path: Path) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return len(con.execute(RAW_SQL).fetchall())
    finally:
        con.close()


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def browser_load(page: Path) -> float | None:
    from _browser import CHROMIUM, Chromium

    if not Path(CHROMIUM).exists():
        return None
    with Chromium() as c:
        t = time.monotonic()
        c.load(page.as_uri(), timeout=180)
        c.evaluate("window.ablateReady", await_promise=True, timeout=180)
        return time.monotonic() - t


def bench(n: int, repeats: int, folder: Path) -> dict[str, float]:
    from ablate.dashboard import make_server, report
    from ablate.store import Store

    db = folder / f"scale-{n}.db"
    if not db.exists():
        make_db(db, n)
    store = Store(f"sqlite:///{db}", create=False)
    page = folder / f"scale-{n}.html"
    out: dict[str, list[float]] = {k: [] for k in ("raw", "build", "first", "cached", "version", "curves")}
    size = 0
    for _ in range(repeats):  # alternate baseline and measured, so load on the machine hits both
        out["raw"].append(timed(lambda: raw_sql(db)))
        text = ""

        def build() -> None:
            nonlocal text
            text = report(store)

        out["build"].append(timed(build))
        page.write_text(text, encoding="utf-8")
        size = len(text.encode())
        server = make_server(store, "127.0.0.1", 0, refresh=0)
        port = server.server_address[1]
        th = threading.Thread(target=server.serve_forever, daemon=True)
        th.start()

        def get(path: str) -> None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=600) as r:
                r.read()

        try:
            out["first"].append(timed(lambda: get("/")))
            out["cached"].append(timed(lambda: get("/")))
            out["version"].append(timed(lambda: get("/api/version")))
            out["curves"].append(timed(lambda: get("/api/curves?study=scale&metric=top1&arms=" + ",".join(map(str, range(12))))))
            assert server.cache.builds == 1
        finally:
            server.shutdown()
            server.server_close()
    res = {k: statistics.median(v) for k, v in out.items()}
    res["size_mb"] = size / 1e6
    res["browser"] = browser_load(page) or float("nan")
    store.close()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where the databases go (kept for reruns)")
    a = ap.parse_args()
    folder = a.dir or Path(tempfile.mkdtemp(prefix="ablate-dash-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}")
    print("| trials | raw SQL s | page build s (ratio) | page MB | served first s (ratio) | served cached s (ratio) "
          "| /api/version s | /api/curves s | browser s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in a.sizes:
        r = bench(n, a.repeats, folder)
        raw = r["raw"]
        print(f"| {n:,} | {raw:.2f} | {r['build']:.2f} ({r['build'] / raw:.1f}x) | {r['size_mb']:.1f} | "
              f"{r['first']:.2f} ({r['first'] / raw:.1f}x) | {r['cached']:.3f} ({r['cached'] / raw:.2f}x) | "
              f"{r['version']:.3f} | {r['curves']:.3f} | {r['browser']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
