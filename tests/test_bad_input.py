"""Bad study files: one clear message naming the file, the field and what was expected; exit 2;
no traceback; nothing written to the database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from typer.testing import CliRunner

from ablate.cli import app
from conftest import tiny_study, write_study

ABLATE = [sys.executable, "-m", "ablate.cli"]

GOOD = tiny_study("bad", "/nowhere")


def _with(**over):
    s = yaml.safe_load(yaml.safe_dump(GOOD))
    s.update(over)
    return s


CASES = {
    "yaml-syntax": ("name: x\nmodel: {name: mobilenetv2_lk\n", "line", "valid YAML"),
    "unknown-key": (_with(epochs=3), "epochs", "unknown key"),
    "unknown-nested-key": (_with(recipe={"epochs": 1, "lr_rate": 0.1}), "recipe.lr_rate", "unknown key"),
    "wrong-type": (_with(recipe={"epochs": "many"}), "recipe.epochs", "integer"),
    "missing-field": ({k: v for k, v in GOOD.items() if k != "dataset"}, "dataset", "required"),
    "unknown-model": (_with(model={"name": "resnet9000"}), "model.name", "unknown model 'resnet9000'"),
    "unknown-dataset": (_with(dataset={"name": "imagenet21k"}), "dataset.name", "'fashion_mnist' or 'folder'"),
    "empty-grid": (_with(axes={"grid": {"model.kwargs.kernel_size": []}}), "axes.grid", "no values"),
    "empty-after-exclusions": (_with(axes={"grid": {"model.kwargs.kernel_size": [3]},
                                          "exclude": [{"model.kwargs.kernel_size": 3}]}), "axes", "at least one trial"),
    "zip-lengths": (_with(axes={"zip": [{"model.kwargs.kernel_size": [3, 5], "model.kwargs.dilation": [1]}]}),
                    "axes.zip", "equal length"),
    "bad-profile-field": (_with(profiles={"demo": {"recipe": {"epoch": 1}}}), "profiles.demo.recipe.epoch",
                          "unknown key"),
    "bad-axis-path": (_with(axes={"grid": {"kernel_size": [3]}}), "axes: 'kernel_size'", "a path starting with"),
    "not-a-mapping": ("- just\n- a list\n", "<top level>", "a mapping"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_study_file_exits_2_names_file_field_expected_and_writes_nothing(tmp_path: Path, case: str) -> None:
    content, field, expected = CASES[case]
    f = write_study(tmp_path / f"{case}.yaml", content)
    db = tmp_path / "results.db"
    for cmd in (["plan", str(f)], ["run", str(f), "--db", f"sqlite:///{db}"]):
        r = CliRunner().invoke(app, cmd)
        assert r.exit_code == 2, (cmd, r.output)
        msg = " ".join(r.stderr.split())
        assert str(f) in msg and field in msg and expected in msg, msg
        assert r.exception is None or isinstance(r.exception, SystemExit)
    assert not db.exists(), "a bad study file must not create or write the database"


@pytest.mark.parametrize("case", ["unknown-nested-key", "yaml-syntax"])
def test_bad_study_file_in_a_real_process_has_no_traceback(tmp_path: Path, case: str) -> None:
    content, field, expected = CASES[case]
    f = write_study(tmp_path / f"{case}.yaml", content)
    r = subprocess.run(ABLATE + ["run", str(f), "--db", f"sqlite:///{tmp_path / 'r.db'}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout
    assert field in " ".join(r.stderr.split()) and not (tmp_path / "r.db").exists()


def test_missing_file_and_unknown_profile(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["plan", str(tmp_path / "nope.yaml")])
    assert r.exit_code == 2 and "no such file" in r.stderr
    f = write_study(tmp_path / "s.yaml", _with(profiles={"demo": {}}))
    r = CliRunner().invoke(app, ["plan", str(f), "-p", "paper"])
    assert r.exit_code == 2 and "--profile" in r.stderr and "demo" in r.stderr


def test_missing_dataset_is_a_clear_error_before_anything_is_written(tmp_path: Path) -> None:
    f = write_study(tmp_path / "s.yaml", _with(dataset={"name": "fashion_mnist", "root": str(tmp_path / "empty")}))
    db = tmp_path / "results.db"
    r = CliRunner().invoke(app, ["run", str(f), "--db", f"sqlite:///{db}"])
    msg = " ".join(r.stderr.split())
    assert r.exit_code == 2 and "apt-get install dataset-fashion-mnist" in msg and str(f) in msg, msg
    assert not db.exists()
