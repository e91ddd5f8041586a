"""A segmentation trial starting from a bare weights file (Table 11's ADE20K half "from an ImageNet trial
... or from a weights file"): ``model.kwargs: {pretrained: true, pretrained_cfg_overlay: {file: PATH}}``
loads a classifier's checkpoint into UperNet's backbone; a missing or mismatched file fails at plan."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from typer.testing import CliRunner

from ablate.cli import app
from ablate.models import build_model
from ablate.seg_synth import make_seg_folder
from ablate.seg_trainer import train
from conftest import write_study
from test_seg_plan import TINY, seg_study


def _weights(path: Path, kwargs: dict[str, Any] = TINY) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    net = build_model({"name": "convnext_lk_tiny", "kwargs": kwargs}, 10, 3)
    torch.save({"state_dict": net.state_dict()}, path)  # as timm's train.py saves it
    return net.state_dict()


def test_backbone_starts_from_the_weights_file(tmp_path: Path) -> None:
    src = _weights(tmp_path / "in1k.pt")
    root = make_seg_folder(tmp_path / "ade", n_train=2, n_val=1, size=(32, 32))
    config = seg_study(root)
    config["model"]["kwargs"] = {**TINY, "pretrained": True, "pretrained_cfg_overlay": {"file": str(tmp_path / "in1k.pt")}}
    config["recipe"].update(lr=0.0, warmup_lr=0.0, min_lr=0.0, weight_decay=0.0, momentum=0.9, max_steps_per_epoch=1)
    config["seed"] = 0
    states: list[dict[str, Any]] = []
    train(config, report=lambda m, s: states.append(copy.deepcopy(s["model"])), device="cpu", checkpoints=True)
    backbone = {k.removeprefix("backbone.model."): v for k, v in states[0].items() if k.startswith("backbone.")}
    assert backbone and all(torch.equal(v, src[k]) for k, v in backbone.items())  # lr 0: the file's weights
    assert not torch.equal(states[0]["backbone.model.stem.0.weight"],
                           build_model({"name": "convnext_lk_tiny", "kwargs": TINY}, 10, 3).state_dict()["stem.0.weight"])


def _plan(tmp_path: Path, file: Path) -> Any:
    root = make_seg_folder(tmp_path / "ade", n_train=2, n_val=1, size=(16, 16))
    study = seg_study(root)
    study["model"]["kwargs"] = {**TINY, "pretrained": True, "pretrained_cfg_overlay": {"file": str(file)}}
    f = write_study(tmp_path / "s.yaml", study)
    return CliRunner().invoke(app, ["plan", str(f), "--db", f"sqlite:///{tmp_path / 'r.db'}"], terminal_width=400)


def test_a_missing_weights_file_fails_at_plan(tmp_path: Path) -> None:
    res = _plan(tmp_path, tmp_path / "nope.pt")
    assert res.exit_code == 2, res.output
    assert str(tmp_path / "nope.pt") in res.output.replace("\n", "") and "model.kwargs.pretrained_cfg_overlay.file" in res.output
    assert not (tmp_path / "r.db").exists()


def test_weights_of_another_architecture_fail_at_plan(tmp_path: Path) -> None:
    _weights(tmp_path / "other.pt", {**TINY, "dims": [16, 32, 64, 128]})
    res = _plan(tmp_path, tmp_path / "other.pt")
    assert res.exit_code == 2, res.output
    assert str(tmp_path / "other.pt") in res.output.replace("\n", "") and "Traceback" not in res.output
