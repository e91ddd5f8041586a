"""A real multi-node Ray cluster on this machine: a head and two worker nodes started with
`ray start` (loopback only, token auth on, each worker node declaring one GPU so GPU scheduling is
exercised without CUDA), and `ablate run --address` driving a `gpus: 1` study on it.

Shown: trials spread over both nodes; never more trials on a node at once than its GPUs; the driver
writes every result (workers get no database); killing one worker node mid-trial makes that trial
resume on the other node from its last checkpoint in the shared artifact store, with every epoch
stored exactly once. The cluster has its own temp dir, ports and token, and is torn down by killing
its own processes only (never `ray stop`, which would stop other Rays of this user)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ablate.store import COMPLETED, Store
from conftest import make_image_folder, session_pids, signal_each, tiny_study, trial_workers, write_study

HERE = Path(__file__).resolve().parent
EPOCHS = 5
# the GCS declares a node dead after period x threshold without an answer (Ray's default: 3 s x 5)
FAST_NODE_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "2000",
                   "RAY_health_check_failure_threshold": "4"}


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    log: Path
    node_id: str = ""

    def pids(self) -> list[int]:
        return session_pids(self.proc.pid)  # started with start_new_session: its sid is its pid

    def kill(self) -> None:
        """SIGKILL the node's every process (raylet, its workers, agents): a node that is lost."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.proc.wait(timeout=30)


@dataclass
class Cluster:
    address: str
    token: Path
    env: dict[str, str]
    head: Node
    workers: list[Node] = field(default_factory=list)

    def driver_env(self, **extra: str) -> dict[str, str]:
        return {**self.env, **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_node(name: str, args: list[str], env: dict[str, str], logs: Path) -> Node:
    log = logs / f"{name}.log"
    cmd = [sys.executable, str(HERE / "_ray_node.py"), "start", "--block", "--node-ip-address", "127.0.0.1",
           "--disable-usage-stats", "--object-store-memory", str(80 * 1024**2),
           "--dashboard-agent-listen-port", str(_free_port()), *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Node(name, proc, log)


def _raylet_node_id(node: Node, timeout: float = 300) -> str:
    """The node id Ray gave this node (its raylet's --node_id), once the node has joined (the generous
    timeout is for a loaded machine: `ray start` takes seconds on an idle one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Ray runtime started" not in node.log.read_text(errors="replace"):
            if node.proc.poll() is not None:
                break
            time.sleep(0.2)
            continue
        for pid in node.pids():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"/raylet"):
                for a in argv:
                    if a.startswith(b"--node_id="):
                        return a.split(b"=", 1)[1].decode()
        if node.proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"{node.name} did not start: {node.log.read_text()[-2000:]}")


def _listening_ports(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets these processes listen on (from /proc/net/tcp{,6})."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    out = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                addr, port = cols[1].split(":")
                out.append((addr, int(port, 16)))
    return out


def _is_loopback_hex(addr: str) -> bool:
    if len(addr) == 8:  # IPv4, little-endian bytes
        return addr.endswith("7F")
    # IPv6: ::1 or ::ffff:127.x.y.z, in four little-endian 32-bit words
    return addr == "00000000000000000000000001000000" or (addr[:16] == "0" * 16 and addr[16:24] == "FFFF0000"
                                                          and addr[30:32] == "7F")


@pytest.fixture(scope="module")
def cluster() -> Any:
    """Head (no CPUs, no GPUs: it schedules, trains nothing) + two worker nodes of 2 CPUs and 1 GPU."""
    root = Path(tempfile.mkdtemp(prefix="abl-rc-"))  # short: Ray's socket paths must fit 107 bytes
    token = root / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_DEDUP_LOGS="0", **FAST_NODE_DEATH)
    port = _free_port()
    head = _start_node("head", ["--head", "--port", str(port), "--num-cpus", "0", "--num-gpus", "0",
                                "--include-dashboard", "false", "--temp-dir", str(root / "ray")], env, root)
    nodes = [head]
    try:
        head.node_id = _raylet_node_id(head)
        c = Cluster(f"127.0.0.1:{port}", token, env, head)
        for name in ("worker-a", "worker-b"):
            w = _start_node(name, ["--address", c.address, "--num-cpus", "2", "--num-gpus", "1"], env, root)
            nodes.append(w)
            c.workers.append(w)
            w.node_id = _raylet_node_id(w)
        yield c
    finally:
        for n in nodes:
            if n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes
        for n in nodes:
            try:
                n.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            n.kill()  # whatever is left of that node, by its session: nothing of other Rays
        left = [p for n in nodes for p in n.pids()]
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"cluster processes left running: {left}"


def _study(image_folder: Path) -> dict[str, Any]:
    s = tiny_study("cluster", image_folder, seeds=[0, 1],
                   resources={"cpus": 1, "gpus": 1, "retries": 1})
    s["recipe"]["epochs"] = EPOCHS
    return s


def _placements(store: Store) -> dict[str, list[dict[str, Any]]]:
    try:
        return {t.trial_id: list(t.provenance.get("placements") or []) for t in store.load("cluster").trials}
    except KeyError:
        return {}


def test_cluster_listens_on_loopback_only_with_token_auth(cluster: Cluster) -> None:
    pids = {p for n in [cluster.head, *cluster.workers] for p in n.pids()}
    ports = _listening_ports(pids)
    assert ports, "found no listening socket of the cluster's processes"
    assert all(_is_loopback_hex(a) for a, _ in ports), ports
    # a driver with another token is refused (joined as ablate joins a loopback cluster)
    wrong = cluster.token.parent / "wrong-token"
    wrong.write_text(secrets.token_hex(32))
    wrong.chmod(0o600)
    env = {**cluster.env, "RAY_AUTH_TOKEN_PATH": str(wrong)}
    join = ("import ray; from ablate._local_ray import loopback_node\n"
            "with loopback_node() as ip: ray.init(address='%s', _node_ip_address=ip)" % cluster.address)
    out = subprocess.run([sys.executable, "-c", join], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "auth" in (out.stderr + out.stdout).lower(), out.stderr[-1500:]


def test_gpu_trials_spread_capped_and_resumed_after_node_loss(cluster: Cluster, tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "imgs", n_train=24, n_val=8)
    f = write_study(tmp_path / "s.yaml", _study(data))
    shared = tmp_path / "shared-artifacts"  # one path every node reaches (s3:// etc. on a real cluster)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    store = Store(db)
    env = cluster.driver_env(ABLATE_ARTIFACTS=str(shared))
    log = tmp_path / "driver.log"
    with open(log, "wb") as out:
        driver = subprocess.Popen([sys.executable, "-m", "ablate.cli", "run", str(f), "--db", db,
                                   "--address", cluster.address], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    by_id = {w.node_id: w for w in cluster.workers}
    killed: tuple[str, str, int] | None = None  # (trial, node id, epochs stored when killed)
    try:
        deadline = time.monotonic() + 300
        while killed is None and time.monotonic() < deadline:
            assert driver.poll() is None, f"driver ended before a node was killed: {log.read_text()[-3000:]}"
            # the trials' workers are frozen while the database is read: a trial waits for the driver
            # after each epoch it reports, so it is where the database says (give or take an epoch)
            # when its node is killed, not finished meanwhile on a slow machine
            frozen = trial_workers(p for w in cluster.workers for p in w.pids())
            signal_each(frozen, signal.SIGSTOP)
            try:
                if store.counts()["metrics"]:
                    rec = {t.trial_id: t for t in store.load("cluster", history=True).trials}
                    for tid, places in _placements(store).items():
                        done = len(rec[tid].history.get("top1", []))
                        if places and 1 <= done < EPOCHS - 1 and rec[tid].status != COMPLETED:
                            node = places[-1]["node_id"]
                            by_id[node].kill()  # the node is lost mid-trial
                            killed = (tid, node, done)
                            break
            finally:
                signal_each(frozen, signal.SIGCONT)  # the survivors' (the lost node's are gone)
            time.sleep(0.2)
        assert killed is not None, f"no trial was seen mid-run: {log.read_text()[-3000:]}"
        code = driver.wait(timeout=400)
    finally:
        if driver.poll() is None:
            driver.kill()
    text = log.read_text()
    assert code == 0, text[-3000:]

    rec = store.load("cluster", history=True)
    places = _placements(store)
    assert [t.status for t in rec.trials] == [COMPLETED] * 4, text[-3000:]
    for t in rec.trials:  # the driver wrote every epoch of every trial, each exactly once
        assert [e for e, _ in t.history["top1"]] == list(range(EPOCHS)), (t.trial_id, t.history["top1"])
        assert all(p["gpu_ids"] and p["device"] == "cpu" for p in places[t.trial_id])  # a Ray GPU, no CUDA

    tid, lost, stored = killed
    survivor = next(n for n in by_id if n != lost)
    assert [p["node_id"] for p in places[tid]] == [lost, survivor], places[tid]
    resumed = dict(next(t for t in rec.trials if t.trial_id == tid).history["resumed_after_epoch"])
    assert len(resumed) == 1 and next(iter(resumed.values())) >= stored - 1, resumed  # from its checkpoint

    first_nodes = {p[0]["node_id"] for p in places.values()}
    assert first_nodes == set(by_id), f"trials did not spread over both worker nodes: {places}"
    for node in by_id:  # one GPU per node: its attempts never overlap in time
        spans = sorted((p["started_at"], p.get("ended_at")) for ps in places.values() for p in ps
                       if p["node_id"] == node)
        for (s0, e0), (s1, _) in zip(spans, spans[1:]):
            assert e0 is not None and e0 <= s1, f"two trials at once on node {node}: {spans}"
