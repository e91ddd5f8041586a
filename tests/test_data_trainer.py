"""Data (Fashion-MNIST idx files, ImageNet-layout folders) and the trainer without Ray."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.data import (DatasetError, build_splits, check_dataset, dataset_info, read_idx)
from ablate.trainer import train


def _write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.fixture
def fake_fmnist(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n, gz in (("train", 40, True), ("t10k", 20, False)):
        labels = rng.integers(0, 10, n)
        images = (labels[:, None, None] * 25 + rng.integers(0, 5, (n, 28, 28))).astype(np.uint8)
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte{'.gz' if gz else ''}", images, gz)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte{'.gz' if gz else ''}", labels, gz)
    return tmp_path


def test_idx_reader_round_trip(fake_fmnist: Path) -> None:
    images = read_idx(fake_fmnist / "train-images-idx3-ubyte.gz")
    labels = read_idx(fake_fmnist / "train-labels-idx1-ubyte.gz")
    assert images.shape == (40, 28, 28) and labels.shape == (40,)
    assert (images[:, 0, 0] // 25 == labels).all()


def test_fashion_mnist_splits_resize_and_subset(fake_fmnist: Path) -> None:
    s = build_splits({"name": "fashion_mnist", "root": str(fake_fmnist), "image_size": 32, "train_subset": 10})
    x, y = s.train[0]
    assert (s.num_classes, s.in_chans, len(s.train), len(s.val)) == (10, 1, 10, 20)
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and 0 <= int(y) < 10


def test_real_fashion_mnist_from_the_debian_package(fashion_mnist_dir: Path) -> None:
    s = build_splits({"name": "fashion_mnist", "root": str(fashion_mnist_dir), "image_size": 28})
    assert (len(s.train), len(s.val)) == (60000, 10000)
    assert sorted(set(s.val.labels.tolist())) == list(range(10))  # type: ignore[attr-defined]


def test_image_folder_layout(image_folder: Path) -> None:
    s = build_splits({"name": "folder", "root": str(image_folder), "image_size": 16})
    assert (s.num_classes, s.in_chans, len(s.train), len(s.val)) == (3, 3, 24, 12)
    assert s.train[0][0].shape == (3, 16, 16)
    assert dataset_info({"name": "folder", "root": str(image_folder)}) == (3, 3)
    assert dataset_info({"name": "folder", "root": "/not/here"}, 1000) == (1000, 3)


def test_missing_data_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        check_dataset({"name": "fashion_mnist", "root": str(tmp_path)})
    with pytest.raises(DatasetError, match="ImageNet layout"):
        check_dataset({"name": "folder", "root": str(tmp_path)})


def _config(root: Path, **recipe) -> dict:
    return {"model": {"name": "mobilenetv2_lk", "kwargs": {"width_mult": 0.1, "kernel_size": 5}},
            "recipe": {"epochs": 3, "batch_size": 8, "opt": "sgd", "lr": 0.05, "momentum": 0.9,
                       "weight_decay": 4e-5, "sched": "cosine", "warmup_epochs": 1, "warmup_lr": 1e-4,
                       "min_lr": 0.0, "workers": 0, **recipe},
            "dataset": {"name": "folder", "root": str(root), "image_size": 16}, "seed": 0}


def test_trainer_reports_each_epoch_and_learns_fashion_mnist(fashion_mnist_dir: Path) -> None:
    cfg = _config(fashion_mnist_dir, epochs=3, lr=0.05, batch_size=64)
    cfg["model"]["kwargs"] = {"width_mult": 0.35, "kernel_size": 3}
    cfg["dataset"] = {"name": "fashion_mnist", "root": str(fashion_mnist_dir), "image_size": 28,
                      "train_subset": 2000, "val_subset": 500}
    reports: list[dict] = []
    final = train(cfg, report=reports.append, device="cpu")
    assert [r["epoch"] for r in reports] == [0, 1, 2]
    assert {k: v for k, v in final.items() if k != "reparam_max_abs_diff"} == \
        {k: v for k, v in reports[-1].items() if k != "reparam_max_abs_diff"}
    assert reports[1]["lr"] > reports[-1]["lr"] >= 0  # cosine after warmup decays
    assert reports[-1]["train_loss"] < reports[0]["train_loss"]
    assert final["top1"] > 50  # 10 classes: chance is 10%
    assert final["reparam_max_abs_diff"] < 1e-4  # the deploy form computes the same


def test_trainer_is_deterministic_for_a_seed(image_folder: Path) -> None:
    a = train(_config(image_folder, epochs=1), device="cpu")
    b = train(_config(image_folder, epochs=1), device="cpu")
    assert a["train_loss"] == b["train_loss"] and a["top1"] == b["top1"]
