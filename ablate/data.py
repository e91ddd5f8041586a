"""Datasets a trial trains on: Fashion-MNIST from its idx files, or any ImageNet-layout folder.

Folder layout: ``root/train/<class>/<image>`` and ``root/val/<class>/<image>`` (torchvision's
ImageFolder), transformed with timm's ``create_transform``.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from ablate.data_info import (FASHION_MNIST_DIR, FASHION_MNIST_FILES, DatasetError, _idx_file,  # noqa: F401
                              _root, check_dataset, dataset_info)  # (re-exported: planning needs no torch)

# Fashion-MNIST training-set statistics
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    num_classes: int
    in_chans: int


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST format: magic, dims, big-endian sizes, raw uint8)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path} is not an idx file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class FashionMNIST(Dataset):
    """Fashion-MNIST held in memory as uint8; resized and normalised per item."""

    def __init__(self, root: Path, split: str, image_size: int, train: bool):
        images, labels = (_idx_file(root, n) for n in FASHION_MNIST_FILES[split])
        self.images = torch.from_numpy(read_idx(images).copy())
        self.labels = torch.from_numpy(read_idx(labels).astype(np.int64))
        self.image_size, self.train = image_size, train

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].float().div_(255).sub_(FMNIST_MEAN).div_(FMNIST_STD)[None]
        if self.image_size != x.shape[-1]:
            x = F.interpolate(x[None], size=self.image_size, mode="bilinear", align_corners=False)[0]
        if self.train and torch.rand(()) < 0.5:  # left-right flip, as Appendix A's MobileNetV2 recipe
            x = x.flip(-1)
        return x, self.labels[i]


def _subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """A fixed random subset (the same for every trial of a study, so arms compare fairly)."""
    if n is None or n >= len(ds):  # type: ignore[arg-type]
        return ds
    g = torch.Generator().manual_seed(seed)
    return Subset(ds, torch.randperm(len(ds), generator=g)[:n].tolist())  # type: ignore[arg-type]


def _folder_splits(root: Path, image_size: int, augment: dict[str, Any] | None = None) -> tuple[Dataset, Dataset]:
    """Train transform from timm's ``create_transform`` with the recipe's RandAugment and random
    erasing (random-resized crop + flip always, as Appendix A); val: resize + centre crop."""
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    augment = augment or {}

    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetError(f"dataset folder {root} has no '{split}' directory; expected the ImageNet "
                               f"layout {root}/train/<class>/<image> and {root}/val/<class>/<image>")
    train = ImageFolder(str(root / "train"), transform=create_transform(
        image_size, is_training=True, auto_augment=augment.get("auto_augment"), re_prob=augment.get("re_prob", 0.0)))
    val = ImageFolder(str(root / "val"), transform=create_transform(image_size, is_training=False))
    if train.classes != val.classes:
        raise DatasetError(f"{root}: train and val have different classes")
    return train, val


def build_splits(spec: dict[str, Any], augment: dict[str, Any] | None = None) -> Splits:
    """Train/val datasets of a trial. ``augment`` (auto_augment, re_prob) applies to image folders;
    Fashion-MNIST (1 channel) gets the flip only."""
    image_size = int(spec.get("image_size", 224))
    if spec["name"] == "fashion_mnist":
        root = _root(spec) or Path(FASHION_MNIST_DIR)
        train: Dataset = FashionMNIST(root, "train", image_size, train=True)
        val: Dataset = FashionMNIST(root, "val", image_size, train=False)
        classes, chans = 10, 1
    else:
        root = _root(spec)
        if root is None:
            raise DatasetError("dataset.root is required for a folder dataset")
        train, val = _folder_splits(root, image_size, augment)
        classes, chans = len(train.classes), 3  # type: ignore[attr-defined]
    return Splits(_subset(train, spec.get("train_subset"), 0), _subset(val, spec.get("val_subset"), 1),
                  classes, chans)
