"""The long-lived local Ray head (`ablate ray up` / `status` / `down`): runs join it instead of starting a
Ray of their own, it listens on loopback only with token auth, and a recorded head that is gone or
unusable makes a run start its own Ray with a line saying why. Each test has its own ABLATE_STATE_DIR
(where the head is recorded), so no test joins a head of the user or of another test."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablate import _local_head, model_costs
from ablate.plan import make_plan
from ablate.store import COMPLETED, Store
from conftest import kill_session, make_image_folder, session_pids, tiny_study, write_study
from test_cluster import _is_loopback_hex, _listening_ports

ROOT = Path(__file__).resolve().parent.parent
JOINED = "running on the local Ray head at"


def _cli(args: list[str], env: dict[str, str], timeout: float = 300, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *flags, "-m", "ablate.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _imported(importtime: str, packages: tuple[str, ...]) -> list[str]:
    """The modules of ``packages`` in a ``-X importtime`` log."""
    names = (line.rsplit("|", 1)[-1].strip() for line in importtime.splitlines() if line.startswith("import time:"))
    return sorted({n for n in names if n.split(".")[0] in packages})


def _live(sid: int) -> list[int]:
    """The session's processes that still run (a zombie waits for init to reap it: it runs nothing)."""
    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    return [p for p in session_pids(sid) if running(p)]


def test_head_up_runs_join_it_status_and_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(ABLATE_STATE_DIR=str(state), PYTHONPATH=str(ROOT), ABLATE_ARTIFACTS=str(tmp_path / "art"))
    up = _cli(["ray", "up", "--cpus", "1"], env)
    assert up.returncode == 0 and "local Ray head started at 127.0.0.1:" in up.stderr, up.stderr[-2000:]
    head = json.loads((state / "ray-head" / "head.json").read_text())
    try:
        d = state / "ray-head"
        assert d.stat().st_mode & 0o777 == 0o700 and Path(head["token"]).stat().st_mode & 0o777 == 0o600
        ports = _listening_ports(set(session_pids(head["pid"])))
        assert ports and all(_is_loopback_hex(a) for a, _ in ports), ports
        import psutil

        daemons = " ".join(" ".join(psutil.Process(p).cmdline()) for p in session_pids(head["pid"]) if psutil.pid_exists(p))
        assert "gcs_server" in daemons and "raylet" in daemons, daemons
        assert "monitor.py" not in daemons, daemons  # neither the autoscaler's monitor nor the log monitor
        # Ray's `ray start`, run through ablate._ray_start (the node's registration polled, not a 1 s wait)
        assert "-m ablate._ray_start start --head" in " ".join(psutil.Process(head["pid"]).cmdline())
        again = _cli(["ray", "up"], env)
        assert again.returncode == 0 and "already running" in again.stderr and str(head["pid"]) in again.stderr

        data = make_image_folder(tmp_path / "imgs", n_train=16, n_val=8)
        study = tiny_study("headrun", data, axes={"grid": {}}, model={"name": "mobilenetv2_lk",
                           "kwargs": {"width_mult": 0.1, "kernel_size": 3}})
        f = write_study(tmp_path / "s.yaml", study)
        db = f"sqlite:///{tmp_path / 'r.db'}"
        # the study's model was planned before (its checks and counts are in the state folder's cache), so
        # the driver imports neither torch, timm nor torchvision: only the trial's worker does
        monkeypatch.setenv("ABLATE_STATE_DIR", str(state))
        monkeypatch.setattr(model_costs, "_SHARED", {})
        make_plan(f)
        run = _cli(["run", str(f), "--db", db], env, flags=("-X", "importtime"))
        assert run.returncode == 0, run.stderr[-3000:]
        assert _imported(run.stderr, ("torch", "timm", "torchvision")) == []
        assert _imported(run.stderr, ("ray",))  # (the log is the driver's)
        assert f"{JOINED} {head['address']}" in run.stderr, run.stderr[-2000:]
        assert "tip:" not in run.stderr  # `ablate ray up` is what it would suggest
        assert [t.status for t in Store(db).load("headrun").trials] == [COMPLETED]
        assert _local_head.process_alive(_local_head.Head(**head))  # the run left the head up for the next

        status = _cli(["ray", "status"], env, timeout=120)
        assert status.returncode == 0 and f"local Ray head at {head['address']}" in status.stdout, status.stderr
        assert "CPU 1/1 free" in status.stdout, status.stdout
    finally:
        down = _cli(["ray", "down"], env, timeout=120)
        left = _live(head["pid"])
        if left:
            kill_session(head["pid"])
    assert down.returncode == 0 and "stopped the local Ray head" in down.stderr, down.stderr
    assert not left, f"head processes left running after `ablate ray down`: {left}"
    assert not (state / "ray-head" / "head.json").exists() and not Path(head["temp_dir"]).exists()
    gone = _cli(["ray", "status"], env, timeout=120)
    assert gone.returncode == 1 and "no local Ray head" in gone.stderr


def _record(state: Path, **over: object) -> dict:
    """A head record (as `ablate ray up` writes it) with some fields replaced."""
    import psutil

    me = psutil.Process()
    head = dict(address="127.0.0.1:1", pid=me.pid, create_time=me.create_time(), token=str(state / "tok"),
                temp_dir=str(state / "ray-tmp"), log=str(state / "head.log"), cpus=1.0, gpus=None,
                python=sys.executable, prefix=sys.prefix)
    head.update(over)
    d = state / "ray-head"
    d.mkdir(parents=True, exist_ok=True)
    (d / "head.json").write_text(json.dumps(head))
    return head


def test_stale_and_unusable_heads_are_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABLATE_STATE_DIR", str(tmp_path))
    assert _local_head.find() == (None, None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _record(tmp_path, pid=dead.pid, create_time=time.time() - 5)  # its process is gone
    (tmp_path / "ray-tmp").mkdir()
    head, why = _local_head.find()
    assert head is None and "is gone" in why and f"pid {dead.pid}" in why
    assert not (tmp_path / "ray-head" / "head.json").exists() and not (tmp_path / "ray-tmp").exists()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _record(tmp_path, address=f"127.0.0.1:{port}")  # alive (this process) but nothing listens
    head, why = _local_head.find()
    assert head is None and "does not answer" in why
    assert (tmp_path / "ray-head" / "head.json").exists()  # not forgotten: it may be starting

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        _record(tmp_path, address=f"127.0.0.1:{s.getsockname()[1]}")
        head, why = _local_head.find()
        assert head is not None and why is None


def test_run_falls_back_to_its_own_ray_with_a_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A recorded head that runs in another environment (venv) is not joined; one that is gone makes `ablate run`'s Ray
    session (the path of the CLI: the check in the main thread, Ray started in a thread) start its own
    local Ray on loopback, saying why, and forget the record."""
    import ray

    from ablate import runner

    monkeypatch.setenv("ABLATE_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.socket() as s, caplog.at_level(logging.WARNING, logger="ablate.runner"):
        s.bind(("127.0.0.1", 0))
        s.listen()
        _record(tmp_path, address=f"127.0.0.1:{s.getsockname()[1]}", prefix="/other/venv")
        assert runner._join_local_head({}) is False  # before any connection attempt
    assert "runs in the environment /other/venv, not in this one" in caplog.text and "starting a Ray for this run" in caplog.text
    caplog.clear()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _record(tmp_path, pid=dead.pid, create_time=time.time() - 5)
    if ray.is_initialized():
        ray.shutdown()  # the session's shared Ray: the fixtures start it again when a test needs it
    with caplog.at_level(logging.WARNING, logger="ablate.runner"), runner.ray_session():
        assert ray._private.worker._global_node.node_ip_address == "127.0.0.1"
    assert f"head.json is gone (pid {dead.pid} is not running); starting a Ray for this run" in caplog.text
    assert JOINED not in caplog.text and not (tmp_path / "ray-head" / "head.json").exists()
