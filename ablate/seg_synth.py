"""A tiny generated segmentation set in ADE20K's released layout, learnable in a few iterations: the
tests' data and the ``ade20k-demo`` profile's (``python -m ablate.seg_synth DIR``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_seg_folder(root: Path, n_train: int = 8, n_val: int = 4, size: tuple[int, int] = (48, 64),
                    seed: int = 0) -> Path:
    """``root/ADEChallengeData2016/{images,annotations}/{training,validation}``: noisy grey background
    (label 1), a red and a blue rectangle (labels 2, 3), a border of label 0 (ignored once reduced)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = root / "ADEChallengeData2016"
    h, w = size
    for split, n in (("training", n_train), ("validation", n_val)):
        (base / "images" / split).mkdir(parents=True, exist_ok=True)
        (base / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(90, 150, (h, w, 3)).astype(np.uint8)
            mask = np.ones((h, w), np.uint8)
            for label, channel in ((2, 0), (3, 2)):
                y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
                y1, x1 = y0 + int(rng.integers(h // 4, h // 2)), x0 + int(rng.integers(w // 4, w // 2))
                img[y0:y1, x0:x1] = rng.integers(0, 40, (y1 - y0, x1 - x0, 3))
                img[y0:y1, x0:x1, channel] = 230
                mask[y0:y1, x0:x1] = label
            mask[:2, :] = 0
            Image.fromarray(img).save(base / "images" / split / f"ADE_{split}_{i:08d}.jpg", quality=95)
            Image.fromarray(mask, mode="L").save(base / "annotations" / split / f"ADE_{split}_{i:08d}.png")
    return root


if __name__ == "__main__":  # python -m ablate.seg_synth DIR [N_TRAIN N_VAL]
    import sys

    args = sys.argv[1:]
    if not args:
        sys.exit("usage: python -m ablate.seg_synth DIR [N_TRAIN N_VAL]")
    counts = [int(a) for a in args[1:3]] or [64, 16]
    out = make_seg_folder(Path(args[0]), *counts, size=(64, 96))
    print(f"{out}/ADEChallengeData2016: {counts[0]} training and {counts[-1]} validation image/mask pairs")
