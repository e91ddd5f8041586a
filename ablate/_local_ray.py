"""A local Ray that only this user on this host can use, and the driver's temporary folders.

Ray 2.60 on Linux advertises the machine's external address and binds its gRPC servers (GCS,
raylet, object manager, workers) to every interface unless the node's IP is 127.0.0.1, and it
turns a requested 127.0.0.1 back into the external address unless clusters are off (its default
on macOS/Windows). Token authentication is on by default but keeps the token in
``~/.ray/auth_token`` with the umask's mode. So ablate starts its local Ray on loopback with a
fresh token per driver, in a 0600 file of a 0700 folder named after the driver: a later run
removes the folders of drivers that died (``kill -9`` leaves them behind). Owned by the runner.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TMP_PREFIX = "ablate-ray-"
LOOPBACK = "127.0.0.1"
_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")
_token_path: Path | None = None
_user_auth_env: dict[str, str | None] | None = None  # the user's values, restored to join a cluster


def _driver_tag(pid: int) -> str | None:
    """``pid-starttime`` of a live process (a reused pid has another start time), else None."""
    import ray  # noqa: F401  (Ray 2.60 ships psutil in ray/thirdparty_files, on sys.path after import)
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return f"{pid}-{int(p.create_time() * 100)}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def driver_tempdir() -> str:
    """A new 0700 temporary folder named after this driver; stale ones of dead drivers go first."""
    sweep_stale_tempdirs()
    return tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{_driver_tag(os.getpid())}-")


def sweep_stale_tempdirs(root: str | Path | None = None) -> list[Path]:
    """Remove this user's ``ablate-ray-PID-START-*`` folders whose driver is gone; returns them."""
    removed = []
    for d in Path(root or tempfile.gettempdir()).glob(f"{TMP_PREFIX}*-*-*"):
        pid, start = d.name[len(TMP_PREFIX):].split("-")[:2]
        if not (pid.isdigit() and start.isdigit()):
            continue
        try:
            if d.lstat().st_uid != os.getuid() or not d.is_dir():
                continue
        except OSError:
            continue
        if _driver_tag(int(pid)) != f"{pid}-{start}":
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _new_token_file() -> Path:
    d = driver_tempdir()
    atexit.register(shutil.rmtree, d, True)
    path = Path(d) / "auth_token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))  # 256 bits, as Ray's own generator
    return path


def _reload_ray_auth_config() -> None:
    """Ray reads RAY_AUTH_* into its config once, at import: make it see the environment now."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def use_local_token() -> None:
    """Token auth with this driver's own token for a local Ray (and the workers it starts)."""
    global _token_path
    _remember_user_auth()
    if _token_path is None or not _token_path.is_file():
        _token_path = _new_token_file()
    use_token(_token_path)


def use_token(path: str | Path) -> None:
    """Token auth with the token in ``path`` (this driver's own, or the local head's: ``ablate ray up``)."""
    _remember_user_auth()
    os.environ["RAY_AUTH_MODE"] = "token"  # explicit: Ray neither warns nor lets it be switched off
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    _reload_ray_auth_config()


def _remember_user_auth() -> None:
    global _user_auth_env
    if _user_auth_env is None:
        _user_auth_env = {k: os.environ.get(k) for k in _AUTH_ENV}


def use_cluster_auth() -> None:
    """Undo ``use_local_token``: a cluster is joined with the user's own Ray auth settings."""
    if _user_auth_env is None:
        return
    for k, v in _user_auth_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _reload_ray_auth_config()


@contextlib.contextmanager
def _swapped(owner: object, name: str, value: object) -> Iterator[None]:
    """``owner.name`` is ``value`` inside the block, what it was before after it (Ray's settings and
    functions that ablate changes only while it starts a local Ray)."""
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


@contextlib.contextmanager
def loopback_node() -> Iterator[str]:
    """While starting a local Ray, keep 127.0.0.1 as the node's IP (Ray's behaviour where
    clusters are off), so every Ray server binds to loopback. Restored afterwards: a driver that
    joins a cluster must advertise a reachable address."""
    from ray._private import ray_constants

    with _swapped(ray_constants, "ENABLE_RAY_CLUSTER", False):
        yield LOOPBACK


# Ray's options for the two daemons a one-node Ray of ablate has no use for, as `ray start` spells them
LEAN_HEAD_FLAGS = ("--no-monitor", "--include-log-monitor", "false")


@contextlib.contextmanager
def without_idle_daemons() -> Iterator[None]:
    """While starting a local Ray, leave out the autoscaler's monitor (one node, nothing to scale) and
    the log monitor (it streams worker output to drivers, and ablate's drivers run with
    ``log_to_driver=False``; workers still write their log files). Ray offers both as head settings
    (``ray start --no-monitor --include-log-monitor false``: ``LEAN_HEAD_FLAGS``) but ``ray.init`` takes
    neither, so the node parameters it builds get them here. On 2 cores they were a fifth of the
    local Ray's CPU and most of ``ray.shutdown``'s wait (docs/performance.md)."""
    from ray._private.parameter import RayParams

    init = RayParams.__init__

    def lean_init(self: RayParams, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)
        self.no_monitor = True
        self.include_log_monitor = False

    with _swapped(RayParams, "__init__", lean_init):
        yield


@contextlib.contextmanager
def prompt_node_registration(poll_s: float = 0.02, patience_s: float = 10.0) -> Iterator[None]:
    """While starting a local Ray, let ``ray.init`` see the new node as soon as it has registered. Ray 2.60
    asks the GCS for the raylet's record once, 0.1 s after launching the raylet (``services.get_node``), and
    when the record is not there yet its C++ side sleeps a whole second before asking again; the raylet
    registers ~0.45 s after its launch on 2 cores, so every local start waited ~0.5 s for nothing. Here
    the GCS's node table is read every ``poll_s`` until the record is there, then Ray's own call runs and
    answers at once (``init_ray`` 1.80 -> 1.22 s: docs/performance.md). If the table cannot be read, Ray's
    call waits as it always did."""
    from ray._private import services

    ask = services.get_node

    def get_node(gcs_address: str, node_id: str) -> object:
        with contextlib.suppress(Exception):
            _wait_until_registered(gcs_address, node_id, poll_s, patience_s)
        return ask(gcs_address, node_id)

    with _swapped(services, "get_node", get_node):
        yield


def _wait_until_registered(gcs_address: str, node_id: str, poll_s: float, patience_s: float) -> None:
    import time

    from ray._raylet import GcsClient, NodeID

    client, want = GcsClient(address=gcs_address), NodeID.from_hex(node_id)
    deadline = time.monotonic() + patience_s
    while want not in client.get_all_node_info(timeout=2) and time.monotonic() < deadline:
        time.sleep(poll_s)


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``, how Ray's servers show up)."""
    import ipaddress

    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback
