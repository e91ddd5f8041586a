"""Bad study files: one clear message naming the file, the field and what was expected; exit 2;
no traceback; nothing written to the database."""

from __future__ import annotations

import subprocess
import sys
import time
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
    "unknown-dataset": (_with(dataset={"name": "imagenet21k"}), "dataset.name", "'fashion_mnist', 'folder', 'ade20k' or 'seg_folder'"),
    "empty-grid": (_with(axes={"grid": {"model.kwargs.kernel_size": []}}), "axes.grid", "no values"),
    "empty-after-exclusions": (_with(axes={"grid": {"model.kwargs.kernel_size": [3]},
                                          "exclude": [{"model.kwargs.kernel_size": 3}]}), "axes", "at least one trial"),
    "zip-lengths": (_with(axes={"zip": [{"model.kwargs.kernel_size": [3, 5], "model.kwargs.dilation": [1]}]}),
                    "axes.zip", "equal length"),
    "bad-profile-field": (_with(profiles={"demo": {"recipe": {"epoch": 1}}}), "profiles.demo.recipe.epoch",
                          "unknown key"),
    "bad-axis-path": (_with(axes={"grid": {"kernel_size": [3]}}), "axes: 'kernel_size'", "a path starting with"),
    "not-a-mapping": ("- just\n- a list\n", "<top level>", "a mapping"),
    # what the trainer and timm would only reject minutes into `run` (ablate.validate)
    "metric-typo": (_with(metric={"name": "top-1"}), "metric.name", "did you mean 'top1'"),
    "metric-ema-without-ema": (_with(metric={"name": "top1_ema"}), "metric.name", "recipe.ema_momentum"),
    "metric-cuda-only": (_with(metric={"name": "peak_mem_gb", "mode": "min"}), "metric.name", "resources.gpus"),
    "table-metric-typo": (_with(table={"columns": [{"header": "x", "source": "metric:acc"}]}),
                          "table.columns[0].source", "'acc'"),
    "optimizer": (_with(recipe={"epochs": 1, "opt": "sgdd"}), "recipe.opt", "did you mean 'sgd'"),
    "scheduler": (_with(recipe={"epochs": 1, "sched": "cosin"}), "recipe.sched", "did you mean 'cosine'"),
    "auto-augment": (_with(recipe={"epochs": 1, "auto_augment": "rand-m9-foo3"}), "recipe.auto_augment",
                     "rand-m9-foo3"),
    "axis-optimizer": (_with(axes={"grid": {"recipe.opt": ["sgd", "adamw", "lamb2"]}}), "recipe.opt", "'lamb2'"),
    "model-kwarg-unknown": (_with(model={"name": "mobilenetv2_lk", "kwargs": {"kernel_sise": 3}}), "model.kwargs",
                            "unexpected keyword argument 'kernel_sise'"),
    "model-width-1e9": (_with(model={"name": "mobilenetv2_lk", "kwargs": {"width_mult": 1e9}}),
                        "model.kwargs.width_mult", "at most 1e+06"),
    "model-width-1e5": (_with(model={"name": "mobilenetv2_lk", "kwargs": {"width_mult": 1e5}}), "model.kwargs",
                        "parameters"),
    "model-too-large": (_with(model={"name": "mobilenetv2_lk", "kwargs": {"width_mult": 1000}}), "model.kwargs",
                        "parameters"),
    "model-kwarg-assertion": (_with(axes={}, model={"name": "replknet_31b", "kwargs": {"kernel_sizes": [31, 29]}}),
                              "model.kwargs", "replknet_31b"),
    "model-typo": (_with(model={"name": "mobilenetv2_kl"}), "model.name", "did you mean 'mobilenetv2_lk'"),
    "model-tag": (_with(axes={}, model={"name": "resnet18.nope_tag"}), "model.name", "no pretrained tag 'nope_tag'"),
    "format-field": (_with(table={"columns": [{"header": "k", "source": "model.kwargs.kernel_size", "format": "{x}"}]}),
                     "table.columns[0].format", "only the field {v}"),
    "format-huge-width": (_with(table={"columns": [{"header": "k", "source": "metric:top1",
                                                    "format": "{v:>200000000}"}]}),
                          "table.columns[0].format", "width of at most 64"),
    "format-crlf": (_with(table={"columns": [{"header": "k", "source": "metric:top1", "format": "{v}\r\nX-A: 1"}]}),
                    "table.columns[0].format", "no control characters"),
    "format-does-not-apply": (_with(table={"columns": [{"header": "k", "source": "metric:top1", "format": "{v:d}"}]}),
                              "table.columns[0].format", "Unknown format code 'd'"),
    "format-attribute": (_with(table={"columns": [{"header": "k", "source": "params", "format": "{v.real}"}]}),
                         "table.columns[0].format", "only the field {v}"),
    "table-source-typo": (_with(table={"columns": [{"header": "k", "source": "recipe.l"}]}),
                          "table.columns[0].source", "a config path of the trials"),
    "table-derived-unknown": (_with(table={"columns": [{"header": "k", "source": "derived:max_rff"}]}),
                              "table.columns[0].source", "derived:max_rf"),
    "baseline-matches-no-trial": (_with(table={"columns": [{"header": "k", "source": "metric:top1"}],
                                               "baseline": {"model.kwargs.kernel_size": 9}}),
                                  "table.baseline", "one of the study's trials"),
    "model-depth-1e9": (_with(axes={}, model={"name": "replknet_31b", "kwargs": {"layers": [2, 2, 10**9, 2]}}),
                        "model.kwargs.layers[2]", "at most 1e+06"),
    "model-too-many-modules": (_with(axes={}, model={"name": "convnext_lk_tiny", "kwargs": {"depths": [1, 1, 10**5, 1]}}),
                               "model.kwargs", "modules"),
    "loader-workers": (_with(recipe={"epochs": 1, "workers": 10**9}), "recipe.workers", "less than or equal to 256"),
    # names that become paths
    "name-dotdot": (_with(name=".."), "name", "starting with a letter or digit"),
    "name-dot": (_with(name="."), "name", "starting with a letter or digit"),
    "name-slash": (_with(name="a/b"), "name", "it becomes a folder name"),
    "name-too-long": (_with(name="a" * 101), "name", "at most 100 characters"),
    "init-from-dotdot": (_with(init_from={"study": "..", "trial": "abc"}), "init_from.study", "letter or digit"),
    # hostile input, bounded
    "wrong-type-cpus": (_with(resources={"cpus": [1]}), "resources.cpus", "valid number"),
    "lr-infinite": (yaml.safe_dump(GOOD).replace("lr: 0.05", "lr: .inf"), "recipe.lr", "finite number"),
    "grid-over-limit": (_with(axes={"grid": {"recipe.lr": [0.01 * (i + 1) for i in range(200)],
                                             "recipe.weight_decay": [1e-5 * i for i in range(100)]}}),
                        "axes", "at most 10000 trials"),
    "seed-count-over-limit": (_with(seeds=10**9), "seeds", "ABLATE_MAX_TRIALS"),
    "alias-bomb": ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                   "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                   "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nname: *e\n", "line", "alias"),
    "nesting-flow": ("name: " + "[" * 900 + "]" * 900 + "\n", "line", "nesting at most"),
    "nesting-block": ("name:\n" + "".join("  " * i + "- \n" for i in range(1, 300)), "line", "nesting at most"),
    "recursive-alias": ("a: &a [*a]\nname: x\n", "line", "nesting at most"),
    "binary-tag": ("name: !!binary aGVsbG8=\n", "line", "got the tag"),
    "python-tag": ("name: !!python/object/apply:os.system [echo hi]\n", "line", "got the tag"),
    "timestamp": ("name: 2024-01-01\n", "line", "quote dates"),
    "huge-string": ("name: x\ndescription: '" + "a" * 100_000 + "'\n", "line", "at most 20000 characters"),
    "huge-file": ("name: x\ndescription: '" + "a" * (1 << 20) + "'\n", "<file>", "at most 1024 KiB"),
    "huge-int": ("name: x\nseeds: " + "9" * 5000 + "\n", "line", "numbers of at most"),
    "lone-surrogate": ('name: x\ndescription: "\\ud800"\n', "line", "valid YAML"),
    "control-chars": ("name: x\n\x1b]0;title\x07epochs: 3\n", "<file>", "valid YAML"),
    "markup-in-value": (_with(recipe={"epochs": "[/x] [bold]"}), "recipe.epochs", "[/x] [bold]"),
    "markup-in-key": (_with(**{"[/x]": 1}), "[/x]", "unknown key"),
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


def test_bad_input_is_one_plain_line_quickly_and_creates_nothing(tmp_path: Path, monkeypatch) -> None:
    """Every case above through `plan` in-process: one line on stderr (no traceback, no escape
    sequence), refused without hanging, and nothing written in the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ABLATE_DB", f"sqlite:///{tmp_path / 'must-not-exist.db'}")
    src = tmp_path / "in"
    src.mkdir()
    CliRunner().invoke(app, ["plan", str(write_study(src / "warm.yaml", GOOD))])  # imports, timm's registry
    for case, (content, field, _) in sorted(CASES.items()):
        f = write_study(src / f"{case}.yaml", content)
        start = time.perf_counter()
        r = CliRunner().invoke(app, ["plan", str(f)])
        took = time.perf_counter() - start
        assert r.exit_code == 2 and (r.exception is None or isinstance(r.exception, SystemExit)), (case, r.output)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (case, r.stderr)
        assert "\x1b" not in r.stderr and "Traceback" not in r.stderr, case
        assert took < 10.0, f"{case} took {took:.2f}s"  # a hang guard (Ray, a download), not a speed test
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_markup_and_control_sequences_in_a_file_name_print_as_text(tmp_path: Path) -> None:
    d = tmp_path / "[bold]"
    d.mkdir()
    f = write_study(d / "[/x]\x1b]0;owned\x07\x1b[31m.yaml".replace("/", "|"), _with(epochs=3))
    r = CliRunner().invoke(app, ["plan", str(f)])
    assert r.exit_code == 2 and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
    assert "[bold]/[|x]" in r.stderr and "unknown key" in r.stderr, r.stderr
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    f = tmp_path / "latin1.yaml"
    f.write_bytes(b"name: caf\xe9\n")
    r = CliRunner().invoke(app, ["plan", str(f)])
    assert r.exit_code == 2 and "UTF-8" in r.stderr and str(f) in r.stderr


def test_studies_prints_descriptions_without_markup_or_escapes(tmp_path: Path) -> None:
    from ablate.store import Store

    url = f"sqlite:///{tmp_path / 'r.db'}"
    desc = "[/x] [bold red]loud[/] \x1b]0;window title\x07\x1b[31mred\x1b[0m \x9b2J <b>"
    Store(url).register("s1", desc, {"name": "s1"}, [])
    r = CliRunner().invoke(app, ["studies", "--db", url])
    assert r.exit_code == 0, r.output
    out = " ".join(r.stdout.split())
    assert "[/x] [bold red]loud[/]" in out and "red" in out and "<b>" in out
    assert not any(c in r.stdout for c in "\x1b\x07\x9b"), repr(r.stdout)


def test_export_rejects_a_suffix_that_contradicts_the_format(tmp_path: Path, monkeypatch) -> None:
    from ablate.export import resolve_format

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "r.db"
    for args in (["-o", "dil.json"], ["-o", "dil.parquet", "--format", "csv"], ["-o", "dil.csv", "-f", "xlsx"]):
        r = CliRunner().invoke(app, ["export", "dilation", *args, "--db", f"sqlite:///{db}"])
        assert r.exit_code == 2 and "error:" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
    assert list(tmp_path.iterdir()) == [], "nothing written: no export file, no database"
    assert resolve_format("a.csv") == "csv" and resolve_format("a.parquet") == "parquet"
    assert resolve_format("a.PQ") == "parquet" and resolve_format("a") == "csv"
    assert resolve_format("a", "parquet") == "parquet" and resolve_format("a.csv", "csv") == "csv"


def test_models_all_lists_timm_names() -> None:
    r = CliRunner().invoke(app, ["models", "--all", "resnet1*"])
    names = r.stdout.split()
    assert r.exit_code == 0 and "resnet18" in names and "resnet101" in names and "mobilenetv2_lk" not in names
    r = CliRunner().invoke(app, ["models", "--all", "mobilenetv2_l*"])
    assert r.stdout.split() == ["mobilenetv2_lk"]
    r = CliRunner().invoke(app, ["models", "--all", "resnet18.*"])
    assert "resnet18.a1_in1k" in r.stdout.split()
    r = CliRunner().invoke(app, ["models", "--all", "no_such_model*"])
    assert r.exit_code == 2 and "no model" in r.stderr


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


def test_trainer_reports_exactly_the_metric_names_plan_checks_against(image_folder: Path) -> None:
    """ablate.metrics is what plan checks metric.name against; the trainer must report exactly that:
    every epoch's names, <x>_ema with EMA, reparam_max_abs_diff on the last epoch of a re-param model,
    resumed_after_epoch on a resumed trial's first epoch."""
    from ablate import metrics
    from ablate.expand import expand
    from ablate.study import Study
    from ablate.trainer import train

    spec = tiny_study("names", image_folder, axes={},
                      model={"name": "mobilenetv2_lk", "kwargs": {"width_mult": 0.1, "kernel_size": 5,
                                                                   "small_kernel": 3}},
                      recipe={"epochs": 2, "batch_size": 8, "lr": 0.05, "warmup_epochs": 0, "ema_momentum": 0.1,
                              "max_steps_per_epoch": 1})
    config = expand(Study.model_validate(spec))[0].config
    reports: list[tuple[dict, dict | None]] = []
    train(config, report=lambda m, state=None: reports.append((m, state)), device="cpu", checkpoints=True)
    every = set(metrics.every_epoch(config["recipe"], cuda=False, ddp=False))
    assert [set(m) for m, _ in reports] == [every, every | {"reparam_max_abs_diff"}]
    resumed: list[dict] = []
    train(config, report=lambda m, state=None: resumed.append(m), device="cpu", resume=reports[0][1])
    assert set(resumed[0]) == every | {"resumed_after_epoch", "reparam_max_abs_diff"}
    assert set(metrics.reported(config["recipe"], cuda=False, ddp=False)) == every | set(metrics.SOME_EPOCHS)
    without_ema = dict(config["recipe"], ema_momentum=None)
    assert not any(n.endswith("_ema") for n in metrics.every_epoch(without_ema, cuda=False, ddp=False))
    assert {"peak_mem_gb", "world_size"} <= set(metrics.every_epoch(without_ema, cuda=True, ddp=True))
