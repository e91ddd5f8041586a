"""A trainer whose driver is gone stops within seconds instead of training for nobody.

A driver killed with ``kill -9`` runs no clean-up: its local Ray's reaper and the raylet's own
checks take the Ray processes down eventually, but a trainer busy in C++ (a forward pass of a
big model, a DataLoader worker) can keep a CPU or GPU for long after. So each trial starts a
daemon thread that polls the driver and ends the worker's whole process when it is gone: the
driver's pid when it runs on this host (``ABLATE_DRIVER_PID`` + start time, set by the runner),
else Ray's record of the job, which the GCS marks dead when its driver disconnects.
"""

from __future__ import annotations

import os
import threading
import time

POLL_S = 1.0
DRIVER_ENV = "ABLATE_DRIVER"  # "host pid starttime" of the driver, exported before Ray starts


def driver_env() -> dict[str, str]:
    """The variables that let trials find this process (the driver)."""
    import socket

    import ray  # noqa: F401  (Ray 2.60 ships psutil in ray/thirdparty_files, on sys.path after import)
    import psutil

    me = psutil.Process()
    return {DRIVER_ENV: f"{socket.gethostname()} {me.pid} {me.create_time():.2f}"}


def _local_driver_alive(value: str) -> bool | None:
    """True/False for a driver on this host, None when it runs elsewhere (or is unknown)."""
    import socket

    import ray  # noqa: F401  (Ray 2.60 ships psutil in ray/thirdparty_files, on sys.path after import)
    import psutil

    try:
        host, pid, start = value.split()
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        p = psutil.Process(int(pid))
        return abs(p.create_time() - float(start)) < 1.0 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, ValueError):
        return None


def _job_alive() -> bool:
    """Ray's view: is the job (driver) of this worker still alive?"""
    import ray

    job = ray.get_runtime_context().get_job_id()
    for info in ray._private.state.state.job_table():
        if info.get("JobID") == job:
            return not info.get("IsDead", False)
    return True  # not found: no evidence it is gone


def _driver_alive() -> bool:
    local = _local_driver_alive(os.environ.get(DRIVER_ENV, ""))
    if local is not None:
        return local
    try:
        return _job_alive()
    except Exception:  # GCS briefly unreachable: no evidence; Ray ends workers of a lost cluster itself
        return True


def watch_driver(poll_s: float = POLL_S) -> None:
    """Start (once per process) the thread that exits this worker when its driver is gone."""
    global _started
    if _started:
        return
    _started = True

    def loop() -> None:
        while _driver_alive():
            time.sleep(poll_s)
        os._exit(1)  # no clean-up to wait for: nobody is left to report to

    threading.Thread(target=loop, name="ablate-driver-watchdog", daemon=True).start()


_started = False
