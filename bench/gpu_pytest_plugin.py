"""pytest plugin for tests/test_gpu.py on the device machine (bench/gpu_check.sh loads it with
``--noconftest -p gpu_pytest_plugin``): the fixture test_gpu.py uses, without tests/conftest.py, which
starts Ray and imports SQLAlchemy for the rest of the suite; neither is installed there, and Ray's
wheel is too large to carry."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("ABLATE_ARTIFACTS", tempfile.mkdtemp(prefix="ablate-artifacts-"))
os.environ.setdefault("ABLATE_STATE_DIR", tempfile.mkdtemp(prefix="ablate-state-"))


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/_synth.make_image_folder's layout (three colour classes plus noise, 16px, 8 train / 4 val
    images a class); that module imports ablate.store (SQLAlchemy), so it is written here again."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        for ci, cls in enumerate(("red", "green", "blue")):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
                img[..., ci] += 180
                Image.fromarray(img).save(d / f"{i}.png")
    return root
