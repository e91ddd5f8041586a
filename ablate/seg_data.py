"""Segmentation data: ADE20K as released, or any folder of image/mask pairs in the same layout.

Layout (``ADEChallengeData2016`` from the ADE20K scene-parsing release; ``root`` may be that folder or
the folder holding it)::

    root/images/training/<name>.jpg        root/annotations/training/<name>.png
    root/images/validation/<name>.jpg      root/annotations/validation/<name>.png

Masks are single-channel 8-bit PNGs of class indices. ADE20K has 150 classes with 0 = "other":
"reduce zero label" maps 0 to the ignore index 255 and every other label l to l - 1 (mmseg's
``LoadAnnotations(reduce_zero_label=True)``). ``seg_folder`` takes ``num_classes`` and, by default,
labels as they are (255 = ignore).

The pipeline is mmsegmentation's ADE20K one, which the Swin / ConvNeXt / RepLKNet UperNet setups use,
scaled to ``image_size`` (the crop, 512 in the paper; the resize scale is 4 x crop by crop, 2048x512):

* train: resize keeping the aspect ratio to the scale times a ratio drawn from [0.5, 2.0]; a random
  crop of ``image_size`` x ``image_size`` (retried up to 10 times while one class covers more than
  75% of it: ``cat_max_ratio``); horizontal flip (p 0.5); photometric distortion; normalize with
  ImageNet's mean/std; pad to the crop (image 0, mask 255);
* val: resize keeping the aspect ratio into the scale (short side 512 for ADE20K's images), normalize;
  the mask stays at its original size: predictions are upsampled to it ("whole" inference, as
  RepLKNet's config; ConvNeXt's own uses sliding windows), one image per batch.

Photometric distortion as mmseg's ``PhotoMetricDistortion``: brightness +-32, contrast x[0.5, 1.5]
(before or after the colour steps, at random), saturation x[0.5, 1.5], hue +-18 (of OpenCV's 180),
each with probability 0.5. Saturation uses torchvision's ``adjust_saturation`` (a blend with the
grey image) where mmseg scales S in HSV: the same range, not the same pixel values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ablate.data import DatasetError, Splits, _subset
from ablate.seg_data_info import (ADE20K_CLASSES, ADE20K_FOLDER, IGNORE_INDEX, IMAGE_EXTS, SPLITS,  # noqa: F401
                                  check_seg_dataset, num_classes, pairs, read_mask, reduce_labels,
                                  reduce_zero_label, seg_root)  # (re-exported: planning needs no torch)

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)  # ImageNet's, on 0-255 RGB
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
RATIO_RANGE = (0.5, 2.0)
CAT_MAX_RATIO = 0.75


def _rand(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def _coin() -> bool:
    return bool(torch.randint(2, ()))


def photometric_distortion(img: torch.Tensor) -> torch.Tensor:
    """mmseg's PhotoMetricDistortion on a float 0-255 RGB image (see the module docstring)."""
    import torchvision.transforms.functional as TF

    if _coin():
        img = (img + _rand(-32, 32)).clamp_(0, 255)
    contrast_first = _coin()

    def contrast(x: torch.Tensor) -> torch.Tensor:
        return (x * _rand(0.5, 1.5)).clamp_(0, 255) if _coin() else x

    if contrast_first:
        img = contrast(img)
    if _coin():
        img = TF.adjust_saturation(img / 255, _rand(0.5, 1.5)) * 255
    if _coin():
        img = TF.adjust_hue(img / 255, int(torch.randint(-18, 19, ())) / 180) * 255
    if not contrast_first:
        img = contrast(img)
    return img


def _resize(img: torch.Tensor, mask: torch.Tensor | None, scale: tuple[int, int], ratio: float = 1.0):
    """mmseg's keep-ratio Resize: the largest size whose long side <= scale[0] * ratio and short side <=
    scale[1] * ratio."""
    h, w = img.shape[1:]
    factor = min(scale[0] * ratio / max(h, w), scale[1] * ratio / min(h, w))
    size = (max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5)))
    img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False)[0]
    if mask is not None:
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].to(torch.uint8)
    return img, mask


def _random_crop(img: torch.Tensor, mask: torch.Tensor, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = mask.shape
    for _ in range(10):
        top = int(torch.randint(max(h - crop, 0) + 1, ()))
        left = int(torch.randint(max(w - crop, 0) + 1, ()))
        m = mask[top:top + crop, left:left + crop]
        counts = torch.bincount(m[m != IGNORE_INDEX].long().flatten())
        counts = counts[counts > 0]
        if len(counts) > 1 and counts.max() / counts.sum() < CAT_MAX_RATIO:
            break
    return img[:, top:top + crop, left:left + crop], m


def _pad(img: torch.Tensor, mask: torch.Tensor, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    ph, pw = crop - img.shape[1], crop - img.shape[2]
    if ph > 0 or pw > 0:
        img = F.pad(img, (0, max(pw, 0), 0, max(ph, 0)), value=0.0)
        mask = F.pad(mask, (0, max(pw, 0), 0, max(ph, 0)), value=IGNORE_INDEX)
    return img, mask


@dataclass
class SegDataset(Dataset):
    """Image/mask pairs through the train or val pipeline: (float image 3xHxW, long mask HxW)."""

    items: list[tuple[Path, Path]]
    train: bool
    crop: int
    reduce: bool

    @property
    def scale(self) -> tuple[int, int]:
        return 4 * self.crop, self.crop  # 2048x512 for the 512 crop

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        image_path, mask_path = self.items[i]
        try:
            with Image.open(image_path) as im:
                img = torch.from_numpy(np.array(im.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)
        except OSError as e:
            raise DatasetError(f"{image_path} is not a readable image ({e})") from None
        mask = torch.from_numpy(reduce_labels(read_mask(mask_path), self.reduce))
        if mask.shape != img.shape[1:]:
            raise DatasetError(f"{mask_path} is {tuple(mask.shape)}, its image {tuple(img.shape[1:])}")
        if not self.train:
            img, _ = _resize(img, None, self.scale)
            return (img - MEAN) / STD, mask.long()
        img, mask = _resize(img, mask, self.scale, _rand(*RATIO_RANGE))
        img, mask = _random_crop(img, mask, self.crop)
        if _coin():
            img, mask = img.flip(-1), mask.flip(-1)
        img = photometric_distortion(img.contiguous())
        img, mask = _pad((img - MEAN) / STD, mask, self.crop)
        return img.contiguous(), mask.long().contiguous()


def build_seg_splits(spec: dict[str, Any]) -> Splits:
    root = seg_root(spec)
    crop, reduce = int(spec.get("image_size", 512)), reduce_zero_label(spec)
    train = SegDataset(pairs(root, "train"), True, crop, reduce)
    val = SegDataset(pairs(root, "val"), False, crop, reduce)
    return Splits(_subset(train, spec.get("train_subset"), 0), _subset(val, spec.get("val_subset"), 1),
                  num_classes(spec), 3)
