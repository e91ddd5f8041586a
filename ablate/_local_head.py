"""A long-lived local Ray head for a workstation (``ablate ray up`` / ``status`` / ``down``).

Without it every ``ablate run`` starts a Ray of its own (GCS, raylet, agents: seconds) and stops it
at the end. With it, runs join the running head, as a driver joins a cluster, and only their trial
workers start. The head is as closed as the per-run Ray (``ablate._local_ray``): every server on
127.0.0.1 (Ray's single-node mode, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, so no other node can
join and nothing listens beyond loopback) and token auth with a 256-bit token in a 0600 file of a
0700 folder. Its record (``head.json``: address, the ``ray start --block`` process, its temp dir)
lives in ``$ABLATE_STATE_DIR/ray-head`` (default ``~/.cache/ablate/ray-head``); a record whose
process is gone is stale, and a run then starts its own Ray. Owned by the runner.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ablate._local_ray import LEAN_HEAD_FLAGS, LOOPBACK

HEAD_FILE = "head.json"
TOKEN_FILE = "auth_token"
LOG_FILE = "head.log"
TMP_PREFIX = "ablate-head-"  # Ray's temp dir (sockets: its path must stay short)


class HeadError(Exception):
    """The head could not be started (its log says why)."""


@dataclass
class Head:
    address: str  # 127.0.0.1:PORT (the GCS)
    pid: int  # the `ray start --block` process; its session holds every process of the head
    create_time: float  # of that pid, so a reused pid is not mistaken for it
    token: str  # path of the token file
    temp_dir: str  # Ray's temp dir (logs, sockets), removed by `down`
    log: str
    cpus: float
    gpus: float | None  # None: as Ray detected
    python: str  # the interpreter of the head and its workers
    prefix: str  # its environment (sys.prefix: the venv), which a joining run must share

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


def head_dir() -> Path:
    """``$ABLATE_STATE_DIR/ray-head``, else ``$XDG_CACHE_HOME/ablate/ray-head`` or ``~/.cache/ablate/ray-head``
    (where the journal lives)."""
    from ablate.state import state_dir

    return state_dir() / "ray-head"


def read() -> Head | None:
    """The recorded head (alive or not), or None."""
    try:
        return Head(**json.loads((head_dir() / HEAD_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def process_alive(head: Head) -> bool:
    """Is the head's ``ray start`` process (the same one: pid and start time) still running?"""
    import ray  # noqa: F401  (Ray 2.60 ships psutil in ray/thirdparty_files, on sys.path after import)
    import psutil

    try:
        p = psutil.Process(head.pid)
        return abs(p.create_time() - head.create_time) < 1.0 and p.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def answers(head: Head, timeout: float = 2.0) -> bool:
    """Does the head's GCS accept a connection on loopback?"""
    try:
        with socket.create_connection((LOOPBACK, head.port), timeout=timeout):
            return True
    except OSError:
        return False


def find(forget: bool = True) -> tuple[Head | None, str | None]:
    """(the running head, None), or (None, why the recorded head is unusable), or (None, None) when
    none is recorded. A record whose process is gone is removed (with the head's temp dir) unless
    ``forget`` is False (a look whose caller will not tell the user)."""
    head = read()
    if head is None:
        return None, None
    where = head_dir() / HEAD_FILE
    if not process_alive(head):
        if forget:
            _forget(head)
        return None, f"the local Ray head recorded in {where} is gone (pid {head.pid} is not running)"
    if not answers(head):
        return None, f"the local Ray head at {head.address} (pid {head.pid}) does not answer"
    return head, None


def _forget(head: Head) -> None:
    shutil.rmtree(head.temp_dir, ignore_errors=True)
    for name in (HEAD_FILE, TOKEN_FILE):
        with contextlib.suppress(OSError):
            (head_dir() / name).unlink()


@contextlib.contextmanager
def _locked() -> Iterator[Path]:
    """One ``up``/``down`` at a time (an flock on the head's folder, 0700)."""
    import fcntl

    d = head_dir()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    d.chmod(0o700)
    with open(d / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield d
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _head_env(token: Path) -> dict[str, str]:
    """The head's environment (its workers inherit it): this one without the user's RAY_* (an address, another
    token), plus loopback-only single-node mode and ablate's token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_DEDUP_LOGS="0", RAY_USAGE_STATS_ENABLED="0")
    return env


def up(cpus: float | None = None, gpus: float | None = None, timeout: float = 180.0) -> tuple[Head, bool]:
    """Start the head (``ray start --head --block`` in a session of its own) unless one is running;
    returns (head, whether this call started it)."""
    from ablate.runner import LOCAL_OBJECT_STORE_BYTES, LOCAL_SYSTEM_CONFIG

    with _locked() as d:
        head, _ = find()
        if head is not None:
            return head, False
        token = d / TOKEN_FILE
        with contextlib.suppress(OSError):
            token.unlink()
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))  # 256 bits, as Ray's own generator
        temp_dir = tempfile.mkdtemp(prefix=TMP_PREFIX)
        cpus = float(cpus if cpus is not None else os.cpu_count() or 1)
        port = _free_port()
        cmd = [sys.executable, "-m", "ablate._ray_start", "start", "--head", "--block",
               "--node-ip-address", LOOPBACK, "--port", str(port), "--num-cpus", f"{cpus:g}",
               "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp_dir,
               "--object-store-memory", str(LOCAL_OBJECT_STORE_BYTES),
               "--dashboard-agent-listen-port", str(_free_port()),
               "--system-config", json.dumps(LOCAL_SYSTEM_CONFIG), *LEAN_HEAD_FLAGS]
        if gpus is not None:
            cmd += ["--num-gpus", f"{gpus:g}"]
        log = d / LOG_FILE
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, env=_head_env(token), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=temp_dir)
        import psutil

        head = Head(address=f"{LOOPBACK}:{port}", pid=proc.pid, create_time=psutil.Process(proc.pid).create_time(),
                    token=str(token), temp_dir=temp_dir, log=str(log), cpus=cpus, gpus=gpus,
                    python=sys.executable, prefix=sys.prefix)
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in log.read_text(errors="replace") or not answers(head, 0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(head, proc)
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise HeadError(f"the local Ray head did not start (log {log}): " + " | ".join(tail))
            time.sleep(0.2)
        tmp = d / f".{HEAD_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(head)))
        tmp.replace(d / HEAD_FILE)
        return head, True


def down(timeout: float = 30.0) -> Head | None:
    """Stop the recorded head (its ``ray start --block`` stops the node's processes on SIGTERM; whatever
    of its session is left after ``timeout`` is killed) and forget it; None when none was recorded."""
    with _locked():
        head = read()
        if head is None:
            return None
        if process_alive(head):
            _stop(head, None, timeout)
        _forget(head)
        return head


def _stop(head: Head, proc: subprocess.Popen | None, timeout: float = 30.0) -> None:
    import psutil

    with contextlib.suppress(OSError):
        os.kill(head.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                break
        elif not process_alive(head):
            break
        time.sleep(0.2)
    for p in psutil.process_iter():  # what is left of the head: its session (sid = the head's pid)
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(p.pid) == head.pid:
                p.kill()
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    shutil.rmtree(head.temp_dir, ignore_errors=True)


def join(head: Head, **init: object) -> None:
    """Connect this process to ``head`` as a Ray driver (its token, the loopback node address);
    ``init``: the rest of ``ray.init``'s arguments."""
    import ray

    from ablate import _local_ray

    _local_ray.use_token(head.token)
    with _local_ray.loopback_node() as ip:
        ray.init(address=head.address, _node_ip_address=ip, **init)


def resources(head: Head) -> tuple[dict[str, float], dict[str, float]]:
    """(total, free now) of the head's resources, read by a short-lived driver."""
    import logging

    import ray

    join(head, logging_level=logging.WARNING, log_to_driver=False)
    try:
        return ray.cluster_resources(), ray.available_resources()
    finally:
        ray.shutdown()
