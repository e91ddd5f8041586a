"""layer_decay reaches RepLKNet: timm's create_optimizer_v2 reads the model's group_matcher (Appendix A's
stage-wise decay for XL; the official fine-tuning grouping otherwise)."""

from __future__ import annotations

import logging

import pytest
import timm
import torch
from timm.optim import create_optimizer_v2

import ablate.models  # noqa: F401 - registers ablate's models

TINY = dict(layers=(2, 2, 18, 2), channels=(8, 8, 8, 8), kernel_sizes=(5, 5, 5, 3), small_kernel=3, num_classes=4)


def _scales(model: torch.nn.Module, decay: float) -> dict[str, float]:
    opt = create_optimizer_v2(model, opt="adamw", lr=1.0, weight_decay=0.05, layer_decay=decay)
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["lr_scale"] for g in opt.param_groups for p in g["params"]}


def _official_layer_id(name: str) -> int:
    """The official optim_factory.get_num_layer_for_replknet's table for B = [2, 2, 18, 2], written for
    ablate's names (the official ``transitions.i`` is ablate's ``stages.i.transition``)."""
    if name.startswith("stem"):
        return 0
    if not name.startswith("stages"):
        return 13
    stage, rest = int(name.split(".")[1]), name.split(".")[2]
    if rest == "transition":
        return {0: 1, 1: 2, 2: 11}[stage]
    block = int(name.split(".")[3])
    return {0: 1, 1: 2, 3: 12}.get(stage, 3 + block // 4)


def test_official_grouping_gives_the_official_lr_scales(caplog: pytest.LogCaptureFixture) -> None:
    model = timm.create_model("replknet_31b", **TINY)
    with caplog.at_level(logging.WARNING):
        scales = _scales(model, 0.7)
    assert "no effect" not in caplog.text
    for name, scale in scales.items():  # the official scale is decay ** (13 - layer id)
        assert scale == pytest.approx(0.7 ** (13 - _official_layer_id(name))), name
    assert scales["stem.0.conv.weight"] == pytest.approx(0.7 ** 13) and scales["head.weight"] == 1.0
    assert len(set(scales.values())) == 14


def test_stage_wise_decay_for_xl() -> None:
    model = timm.create_model("replknet_xl", **{**TINY, "small_kernel": None})
    scales = _scales(model, 0.4)
    # stem, four stages, head: Appendix A's "stage-wise learning rate decay of 0.4"
    assert scales["stem.0.conv.weight"] == pytest.approx(0.4 ** 5)
    for stage in range(4):
        assert scales[f"stages.{stage}.blocks.1.pw1.conv.weight"] == pytest.approx(0.4 ** (4 - stage))
    assert scales["stages.0.transition.0.conv.weight"] == scales["stages.0.blocks.0.pre_bn.weight"]
    assert scales["head.weight"] == scales["norm.weight"] == 1.0
    assert len(set(scales.values())) == 6


def test_without_layer_decay_every_scale_is_one_and_bad_grouping_fails() -> None:
    model = timm.create_model("replknet_31b", **TINY)
    opt = create_optimizer_v2(model, opt="adamw", lr=1.0, weight_decay=0.05)
    assert all(g.get("lr_scale", 1.0) == 1.0 for g in opt.param_groups)
    with pytest.raises(ValueError, match="lr_decay_groups"):
        timm.create_model("replknet_31b", **TINY, lr_decay_groups="layers")
