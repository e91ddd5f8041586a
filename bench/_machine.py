"""How fast this machine is right now, printed beside a benchmark's results."""

from __future__ import annotations

import time


def cpu_probe(n: int = 2_000_000) -> float:
    """Seconds of a fixed pure-Python loop in this process. The 2-core VM's CPU speed moves from minute
    to minute (up to ~40 %) while `python -c pass` hardly does, so the probe says how fast the machine
    was while the results beside it were taken."""
    start = time.perf_counter()
    s = 0
    for i in range(n):
        s += i
    return time.perf_counter() - start
