"""Clean after a crash: a driver killed with ``kill -9`` leaves no trainer running for long, and
the next run removes the temporary folders it left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray  # noqa: F401  (puts Ray's bundled psutil on sys.path)
import psutil

from ablate import _local_ray
from ablate._watchdog import DRIVER_ENV
from ablate.store import Store
from conftest import tiny_study, write_study


def _processes_of(driver: int) -> list[psutil.Process]:
    """Every process started under that driver's Ray (they inherit its ABLATE_DRIVER)."""
    found = []
    for p in psutil.process_iter():
        try:
            value = p.environ().get(DRIVER_ENV, "")
        except (psutil.Error, OSError):
            continue
        if value.split()[1:2] == [str(driver)] and p.pid != driver:
            found.append(p)
    return found


def _cmd(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:80]
    except psutil.Error:
        return "?"


def test_killed_driver_leaves_no_trainer_and_its_temp_folder_is_swept(tmp_path: Path, image_folder: Path) -> None:
    study = tiny_study("orphans", image_folder, axes={"grid": {"model.kwargs.kernel_size": [3]}})
    study["recipe"]["epochs"] = 200  # trains far longer than the test waits
    f = write_study(tmp_path / "o.yaml", study)
    db = tmp_path / "r.db"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray, not the session's
    driver = subprocess.Popen([sys.executable, "-m", "ablate.cli", "run", str(f), "--db", f"sqlite:///{db}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    trainers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # until the trial trains (an epoch reported)
            if db.exists() and Store(f"sqlite:///{db}").counts()["metrics"] > 0:
                trainers = [p for p in _processes_of(driver.pid) if _cmd(p).startswith("ray::")]
                if trainers:
                    break
            assert driver.poll() is None, "the driver exited before training"
            time.sleep(0.5)
        else:
            raise AssertionError("no trainer training within 240 s")
        temp = [d for d in Path(tempfile.gettempdir()).glob(f"{_local_ray.TMP_PREFIX}{driver.pid}-*")]
        assert temp, "the driver's temporary folders are not named after it"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        t0 = time.monotonic()
        gone, alive = psutil.wait_procs(trainers, timeout=15)
        assert not alive, f"orphaned trainers after 15 s: {[_cmd(p) for p in alive]}"
        took = time.monotonic() - t0
        left = [p for p in _processes_of(driver.pid) if p.is_running()]
        psutil.wait_procs(left, timeout=30)
        assert not [p for p in left if p.is_running()], f"Ray processes of the dead driver: {[_cmd(p) for p in left]}"
        print(f"trainers gone {took:.1f} s after kill -9 of the driver")
        # (b) the next run's first temporary folder sweeps the dead driver's folders
        mine = _local_ray.driver_tempdir()
        try:
            assert not [d for d in temp if d.exists()]
            assert Path(mine).is_dir() and oct(Path(mine).stat().st_mode & 0o777) == "0o700"
        finally:
            os.rmdir(mine)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)


def test_sweep_keeps_live_and_foreign_folders(tmp_path: Path) -> None:
    me = psutil.Process()
    live = tmp_path / f"{_local_ray.TMP_PREFIX}{me.pid}-{int(me.create_time() * 100)}-abc"
    reused = tmp_path / f"{_local_ray.TMP_PREFIX}{me.pid}-{int(me.create_time() * 100) - 500}-abc"  # pid reused since
    dead = tmp_path / f"{_local_ray.TMP_PREFIX}{2**22 + 7}-12345-abc"  # beyond pid_max: no such process
    other = tmp_path / f"{_local_ray.TMP_PREFIX}x1y2z3"  # not ours to judge (no driver in its name)
    for d in (live, reused, dead, other):
        d.mkdir()
    assert sorted(_local_ray.sweep_stale_tempdirs(tmp_path)) == sorted([reused, dead])
    assert live.is_dir() and other.is_dir() and not dead.exists() and not reused.exists()


def test_watchdog_ends_a_worker_whose_driver_died(tmp_path: Path) -> None:
    """Where Ray itself would not end the trainer (e.g. a driver of a shared Ray), the watchdog does."""
    fake_driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        me = psutil.Process(fake_driver.pid)
        import socket

        env = dict(os.environ, **{DRIVER_ENV: f"{socket.gethostname()} {me.pid} {me.create_time():.2f}"})
        worker = subprocess.Popen([sys.executable, "-c", "from ablate._watchdog import watch_driver; import time; "
                                   "watch_driver(0.2); print('watching', flush=True); time.sleep(600)"],
                                  env=env, stdout=subprocess.PIPE, text=True)
        assert worker.stdout.readline().strip() == "watching"
        time.sleep(1)
        assert worker.poll() is None, "the watchdog ended a worker whose driver is alive"
        os.kill(fake_driver.pid, signal.SIGKILL)
        t0 = time.monotonic()
        assert worker.wait(timeout=10) != 0
        assert time.monotonic() - t0 < 5
    finally:
        for p in (fake_driver, locals().get("worker")):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
