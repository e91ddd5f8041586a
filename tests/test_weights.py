"""Checkpoints from outside: official RepLKNet names map onto ablate's (same logits), torchvision ResNet
state dicts load as they are, a checkpoint that does not fit is one clear error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
from typer.testing import CliRunner

import ablate.models  # noqa: F401 - registers ablate's models
from ablate.cli import app
from ablate.layers import LargeKernelDW
from ablate.weights import WeightsError, load_weights

TINY = dict(layers=(2, 2, 2, 2), channels=(8, 8, 8, 8), kernel_sizes=(7, 5, 5, 3), small_kernel=3, num_classes=10)


def _to_official(key: str) -> str:
    """ablate -> official names, written from the official replknet.py (the inverse of ablate's map)."""
    key = re.sub(r"^stages\.(\d+)\.transition\.", r"transitions.\1.", key)
    key = re.sub(r"^(stages\.\d+\.blocks\.(\d+))\.pre_bn\.",
                 lambda m: f"{m.group(1)}.{'prelkb_bn' if int(m.group(2)) % 2 == 0 else 'preffn_bn'}.", key)
    return (key.replace(".large_kernel.lk.", ".large_kernel.lkb_origin.")
            .replace(".large_kernel.small.", ".large_kernel.small_conv.")
            .replace(".large_kernel.merged.", ".large_kernel.lkb_reparam."))


def _official_order(key: str) -> tuple:
    """The official registration order: stem, stages, transitions, norm, head; in a RepLK Block pw1, pw2,
    large_kernel, prelkb_bn (ablate registers pre_bn first and pw2 last)."""
    top = ["stem", "stages", "transitions", "norm", "head"].index(key.split(".")[0])
    sub = next((i for i, n in enumerate((".pw1.", ".pw2.", ".large_kernel.", ".prelkb_bn.")) if n in key), 0)
    nums = tuple(int(x) for x in re.findall(r"\.(\d+)\.", "." + key)[:2])
    return top, nums, sub


def _trained_like(seed: int, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model("replknet_31b", **{**TINY, **kw}).eval()
    with torch.no_grad():  # BN statistics away from their defaults, so every tensor matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def _official_file(model: torch.nn.Module, path: Path, wrap: str | None = "model") -> Path:
    sd = {_to_official(k): v for k, v in model.state_dict().items()}
    sd = dict(sorted(sd.items(), key=lambda kv: _official_order(kv[0])))
    torch.save({wrap: sd, "epoch": 119} if wrap else sd, path)
    return path


def test_official_checkpoint_loads_with_the_same_logits(tmp_path: Path) -> None:
    src = _trained_like(0)
    f = _official_file(src, tmp_path / "RepLKNet-31B_ImageNet-1K_224.pth")
    keys = list(torch.load(f, weights_only=True)["model"])
    for official in ("stem.0.conv.weight", "stages.0.blocks.0.prelkb_bn.running_var", "stages.0.blocks.1.preffn_bn.weight",
                     "stages.0.blocks.0.large_kernel.lkb_origin.conv.weight",
                     "stages.3.blocks.2.large_kernel.small_conv.bn.bias", "transitions.2.1.conv.weight", "head.bias"):
        assert official in keys, official
    assert keys.index("stages.0.blocks.0.pw2.conv.weight") < keys.index("stages.0.blocks.0.prelkb_bn.weight")
    x = torch.randn(2, 3, 32, 32)
    # through timm's way of pointing a model at a local file
    dst = timm.create_model("replknet_31b", **TINY, pretrained=True, pretrained_cfg_overlay={"file": str(f)}).eval()
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    # pw1 and pw2 have the same shapes here (dw_ratio 1): only the names keep them apart
    assert dst.stages[1].blocks[2].pw1.conv.weight.shape == dst.stages[1].blocks[2].pw2.conv.weight.shape
    torch.testing.assert_close(dst.stages[1].blocks[2].pw2.conv.weight, src.stages[1].blocks[2].pw2.conv.weight)


def test_reparameterized_official_checkpoint(tmp_path: Path) -> None:
    src = _trained_like(1)
    x = torch.randn(2, 3, 32, 32)
    want = src(x)
    for m in src.modules():
        if isinstance(m, LargeKernelDW):
            m.merge()  # what the official structural_reparam() leaves: lkb_reparam convs with bias
    f = _official_file(src, tmp_path / "deploy.pth", wrap=None)
    assert any(".large_kernel.lkb_reparam.weight" in k for k in torch.load(f, weights_only=True))
    dst = _trained_like(2)
    report = load_weights(dst, f)
    assert report.mapped and not report.fresh
    torch.testing.assert_close(dst(x), want, rtol=1e-4, atol=1e-5)


def test_checkpoints_that_do_not_fit_fail_clearly(tmp_path: Path) -> None:
    f = _official_file(_trained_like(0), tmp_path / "b.pth")
    with pytest.raises(WeightsError, match=r"shapes differ.*stages\.0\.blocks\.0\.large_kernel\.lk\.conv\.weight"):
        load_weights(_trained_like(0, kernel_sizes=(9, 5, 5, 3)), f)
    sd = torch.load(f, weights_only=True)["model"]
    del sd["stages.2.blocks.1.pw2.bn.running_mean"]
    with pytest.raises(WeightsError, match=r"missing stages\.2\.blocks\.1\.pw2\.bn\.running_mean"):
        load_weights(_trained_like(0), sd)
    with pytest.raises(WeightsError, match="no such checkpoint"):
        load_weights(_trained_like(0), tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
        load_weights(_trained_like(0), tmp_path / "junk.pth")
    # another number of classes: the classifier keeps its init, and says so
    report = load_weights(_trained_like(0, num_classes=4), f)
    assert report.fresh == ["head.bias", "head.weight"]
    with pytest.raises(ValueError, match="pretrained_cfg_overlay"):
        timm.create_model("replknet_31b", **TINY, pretrained=True)
    # plan builds models on the meta device: the checkpoint is checked (keys, shapes), nothing is copied
    with torch.device("meta"):
        timm.create_model("replknet_31b", **TINY, pretrained=True, pretrained_cfg_overlay={"file": str(f)})
        with pytest.raises(WeightsError, match="shapes differ"):
            timm.create_model("replknet_31b", **{**TINY, "channels": (8, 8, 8, 16)}, pretrained=True,
                              pretrained_cfg_overlay={"file": str(f)})


def test_torchvision_resnet_state_dict_loads_as_it_is(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=10).eval()
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    ours = timm.create_model("resnet18", num_classes=10).eval()
    assert not load_weights(ours, tmp_path / "resnet18.pth").mapped
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(ours(x), tv(x))


def test_import_weights_cli(tmp_path: Path) -> None:
    f = _official_file(_trained_like(0), tmp_path / "official.pth")
    kwargs = '{"layers": [2, 2, 2, 2], "channels": [8, 8, 8, 8], "kernel_sizes": [7, 5, 5, 3], "small_kernel": 3, ' \
             '"num_classes": 10}'
    r = CliRunner().invoke(app, ["import-weights", "replknet_31b", str(f), "--out", str(tmp_path / "a.pth"),
                                 "--kwargs", kwargs])
    assert r.exit_code == 0, r.output
    assert "official names mapped" in r.stdout and "stages.0.blocks.0.pre_bn.weight" in torch.load(
        tmp_path / "a.pth", weights_only=True)
    r = CliRunner().invoke(app, ["import-weights", "replknet_31b", str(f), "--out", str(tmp_path / "b.pth"),
                                 "--kwargs", kwargs.replace("[7, 5, 5, 3]", "[9, 5, 5, 3]")])
    assert r.exit_code == 2 and "shapes differ" in r.output and len(r.output.strip().splitlines()) <= 3
    assert not (tmp_path / "b.pth").exists()
