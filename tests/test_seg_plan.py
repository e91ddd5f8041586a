"""`ablate plan` and tables on a segmentation study: FLOPs are labelled with the input they are
counted at (4s x s for crop s: Table 11's "FLOPs @2048x512"), and the data is checked at plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from _synth import record, trial
from ablate.cli import app
from ablate.flops import flops_input
from ablate.seg_synth import make_seg_folder
from ablate.seg_tables import side_by_side
from ablate.tables import build_table
from conftest import write_study

TINY = {"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64], "kernel_sizes": [7, 7, 7, 7]}


def seg_study(root: Path | str, **over: Any) -> dict[str, Any]:
    s = {"name": "segplan", "model": {"name": "convnext_lk_tiny", "task": "segmentation", "kwargs": TINY,
                                      "head": {"channels": 16, "aux_channels": 8}},
         "seeds": [0], "dataset": {"name": "ade20k", "root": str(root), "image_size": 32},
         "recipe": {"opt": "adamw", "lr": 2.0e-3, "epochs": 1, "max_steps_per_epoch": 2, "batch_size": 2,
                    "warmup_epochs": 0},
         "resources": {"cpus": 1, "gpus": 0}, "metric": {"name": "miou", "mode": "max"}}
    s.update(over)
    return s


def test_flops_input_is_width_by_height_for_segmentation() -> None:
    seg = {"model": {"name": "convnext_lk_tiny", "task": "segmentation"}, "dataset": {"image_size": 512}}
    assert flops_input(seg) == "2048x512"  # Table 11's ADE20K FLOPs
    assert flops_input({"model": {"name": "convnext_lk_tiny"}, "dataset": {"image_size": 224}}) == "224"
    assert flops_input({"model": {}, "dataset": {}}) is None


def test_plan_labels_segmentation_flops_with_their_input(tmp_path: Path) -> None:
    root = make_seg_folder(tmp_path / "ade", n_train=2, n_val=1, size=(32, 48))
    f = write_study(tmp_path / "s.yaml", seg_study(root))
    db = tmp_path / "r.db"
    res = CliRunner().invoke(app, ["plan", str(f), "--db", f"sqlite:///{db}"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "FLOPs @128x32" in res.output and "FLOPs @32 " not in res.output
    assert not db.exists()


def test_tables_label_segmentation_flops_with_their_input() -> None:
    cls_model = {"name": "convnext_lk_tiny", "kwargs": {"kernel_sizes": [7, 7, 7, 7]}}
    seg_model = dict(cls_model, task="segmentation")
    cols = [{"header": "Kernel size", "source": "model.kwargs.kernel_sizes"},
            {"header": "Top-1", "source": "metric:top1"}, {"header": "FLOPs", "source": "flops"}]
    cls = [trial("cls", {"dataset.image_size": 224}, 0, {"top1": 81.0}, model=cls_model)]
    seg = [trial("seg", {"dataset.image_size": 512}, 0, {"miou": 44.6}, model=seg_model, flops=939_000_000_000)]
    left = build_table(record("cls", cls, table={"columns": cols}))
    right = build_table(record("seg", seg, table={"columns": [cols[0], {"header": "mIoU", "source": "metric:miou"},
                                                              cols[2]]}, metric={"name": "miou", "mode": "max"}))
    assert "FLOPs @2048x512" in right.headers and "FLOPs @224" in left.headers
    whole = side_by_side(left, right, "ImageNet", "ADE20K")  # Table 11 whole: each half says its own input
    at = {h: g for h, g in zip(whole.headers, whole.groups) if h.startswith("FLOPs")}
    assert at == {"FLOPs @224": "ImageNet", "FLOPs @2048x512": "ADE20K"}


@pytest.mark.parametrize("damage", ["missing", "no_masks", "bad_label"])
def test_plan_checks_segmentation_data_and_creates_nothing(tmp_path: Path, damage: str) -> None:
    """Missing or malformed data: one line naming the path, exit 2, at `plan` as at `run`; no database."""
    root = tmp_path / "ade"
    base = root / "ADEChallengeData2016"
    if damage == "missing":
        want = str(root)
    else:
        make_seg_folder(root, n_train=2, n_val=1, size=(16, 16))
        if damage == "no_masks":
            for m in (base / "annotations" / "validation").iterdir():
                m.unlink()
            (base / "annotations" / "validation").rmdir()
            want = str(base / "annotations" / "validation")
        else:
            from PIL import Image
            import numpy as np

            first = sorted((base / "annotations" / "training").iterdir())[0]
            Image.fromarray(np.full((16, 16), 200, np.uint8), mode="L").save(first)  # 199 after reduce: > 150 classes
            want = str(first)
    f = write_study(tmp_path / "s.yaml", seg_study(root))
    db = tmp_path / "r.db"
    res = CliRunner().invoke(app, ["plan", str(f), "--db", f"sqlite:///{db}"], terminal_width=400)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and want in res.output.replace("\n", ""), res.output
    assert not db.exists()
