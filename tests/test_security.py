"""Ray closed by default: the local Ray that ablate starts listens on loopback only and runs
nothing for a client without this driver's token."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import ray  # noqa: F401  (puts Ray's bundled psutil on sys.path)
import psutil

from ablate._local_ray import is_loopback

pytestmark = pytest.mark.usefixtures("ray_session")

CLIENT = """
import sys, ray
try:
    ray.init(address=sys.argv[1], log_to_driver=False)
    print("RAN", ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=60), flush=True)
except BaseException as e:
    print("REFUSED", type(e).__name__, str(e)[:300], flush=True)
"""


def _listening(root: psutil.Process) -> list[tuple[str, str, int]]:
    out = []
    for p in [root, *root.children(recursive=True)]:
        try:
            out += [(p.name(), c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            pass
    return out


def test_local_ray_listens_on_loopback_only(ran_study: dict[str, Any]) -> None:
    """After a real study on the session's Ray: every listening socket of its process tree."""
    assert ran_study["summary"].completed == 4
    sockets = _listening(psutil.Process())
    names = {n for n, _, _ in sockets}
    assert "gcs_server" in names and "raylet" in names, sockets  # the check sees Ray's servers
    assert [s for s in sockets if not is_loopback(s[1])] == [], "listening beyond loopback"


def test_token_is_private_and_never_the_default_file() -> None:
    path = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(path.read_text().strip()) == 64 and path != Path.home() / ".ray" / "auth_token"


def _client(tmp_path: Path, env: dict[str, str]) -> str:
    gcs = ray.get_runtime_context().gcs_address
    env = dict(env, HOME=str(tmp_path),  # no ~/.ray/auth_token to fall back on
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # connect to 127.0.0.1 as given, not the external IP
               RAY_gcs_server_port_wait_time_s="3")  # give up after 3 tries instead of 20
    r = subprocess.run([sys.executable, "-c", CLIENT, gcs], capture_output=True, text=True, timeout=240, env=env)
    return r.stdout + r.stderr


def test_client_without_the_token_cannot_run_a_task(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    assert "RAN 42" in _client(tmp_path, dict(base, RAY_AUTH_MODE="token",
                                              RAY_AUTH_TOKEN_PATH=os.environ["RAY_AUTH_TOKEN_PATH"]))  # control
    no_token = _client(tmp_path, base)
    assert "RAN" not in no_token and "REFUSED" in no_token and "Unauthenticated" in no_token, no_token[-2000:]
    wrong = _client(tmp_path, dict(base, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64))
    assert "RAN" not in wrong and "REFUSED" in wrong, wrong[-2000:]
