"""Where a trial's start goes: from the driver calling Tune to the trial's first epoch, with timestamps.

Runs ``bench/orchestration.py``'s study (one trial, or ``--n``) through a fresh local head (``ablate ray
up``, started with ``PYTHONPROFILEIMPORTTIME=1`` so every worker logs its imports) and prints one
timeline from Ray's own records and the driver's: Tune's call (``fit``), the trial's placement group
(its creation latency), the worker process (GCS worker table: launched, registered with the raylet),
the trainable's first line (the trial's recorded placement ``started_at``), the trial's start and first
epoch as the driver saw them (Tune callback -> sink), and the worker's imports by top-level package
(``-X importtime`` from the worker's log). Run: ``.venv/bin/python bench/worker_start.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]


class TimedSink:
    """Forwards to the journal, noting when each trial's events reach the driver."""

    def __init__(self, inner: Any):
        self.inner, self.events = inner, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def start(self, study: str, trial_id: str) -> None:
        self.events.append((time.time(), f"driver: trial {trial_id[:6]} started (Tune callback)"))
        self.inner.start(study, trial_id)

    def add_metrics(self, study: str, trial_id: str, epoch: int, values: dict) -> None:
        self.events.append((time.time(), f"driver: trial {trial_id[:6]} epoch {epoch} reported"))
        self.inner.add_metrics(study, trial_id, epoch, values)

    def finish(self, study: str, trial_id: str, error: str | None = None, **kw: Any) -> None:
        self.events.append((time.time(), f"driver: trial {trial_id[:6]} finished"))
        self.inner.finish(study, trial_id, error, **kw)


def imports_by_package(err_file: Path) -> tuple[dict[str, float], float]:
    """Cumulative import seconds of each top-level package a worker imported (``-X importtime`` lines at
    the outermost level), and their total."""
    out: dict[str, float] = defaultdict(float)
    for line in err_file.read_text(errors="replace").splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m and not m.group(3):  # the outermost level: one space after the bar
            out[m.group(4).split(".")[0]] += int(m.group(2)) / 1e6
    return dict(out), sum(out.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1, help="trials (run one at a time)")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    from _synth import make_image_folder
    from orchestration import study_file

    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp:
        d = Path(tmp)
        os.environ.update(ABLATE_STATE_DIR=str(d / "state"), OMP_WAIT_POLICY="PASSIVE")
        os.environ.pop("RAY_ADDRESS", None)
        env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1", PYTHONPATH=str(ROOT))
        up = subprocess.run([sys.executable, "-m", "ablate.cli", "ray", "up"], env=env, capture_output=True, text=True)
        if up.returncode:
            raise SystemExit(up.stderr)
        try:
            run(d, study_file(d, args.n, args.epochs, cpus, make_image_folder(d / "data")))
        finally:
            subprocess.run([sys.executable, "-m", "ablate.cli", "ray", "down"], env=env, capture_output=True)


def run(d: Path, study: Path) -> None:
    import ray
    from ray.core.generated import gcs_pb2

    from ablate import _local_head
    from ablate.journal import JournalingSink
    from ablate.orchestrate import run_study
    from ablate.store import Store

    from ablate.plan import make_plan

    make_plan(study)  # as `ablate plan` before the run: the run finds the model's checks and counts cached
    store = Store(f"sqlite:///{d / 'r.db'}")
    sink = TimedSink(JournalingSink(store))
    t_call = time.time()
    run_study(study, store=store, sink=sink, journal=sink.inner, artifacts=str(d / "art"))
    events = [(t_call, "driver: run_study called"), *sink.events]
    for t in store.load(study.stem).trials:
        for p in t.provenance.get("placements") or []:
            events.append((p["started_at"], f"worker: trial {t.trial_id[:6]} trainable running (torch imported)"))

    head = _local_head.read()
    from ablate import _local_ray

    _local_ray.use_token(head.token)
    with _local_ray.loopback_node() as ip:
        ray.init(address=head.address, _node_ip_address=ip, log_to_driver=False)
    from ray._private.state import state

    accessor = state._connect_and_get_accessor()
    workers = []
    for raw in accessor.get_worker_table():
        w = gcs_pb2.WorkerTableData.FromString(raw)
        if w.worker_type == 0 and w.worker_launch_time_ms:  # WORKER (not a driver)
            workers.append(w)
            events.append((w.worker_launch_time_ms / 1e3, f"raylet: worker pid {w.pid} process launched"))
            events.append((w.worker_launched_time_ms / 1e3,
                           f"raylet: worker pid {w.pid} registered (Python up, Ray imported)"))
    pgs = [pg.get("stats") or {} for pg in state.placement_group_table().values()]
    ray.shutdown()

    t0 = min(t for t, _ in events)
    print(f"timeline (s from the first event; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")
    for t, what in sorted(events):
        print(f"{t - t0:8.2f}  {what}")
    for st in pgs:
        print(f"placement group: created {st.get('end_to_end_creation_latency_ms', 0):.1f} ms after its request "
              f"(scheduling {st.get('scheduling_latency_ms', 0):.1f} ms)")
    logs = Path(head.temp_dir) / "session_latest" / "logs"
    for w in workers:
        errs = list(logs.glob(f"worker-*-{w.pid}.err"))
        if errs:
            pkgs, total = imports_by_package(errs[0])
            top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(pkgs.items(), key=lambda kv: -kv[1])[:8])
            print(f"worker pid {w.pid}: imports {total:.2f} s ({top})")


if __name__ == "__main__":
    main()
