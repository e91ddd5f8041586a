"""What a local Ray costs to start and stop, as ``ablate run`` starts one (``runner.init_ray``: loopback, token
auth, no dashboard), with and without the two daemons ablate leaves out (the autoscaler's monitor and the log
monitor: ``_local_ray.without_idle_daemons``): each variant in a fresh process, alternating, ``--repeat`` times.
Each process times ``init_ray()``, one trivial task (its worker's start) and ``ray.shutdown()``, and counts the
CPU seconds of Ray's processes (read from /proc before the shutdown). Run:
``.venv/bin/python bench/local_ray_start.py`` (results in docs/performance.md)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ONE = """
import contextlib, json, sys, time
t0 = time.perf_counter()
import ray
from ablate import _local_ray
from ablate.runner import init_ray
if sys.argv[1] == "with":  # Ray's defaults: the two daemons started
    _local_ray.without_idle_daemons = contextlib.nullcontext
t1 = time.perf_counter()
init_ray()
t2 = time.perf_counter()
ray.get(ray.remote(lambda: 1).remote())
t3 = time.perf_counter()
import psutil
kids = psutil.Process().children(recursive=True)
cpu = sum(sum(p.cpu_times()[:2]) for p in kids)
ray.shutdown()
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "init": t2 - t1, "task": t3 - t2, "shutdown": t4 - t3, "processes": len(kids),
                  "Ray's CPU s": cpu}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT), ABLATE_STATE_DIR=os.environ.get("ABLATE_STATE_DIR", "/nonexistent"))
    got: dict[str, list[dict[str, float]]] = {"with": [], "without": []}
    for r in range(args.repeat):
        for variant in ("with", "without") if r % 2 == 0 else ("without", "with"):
            out = subprocess.run([sys.executable, "-c", ONE, variant], env=env, cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout
            got[variant].append(json.loads(out.strip().splitlines()[-1]))
            print(variant, got[variant][-1], f"(load {os.getloadavg()[0]:.1f})", flush=True)
    keys = list(got["with"][0])
    print(f"\n| median of {args.repeat} | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for variant, label in (("with", "with the monitor and the log monitor (Ray's default)"),
                           ("without", "without them (ablate's local Ray)")):
        print(f"| {label} | " + " | ".join(f"{statistics.median(g[k] for g in got[variant]):.2f}" for k in keys) + " |")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
