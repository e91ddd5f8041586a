"""Trust in stored results (real Ray, real SQLite): provenance on every trial, `ablate show`, plan's
status column and stale marking, `--rerun-stale` keeping the old attempt, readable errors that say
whether they will recur, the keep policy and `ablate gc`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ablate.artifacts import ArtifactStore
from ablate.cli import app
from ablate.orchestrate import run_study
from ablate.store import COMPLETED, FAILED, Store
from conftest import tiny_study, write_study

pytestmark = pytest.mark.usefixtures("ray_session")
runner = CliRunner()


def test_every_trial_records_its_provenance(ran_study: dict[str, Any]) -> None:
    for t in ran_study["store"].load("tiny").trials:
        p = t.provenance
        for key in ("ablate_version", "git_commit", "git_dirty", "python", "host", "torch", "timm", "ray",
                    "cuda", "cudnn", "device_count", "devices", "wall_hours", "device_hours", "driver_host"):
            assert key in p, key
        assert p["ablate_version"] and p["torch"] and p["ray"] and p["devices"]
        assert p["device_kind"] == "cpu" and p["device_hours"] > 0
        assert t.started_at is not None and t.ended_at is not None


def test_show_prints_one_trial_whole(ran_study: dict[str, Any]) -> None:
    tid = ran_study["store"].load("tiny").trials[0].trial_id
    res = runner.invoke(app, ["show", tid[:6], "--db", ran_study["url"]])
    assert res.exit_code == 0, res.output
    for part in (tid, "completed", "Config", "Provenance", "Metrics per epoch", "torch", "top1", "Artifacts"):
        assert part in res.output, part
    js = runner.invoke(app, ["show", tid, "--db", ran_study["url"], "--format", "json"])
    assert js.exit_code == 0 and '"epoch": 1' in js.output  # epochs count from 1 for people
    missing = runner.invoke(app, ["show", "ffffffffffff", "--db", ran_study["url"]])
    assert missing.exit_code == 2 and "no trial" in missing.output and "Traceback" not in missing.output


def test_plan_shows_what_the_database_holds_and_creates_nothing(ran_study: dict[str, Any], tmp_path: Path) -> None:
    res = runner.invoke(app, ["plan", str(ran_study["file"]), "--db", ran_study["url"]])
    assert res.exit_code == 0, res.output
    assert "in the database" in res.output and res.output.count("completed") >= 4
    fresh = tmp_path / "none" / "x.db"
    res = runner.invoke(app, ["plan", str(ran_study["file"]), "--db", f"sqlite:///{fresh}"])
    assert res.exit_code == 0 and "to run" in res.output, res.output
    assert not fresh.parent.exists()  # read only: no folder, no file


def test_stale_trials_are_marked_and_rerun_stale_keeps_the_old_attempt(tmp_path: Path, image_folder: Path) -> None:
    f = write_study(tmp_path / "s.yaml", tiny_study("stale", image_folder))
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    art = str(tmp_path / "art")
    assert run_study(f, store=store, artifacts=art).completed == 2
    old, fresh = store.load("stale").trials
    from ablate.provenance import code

    store.update_provenance("stale", old.trial_id, {"git_commit": "0" * 40})  # made by other code
    # the other as if made by this very code from a clean tree (a test may run in a dirty one)
    store.update_provenance("stale", fresh.trial_id, {"git_commit": code()["git_commit"], "git_dirty": False})
    res = runner.invoke(app, ["plan", str(f), "--db", url])
    assert "completed (stale)" in res.output and "--rerun-stale" in res.output, res.output
    again = run_study(f, store=store, artifacts=art, rerun_stale=True)
    assert (again.ran, again.completed) == (1, 2)
    after = {t.trial_id: t for t in store.load("stale").trials}
    assert after[old.trial_id].provenance["git_commit"] != "0" * 40
    assert after[fresh.trial_id].ended_at == fresh.ended_at  # the other one was not touched
    _, whole = store.find_trial(old.trial_id)
    assert [a["provenance"]["git_commit"] for a in whole.past_attempts] == ["0" * 40]  # kept, not deleted


def test_a_failing_trial_stores_a_readable_error_that_says_it_will_recur(tmp_path: Path, image_folder: Path) -> None:
    study = tiny_study("diverges", image_folder, axes={"grid": {"model.kwargs.kernel_size": [3]}},
                       resources={"cpus": 1, "gpus": 0, "retries": 2})
    study["recipe"].update(lr=1e30, epochs=2)
    f = write_study(tmp_path / "d.yaml", study)
    store = Store(f"sqlite:///{tmp_path / 'd.db'}")
    art = tmp_path / "art"
    summary = run_study(f, store=store, artifacts=str(art))
    assert summary.failed == 1
    t = store.load("diverges").trials[0]
    assert t.status == FAILED and t.error_kind == "recurring"
    assert t.error.startswith("FloatingPointError: training loss is"), t.error  # the message first
    assert "trainer.py" in t.error and "\x1b" not in t.error
    assert "ray/" not in t.error and "site-packages" not in t.error  # no Ray internals
    full = (art / "diverges" / t.trial_id / "error.txt").read_text()
    assert "Traceback" in full and "FloatingPointError" in full  # the whole story is kept beside
    res = runner.invoke(app, ["plan", str(f), "--db", f"sqlite:///{tmp_path / 'd.db'}"])
    assert "will recur" in res.output, res.output


def test_keep_policy_and_gc(tmp_path: Path, image_folder: Path) -> None:
    study = tiny_study("gc", image_folder, artifacts={"keep": ["final", "best", "last_checkpoint"]})
    f = write_study(tmp_path / "g.yaml", study)
    url = f"sqlite:///{tmp_path / 'g.db'}"
    art = tmp_path / "art"
    run_study(f, store=Store(url), artifacts=str(art))
    files = ArtifactStore(str(art))
    ids = files.trials("gc")
    assert len(ids) == 2
    for tid in ids:
        assert files.checkpoints("gc", tid) == [0]  # last checkpoint kept as asked
        assert (art / "gc" / tid / "model.pt").is_file() and (art / "gc" / tid / "best.pt").is_file()

    # the file now declares one arm only and keeps final weights only
    study["axes"] = {"grid": {"model.kwargs.kernel_size": [3]}}
    study["artifacts"] = {"keep": ["final"]}
    write_study(f, study)
    dry = runner.invoke(app, ["gc", str(f), "--db", url, "--artifacts", str(art), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would remove" in dry.output and "no longer declared" in dry.output and "no 'last_checkpoint'" in dry.output
    assert sorted(files.trials("gc")) == sorted(ids)  # a dry run removes nothing
    res = runner.invoke(app, ["gc", str(f), "--db", url, "--artifacts", str(art)])
    assert res.exit_code == 0, res.output
    left = files.trials("gc")
    assert len(left) == 1
    assert files.checkpoints("gc", left[0]) == [] and not (art / "gc" / left[0] / "best.pt").exists()
    assert (art / "gc" / left[0] / "model.pt").is_file()  # final weights stay: init_from needs them
    assert store_status(url, "gc") == {COMPLETED}


def store_status(url: str, name: str) -> set[str]:
    return {t.status for t in Store(url, create=False).load(name).trials}


def test_default_keep_drops_checkpoints_once_completed(ran_study: dict[str, Any]) -> None:
    files = ArtifactStore()
    for t in ran_study["store"].load("tiny").trials:
        assert files.checkpoints("tiny", t.trial_id) == []
        assert files.exists(files.path("tiny", t.trial_id, "model.pt"))
