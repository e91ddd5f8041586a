"""Appendix A as recipes; batch semantics; checkpoint/restore that continues where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.expand import expand
from ablate.recipes import PRESETS
from ablate.study import RecipeSpec, load_study
from ablate.trainer import train
from conftest import tiny_study, write_study

R = "rand-m9-mstd0.5-inc1"
# (recipe, {field: value as Appendix A states it})
APPENDIX_A = {
    "mobilenetv2-in1k": dict(opt="sgd", momentum=0.9, batch_size=32, gpus=8, weight_decay=4e-5, lr=0.1,
                             warmup_epochs=5, sched="cosine", epochs=100, resolution=224, auto_augment=None,
                             mixup=0.0, cutmix=0.0),
    "replknet-in1k": dict(opt="adamw", momentum=0.9, weight_decay=0.05, lr=4e-3, sched="cosine", warmup_epochs=10,
                          epochs=120, batch_size=64, gpus=32, auto_augment=R, label_smoothing=0.1, mixup=0.8,
                          cutmix=1.0, re_prob=0.25, drop_path_rate=0.3),
    "replknet-31b-300ep": dict(opt="adamw", epochs=300, drop_path_rate=0.5, lr=4e-3, mixup=0.8, cutmix=1.0),
    "finetune-384": dict(batch_size=32, gpus=32, lr=4e-4, sched="cosine", warmup_epochs=1, epochs=30,
                         ema_momentum=1e-4, auto_augment=R, mixup=0.0, cutmix=0.0, resolution=384),
    "in22k-pretrain": dict(epochs=90, batch_size=32, gpus=128, drop_path_rate=0.1, opt="adamw", lr=4e-3,
                           mixup=0.8, cutmix=1.0, auto_augment=R),
    "in22k-to-1k-224": dict(gpus=16, batch_size=32, drop_path_rate=0.2, lr=4e-4, sched="cosine", ema_momentum=1e-4,
                            epochs=30, mixup=0.0, cutmix=0.0, auto_augment=R, resolution=224),
    "in22k-to-1k-384": dict(gpus=32, batch_size=16, drop_path_rate=0.3, resolution=384, lr=4e-4, mixup=0.0),
    "xl-finetune-320": dict(epochs=30, lr=1e-4, layer_decay=0.4, resolution=320),
    # Table 11's ADE20K half: 80K iterations (Appendix D) in ConvNeXt's UperNet configs' schedule (AdamW 1e-4,
    # wd 0.05, poly, 1500 warmup iterations, 8 GPUs x 2), 512 crops
    "ade20k-upernet-80k": dict(opt="adamw", lr=1e-4, weight_decay=0.05, sched="poly", warmup_steps=1500,
                               batch_size=2, gpus=8, resolution=512),
}


def test_ade20k_recipe_is_80k_iterations() -> None:
    r = RecipeSpec(preset="ade20k-upernet-80k")
    assert r.epochs * r.max_steps_per_epoch == 80_000 and r.batch_size * r.gpus == 16


def test_every_recipe_is_checked() -> None:
    assert set(APPENDIX_A) == set(PRESETS)


@pytest.mark.parametrize("name", sorted(APPENDIX_A))
def test_recipe_resolves_to_appendix_a(name: str) -> None:
    from ablate.recipes import paper_resolution

    resolved = RecipeSpec(preset=name).model_dump()
    for field, value in APPENDIX_A[name].items():
        if field == "resolution":  # the paper's input size: dataset.image_size in a study, not a recipe field
            assert paper_resolution(name) == value and "resolution" not in resolved, name
            continue
        assert resolved[field] == value, (name, field)


def test_study_fields_override_the_preset() -> None:
    r = RecipeSpec(preset="replknet-in1k", epochs=2, mixup=0.0)
    assert (r.epochs, r.mixup, r.cutmix, r.lr) == (2, 0.0, 1.0, 4e-3)


@pytest.mark.parametrize("policy, gpus, accum, lr", [("accumulate", 1, 8, 0.1), ("accumulate", 2, 4, 0.1),
                                                      ("scale_lr", 2, 1, 0.025), ("accumulate", 8, 1, 0.1)])
def test_fewer_gpus_than_the_recipe_keeps_the_total_batch(tmp_path: Path, policy: str, gpus: int, accum: int,
                                                          lr: float) -> None:
    study = tiny_study("b", "/nowhere", recipe={"preset": "mobilenetv2-in1k", "batch_policy": policy},
                       resources={"cpus": 1, "gpus": gpus})
    f = write_study(tmp_path / "b.yaml", study)
    t = expand(load_study(f), f)[0]
    assert t.config["recipe"]["accum_steps"] == accum and t.config["recipe"]["lr"] == pytest.approx(lr)
    assert t.config["recipe"]["batch_size"] * max(gpus, 1) * accum == 256 or policy == "scale_lr"


def test_recipes_cli() -> None:
    r = CliRunner().invoke(app, ["recipes"])
    assert r.exit_code == 0 and all(n in r.stdout for n in PRESETS)
    r = CliRunner().invoke(app, ["recipes", "show", "replknet-31b-300ep", "--format", "json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["drop_path_rate"] == 0.5
    assert CliRunner().invoke(app, ["recipes", "show", "nope"]).exit_code == 2


def _cfg(root: Path, **recipe) -> dict:
    base = RecipeSpec(**{"epochs": 3, "batch_size": 8, "lr": 0.05, "warmup_epochs": 1, **recipe}).model_dump(mode="json")
    return {"model": {"name": "mobilenetv2_lk", "kwargs": {"width_mult": 0.1}}, "recipe": base,
            "dataset": {"name": "folder", "root": str(root), "image_size": 16}, "seed": 3}


class Stop(Exception):
    pass


@pytest.mark.parametrize("recipe", [{}, {"preset": "replknet-in1k", "epochs": 3, "batch_size": 8, "gpus": 1,
                                         "warmup_epochs": 1, "lr": 1e-3, "ema_momentum": 0.1, "accum_steps": 2}],
                         ids=["sgd", "adamw-mixup-cutmix-ema-accum"])
def test_interrupted_and_restored_run_matches_an_uninterrupted_one(image_folder: Path, recipe: dict) -> None:
    cfg = _cfg(image_folder, **{k: v for k, v in recipe.items()})
    straight: list[dict] = []
    train(cfg, report=lambda m, s: straight.append(m), device="cpu", checkpoints=True)

    saved: dict = {}

    def stop_after_first(m: dict, s: dict) -> None:
        saved.update(s)
        raise Stop

    with pytest.raises(Stop):
        train(cfg, report=stop_after_first, device="cpu", checkpoints=True)
    resumed: list[dict] = []
    train(cfg, report=lambda m, s: resumed.append(m), device="cpu", resume=saved, checkpoints=True)
    assert [m["epoch"] for m in resumed] == [1, 2] and resumed[0]["resumed_after_epoch"] == 0
    for a, b in zip(straight[1:], resumed):
        for k in ("train_loss", "val_loss", "top1", "top5", "lr") + (("top1_ema",) if "top1_ema" in a else ()):
            assert a[k] == b[k], k


def test_silent_fields_take_the_official_commands_values() -> None:
    from ablate.recipes import OFFICIAL, PAPER_FIELDS, official_value, source

    for name, values in PRESETS.items():
        for field, value in values.items():
            src = source(name, field)
            assert src in ("paper", "official", "assumed"), (name, field)
            if src == "official":  # silent in Appendix A: the official command's value
                assert value == official_value(name, field)[1], (name, field)
            if src == "paper" and field in APPENDIX_A[name]:
                assert value == APPENDIX_A[name][field], (name, field)
        assert set(APPENDIX_A[name]) <= PAPER_FIELDS[name] | {"resolution"}, name
    # the official README's fine-tuning commands: --weight_decay 1e-8 --layer_decay 0.7 (--model_ema true)
    for name in ("finetune-384", "in22k-to-1k-224", "in22k-to-1k-384"):
        r = RecipeSpec(preset=name)
        assert (r.weight_decay, r.layer_decay) == (1e-8, 0.7) and source(name, "weight_decay") == "official"
    assert RecipeSpec(preset="finetune-384").drop_path_rate == 0.8  # --drop_path 0.8
    assert RecipeSpec(preset="in22k-to-1k-384").min_lr == 3e-4     # --min_lr 3e-4
    assert RecipeSpec(preset="replknet-31b-300ep").ema_momentum == 1e-4 and "replknet-in1k" not in OFFICIAL
    # where the two disagree the paper's value stays: ImageNet-22K pretraining warms up 10 epochs ("the same as
    # ImageNet-1K"), the official command 5
    assert RecipeSpec(preset="in22k-pretrain").warmup_epochs == 10
    assert official_value("in22k-pretrain", "warmup_epochs") == (True, 5) and source("in22k-pretrain", "warmup_epochs") == "paper"


def test_recipes_show_prints_the_sources() -> None:
    r = CliRunner().invoke(app, ["recipes", "show", "in22k-pretrain"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]]
            for line in r.stdout.splitlines() if line.count("│") >= 5}
    assert rows["warmup_epochs"] == ["10", "paper", "5"] and rows["min_lr"] == ["1e-06", "official", ""]
    assert rows["epochs"] == ["90", "paper", ""] and "RepLKNet-pytorch README.md" in r.stdout
    r = CliRunner().invoke(app, ["recipes", "show", "finetune-384"], env={"COLUMNS": "200"})
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]]
            for line in r.stdout.splitlines() if line.count("│") >= 5}
    assert rows["weight_decay"] == ["1e-08", "official", ""] and rows["layer_decay"] == ["0.7", "official", ""]
    assert rows["lr"] == ["0.0004", "paper", ""] and rows["workers"][1] == "default"
    r = CliRunner().invoke(app, ["recipes", "show", "mobilenetv2-in1k"], env={"COLUMNS": "200"})
    assert "assumed: label smoothing" in r.stdout and "official command:" not in r.stdout
