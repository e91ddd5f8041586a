"""Impossible resource requests fail fast: a trial no node of the Ray cluster can ever hold is a
user error (exit 2, naming the field and the cluster), not an endless wait with a warning a minute."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablate.runner import ResourceError, check_resources
from conftest import tiny_study, write_study


@pytest.mark.parametrize("resources, field", [({"cpus": 1, "gpus": 1}, "resources.gpus: 1")])  # cpus: in-process below
def test_impossible_request_exits_2_within_seconds(tmp_path: Path, image_folder: Path,
                                                   resources: dict, field: str) -> None:
    import torch

    if field.startswith("resources.gpus") and torch.cuda.device_count():
        pytest.skip("this machine has a GPU")
    f = write_study(tmp_path / "s.yaml", tiny_study("toobig", image_folder, resources=resources))
    t0 = time.monotonic()
    # its own driver and local Ray, as a user runs it (without the fix this never returns)
    r = subprocess.run([sys.executable, "-m", "ablate.cli", "run", str(f), "--db", f"sqlite:///{tmp_path / 'r.db'}"],
                       capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert str(f) in line and field in line and "CPU" in line and "GPU" in line, r.stderr
    assert took < 90, f"took {took:.0f} s"  # process start, imports and a local Ray on 2 busy cores


@pytest.mark.usefixtures("ray_session")
def test_check_against_the_running_cluster() -> None:
    import ray

    cpus = ray.cluster_resources()["CPU"]
    check_resources(1, 0, 1)  # what every test study asks: fits
    check_resources(cpus, 0, 1)  # the whole node: fits
    with pytest.raises(ResourceError, match=r"resources\.cpus: .* per trial fits no node"):
        check_resources(cpus + 1, 0, 1)
    with pytest.raises(ResourceError, match=r"resources\.cpus: .* per worker fits no node"):
        check_resources(cpus + 1, 0, 2)
    with pytest.raises(ResourceError, match=r"resources\.workers: 3 workers"):
        check_resources(cpus / 2, 0, 3)  # each worker fits, three together do not
    if not ray.cluster_resources().get("GPU"):
        with pytest.raises(ResourceError, match=r"resources\.gpus: 0\.5 per trial fits no node.*0 GPU"):
            check_resources(1, 0.5, 1)
