"""Fuzz: generated mutations of the shipped study files through `ablate plan`, in-process.

Each case is a shipped file (studies/*.yaml) with a few seeded mutations: keys deleted or misspelt,
values of the wrong type, huge numbers and grids, rich markup, terminal control sequences, lone
surrogates, deep nesting, alias bombs, bad table formats, truncated or garbled text. Every outcome
must be exit 0 or 2 with no uncaught exception, each case bounded in time, memory bounded, and
nothing written in the working directory (ABLATE_DB points at a file there that must not appear).
Mutations that make a file certainly wrong (a metric typo, a huge grid, ...) must exit 2.

Reproducible: case i uses random.Random(SEED + i); ABLATE_FUZZ_CASES sets how many (default 1000).
A failure names the case; `pytest tests/test_fuzz_study.py -k fuzz` reruns all of them.
"""

from __future__ import annotations

import copy
import os
import random
import resource
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import typer.main
import typer.testing
import yaml
from typer.testing import CliRunner

from ablate.cli import app

ROOT = Path(__file__).resolve().parents[1]
SEED = 20240601
N_CASES = int(os.environ.get("ABLATE_FUZZ_CASES", "1000"))
# Hang guards, not speed tests (speed is in bench/): a YAML bomb or a runaway expansion takes minutes
# or all memory, a normal case well under a second; 10 s holds on a loaded shared machine.
CASE_LIMIT_S = 10.0



def _small(raw: dict) -> dict:
    """A shipped file with its ``demo`` profile also merged into the base, profiles kept: planning
    ``-p demo`` gives the same study, and a mutation that deletes part of the profile falls back to
    the (now small) base instead of measuring a paper-size model at 224 px for seconds."""
    from ablate.study import deep_merge

    demo = (raw.get("profiles") or {}).get("demo") or {}
    return deep_merge(raw, {k: v for k, v in demo.items() if k != "profiles"})


SHIPPED = {p.stem: _small(yaml.safe_load(p.read_text())) for p in sorted((ROOT / "studies").glob("*.yaml"))}

WEIRD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, 10**30, -(10**30), 1e308, -1e-308, 0.5, "", "x", "[/x]", "[bold red]boom[/]",
    "\x1b[31mred\x1b[0m", "\x1b]0;title\x07", "\x9b2J", "a\x00b", "\u202eevil", "<script>alert(1)</script>",
    "../../etc", "..", ".", "a" * 5000, [], [1], [[1, 2], [3]], {}, {"a": 1}, {"[/x]": "[/y]"}, ["[/x]"],
    "{v:>200000000}", "{x}", "human", "1e9", "nan", "inf",
]
SURROGATE = "\ud800"
STRING_PATHS_HINT = ("name", "description", "opt", "sched", "auto_augment", "header", "source", "format", "root")


# -- helpers on the nested study dict ----------------------------------------------------------------
def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indexes) to a value in the nested document."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _parent(doc: Any, path: tuple) -> tuple[Any, Any]:
    node = doc
    for p in path[:-1]:
        node = node[p]
    return node, path[-1]


def _set(doc: Any, path: tuple, value: Any) -> None:
    parent, key = _parent(doc, path)
    parent[key] = value


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=10_000)


# -- mutations: each returns the new document (dict) or YAML text, and whether it must be rejected ----
Mutation = Callable[[random.Random, dict], tuple[Any, bool]]


def m_delete_key(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    keyed = [p for p in _paths(doc) if isinstance(_parent(doc, p)[0], dict)]
    path = rng.choice(keyed)
    parent, key = _parent(doc, path)
    del parent[key]
    return doc, path in (("name",), ("model",), ("dataset",))


def m_rename_key(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    keyed = [p for p in _paths(doc) if isinstance(_parent(doc, p)[0], dict) and isinstance(p[-1], str)]
    path = rng.choice(keyed)
    parent, key = _parent(doc, path)
    i = rng.randrange(len(key) + 1)
    new = key[:i] + rng.choice("abcxyz_-[") + key[i:]
    parent[new] = parent.pop(key)
    # a typo in a schema key is an error; under a free-form mapping (kwargs, labels, paper rows, axes) it may not be
    free = any(p in ("kwargs", "labels", "paper", "baseline", "match", "grid", "zip", "exclude", "profiles")
               for p in path[:-1])
    return doc, not free and path[0] != "profiles"


def m_swap_type(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    path = rng.choice(_paths(doc))
    _set(doc, path, copy.deepcopy(rng.choice(WEIRD_VALUES)))
    return doc, False


def m_huge_number(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    nums = [p for p in _paths(doc) if isinstance(_parent(doc, p)[0][p[-1]], (int, float))
            and not isinstance(_parent(doc, p)[0][p[-1]], bool)]
    if not nums:
        return m_swap_type(rng, doc)
    _set(doc, rng.choice(nums), rng.choice([10**9, 10**12, 10**18, 10**40, -(10**9), 1e9, 1e300, -1e300, 0, -1]))
    return doc, False


def m_markup_string(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    strs = [p for p in _paths(doc) if isinstance(_parent(doc, p)[0][p[-1]], str)]
    if not strs:  # e.g. a profile of numbers only
        return m_swap_type(rng, doc)
    path = rng.choice(strs)
    bad = rng.choice(["[/x]", "[bold]", "\x1b[2J", "\x1b]0;t\x07", "\x9b", "\u202e", "<b>", "|", "\r\n", "\t",
                      "\x7f", "%s%n", "{v}", "${HOME}", "\\", "'\"", "é中文"])
    parent, key = _parent(doc, path)
    parent[key] = rng.choice([bad + parent[key], parent[key] + bad, bad])
    return doc, path == ("name",) and not parent[key].replace("-", "").replace("_", "").replace(".", "").isalnum()


def m_surrogate(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    text = _dump(doc)
    key = rng.choice(["description", "name", "opt", "header"])
    return text.replace(f"{key}: ", f'{key}: "\\ud800" #', 1), f"{key}: " in text


def m_deep_nesting(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    depth = rng.choice([40, 100, 900, 5000])
    path = rng.choice(_paths(doc))
    text = _dump(doc)
    key = str(path[-1]) if isinstance(path[-1], str) else "description"
    nested = "[" * depth + "1" + "]" * depth
    if rng.random() < 0.5:
        nested = "{a: " * depth + "1" + "}" * depth
    return text.replace(f"{key}: ", f"{key}: {nested} #", 1), f"{key}: " in text


def m_alias_bomb(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    width, levels = rng.choice([(10, 6), (9, 9), (50, 4), (2, 30)])
    lines = ["x0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    target = rng.choice(["name", "description", "seeds", "metric", "profiles"])
    body = {k: v for k, v in doc.items() if k != target}
    return "\n".join(lines) + "\n" + _dump(body) + f"{target}: *a{levels - 1}\n", True


def m_huge_grid(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    n = rng.choice([200, 1000, 5000])
    doc.setdefault("axes", {})
    doc["axes"] = {"grid": {"recipe.lr": [round(0.001 * (i + 1), 6) for i in range(n)],
                            "recipe.weight_decay": [1e-6 * (i + 1) for i in range(rng.choice([60, 100, 1000]))]}}
    return doc, True


def m_huge_seeds(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    doc["seeds"] = rng.choice([10**5, 10**9, 10**18])
    return doc, True


def m_bad_format(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    table = doc.get("table")  # an earlier mutation may have made it (or its columns) another type
    cols = table.get("columns") if isinstance(table, dict) else None
    cols = [c for c in cols if isinstance(c, dict)] if isinstance(cols, list) else []
    if not cols:
        return m_swap_type(rng, doc)
    col = rng.choice(cols)
    col["format"] = rng.choice(["{x}", "{v:>200000000}", "{v.__class__}", "{v[0]}", "{v}\r\nX-A: 1", "{",
                                "{v:{v}}", "{0}", "{v!x}", "{v:.999f}", "no field"])
    return doc, True


def m_bad_name(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    doc["name"] = rng.choice(["..", ".", "../up", "a/b", "-x", "_x", "a" * 101, "", " ", "x\ny", "[/x]"])
    return doc, True


def m_bad_reference(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    """A name ablate or timm must know: metric, optimizer, scheduler, augmentation, model, tag."""
    which = rng.randrange(6)
    if which == 0:
        doc["metric"] = {"name": rng.choice(["top-1", "acc", "top1_ema", "loss"]), "mode": "max"}
    elif which == 1:
        doc.setdefault("recipe", {})["opt"] = rng.choice(["sgdd", "adamww", "Adam W", ""])
    elif which == 2:
        doc.setdefault("recipe", {})["sched"] = rng.choice(["cosin", "linear_warmup", "none!"])
    elif which == 3:
        doc.setdefault("recipe", {})["auto_augment"] = rng.choice(["rand-m9-foo3", "bogus", "randx"])
    elif which == 4:
        doc["model"] = {"name": rng.choice(["resnet18.nope_tag", "mobilenetv2_kl", "resnet9000"])}
    else:
        bad = {rng.choice(["width_mult", "kernel_sise"]): 1e9}
        doc["model"] = dict(doc["model"], kwargs={**doc["model"].get("kwargs", {}), **bad})
        for prof in (doc.get("profiles") or {}).values():  # a profile's own model.kwargs would hide it
            if isinstance(prof, dict) and isinstance(prof.get("model"), dict) and isinstance(prof["model"].get("kwargs"), dict):
                prof["model"] = {**prof["model"], "kwargs": {**prof["model"]["kwargs"], **bad}}
    # the shipped demo profiles override recipe and dataset; put the mutation in the profile too
    for prof in (doc.get("profiles") or {}).values():
        if isinstance(prof, dict) and which in (1, 2, 3) and "recipe" in prof:
            prof["recipe"] = {**prof["recipe"], **{k: doc["recipe"][k] for k in ("opt", "sched", "auto_augment")
                                                   if k in doc["recipe"]}}
    return doc, True


def m_odd_tag(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    text = _dump(doc)
    tag = rng.choice(["!!binary aGVsbG8=", "!!python/object/apply:os.system [echo hi]", "!!set {a, b}",
                      "!!timestamp 2024-01-01", "!custom x", "!!omap [a: 1]"])
    return text.replace("description: ", f"description: {tag} #", 1), True


def m_text_garble(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    text = _dump(doc)
    op = rng.randrange(4)
    if op == 0:
        return text[: rng.randrange(len(text))], False
    if op == 1:
        i = rng.randrange(len(text))
        return text[:i] + rng.choice(["\t", "\x00", "{", "[", ":", "- ", "&a", "*a", "%", "@", "`", "\x1b"]) + text[i:], False
    if op == 2:
        lines = text.splitlines()
        i = rng.randrange(len(lines))
        return "\n".join(lines[:i] + [lines[i]] * rng.randint(2, 5) + lines[i + 1:]), False
    return text.replace("\n", "\n" + " " * rng.randint(1, 3), rng.randint(1, 5)), False


def m_profile(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    """Mutate inside the demo profile (what the fuzz plans)."""
    demo = (doc.get("profiles") or {}).get("demo")
    if not isinstance(demo, dict):
        return m_swap_type(rng, doc)
    sub, _ = rng.choice(MUTATIONS[:5])(rng, demo)
    doc["profiles"]["demo"] = sub
    return doc, False


def m_many_profiles(rng: random.Random, doc: dict) -> tuple[Any, bool]:
    n = rng.choice([65, 500])
    doc["profiles"] = {**(doc.get("profiles") or {}), **{f"p{i}": {"description": "x" * 100} for i in range(n)}}
    return doc, True


MUTATIONS: list[Mutation] = [m_delete_key, m_rename_key, m_swap_type, m_huge_number, m_markup_string,
                             m_surrogate, m_deep_nesting, m_alias_bomb, m_huge_grid, m_huge_seeds, m_bad_format,
                             m_bad_name, m_bad_reference, m_odd_tag, m_text_garble, m_profile, m_many_profiles]
WEIGHTS = [8, 8, 12, 8, 8, 2, 3, 3, 2, 2, 4, 3, 6, 2, 8, 8, 1]


def make_case(i: int) -> tuple[str, str | bytes, bool, str]:
    """(shipped file, content, must be rejected, description) of case ``i``."""
    rng = random.Random(SEED + i)
    name = rng.choice(sorted(SHIPPED))
    doc: Any = copy.deepcopy(SHIPPED[name])
    must_fail, done = False, []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if not isinstance(doc, dict):  # a text mutation already happened: stop here
            break
        mutation = rng.choices(MUTATIONS, WEIGHTS)[0]
        done.append(mutation.__name__)
        doc, fail = mutation(rng, doc)
        must_fail = must_fail or fail
    content = doc if isinstance(doc, str) else _dump(doc)
    return name, content, must_fail, "+".join(done)


# -- the test ------------------------------------------------------------------------------------------
def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_fuzz_plan_on_mutated_study_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd, src = tmp_path / "cwd", tmp_path / "in"
    cwd.mkdir()
    src.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("ABLATE_DB", f"sqlite:///{cwd / 'must-not-exist.db'}")
    # typer rebuilds the click command from the app on every CliRunner.invoke (half of a case's time);
    # build it once: the same command, options and callbacks
    cli = typer.main.get_command(app)
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: cli)
    runner = CliRunner()
    f = src / "warm.yaml"
    f.write_text(_dump(SHIPPED["dilation"]))
    assert runner.invoke(app, ["plan", str(f), "-p", "demo"]).exit_code == 0  # imports, timm registry, caches
    rss0, start = _rss_mb(), time.perf_counter()
    outcomes = {0: 0, 2: 0}
    slowest = (0.0, "")
    for i in range(N_CASES):
        base, content, must_fail, what = make_case(i)
        f = src / f"case{i}.yaml"
        try:
            f.write_text(content, encoding="utf-8", errors="surrogatepass")
        except UnicodeError:
            f.write_bytes(content.encode("utf-8", "surrogatepass"))
        label = f"case {i} ({base}: {what})"
        t0 = time.perf_counter()
        r = runner.invoke(app, ["plan", str(f), "-p", "demo", "--format", "json"])
        took = time.perf_counter() - t0
        slowest = max(slowest, (took, label))
        assert r.exception is None or isinstance(r.exception, SystemExit), \
            f"{label}: uncaught {type(r.exception).__name__}: {r.exception}"
        assert r.exit_code in (0, 2), f"{label}: exit {r.exit_code}\n{r.output[-2000:]}"
        if r.exit_code == 2:
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and "\x1b" not in r.stderr, f"{label}: {r.stderr!r}"
        if must_fail:
            assert r.exit_code == 2, f"{label}: a certainly-wrong file was accepted\n{content[:3000]}"
        assert took < CASE_LIMIT_S, f"{label}: {took:.2f}s"
        outcomes[r.exit_code] += 1
    total = time.perf_counter() - start
    print(f"\nfuzz: {N_CASES} cases in {total:.1f}s: {outcomes[0]} accepted, {outcomes[2]} rejected (exit 2); "
          f"slowest {slowest[0]:.2f}s: {slowest[1]}; max RSS +{_rss_mb() - rss0:.0f} MB")
    assert _rss_mb() - rss0 < 1500, "memory must stay bounded"
    assert sorted(p.name for p in cwd.iterdir()) == [], "plan must not write in the working directory"
    assert outcomes[0] > N_CASES // 20 and outcomes[2] > N_CASES // 4, outcomes  # the mix exercises both


def test_fuzz_cases_are_reproducible() -> None:
    assert [make_case(i) for i in range(20)] == [make_case(i) for i in range(20)]
