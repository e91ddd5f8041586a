"""Shape bias (Appendix C, Fig. 5) on a generated cue-conflict folder: equals the count by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ablate.analyses import get
from ablate.analyses.imagenet16 import CATEGORIES, IMAGENET_INDICES
from ablate.analyses.shape_bias import (ShapeBiasError, analyze, check, figure5, parse_name, read_folder,
                                        shape_bias, to_16_classes)
from ablate.study import ShapeBiasOptions

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's ImageNet defaults, which the analysis uses


class ColourCode(nn.Module):
    """A 1000-class classifier whose answer is written in the image: red level 16k+8 means category k
    (it puts logit 20 on that category's first ImageNet class)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(len(CATEGORIES), 1000, bias=False)
        with torch.no_grad():
            self.head.weight.zero_()
            for k, c in enumerate(CATEGORIES):
                self.head.weight[IMAGENET_INDICES[c][0], k] = 20.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0].mean(dim=(1, 2)) * STD[0] + MEAN[0]
        k = torch.round(red * 255 / 16 - 0.5).long().clamp(0, len(CATEGORIES) - 1)
        return self.head(nn.functional.one_hot(k, len(CATEGORIES)).float())


# (folder = shape, texture, what the model answers): the stimuli and the planted decisions
STIMULI = [
    ("cat", "elephant", "cat"), ("cat", "dog", "dog"), ("cat", "clock", "cat"), ("cat", "cat", "cat"),
    ("dog", "cat", "cat"), ("dog", "bird", "bird"), ("dog", "oven", "knife"),
    ("knife", "bottle", "knife"), ("knife", "truck", "knife"),
]


def _folder(root: Path) -> Path:
    for n, (shape, texture, answer) in enumerate(STIMULI):
        d = root / shape
        d.mkdir(parents=True, exist_ok=True)
        img = np.zeros((32, 32, 3), np.uint8)
        img[..., 0] = 16 * CATEGORIES.index(answer) + 8
        Image.fromarray(img).save(d / f"{shape}{n}-{texture}{n + 1}.png")
    return root


def test_shape_bias_equals_the_count_by_hand(tmp_path: Path) -> None:
    options = ShapeBiasOptions(folder=str(_folder(tmp_path / "cue")))
    res = analyze(ColourCode(), None, options)
    s = res.scalars
    assert set(get("shape_bias").scalars(options)) <= set(s) and set(res.arrays) == set(get("shape_bias").arrays(options))
    # 8 conflict images (cat1-cat... has none): shape decisions 4 (cat, cat, knife, knife),
    # texture decisions 3 (dog, cat, bird), one neither (dog shape, oven texture, answered knife)
    assert s["shape_bias_images"] == 8
    assert s["shape_bias"] == pytest.approx(4 / 7)
    assert s["shape_bias_shape_frac"] == pytest.approx(4 / 8) and s["shape_bias_texture_frac"] == pytest.approx(3 / 8)
    assert s["shape_bias_cat"] == pytest.approx(2 / 3)   # elephant->cat (shape), dog->dog (texture), clock->cat
    assert s["shape_bias_dog"] == pytest.approx(0.0)      # cat, bird: texture; oven->knife: neither
    assert s["shape_bias_knife"] == pytest.approx(1.0)
    assert s["shape_bias_category_mean"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert "shape_bias_car" not in s                       # no stimuli, no value
    assert [CATEGORIES[i] for i in res.arrays["shape_bias_decisions.npy"]] == [a for sh, t, a in STIMULI if sh != t]
    fig = figure5({"planted": s})
    points = fig["data"][0]
    assert sorted(zip(points["y"], points["x"])) == [("cat", s["shape_bias_cat"]), ("dog", 0.0), ("knife", 1.0)]
    assert list(fig["data"][1]["x"]) == [s["shape_bias"]] * 2


def test_the_16_class_mapping() -> None:
    assert len(CATEGORIES) == 16 and list(CATEGORIES) == sorted(CATEGORIES)
    every = [i for c in CATEGORIES for i in IMAGENET_INDICES[c]]
    assert len(every) == len(set(every)) == 207 and len(IMAGENET_INDICES["dog"]) == 109
    assert len(IMAGENET_INDICES["bird"]) == 49 and IMAGENET_INDICES["airplane"] == (404,)
    p = np.zeros((2, 1000))
    p[0, 404] = 1.0                                        # airplane
    p[1, list(IMAGENET_INDICES["dog"])] = 0.5 / 109        # spread over dogs: mean 0.5/109
    p[1, 499] = 0.01                                       # knife's one class: mean 0.01 > 0.5/109
    scores = to_16_classes(p)
    assert CATEGORIES[scores[0].argmax()] == "airplane" and CATEGORIES[scores[1].argmax()] == "knife"
    assert scores[1, CATEGORIES.index("dog")] == pytest.approx(0.5 / 109)
    with pytest.raises(ShapeBiasError, match="1000-class"):
        to_16_classes(np.zeros((1, 10)))


def test_bad_folders_are_one_clear_error(tmp_path: Path) -> None:
    assert parse_name(Path("x/Stimuli_airplane1-bicycle2.png")) == ("airplane", "bicycle")
    with pytest.raises(ShapeBiasError, match="analyses.shape_bias.folder: .*missing: no such folder"):
        check(ShapeBiasOptions(folder=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShapeBiasError, match="no cue-conflict images"):
        read_folder(tmp_path / "empty")
    (tmp_path / "odd" / "zebra").mkdir(parents=True)
    with pytest.raises(ShapeBiasError, match="'zebra' is not one of the 16"):
        read_folder(tmp_path / "odd")
    (tmp_path / "names" / "cat").mkdir(parents=True)
    (tmp_path / "names" / "cat" / "cat1.png").write_bytes(b"")
    with pytest.raises(ShapeBiasError, match=r"cat1.png: expected a file name"):
        read_folder(tmp_path / "names")
    (tmp_path / "names" / "cat" / "cat1.png").unlink()
    (tmp_path / "names" / "cat" / "dog1-cat2.png").write_bytes(b"")
    with pytest.raises(ShapeBiasError, match="folder is 'cat'"):
        read_folder(tmp_path / "names")
    empty = shape_bias([], [])
    assert empty["shape_bias_images"] == 0 and np.isnan(empty["shape_bias"])


def test_plan_refuses_a_malformed_cue_conflict_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ablate.cli import app
    from conftest import write_study

    (tmp_path / "cue" / "zebra").mkdir(parents=True)
    f = write_study(tmp_path / "s.yaml", "name: s\nmodel: {name: mobilenetv2_lk, kwargs: {width_mult: 0.1}}\n"
                    "dataset: {name: fashion_mnist, image_size: 16}\n"
                    f"analyses: {{shape_bias: {{folder: '{tmp_path / 'cue'}'}}}}\n")
    r = CliRunner().invoke(app, ["plan", str(f), "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert r.exit_code == 2 and "analyses.shape_bias.folder" in r.output and "'zebra' is not one of the 16" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "x.db").exists()
