"""Commands that only read answer at once: each runs in a fresh interpreter on a real SQLite
database, and what it imported is read from ``sys.modules`` at exit. torch, timm and Ray (seconds
of import) are never among them; ``plan`` and ``models`` may import torch, never Ray. Alembic is
only for writers (a read checks the schema revision with one SELECT). bench/cli_startup.py times
the same commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from _synth import big_studies
from conftest import tiny_study

# Runs the CLI as `python -m ablate.cli ARGS` would, then writes its exit code and loaded modules.
RUNNER = """
import json, runpy, sys
out, args = sys.argv[1], json.loads(sys.argv[2])
sys.argv = ["ablate", *args]
code = 0
try:
    runpy.run_module("ablate.cli", run_name="__main__")
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules}), "full": sorted(sys.modules)}, f)
"""

NEVER = {"torch", "timm", "ray"}
READS = NEVER | {"alembic"}  # what no read-only command needs


def run_cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None, full: bool = False) -> set[str]:
    """Top-level packages (``full``: all modules) imported by one CLI invocation; asserts it succeeded."""
    out = tmp_path / "modules.json"
    r = subprocess.run([sys.executable, "-c", RUNNER, str(out), json.dumps(list(args))], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path, env=env)
    got = json.loads(out.read_text())
    assert got["code"] == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
    return set(got["full" if full else "modules"])


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A small synthetic database (two studies) and one trial id in it."""
    from ablate.store import Store

    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'r.db'}"
    records = big_studies(n_trials=48, n_studies=2, seeds=4, epochs=3)  # 4 seeds: the t-tests run
    store = Store(url)
    store.import_records(records)
    store.close()
    return url, records[0].trials[0].trial_id


# what each read-only command must not import besides READS: the scientific stack (scipy ~1 s,
# pandas ~1.5 s, numpy ~0.2 s idle) has no business in a command that prints a table or writes CSV;
# nor rich (~0.04 s) in one that writes through sys.stdout and prints at most a plain status line
# (ablate._console: rich only for a terminal, markup or a line rich would wrap); a table's t-tests
# need no stdlib `statistics` (~5 ms: fractions, decimal, random; ablate.tdist), nor the running code's
# provenance (provenance.code: git twice, socket) where no trial has one
SCIENCE = {"scipy", "pandas", "numpy"}
READ_ONLY = {
    "help": (["--help"], SCIENCE | {"sqlalchemy", "pyarrow", "plotly", "pydantic", "pydantic_settings", "yaml"}),
    "studies": (["studies"], SCIENCE | {"pyarrow", "plotly", "yaml"}),
    "table": (["table", "synthetic_00", "--format", "latex"], SCIENCE | {"pyarrow", "plotly", "yaml", "rich",
                                                                 "statistics", "socket"}),
    "table_csv": (["table", "synthetic_00", "--format", "csv"], SCIENCE | {"pyarrow", "plotly", "yaml", "rich",
                                                                 "statistics", "socket"}),
    "show": (["show", "{trial}"], SCIENCE | {"pyarrow", "plotly", "socket"}),
    "export_csv": (["export", "synthetic_00", "--out", "x.csv"], SCIENCE | {"pyarrow", "plotly", "yaml", "rich"}),
    "export_parquet": (["export", "synthetic_00", "--out", "x.parquet"], {"scipy", "pandas", "plotly", "yaml"}),
    "dashboard": (["dashboard", "--out", "report.html"], SCIENCE | {"pyarrow", "plotly"}),
    "recipes": (["recipes"], {"numpy", "sqlalchemy", "scipy"}),
}
# Commands that read a SQLite database without SQLAlchemy (~0.45 s idle to import): ablate.store_reads
# runs SQL text through sqlite3. A command whose reads need SQLAlchemy again is taken out of this set.
NO_SQLALCHEMY: set[str] = {"studies", "table", "table_csv", "show", "export_csv", "export_parquet", "dashboard"}


@pytest.mark.parametrize("case", sorted(READ_ONLY))
def test_read_only_commands_import_neither_torch_timm_nor_ray(db: tuple[str, str], tmp_path: Path,
                                                              case: str) -> None:
    url, trial = db
    args, also_unneeded = READ_ONLY[case]
    also_unneeded = also_unneeded | ({"sqlalchemy"} if case in NO_SQLALCHEMY else set())
    env = dict(os.environ, ABLATE_DB=url, ABLATE_ARTIFACTS=str(tmp_path / "artifacts"))
    loaded = run_cli(tmp_path, *[a.format(trial=trial) for a in args], env=env)
    assert "ablate" in loaded and "typer" in loaded  # the command really ran
    unneeded = loaded & (READS | also_unneeded)
    assert not unneeded, f"`ablate {' '.join(args)}` imported {sorted(unneeded)}"


def test_plan_and_models_may_import_torch_but_not_ray(tmp_path: Path, image_folder: Path) -> None:
    """Also shows the check above can fail: the same runner sees torch and timm where they load. A
    first plan builds the models (torch); a second one finds them in the model-cost cache (its own
    state folder here: the session's may hold this study already) and imports no torch."""
    env = dict(os.environ, ABLATE_DB=f"sqlite:///{tmp_path / 'none.db'}", ABLATE_STATE_DIR=str(tmp_path / "state"))
    study = tmp_path / "tiny.yaml"
    study.write_text(yaml.safe_dump(tiny_study("tiny", image_folder)))
    loaded = run_cli(tmp_path, "plan", str(study), env=env)
    assert "torch" in loaded and "ray" not in loaded and "alembic" not in loaded
    assert not (tmp_path / "none.db").exists()
    loaded = run_cli(tmp_path, "plan", str(study), env=env)
    assert "ablate" in loaded and not loaded & {"torch", "timm", "torchvision", "ray"}, sorted(loaded)
    loaded = run_cli(tmp_path, "models", "--all", "mobilenetv2_lk*", env=env)
    assert "timm" in loaded and "ray" not in loaded



# modules (full names) that `dashboard --out` must not import when every study's part of the page is
# kept from an earlier page (ablate.dashboard.cache): the code that builds a study (views, figures,
# tables, statistics, a trial's details) and rich (one plain status line). Each was ~0.01-0.05 s.
BUILD_ONLY = {"rich", "rich.console", "rich.table", "tempfile", "pickle", "socket", "ablate.dashboard.figures", "ablate.dashboard.view",
              "ablate.dashboard.appendix", "ablate.tables", "ablate.stats", "ablate.show", "ablate.provenance"}


def test_dashboard_from_the_cache_imports_no_build_code(db: tuple[str, str], tmp_path: Path) -> None:
    """The first page builds every study (and imports that code: the check can fail); the second
    takes them all from the page cache and imports none of it."""
    url, _ = db
    env = dict(os.environ, ABLATE_DB=url, ABLATE_ARTIFACTS=str(tmp_path / "artifacts"),
               ABLATE_STATE_DIR=str(tmp_path / "state"))
    env.pop("ABLATE_PAGE_CACHE", None)
    first = run_cli(tmp_path, "dashboard", "--out", "report.html", env=env, full=True)
    assert {"ablate.dashboard.figures", "ablate.tables", "ablate.show"} <= first
    page = (tmp_path / "report.html").read_text()
    again = run_cli(tmp_path, "dashboard", "--out", "report.html", env=env, full=True)
    assert "ablate.dashboard" in again and not again & BUILD_ONLY, sorted(again & BUILD_ONLY)
    strip = lambda s: s[:s.index(" · generated ")] + s[s.index(" UTC</span>"):]  # noqa: E731
    assert strip((tmp_path / "report.html").read_text()) == strip(page)
    # one study changed: that one is built (a trial's details included), and still without rich or
    # the stdlib's statistics (t-tests: ablate.tdist; means: math.fsum), and without asking git for
    # the running code (provenance.code, which imports socket) for trials that have no provenance
    from ablate.store import Store

    store = Store(url, create=False)
    one = next(t.trial_id for t in store.light_trials("synthetic_00") if t.status == "completed")
    assert store.add_analysis("synthetic_00", one, {"touch": 1.0})
    store.close()
    rebuilt = run_cli(tmp_path, "dashboard", "--out", "report.html", env=env, full=True)
    assert {"ablate.dashboard.figures", "ablate.show"} <= rebuilt and not rebuilt & {"rich", "statistics", "socket"}
