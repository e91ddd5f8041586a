"""Issue 12.4: the data of ``ablate dashboard --out``, byte for byte, on every backend.

tests/data/dashboard/blobs.json holds each study's JSON blob (what the page parses and draws: the
figures, the table, every trial in columns, the embedded trial details) as the dashboard code wrote
it before its reads were reworked to answer at 10^4 trials in under half a second (the commit that
added this file), for the golden tables' four studies (``test_tables_golden.fill``: a baseline grid
with failures, a baseline-only table, no table section, a profile with undeclared arms, seeds and
other code) and two kernel x dilation x lr studies with failed and pending trials
(``_synth.big_studies``). A change that alters one byte of what the page shows, read from SQLite
through sqlite3 or SQLAlchemy or from PostgreSQL, fails here.

Regenerate (only when the page is meant to change): ``python tests/test_dashboard_golden.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synth import big_studies  # noqa: E402
from test_tables_golden import fill as fill_tables, filled_reader  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "data" / "dashboard" / "blobs.json"
# the code running now, as the stale marks and details compare trials with it (not this checkout's commit)
NOW = {"ablate_version": "0.2.0", "git_commit": "fedcba9876543210", "git_dirty": False, "python": "3.11",
       "driver_host": "here"}


def fill(store) -> None:
    fill_tables(store)
    store.import_records(big_studies(n_trials=240, n_studies=2, seeds=4, epochs=3, failed_every=11))


def blobs(reader, artifacts: Path) -> dict[str, str]:
    """{study: its blob as the page embeds it (``page.to_json``)} of the static page."""
    from ablate.dashboard import build
    from ablate.dashboard.page import to_json

    page, views = build(reader, artifacts=artifacts)
    got = {}
    for name in views:
        from ablate.dashboard.page import dom_id

        start = page.index(f'<script type="application/json" id="study-{dom_id(name)}">')
        text = page[page.index(">", start) + 1:page.index("</script>", start)]
        got[name] = to_json(json.loads(text.replace("<\\/", "</").replace("<\\!--", "<!--")))
    return got


@pytest.fixture(params=["sqlite3", "sqlalchemy", "postgresql"], scope="module")
def reader(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    yield from filled_reader(request, tmp_path_factory, fill, "dash-golden")


def test_dashboard_data_is_byte_identical_to_the_expected(reader, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ablate.provenance.code", lambda: dict(NOW))
    want = json.loads(GOLDEN.read_text())
    got = blobs(reader, tmp_path / "no-artifacts")
    assert sorted(got) == sorted(want)
    for name, text in got.items():
        assert text == want[name], name


FORKED = """
import json, os, sys
import ablate.provenance
ablate.provenance.code = lambda: json.loads(sys.argv[2])
import ablate.dashboard as D
from ablate.store_reads import open_reader

reader, artifacts, pids = open_reader(sys.argv[1]), sys.argv[3], sys.argv[4]
assert D._can_fork(reader)
real, parent = D._blobs, os.getpid()

def recorded(store, names, artifacts, fail=False):
    with open(pids, "a") as f:
        f.write(f"{os.getpid()}\\n")
    if fail and os.getpid() != parent:
        raise RuntimeError("the fork fails")
    return real(store, names, artifacts)

D._blobs = recorded
pages = [D.report(reader, artifacts=artifacts, workers=2)]
D._blobs = lambda *a: recorded(*a, fail=True)  # the fork fails: this process builds its share itself
pages.append(D.report(reader, artifacts=artifacts, workers=2))
D._blobs = recorded
pages.append(D.report(reader, artifacts=artifacts, workers=2,
                      names=["plain", "synthetic_01", "nope", "big", "synthetic_00"]))
print(json.dumps(pages))
"""


def test_a_page_built_by_two_processes_is_the_page(reader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ablate dashboard --out`` builds half of the studies in a fork where there are two cores
    (``dashboard._forked_blobs``): the page is byte for byte the one built in one process (but for
    the time it says it was made), also when the fork fails. Only a one-thread process reading an
    SQLite file forks (run here in a fresh interpreter: pytest's may have threads); a Store (an
    engine's pool: SQLAlchemy, PostgreSQL) never does."""
    import re
    import subprocess

    from ablate.dashboard import _can_fork, report
    from ablate.store_reads import Reader

    monkeypatch.setattr("ablate.provenance.code", lambda: dict(NOW))
    art = tmp_path / "no-artifacts"
    one = report(reader, artifacts=art)
    stamp = re.compile(r"generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
    if type(reader) is not Reader:
        assert not _can_fork(reader)
        assert stamp.sub("", report(reader, artifacts=art, workers=2)) == stamp.sub("", one)
        return
    pids = tmp_path / "pids"
    r = subprocess.run([sys.executable, "-c", FORKED, reader.url, json.dumps(NOW), str(art), str(pids)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    pages = json.loads(r.stdout)
    assert len(pages) == 3
    for page in pages[:2]:
        assert stamp.sub("", page) == stamp.sub("", one)
    some = ["plain", "synthetic_01", "nope", "big", "synthetic_00"]  # = ``names``' order, not the database's
    assert stamp.sub("", pages[2]) == stamp.sub("", report(reader, artifacts=art, names=some))
    built = pids.read_text().split()
    assert len(built) == 7 and len(set(built[:2])) == 2  # two processes, the fork and this one twice, two


@pytest.mark.parametrize("cpus, load, workers", [(2, 0.7, 2), (2, 1.4, 2), (2, 1.5, 1), (2, 3.0, 1), (1, 0.0, 1),
                                                  (16, 9.0, 2), (None, 0.0, 1)])
def test_the_page_is_built_in_two_processes_only_where_a_core_is_free(monkeypatch: pytest.MonkeyPatch, cpus,
                                                                        load: float, workers: int) -> None:
    """Two processes cost more CPU in all: ``dashboard --out`` forks only where the load average
    leaves a second core idle."""
    from ablate.dashboard import page_workers

    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    monkeypatch.setattr("os.getloadavg", lambda: (load, load, load))
    assert page_workers() == workers


if __name__ == "__main__":  # write the expected blobs (SQLite through sqlite3)
    import tempfile

    import ablate.provenance
    from ablate.store import Store
    from ablate.store_reads import open_reader

    ablate.provenance.code = lambda: dict(NOW)
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{d}/g.db"
        s = Store(url)
        fill(s)
        s.close()
        r = open_reader(url)
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        out = blobs(r, Path(d) / "no-artifacts")
        GOLDEN.write_text(json.dumps(out, indent=0, sort_keys=True) + "\n")
        print(f"wrote {len(out)} studies' blobs to {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
