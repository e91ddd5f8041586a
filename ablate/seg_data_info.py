"""What planning and the pre-run checks read of a segmentation dataset (ADE20K's layout, see
``ablate.seg_data``) without torch: classes, the folder, each image's mask, the first masks' labels.
Kept apart so that a driver that plans from cached model costs (``ablate.model_costs``) imports no torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ablate.data_info import DatasetError

ADE20K_CLASSES = 150
ADE20K_FOLDER = "ADEChallengeData2016"
SPLITS = {"train": "training", "val": "validation"}
IGNORE_INDEX = 255
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def seg_root(spec: dict[str, Any]) -> Path:
    root = spec.get("root")
    if not root:
        raise DatasetError(f"dataset.root is required for a {spec['name']} dataset (the folder with images/ "
                           "and annotations/)")
    path = Path(os.path.expandvars(os.path.expanduser(root)))
    if spec["name"] == "ade20k" and (path / ADE20K_FOLDER).is_dir():
        path = path / ADE20K_FOLDER
    return path


def num_classes(spec: dict[str, Any]) -> int:
    return ADE20K_CLASSES if spec["name"] == "ade20k" else int(spec["num_classes"])


def reduce_zero_label(spec: dict[str, Any]) -> bool:
    return True if spec["name"] == "ade20k" else bool(spec.get("reduce_zero_label") or False)


def pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, mask) of a split, sorted by name; DatasetError naming the path when the layout is wrong."""
    images, masks = root / "images" / SPLITS[split], root / "annotations" / SPLITS[split]
    for d in (images, masks):
        if not d.is_dir():
            raise DatasetError(f"{d} not found; expected the ADE20K layout {root}/images/{{training,validation}}/"
                               f"<name>.jpg and {root}/annotations/{{training,validation}}/<name>.png")
    out = []
    for img in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTS):
        mask = masks / f"{img.stem}.png"
        if not mask.is_file():
            raise DatasetError(f"{img} has no mask {mask}")
        out.append((img, mask))
    if not out:
        raise DatasetError(f"{images} holds no images ({', '.join(IMAGE_EXTS)})")
    return out


def read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as m:
            if m.mode not in ("L", "P"):
                raise DatasetError(f"{path} is not a mask of class indices (a single-channel 8-bit PNG), "
                                   f"got mode {m.mode}")
            return np.array(m, dtype=np.uint8)
    except (OSError, SyntaxError) as e:
        raise DatasetError(f"{path} is not a readable PNG mask ({e})") from None


def check_seg_dataset(spec: dict[str, Any]) -> None:
    """Before any compute: both splits in the layout, every image with its mask, the first mask of each
    split a single-channel 8-bit image whose labels fit the classes."""
    root = seg_root(spec)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} not found")
    classes, reduce = num_classes(spec), reduce_zero_label(spec)
    for split in SPLITS:
        _, mask = pairs(root, split)[0]
        labels = reduce_labels(read_mask(mask), reduce)
        bad = labels[(labels != IGNORE_INDEX) & (labels >= classes)]
        if bad.size:
            raise DatasetError(f"{mask} has label {int(bad.max())}, outside the {classes} classes "
                               f"(labels 0-{classes - 1}, {IGNORE_INDEX} = ignore)")


def reduce_labels(mask: np.ndarray, reduce: bool) -> np.ndarray:
    """ADE20K's "reduce zero label": 0 (other) -> 255 (ignored), l -> l - 1."""
    if not reduce:
        return mask
    out = mask.astype(np.int16) - 1
    out[mask == 0] = IGNORE_INDEX
    out[mask == IGNORE_INDEX] = IGNORE_INDEX
    return out.astype(np.uint8)
