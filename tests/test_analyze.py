"""`ablate analyze` and `ablate run` with `analyses:` end to end: a tiny Fashion-MNIST study really
trained on Ray into SQLite, its ERF computed by Ray tasks from the stored weights, scalars stored as
metrics of the trials, erf.npy beside the weights, skipped on rerun, Table 10's layout rendered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from ablate.analyses.worker import load_array
from ablate.artifacts import ArtifactStore
from ablate.cli import app
from ablate.store import Store
from conftest import write_study

pytestmark = pytest.mark.usefixtures("ray_session")

STUDY = {
    "name": "erf_tiny",
    "model": {"name": "mobilenetv2_lk", "kwargs": {"width_mult": 0.1}},
    "axes": {"grid": {"model.kwargs.kernel_size": [3, 7]}},
    "recipe": {"epochs": 1, "batch_size": 16, "lr": 0.05, "warmup_epochs": 0, "max_steps_per_epoch": 2},
    "dataset": {"name": "fashion_mnist", "image_size": 16, "train_subset": 64, "val_subset": 32},
    "resources": {"cpus": 1},
    "analyses": {"erf": {"images": 3, "size": 64, "batch_size": 2,
                         "rows": [{"label": "MobileNetV2 7x7", "match": {"model.kwargs.kernel_size": 7},
                                   "paper": [1.0, 2.0, 3.0, 4.0]}]}},
}
NAMES = ["erf_r20", "erf_r30", "erf_r50", "erf_r99"]


def test_run_then_analyze_stores_metrics_and_maps_and_skips_on_rerun(tmp_path: Path, fashion_mnist_dir: Path) -> None:
    f = write_study(tmp_path / "erf.yaml", STUDY)
    db, arts = f"sqlite:///{tmp_path / 'r.db'}", str(tmp_path / "arts")
    common = ["--db", db, "--artifacts", arts]
    r = CliRunner().invoke(app, ["run", str(f), *common])  # trains, then runs the declared analyses
    assert r.exit_code == 0, r.output
    assert "analyses erf of 2 completed trial(s): 0 already done, 2 run now, 0 failed" in r.output, r.output
    store, files = Store(db, create=False), ArtifactStore(arts)
    rec = store.load("erf_tiny", history=True)
    for t in rec.trials:
        assert set(NAMES) <= set(t.final), t.final
        r_values = [t.final[n] for n in NAMES]
        assert all(0 < v <= 100 for v in r_values) and r_values == sorted(r_values)  # r grows with t
        assert (t.final["erf_images"], t.final["erf_skipped"], t.final["erf_size"]) == (3, 0, 64)
        assert t.history["erf_r20"][0][0] == t.history["top1"][-1][0]  # stored at the last epoch
        a = load_array(files, files.path("erf_tiny", t.trial_id, "erf.npy"))
        assert a.shape == (64, 64) and a.dtype == np.float32 and (a >= 0).all() and a.max() > 0
        assert t.provenance["analyses"]["erf"]["size"] == 64

    counts = store.counts()
    r = CliRunner().invoke(app, ["analyze", str(f), *common])
    assert r.exit_code == 0 and "2 already done, 0 run now" in r.output, r.output
    assert store.counts() == counts  # nothing written again

    # a missing map makes that trial's analysis not done; only it runs again
    gone = rec.trials[0].trial_id
    files.delete(files.path("erf_tiny", gone, "erf.npy"))
    r = CliRunner().invoke(app, ["analyze", str(f), *common])
    assert r.exit_code == 0 and "1 already done, 1 run now" in r.output, r.output
    assert files.exists(files.path("erf_tiny", gone, "erf.npy")) and store.counts() == counts

    # a trial whose weights are gone fails its analysis with a readable error; the others are untouched
    files.delete(files.path("erf_tiny", gone, "erf.npy"))
    files.delete(files.path("erf_tiny", gone, "model.pt"))
    r = CliRunner().invoke(app, ["analyze", str(f), *common])
    assert r.exit_code == 1 and "1 already done, 0 run now, 1 failed" in r.output, r.output
    assert f"failed: {gone}" in r.output and "no final weights at" in r.output, r.output

    # Table 10's layout: rows = arms (the labelled one first), columns = t, the paper's numbers beside
    r = CliRunner().invoke(app, ["table", "erf_tiny", "--analysis", "erf", "--db", db])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "| Model | t = 20% | t = 30% | t = 50% | t = 99% |" in lines, r.output
    rows = [ln for ln in lines if ln.startswith("| ") and "Model" not in ln]
    assert rows[0].startswith("| MobileNetV2 7x7 |") and "(paper 1.0%)" in rows[0] and "(paper 4.0%)" in rows[0]
    assert rows[1].startswith("| kernel_size=3 |") and "paper" not in rows[1]
    r = CliRunner().invoke(app, ["table", "erf_tiny", "--analysis", "erf", "--format", "csv", "--db", db])
    assert r.output.splitlines()[0].startswith("model,erf_r20,erf_r30,erf_r50,erf_r99,"), r.output

    # an option that changes the result (S) computes it again; the batch size (memory only) does not
    changed = yaml.safe_load(f.read_text())
    changed["analyses"]["erf"]["batch_size"] = 3
    write_study(f, changed)
    r = CliRunner().invoke(app, ["analyze", str(f), *common])
    assert "1 already done, 0 run now, 1 failed" in r.output, r.output  # (the trial without weights)
    changed["analyses"]["erf"]["size"] = 32
    write_study(f, changed)
    r = CliRunner().invoke(app, ["analyze", str(f), *common])
    assert r.exit_code == 1 and "0 already done, 1 run now, 1 failed" in r.output, r.output  # no weights for one
    other = next(t.trial_id for t in rec.trials if t.trial_id != gone)
    assert {t.trial_id: t.final["erf_size"] for t in store.load("erf_tiny").trials} == {other: 32, gone: 64}
    assert load_array(files, files.path("erf_tiny", other, "erf.npy")).shape == (32, 32)
    assert store.counts() == counts  # upserts: the same rows, new values


def test_analyze_refuses_a_study_without_analyses_or_trials(tmp_path: Path, fashion_mnist_dir: Path) -> None:
    bare = {k: v for k, v in STUDY.items() if k != "analyses"}
    f = write_study(tmp_path / "bare.yaml", bare)
    r = CliRunner().invoke(app, ["analyze", str(f), "--db", f"sqlite:///{tmp_path / 'r.db'}"])
    assert r.exit_code == 2 and "analyses:" in r.output, r.output
    f = write_study(tmp_path / "erf.yaml", STUDY)
    Store(f"sqlite:///{tmp_path / 'e.db'}")  # an empty ablate database
    r = CliRunner().invoke(app, ["analyze", str(f), "--db", f"sqlite:///{tmp_path / 'e.db'}"])
    assert r.exit_code == 2 and "no completed trial" in r.output, r.output
