"""Where a `make test` run's CPU goes: every process it starts, by kind (Ray workers, pytest workers,
ablate CLI subprocesses, Ray's daemons, chromium, ...), from /proc.

The suite is CPU-bound on 2 cores, so its wall time follows its CPU; per-test durations hide the CPU of
Ray's worker processes, which are children of the raylet, not of the test. This marks the run's
processes by an environment variable they all inherit (Ray's daemons and workers, the browser and the
drivers too) and samples their CPU twice a second. Linux only; read the shares, since other work on
the machine is not counted. Usage (from the repository root):

    python3 scripts/suite_cpu.py -- make test          # runs the command, then prints the table
    python3 scripts/suite_cpu.py --report procs.json   # the table of an earlier run's samples
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import threading
import time

MARK = "ABLATE_SUITE_CPU_MARK"


def kind(cmd: str, comm: str) -> str:
    """What a process is, from its command line (taken when first seen) and its name."""
    if "default_worker.py" in cmd or comm.startswith("ray::"):
        return "Ray workers (trials, tasks)"
    for daemon in ("gcs_server", "raylet", "log_monitor", "monitor.py", "dashboard", "runtime_env"):
        if daemon in cmd or daemon in comm:
            return f"Ray daemon: {daemon.removesuffix('.py')}"
    if "chrom" in comm or "chrom" in cmd:
        return "chromium"
    if "exec(eval(sys.stdin" in cmd:
        return "pytest-xdist workers (in-process tests)"
    if "ablate.cli" in cmd or "/bin/ablate " in cmd:  # before pytest: their arguments hold pytest's tmp paths
        return "ablate CLI subprocesses"
    if "-m pytest" in cmd or cmd.split(" ", 1)[0].endswith("pytest"):
        return "pytest (controller, fresh pytests)"
    if comm.startswith("python"):
        return "other Python (tests' helper processes)"
    if comm.startswith("postgres"):
        return "postgres"
    return f"other: {comm}"


def sample(out: dict[tuple[int, str], dict], stop: threading.Event, tick: float = 0.5) -> None:
    """Each marked process's CPU seconds so far, keyed by (pid, start time): pids are reused."""
    hz, unmarked = os.sysconf("SC_CLK_TCK"), set()
    needle = f"{MARK}=1".encode()
    while not stop.is_set():
        for name in os.listdir("/proc"):
            if not name.isdigit() or name in unmarked:
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
                fields = stat[stat.rindex(")") + 2:].split()
                key = (int(name), fields[19])
                if key not in out:
                    with open(f"/proc/{name}/environ", "rb") as f:
                        if needle not in f.read():
                            unmarked.add(name)
                            continue
                    with open(f"/proc/{name}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                    out[key] = {"pid": int(name), "comm": stat[stat.index("(") + 1:stat.rindex(")")], "cmd": cmd[:300]}
                out[key]["cpu"] = (int(fields[11]) + int(fields[12])) / hz
            except (OSError, ValueError, IndexError):
                continue
        if len(unmarked) > 50_000:
            unmarked.clear()
        stop.wait(tick)


def report(procs: list[dict]) -> None:
    cpu, count = collections.Counter(), collections.Counter()
    for p in procs:
        k = kind(p["cmd"] or "", p["comm"])
        cpu[k] += p.get("cpu", 0.0)
        count[k] += 1
    total = sum(cpu.values()) or 1.0
    print("| processes | count | CPU s | share |\n|---|---|---|---|")
    for k, v in cpu.most_common():
        print(f"| {k} | {count[k]} | {v:.1f} | {100 * v / total:.0f} % |")
    print(f"| total | {sum(count.values())} | {total:.1f} | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", help="print the table of a samples file and exit")
    ap.add_argument("--out", default="suite-cpu.json", help="where the samples are written (default: %(default)s)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    a = ap.parse_args()
    if a.report:
        with open(a.report) as f:
            report(json.load(f))
        return
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        ap.error("give a command after --, e.g. -- make test")
    procs: dict[tuple[int, str], dict] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(procs, stop), daemon=True)
    sampler.start()
    start = time.monotonic()
    code = subprocess.call(command, env=dict(os.environ, **{MARK: "1"}))
    stop.set()
    sampler.join()
    with open(a.out, "w") as f:
        json.dump(list(procs.values()), f)
    print(f"\n{' '.join(command)}: exit {code} in {time.monotonic() - start:.0f} s; samples in {a.out}")
    report(list(procs.values()))
    sys.exit(code)


if __name__ == "__main__":
    main()
