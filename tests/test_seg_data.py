"""ADE20K-layout loading (reduce zero label, the mmseg pipeline's shapes, bad folders) and mIoU."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ablate.data import DatasetError, check_dataset, dataset_info
from ablate.seg_data import build_seg_splits, reduce_labels
from ablate.seg_metrics import confusion_matrix, scores
from ablate.seg_synth import make_seg_folder



def test_confusion_matrix_and_scores_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = confusion_matrix(pred, target, num_classes=4)
    # rows: true class, columns: predicted; the two ignored pixels count nowhere; class 3 appears nowhere
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    s = scores(cm)
    # IoU: class 0: 1 / (2 + 2 - 1) = 1/3; class 1: 2 / (2 + 3 - 2) = 2/3; class 2: 1 / (2 + 1 - 1) = 1/2; class 3 left out
    assert s["miou"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert s["pixel_acc"] == pytest.approx(100 * 4 / 6)


def test_reduce_zero_label():
    assert reduce_labels(np.array([0, 1, 2, 150, 255], np.uint8), True).tolist() == [255, 0, 1, 149, 255]
    assert reduce_labels(np.array([0, 1, 255], np.uint8), False).tolist() == [0, 1, 255]


@pytest.fixture()
def ade(tmp_path):
    return make_seg_folder(tmp_path / "data", n_train=3, n_val=2)


def test_ade20k_layout_loads(ade):
    spec = {"name": "ade20k", "root": str(ade), "image_size": 32}  # the folder holding ADEChallengeData2016
    check_dataset(spec)
    assert dataset_info(spec) == (150, 3)
    splits = build_seg_splits(spec)
    assert (splits.num_classes, splits.in_chans, len(splits.train), len(splits.val)) == (150, 3, 3, 2)
    torch.manual_seed(0)
    for i in range(3):
        x, y = splits.train[i]
        assert x.shape == (3, 32, 32) and y.shape == (32, 32) and y.dtype == torch.long
        assert set(y.unique().tolist()) <= {0, 1, 2, 255}  # labels 1-3 reduced to 0-2; 0 and padding ignored
    x, y = splits.val[0]  # 48x64 resized into 128x32 keeping the ratio: short side 32; the mask stays as it is
    assert x.shape == (3, 32, 43) and y.shape == (48, 64)
    assert (y[:2] == 255).all() and set(y[2:].unique().tolist()) <= {0, 1, 2}


def test_seg_folder_keeps_labels(ade):
    spec = {"name": "seg_folder", "root": str(ade / "ADEChallengeData2016"), "image_size": 32, "num_classes": 4}
    _, y = build_seg_splits(spec).val[0]
    assert (y[:2] == 0).all() and set(y.unique().tolist()) <= {0, 1, 2, 3}
    with pytest.raises(DatasetError, match="label 3, outside the 3 classes"):
        check_dataset({**spec, "num_classes": 3})


def test_bad_folders_name_the_path(ade, tmp_path):
    base = ade / "ADEChallengeData2016"
    spec = {"name": "ade20k", "root": str(ade), "image_size": 32}
    with pytest.raises(DatasetError, match="nowhere"):
        check_dataset({**spec, "root": str(tmp_path / "nowhere")})
    (base / "annotations" / "validation" / "ADE_validation_00000001.png").unlink()
    with pytest.raises(DatasetError, match="ADE_validation_00000001.jpg has no mask"):
        check_dataset(spec)
    shutil.rmtree(base / "annotations" / "validation")
    with pytest.raises(DatasetError, match=r"annotations/validation not found"):
        check_dataset(spec)
    rgb = base / "annotations" / "training" / "ADE_training_00000000.png"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(rgb)
    with pytest.raises(DatasetError, match="ADE_training_00000000.png is not a mask of class indices"):
        check_dataset(spec)
