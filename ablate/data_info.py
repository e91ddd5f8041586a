"""What planning needs of a dataset without loading it: classes, channels, and whether its files are there.

Kept apart from ``ablate.data`` (the datasets themselves, which need torch) so that a driver that plans
from cached model costs (``ablate.model_costs``) imports no torch at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SEG_DATASETS = ("ade20k", "seg_folder")


class DatasetError(Exception):
    """The data a study names is missing or unusable; the message says how to get it."""


def _root(spec: dict[str, Any]) -> Path | None:
    root = spec.get("root")
    return Path(os.path.expandvars(os.path.expanduser(root))) if root else None


def _idx_file(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"Fashion-MNIST file {name}[.gz] not found in {root}. Install it with "
        "`apt-get install dataset-fashion-mnist` (puts the idx files in "
        f"{FASHION_MNIST_DIR}) or set dataset.root to a directory that holds them.")


def dataset_info(spec: dict[str, Any], default_classes: int = 1000) -> tuple[int, int]:
    """(num_classes, in_chans) without loading images, for planning. A folder that is not on this
    machine (say ImageNet on a cluster) falls back to ``default_classes``."""
    if spec["name"] == "fashion_mnist":
        return 10, 1
    if spec["name"] in SEG_DATASETS:
        from ablate.seg_data_info import num_classes

        return num_classes(spec), 3
    root = _root(spec)
    if root is not None and (root / "train").is_dir():
        return sum(1 for p in (root / "train").iterdir() if p.is_dir()), 3
    return default_classes, 3


def check_dataset(spec: dict[str, Any]) -> None:
    """Fail early, before any trial starts, when the data is not there."""
    if spec["name"] in SEG_DATASETS:
        from ablate.seg_data_info import check_seg_dataset

        return check_seg_dataset(spec)
    if spec["name"] == "fashion_mnist":
        root = _root(spec) or Path(FASHION_MNIST_DIR)
        for names in FASHION_MNIST_FILES.values():
            for n in names:
                _idx_file(root, n)
    else:
        root = _root(spec)
        if root is None:
            raise DatasetError("dataset.root is required for a folder dataset")
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise DatasetError(f"dataset folder {root}/{split} not found; expected the ImageNet layout "
                                   f"{root}/train/<class>/<image> and {root}/val/<class>/<image>")
