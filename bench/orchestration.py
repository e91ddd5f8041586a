"""What orchestration costs: N short trials run three ways, each in a fresh process, in one run.

1. ``ablate run`` (the CLI, a fresh SQLite database and artifact store: everything a user pays for);
   way ``head``: the same against a long-lived local Ray (``ablate ray up`` once before, timed apart,
   ``ablate ray down`` after), as on a workstation where the head stays up between runs; the study's model is
   planned once before (``ablate plan``, untimed), so ``ablate run`` finds its checks and counts in the cache
   (``ablate.model_costs``); way ``cold``: ``ablate run`` with that cache off (``ABLATE_MODEL_COSTS=0``), what
   the first run of a new model config pays;
2. ablate's trainer in a plain Python loop (the same trial configs, no Ray, no database, no files);
3. a bare Ray Tune ``Tuner`` calling the same trainer with Tune's defaults (Ray started as ablate
   starts it: loopback, token auth).

Wall time includes the interpreter's start and imports. With N = 4 and N = 16, each way's time is
``fixed + N * per_trial`` (solved from the two runs); the report is each way's per-trial and fixed
cost beyond the plain loop. Trials are sized so Ray runs one at a time (``resources.cpus`` = the
machine's cores, and the loop uses as many threads), which makes the overhead visible, not hidden
by parallelism. Every way exits as ``ablate run`` does (``gc.freeze()`` first: no final collection of
torch's objects), so the comparison is of orchestration only. Each run is also cut at its trials by the
arrival of its progress lines (``ablate run``'s ``[ablate] start`` / ``done``, the loop's own): the time to the
first trial, the first trial, each further trial and the rest, so a fixed cost that grew with N shows at each N
without a fit. And each run's CPU seconds are counted from /proc (the command, its descendants and, on a head,
the head's processes while it runs): on two shared cores the fixed cost is CPU, and CPU moves far less with
the machine's load than wall time. Run: ``.venv/bin/python bench/orchestration.py`` (results in
docs/performance.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from _machine import cpu_probe  # bench/ is the script's folder, first on sys.path

ROOT = Path(__file__).resolve().parent.parent


def study_file(d: Path, n: int, epochs: int, cpus: int, data: Path) -> Path:
    """N trials (seeds) of a tiny MobileNetV2 with a 5x5 kernel, ``epochs`` epochs each."""
    study = {
        "name": f"bench{n}", "model": {"name": "mobilenetv2_lk", "kwargs": {"width_mult": 0.1, "kernel_size": 5}},
        "axes": {"grid": {}}, "seeds": n,
        "recipe": {"epochs": epochs, "batch_size": 8, "lr": 0.05, "warmup_epochs": 0},
        "dataset": {"name": "folder", "root": str(data), "image_size": 16},
        "resources": {"cpus": cpus, "gpus": 0},
        "table": {"columns": [{"header": "Seed", "source": "seed"}, {"header": "Top-1", "source": "metric:top1"}]},
    }
    path = d / f"bench{n}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


# -- the two baselines, each run as `python bench/orchestration.py --way loop|tune STUDY` ---------------
def _configs(path: str) -> list[dict[str, Any]]:
    from ablate.expand import expand
    from ablate.study import load_study

    return [t.config for t in expand(load_study(path), path)]


def run_loop(path: str) -> None:
    import torch

    from ablate.trainer import train

    torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    for cfg in _configs(path):
        print(f"[loop] start {cfg['seed']}", file=sys.stderr, flush=True)  # as `ablate run`'s progress lines
        train(cfg)
        print(f"[loop] done  {cfg['seed']}", file=sys.stderr, flush=True)
    _exit_like_ablate()


def _exit_like_ablate() -> None:
    """``ablate run`` freezes its objects before exiting (``gc.freeze``: the interpreter's last
    collection skips them); the baselines do the same, so the comparison is of orchestration only."""
    import gc

    gc.freeze()


def _tune_trainable(config: dict[str, Any]) -> None:
    import torch
    from ray import tune

    from ablate.trainer import train

    torch.set_num_threads(int(config["threads"]))
    train(config["trial"], report=lambda m: tune.report(m))


def run_tune(path: str) -> None:
    from ray import tune

    from ablate.runner import init_ray

    init_ray()  # loopback + token, as ablate's own runs
    threads = int(os.environ["BENCH_THREADS"])
    tuner = tune.Tuner(tune.with_resources(_tune_trainable, {"cpu": threads}),
                       param_space={"trial": tune.grid_search(_configs(path)), "threads": threads},
                       run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="bench-tune-"), verbose=0))
    tuner.fit()
    _exit_like_ablate()


# -- the driver ---------------------------------------------------------------------------------------
TICK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, int, float]]:
    """pid -> (parent pid, start time in ticks, CPU seconds so far) of every process, from /proc."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rindex(b")") + 2:].split()  # after the command name, which may hold spaces
            table[int(entry.name)] = (int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / TICK)
    return table


class CpuMeter:
    """CPU seconds of a run's processes: the command and its descendants (with its own Ray: the daemons and
    the trial workers) and, on a head, the head's processes (its daemons' CPU while the run lasts, and the
    run's worker). Sampled from /proc every ``every`` s, so a process that lives less than that is missed;
    Linux only. CPU is what two cores share, so it varies far less with the machine's load than wall time."""

    def __init__(self, command: int, others: list[int], every: float = 0.2) -> None:
        import threading

        self.roots, self.every = [command, *others], every
        self.first: dict[tuple[int, int], float] = {}  # (pid, start) -> CPU at first sight (0 if new)
        self.last: dict[tuple[int, int], float] = {}
        # what ran before the run (but the command, just started) counts from its first sight
        self.known = {(pid, start) for pid, (_, start, _) in _proc_table().items() if pid != command}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        todo = [r for r in self.roots if r in table]
        while todo:
            pid = todo.pop()
            _, start, cpu = table[pid]
            key = (pid, start)
            self.first.setdefault(key, cpu if key in self.known else 0.0)
            self.last[key] = cpu
            todo += children.get(pid, [])

    def _loop(self) -> None:
        while not self.stop.wait(self.every):
            self._sample()

    def __enter__(self) -> CpuMeter:
        self._sample()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self.last[k] - self.first[k] for k in self.last)


def head_pid(env: dict[str, str]) -> int | None:
    """The ``ray start`` process of the local head recorded in ``env``'s state folder, if any."""
    try:
        return int(json.loads((Path(env["ABLATE_STATE_DIR"]) / "ray-head" / "head.json").read_text())["pid"])
    except (KeyError, OSError, ValueError):
        return None


def timed(cmd: list[str], env: dict[str, str], cwd: Path = ROOT, expect: str = "",
          marks: list[tuple[float, str]] | None = None, cpu: list[float] | None = None) -> float:
    """Wall time of ``cmd``; it must succeed and print ``expect`` on stderr. ``marks``: gets each
    ``start`` / ``done`` progress line's time (s after launch) and kind, as it arrives. ``cpu``: gets the
    CPU seconds of the run's processes (``CpuMeter``)."""
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as p, \
            CpuMeter(p.pid, list(filter(None, [head_pid(env)]))) as meter:
        lines = []
        for line in p.stderr:
            lines.append(line)
            m = PROGRESS.match(line)
            if m and marks is not None:
                marks.append((time.perf_counter() - t0, m.group(1)))
        p.wait()
    elapsed = time.perf_counter() - t0
    if cpu is not None:
        cpu.append(meter.seconds)
    err = "".join(lines)
    if p.returncode != 0 or expect not in err:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}{', no ' + repr(expect) if expect else ''}):\n"
                         f"{err[-3000:]}")
    return elapsed


# a trial's start and end in `ablate run`'s progress lines (a non-terminal) and the loop's
PROGRESS = re.compile(r"\[(?:ablate|loop)\] (start|done)\b")


def phases(wall: float, marks: list[tuple[float, str]]) -> dict[str, float]:
    """One run cut at its trials: ``first`` (launch to the first trial's start: imports, plan, Ray, Tune),
    ``trial1`` (the first trial: in a Ray worker, its start and imports too), ``later`` (the mean time of
    each further trial, done to done: what one more trial adds), ``rest`` (the run without its further trials:
    ``wall - (N-1) * later``; a fixed cost that grew with N would show here) and ``tail`` (last trial to exit)."""
    starts = [t for t, k in marks if k == "start"]
    dones = [t for t, k in marks if k == "done"]
    if not starts or not dones:
        return {}
    later = (dones[-1] - dones[0]) / (len(dones) - 1) if len(dones) > 1 else 0.0
    return {"first": starts[0], "trial1": dones[0] - starts[0], "later": later,
            "rest": wall - (len(dones) - 1) * later, "tail": wall - dones[-1]}


def fit(times: dict[int, float]) -> tuple[float, float]:
    """(fixed, per_trial) of a line through the two points."""
    (n0, t0), (n1, t1) = sorted(times.items())
    per = (t1 - t0) / (n1 - n0)
    return t0 - n0 * per, per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--ways", default="loop,ablate,head,tune")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each way at each N, interleaved; the median counts")
    ap.add_argument("--before", metavar="CHECKOUT",
                    help="also run `ablate run` from this checkout of an earlier ablate (way 'before'; with way "
                         "'head' also on the head: 'before-head')")
    ap.add_argument("--way", help=argparse.SUPPRESS)
    ap.add_argument("study", nargs="?", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.way:
        {"loop": run_loop, "tune": run_tune}[args.way](args.study)
        return
    cpus = os.cpu_count() or 1
    # OpenMP threads that spin while waiting cost a shared machine dearly; the same for all ways
    env = dict(os.environ, BENCH_THREADS=str(cpus), OMP_WAIT_POLICY="PASSIVE",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    asked = list(dict.fromkeys(args.ways.split(",")))
    ways = [w for w in asked if w not in ("before", "before-head")]
    if args.before:  # the earlier checkout's `ablate run`, with its own Ray and, if `head` runs, on the head;
        # naming either in --ways runs only the one(s) named
        named = [w for w in ("before", "before-head") if w in asked]
        ways += named or ["before"] + (["before-head"] if "head" in ways else [])
    times: dict[str, dict[int, float]] = {w: {} for w in ways}  # the median of each way's runs at each N
    runs: dict[str, dict[int, list[float]]] = {}
    cut: dict[str, dict[int, list[dict[str, float]]]] = {}  # each run's phases (``phases``), in round order
    cpus_used: dict[str, dict[int, list[float]]] = {}  # each run's CPU seconds (``CpuMeter``), in round order
    with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp, contextlib.ExitStack() as stack:
        d = Path(tmp)
        sys.path.insert(0, str(ROOT / "tests"))  # the tests' tiny learnable image folder
        from _synth import make_image_folder

        data = make_image_folder(d / "data")
        env["ABLATE_STATE_DIR"] = str(d / "no-head")  # every way but `head` starts a Ray of its own
        head_env = dict(env, ABLATE_STATE_DIR=str(d / "head"))
        if "head" in ways:
            cli = [sys.executable, "-m", "ablate.cli", "ray"]
            up = timed(cli + ["up"], head_env)
            stack.callback(timed, cli + ["down"], head_env)
            print(f"`ablate ray up` (once, not in any way's time) {up:.1f} s", flush=True)
        # the study's model planned once (`ablate plan`, not in any way's time): its checks and counts are then in
        # the state folder's cache (ablate.model_costs), as for any run after a plan or a first run; way `cold`
        # turns the cache off, as the first run of a model config pays
        if any(w in ways for w in ("ablate", "head")):
            first = study_file(d, args.n[0], args.epochs, cpus, data)
            for state_env in (env, head_env):
                planned = timed([sys.executable, "-m", "ablate.cli", "plan", str(first)], state_env)
                if args.before:  # the earlier code's cache too (each code keeps its own file)
                    timed([sys.executable, "-m", "ablate.cli", "plan", str(first)],
                          dict(state_env, PYTHONPATH=str(Path(args.before).resolve())), Path(args.before).resolve())
            print(f"`ablate plan` (once per state folder, not in any way's time) {planned:.1f} s", flush=True)
        for rep, n in ((r, n) for r in range(args.repeat) for n in args.n):  # interleaved: the same load for all
            study = study_file(d, n, args.epochs, cpus, data)
            for way in ways:
                run_env, cwd = env, ROOT
                if way == "cold":
                    run_env = dict(env, ABLATE_MODEL_COSTS="0")
                if way in ("ablate", "before", "head", "cold", "before-head"):
                    cmd = [sys.executable, "-m", "ablate.cli", "run", str(study), "--db",
                           f"sqlite:///{d}/{n}{way}{rep}.db", "--artifacts", str(d / f"art{n}{way}{rep}")]
                    if way in ("head", "before-head"):
                        run_env = head_env
                    if way.startswith("before"):
                        cwd = Path(args.before).resolve()  # `python -m` imports from the working directory first
                        run_env = dict(run_env, PYTHONPATH=str(cwd))
                else:
                    cmd = [sys.executable, __file__, "--way", way, str(study)]
                marks: list[tuple[float, str]] = []
                used = cpus_used.setdefault(way, {}).setdefault(n, [])
                t = timed(cmd, run_env, cwd, "running on the local Ray head" if way.endswith("head") else "", marks,
                          used)
                runs.setdefault(way, {}).setdefault(n, []).append(t)
                cut.setdefault(way, {}).setdefault(n, []).append(phases(t, marks))
                times[way][n] = statistics.median(runs[way][n])
                print(f"N={n:3d} {way:11s} {t:7.1f} s  CPU {used[-1]:5.1f} s  "
                      + "  ".join(f"{k} {v:.2f}" for k, v in cut[way][n][-1].items())
                      + f"  (load {os.getloadavg()[0]:.1f}, CPU probe {cpu_probe():.3f} s)", flush=True)
    print(f"\n{platform.machine()}, {cpus} cores, {args.epochs} epochs per trial; seconds"
          + (f" (median of {args.repeat})" if args.repeat > 1 else ""))
    fitted = " | per trial | fixed | per trial beyond loop | fixed beyond loop" if len(args.n) == 2 else ""
    print("| way | " + " | ".join(f"N={n}" for n in args.n) + fitted + " |")
    print("|---|" + "---|" * (len(args.n) + (4 if fitted else 0)))
    base = fit(times["loop"]) if "loop" in times and len(args.n) == 2 else None
    result = {}
    for way in ways:
        row = " | ".join(f"{times[way][n]:.1f}" for n in args.n)
        if len(args.n) == 2:
            fixed, per = fit(times[way])
            extra = f"{per - base[1]:+.2f} | {fixed - base[0]:+.1f}" if base else "- | -"
            row += f" | {per:.2f} | {fixed:.1f} | {extra}"
        print(f"| {way} | {row} |")
        result[way] = runs[way]
    if len(args.n) == 1 and "ablate" in times:  # one N: each way against `ablate run`, run by run (same load)
        n = args.n[0]
        for w in (w for w in ways if w != "ablate"):
            pairs = list(zip(runs[w][n], runs["ablate"][n]))
            print(f"{w} / ablate: median of medians {times[w][n] / times['ablate'][n]:.2f}; run by run: ratio "
                  f"{statistics.median(a / b for a, b in pairs):.2f}, difference "
                  f"{statistics.median(a - b for a, b in pairs):+.1f} s (median of {len(pairs)})")
    if len(args.n) == 1 and "loop" in times:  # one N: beyond the loop, run by run (the fixed cost, at N = 1)
        n = args.n[0]
        for w in (w for w in ways if w != "loop"):
            print(f"{w} beyond the loop: {statistics.median(a - b for a, b in zip(runs[w][n], runs['loop'][n])):+.1f} s "
                  f"(median of {len(runs[w][n])} run-by-run differences)")
    report_phases(ways, args.n, runs, cut)
    report_cpu(ways, args.n, cpus_used)
    print(json.dumps({"wall": result, "cpu": cpus_used}))


def report_cpu(ways: list[str], ns: list[int], used: dict[str, dict[int, list[float]]]) -> None:
    """CPU seconds of each way's runs (median), and beyond the loop's run by run: what the two cores had to do."""
    print("\nCPU seconds of each run's processes (median of runs; beyond the loop: median of the rounds' differences)")
    print("| way | " + " | ".join(f"N={n}" for n in ns) + " | " + " | ".join(f"beyond the loop, N={n}" for n in ns)
          + " |\n|---|" + "---|" * (2 * len(ns)))
    for way in ways:
        beyond = [statistics.median(a - b for a, b in zip(used[way][n], used["loop"][n])) if "loop" in used else
                  float("nan") for n in ns]
        print(f"| {way} | " + " | ".join(f"{statistics.median(used[way][n]):.1f}" for n in ns) + " | "
              + " | ".join(f"{b:+.1f}" for b in beyond) + " |")


def report_phases(ways: list[str], ns: list[int], runs: dict[str, dict[int, list[float]]],
                  cut: dict[str, dict[int, list[dict[str, float]]]]) -> None:
    """Each way's run cut at its trials (median of its runs), and against the loop run by run (the same
    round, the same load): ``rest`` beyond the loop is the fixed cost plus the first trial's extra, read at
    each N without a fit; with two N, also the fit of each round on its own (median over rounds)."""
    keys = ("first", "trial1", "later", "rest", "tail")
    print("\nEach run cut at its trials (progress lines' arrival; median of runs): first = to the first trial's "
          "start, trial1 = the first trial, later = each further trial (done to done), rest = wall - (N-1) x later")
    print("| way | N | wall | " + " | ".join(keys) + " |\n|---|---|---|" + "---|" * len(keys))
    for way in ways:
        for n in ns:
            got = [c for c in cut[way][n] if c]
            if got:
                print(f"| {way} | {n} | {statistics.median(runs[way][n]):.1f} | "
                      + " | ".join(f"{statistics.median(c[k] for c in got):.2f}" for k in keys) + " |")
    if "loop" not in cut:
        return
    print("\nBeyond the loop, run by run (median of the rounds' differences): wall, rest (fixed + the first trial's "
          "extra, no fit), later (per trial)" + ("; fit of each round: per trial, fixed" if len(ns) == 2 else ""))
    for way in (w for w in ways if w != "loop"):
        cells = []
        for n in ns:
            pairs = [(a, b) for a, b in zip(cut[way][n], cut["loop"][n]) if a and b]
            wall = statistics.median(a - b for a, b in zip(runs[way][n], runs["loop"][n]))
            rest = statistics.median(a["rest"] - b["rest"] for a, b in pairs) if pairs else float("nan")
            later = statistics.median(a["later"] - b["later"] for a, b in pairs) if pairs and n > 1 else float("nan")
            cells.append(f"N={n}: wall {wall:+.1f}, rest {rest:+.1f}, later {later:+.2f}")
        if len(ns) == 2:
            rounds = [(fit({n: runs[way][n][r] for n in ns}), fit({n: runs["loop"][n][r] for n in ns}))
                      for r in range(min(len(runs[way][n]) for n in ns))]
            cells.append(f"round fits: per trial {statistics.median(a[1] - b[1] for a, b in rounds):+.2f}, fixed "
                         f"{statistics.median(a[0] - b[0] for a, b in rounds):+.1f} "
                         f"({', '.join(f'{a[0] - b[0]:+.1f}' for a, b in rounds)})")
        print(f"{way}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
