"""Render a study's table from the result database, laid out by the study file's ``table`` section.

The table is the study file (as last registered by ``ablate run``): its rows are exactly the arms
(trials that differ only by seed) the file declares, in the file's axis order, made of the trials of
the file's profile and seeds; an arm not run yet is a row of dashes. "Seeds" is the number of
distinct seeds completed / the number the file declares. ``all_arms`` (``ablate table --all``) adds
the arms, seeds and profiles the database holds but the file no longer declares, marked ‡; an arm
with results made by other code (another ablate version or git commit, uncommitted changes; see
``ablate.provenance``) is marked §. Metric cells are the mean over completed seeds, with ± std
when several seeds completed. Without a ``table`` section (or with only a ``baseline``) the table
shows the study's axes, its metric, Δ and the test against the baseline, Params and FLOPs; a FLOPs
header says the input they were counted at ("FLOPs @32"; a segmentation trial's "FLOPs @2048x512"). With a
``table.baseline``, the study's metric gets a Δ column (arm mean - baseline mean) and a paired
comparison with the baseline over shared seeds (ablate.stats: paired t-test from 3 seeds, Holm across
the arms). Every Δ carries a mark, explained in the notes: ∗ significant, † not significant, "(n<3)"
too few shared seeds to test. The best arm of a metric column is in bold. Columns with
a ``group`` get a grouped header (Table 11's ImageNet / ADE20K). The paper's own rows
(``table.paper``) are shown beside the measured ones, and ``table.notes`` are printed under the table,
so a discrepancy with the paper is stated where the table is read.

Formats: md, latex (booktabs, true minus signs, ``\\label{tab:<study>}``), csv (one row per arm,
snake_case headers, mean / std / n / p in columns of their own, numbers rounded to 6 significant
digits, the trial ids behind each cell), html.

``load_table_record`` reads what a table needs with the store's aggregate queries: trial summaries,
the final values of the table's metrics and one config per arm, never a per-epoch row.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from ablate.axes import assignments, excluded, get_path, stored_axes
from ablate.flops import flops_input
from ablate.stats import ALPHA, MIN_PAIRS, Paired, Summary, compare_with_baseline, summarize
from ablate._gc import paused_gc
from ablate.store_reads import COMPLETED, FAILED, INTERRUPTED, Reader, StudyRecord, TrialRecord, arm_key
from ablate.table_css import TABLE_CSS  # the dashboard's page reads it without this module
from ablate.text import human, markdown_cell, safe_format, strip_controls

FORMATS = ("md", "csv", "latex", "html")
# the mark after each Δ: one for each outcome of the comparison with the baseline (ablate.stats)
SIGNIFICANT = "∗"  # U+2217, not "*": Markdown would read an asterisk as emphasis
DAGGER = "†"  # tested, not significant
UNTESTED = f" (n<{MIN_PAIRS})"  # too few shared seeds to test
MISSING = "–"
NOT_IN_FILE = "‡"  # an arm (or seeds, or a profile) the study file no longer declares (--all)
STALE = "§"  # results made by other code (provenance)
MARKS = {True: SIGNIFICANT, False: DAGGER, None: UNTESTED}  # Paired.significant -> the mark after its Δ


def max_rf(config: dict[str, Any]) -> int:
    """Maximum receptive field of one depthwise layer: (k - 1) * d + 1 (Table 12's 'Max RF')."""
    kw = config["model"].get("kwargs", {})
    k, d = kw.get("kernel_size", 3), kw.get("dilation", 1)
    if isinstance(k, list) or isinstance(d, list):
        return max((kk - 1) * dd + 1 for kk, dd in zip(k if isinstance(k, list) else [k] * len(d),
                                                       d if isinstance(d, list) else [d] * len(k)))
    return (k - 1) * d + 1


DERIVED: dict[str, Callable[[dict[str, Any]], Any]] = {"max_rf": max_rf}


@dataclass
class Arm:
    params: dict[str, Any]
    trials: list[TrialRecord]
    declared: bool = True  # in the study file (False: only in the database, shown with --all)
    seeds_declared: int | None = None  # how many seeds the file declares (None: not from a file)
    _summaries: dict[str, tuple[dict[int, float], Summary]] = field(default_factory=dict, repr=False,
                                                                     compare=False)

    @property
    def done(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.status == COMPLETED]

    @property
    def config(self) -> dict[str, Any]:
        """The config of one of its trials (all share the axis values): {} for an arm not run yet."""
        for t in self.trials:  # (a loop, not a generator: asked once per arm and column)
            if t.config:
                return t.config
        return {}

    def by_seed(self, metric: str) -> dict[int, float]:
        """{seed: final value} of ``metric`` over completed trials."""
        return {t.seed: t.final[metric] for t in self.done if metric in t.final}

    def seed_summary(self, metric: str) -> tuple[dict[int, float], Summary]:
        """(``by_seed(metric)``, its ``summarize``), made once per arm and metric: the dashboard's view
        and its table both ask (10^4 arms). The arm's trials are not to change after the first ask;
        the dict returned is shared, not to be changed."""
        got = self._summaries.get(metric)
        if got is None:
            seeds = self.by_seed(metric)
            got = self._summaries[metric] = (seeds, summarize(seeds.values()))
        return got

    def seeds_cell(self) -> str:
        """Distinct seeds completed / seeds the file declares (or, off the file, seeds stored)."""
        done = len({t.seed for t in self.done})
        total = self.seeds_declared if self.seeds_declared is not None else len({t.seed for t in self.trials})
        return f"{done}/{total}"


@dataclass
class TableData:
    title: str
    headers: list[str]
    rows: list[list[str]]  # plain text cells (markup is added per format)
    raw: list[dict[str, Any]]  # one dict per arm, unformatted, snake_case keys (the CSV)
    notes: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # per column, "" when ungrouped
    bold: list[list[bool]] = field(default_factory=list)  # per cell: the best value of its column
    label: str = ""  # the study's name, for LaTeX's \label{tab:...}

    def __post_init__(self) -> None:
        if not self.groups:
            self.groups = [""] * len(self.headers)
        if not self.bold:
            self.bold = [[False] * len(r) for r in self.rows]


# -- which trials make the table: the study file ---------------------------------------------------
def declared_arms(spec: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The arms (axis assignments) a stored study spec declares, in the file's order (the order of
    ``ablate.expand``), or None when the spec carries no axes (a record not made from a file)."""
    axes = spec.get("axes")
    if not isinstance(axes, dict):
        return None
    plain = stored_axes(axes)  # as a validated study stored them: no schema (pydantic) needed
    if plain is None:
        from ablate.study import AxesSpec

        plain = AxesSpec.model_validate(axes)
    return [a for a in assignments(plain) if not excluded(a, plain)]


def group_arms(record: StudyRecord, all_arms: bool = False) -> list[Arm]:
    """The arms of ``table_arms`` that hold at least one trial (what plots can draw)."""
    return [a for a in table_arms(record, all_arms) if a.trials]


def table_arms(record: StudyRecord, all_arms: bool = False) -> list[Arm]:
    """The table's arms. From a study file's spec: exactly its declared arms in its order, each with
    the trials of its declared seeds and profile (the newest registration of a seed when a changed
    file registered it again); with ``all_arms``, then every other arm, seed or profile the database
    holds, as arms marked ``declared=False``. Without axes in the spec: every arm, in first-seen order.
    A record read without configs (``load_table_record``) gets the config of each arm's first trial."""
    declared = declared_arms(record.spec)
    if declared is None:
        arms: dict[str, Arm] = {}
        for t in record.trials:
            key = _arm_of(t)
            arm = arms.get(key)
            if arm is None:
                arm = arms[key] = Arm(_arm_params(t), [])
            arm.trials.append(t)
        out = list(arms.values())
        _fill_configs(record, out)
        return out
    seeds = set(record.spec.get("seeds") or [])
    profile = record.spec.get("profile") or ""
    rows = {arm_key(a): Arm(dict(a), [], True, len(seeds)) for a in declared}
    current: dict[tuple[str, int], Any] = {}
    extra: list[Any] = []
    trials = record.trials
    for key, t in zip(_arm_keys(trials), trials):  # in registration order: a later registration of a seed supersedes
        if key not in rows or t.seed not in seeds or getattr(t, "profile", None) not in (None, profile):
            extra.append(t)
            continue
        old = current.get((key, t.seed))
        if old is not None:
            extra.append(old)
        current[(key, t.seed)] = t
    for (key, _), t in current.items():
        rows[key].trials.append(t)
    out = list(rows.values())
    if all_arms:
        others: dict[tuple[str, str | None], Arm] = {}
        for t in extra:
            k = (_arm_of(t), getattr(t, "profile", None))
            arm = others.get(k)
            if arm is None:
                arm = others[k] = Arm(_arm_params(t), [], False)
            arm.trials.append(t)
        out += list(others.values())
    _fill_configs(record, out)
    return out


def _arm_keys(trials: list[Any]) -> list[str]:
    """Each trial's arm key (``_arm_of``), in one pass where the records carry theirs."""
    try:
        keys = [t._arm for t in trials]
    except AttributeError:
        return [_arm_of(t) for t in trials]
    return keys if None not in keys else [_arm_of(t) for t in trials]


def _arm_params(t: Any) -> dict[str, Any]:
    """A trial's axis values without its seed (a copy: the arm's own)."""
    shared = getattr(t, "arm_params", None)
    return dict(shared) if shared is not None else {k: v for k, v in t.params.items() if k != "seed"}


def _fill_configs(record: StudyRecord, arms: list[Arm]) -> None:
    """Give each arm's first trial its config when the record was read without them: one read of
    as many configs as the table has arms (what ``Arm.config`` of a fully loaded record gives)."""
    if getattr(record, "configs", None) is None:
        return
    firsts = [a.trials[0] for a in arms if a.trials and not a.trials[0].config]
    if firsts:
        got = record.configs([t.trial_id for t in firsts])
        for t in firsts:
            t.config = got.get(t.trial_id) or {}


def stale_arms(arms: list[Arm], dones: list[list[Any]] | None = None) -> set[int]:
    """Indexes of arms with a completed trial made by other code than the running ablate (another
    version or git commit, or uncommitted changes). Trials with no provenance (imported, or made
    before ablate recorded it) are not judged here; ``ablate plan`` lists them. ``dones``: each
    arm's completed trials when the caller has them. The running code (git, in a subprocess) is
    asked only when some completed trial has a provenance, and each distinct provenance is judged
    once (the trials of a run share theirs)."""
    from ablate.provenance import code, stale_reasons

    judged: dict[int, bool] = {}  # id of a provenance dict -> stale (read records share them)
    keep: list[Any] = []  # the dicts judged, so that their ids stay theirs
    now: dict[str, Any] | None = None
    out = set()
    for i, done in enumerate(dones if dones is not None else [a.done for a in arms]):
        for t in done:
            prov = t.provenance
            if not prov:
                continue
            stale = judged.get(id(prov))
            if stale is None:
                if now is None:
                    now = code()
                stale = judged[id(prov)] = bool(stale_reasons(prov, now))
                keep.append(prov)
            if stale:
                out.add(i)
                break
    return out


def needed_metrics(spec: dict[str, Any]) -> list[str]:
    """The metrics a study's table shows: its metric and every ``metric:`` column."""
    main = (spec.get("metric") or {}).get("name", "top1")
    cols = ((spec.get("table") or {}).get("columns")) or []
    return list(dict.fromkeys([main] + [c["source"].split(":", 1)[1] for c in cols
                                        if str(c.get("source", "")).startswith("metric:")]))


def load_table_record(store: Reader, study: str) -> StudyRecord:
    """The study as its table needs it, by the store's aggregate reads (``Reader.table_trials``):
    every trial's summary and the final value of each metric the table shows; no per-epoch row is
    read. The configs of the table's arms are read when the table is built (``StudyRecord.configs``):
    one per arm, of the trial the full record would take it from. KeyError when the database holds
    no such study."""
    info = store.study_info(study)
    return StudyRecord(info.name, info.description, info.spec, store.table_trials(study, needed_metrics(info.spec)),
                       configs=lambda ids: store.configs(study, ids))


def _arm_of(t: TrialRecord) -> str:
    return getattr(t, "_arm", None) or arm_key(t.params)


# -- default columns -------------------------------------------------------------------------------
METRIC_HEADERS = {"top1": "Top-1", "top5": "Top-5", "miou": "mIoU", "val_loss": "Val loss", "train_loss": "Train loss"}


def axis_names(spec: dict[str, Any]) -> list[str]:
    axes = spec.get("axes") or {}
    return list(axes.get("grid") or {}) + [k for g in axes.get("zip") or [] for k in g]


def default_columns(spec: dict[str, Any], record: StudyRecord) -> list[dict[str, Any]]:
    """Columns of a study without ``table.columns``: each axis (named by its last path part, or
    the whole path when two share it), the study's metric (mean ± std; Δ and the test against the
    baseline when ``table.baseline`` is given), Params and FLOPs when the database has them."""
    axes = axis_names(spec)
    lasts = [a.split(".")[-1] for a in axes]
    cols: list[dict[str, Any]] = [{"header": last if lasts.count(last) == 1 else a, "source": a}
                                  for a, last in zip(axes, lasts)]
    if not cols:
        cols.append({"header": "Trial", "source": "trial"})
    main = (spec.get("metric") or {}).get("name", "top1")
    cols.append({"header": METRIC_HEADERS.get(main, main), "source": f"metric:{main}", "test": True})
    if any(t.n_params for t in record.trials):
        cols.append({"header": "Params", "source": "params"})
    if any(t.flops for t in record.trials):
        cols.append({"header": "FLOPs", "source": "flops"})
    return cols


def _resolution(arms: list[Arm]) -> str | None:
    """The one input the arms' FLOPs were counted at ('224', or '2048x512' for segmentation), or None."""
    sizes = {flops_input(c) for c in (a.config for a in arms) if c}
    sizes.discard(None)
    return sizes.pop() if len(sizes) == 1 else None


def _metric(arm: Arm, name: str) -> tuple[float | None, float | None, int]:
    s = summarize(arm.by_seed(name).values())
    return s.mean, s.std, s.n


_NO_LABEL = object()


def _label(value: Any, col: dict[str, Any]) -> Any:
    """The column's label for ``value`` (keys match the value, its str or its JSON: 3, "3", null)."""
    labels = col.get("labels")
    if not labels:  # most columns: no JSON of each value to look up in nothing
        return _NO_LABEL
    for key in (value, str(value), json.dumps(value)):
        try:
            if key in labels:
                return labels[key]
        except TypeError:  # unhashable value
            break
    return _NO_LABEL


def _fmt_scalar(value: Any, fmt: str | None) -> str:
    if fmt == "human":
        return human(value) if isinstance(value, (int, float)) else str(value)
    # a format read from the database may be one no plan checked: safe_format never raises or allocates
    return safe_format(fmt, value, "{v:g}" if isinstance(value, float) else "{v}")


def _fmt(value: Any, col: dict[str, Any]) -> str:
    label = _label(value, col)
    if label is not _NO_LABEL:
        return str(label)
    if value is None:
        return MISSING
    if col.get("dash_if") is not None and value == col["dash_if"]:
        return "-"
    if isinstance(value, list):  # per-stage values, e.g. kernel sizes 31-29-27-13
        return "-".join(_fmt_scalar(v, col.get("format")) for v in value)
    return _fmt_scalar(value, col.get("format"))


class _Formatter:
    """``_fmt`` of one column, computed once per distinct value: 10^4 arms share a few dozen axis
    values. Values are told apart by type (1, 1.0 and True are equal keys in a dict) and a zero
    float is never shared (0.0 == -0.0, but they print differently)."""

    def __init__(self, col: dict[str, Any]):
        self.col = col
        self.texts: dict[tuple[type, Any], str] = {}

    def __call__(self, value: Any) -> str:
        if isinstance(value, (list, dict)) or (type(value) is float and value == 0.0):
            return _fmt(value, self.col)
        key = (type(value), value)
        try:
            text = self.texts.get(key)
        except TypeError:  # unhashable
            return _fmt(value, self.col)
        if text is None:
            text = self.texts[key] = _fmt(value, self.col)
        return text


def _fmt_metric(s: Summary, col: dict[str, Any]) -> str:
    if s.mean is None:
        return MISSING
    fmt = col.get("format")
    if fmt == "human":
        return human(s.mean)
    if not fmt:  # the default, as safe_format gives it without a format (10^4 arms: no call per value)
        return f"{s.mean:.2f}" + (f" ± {s.std:.2f}" if s.std is not None else "")
    one = (lambda v: safe_format(fmt, v, "{v:.2f}"))
    return one(s.mean) + (f" ± {one(s.std)}" if s.std is not None else "")


def _matches(match: dict[str, Any], arm: Arm) -> bool:
    return all(_config_value(arm, k, KeyError) == v for k, v in match.items())  # a missing path matches nothing


def _paper_row(spec: dict[str, Any], arm: Arm) -> dict[str, Any] | None:
    for row in spec.get("paper", []):
        if _matches(row.get("match", {}), arm):
            return row
    return None


def find_baseline(spec: dict[str, Any], arms: list[Arm]) -> Arm | None:
    """The arm of the study file matching ``table.baseline`` (config paths -> values), or None."""
    base = spec.get("baseline")
    if not base:
        return None
    return next((a for a in arms if a.declared and _matches(base, a)), None)


def _best(vals: list[float], mode: str) -> float | None:
    """The best of a column's values, or None when nothing should be bold (fewer than 2 values)."""
    if len(vals) < 2 or mode not in ("max", "min"):
        return None
    return max(vals) if mode == "max" else min(vals)


def _is_best(v: float | None, best: float | None) -> bool:
    return v is not None and best is not None and math.isclose(v, best, rel_tol=1e-12, abs_tol=1e-15)


@lru_cache(maxsize=4096)  # the same few headers and parameter names, once per arm
def snake(text: str) -> str:
    """A machine-friendly column name: 'Top-1' -> top_1, 'FLOPs @32' -> flops, 'Max RF' -> max_rf."""
    text = text.split("@", 1)[0].replace("Δ", "delta ").replace("±", " ")
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_") or "value"


@dataclass
class _Column:
    header: str
    group: str
    cells: list[str]
    raw: list[dict[str, Any]]
    numbers: list[float | None] = field(default_factory=list)  # for bold
    best: str = "none"


def _config_value(arm: Arm, src: str, missing: Any = None) -> Any:
    """The arm's value at a config path (its swept params first), or ``missing``."""
    if src in arm.params:
        return arm.params[src]
    try:
        return get_path(arm.config, src)
    except KeyError:
        return missing


def build_table(record: StudyRecord, alpha: float = ALPHA, *, all_arms: bool = False, raw: bool = True,
                arms: list[Arm] | None = None) -> TableData:
    """The table of ``record`` (see the module doc); ``all_arms`` adds what the file no longer declares.
    ``raw=False`` leaves ``TableData.raw`` empty: only the CSV reads it, and at 10^4 arms it costs.
    ``arms``: ``table_arms(record, all_arms)`` when the caller has them already (the dashboard)."""
    with paused_gc():  # at 10^5 trials: 10^4 arms' cells and dicts, no cycles (see ``paused_gc``)
        return _build_table(record, alpha, all_arms, raw, arms)


def _build_table(record: StudyRecord, alpha: float, all_arms: bool, want_raw: bool,
                 arms: list[Arm] | None = None) -> TableData:
    spec = (record.spec.get("table") or {})
    main = (record.spec.get("metric") or {}).get("name", "top1")
    main_mode = (record.spec.get("metric") or {}).get("mode", "max")
    columns = spec.get("columns") or default_columns(record.spec, record)
    if arms is None:
        arms = table_arms(record, all_arms)
    dones = [arm.done for arm in arms]  # each arm's completed trials, once (10^5 trials: every pass counts)
    in_file = [t for a in arms if a.declared for t in a.trials]
    baseline = find_baseline(spec, arms)
    notes = list(spec.get("notes", []))
    if spec.get("baseline") and baseline is None and arms:
        notes.append(f"Baseline {json.dumps(spec['baseline'])} matches no arm in the results; no Δ column.")
    resolution = _resolution(arms)

    cols: list[_Column] = []
    blank = (lambda: [{} for _ in arms]) if want_raw else list  # each arm's raw CSV values (none unless wanted)
    marks_used: set[str] = set()
    tested: list[Paired] = []
    for col in columns:
        src, head, group = col["source"], col["header"], col.get("group") or ""
        if src == "flops" and resolution is not None and "@" not in head:
            head = f"{head} @{resolution}"  # FLOPs depend on the input size: say which
        key = (snake(group) + "_" if group else "") + snake(head)
        c = _Column(head, group, [], blank())
        cols.append(c)
        if src.startswith("metric:"):
            name = src.split(":", 1)[1]
            c.best = col.get("best") or (main_mode if name == main else "none")
            want_delta = col.get("delta") if col.get("delta") is not None else name == main
            base_seeds, base_st = baseline.seed_summary(name) if baseline else ({}, summarize(()))
            base_mean = base_st.mean
            d = _Column(f"Δ {head}", group, [], blank()) if (want_delta and baseline) else None
            test = _Column("p (Holm)", group, [], blank()) if (d is not None and col.get("test")) else None
            per_seed: list[dict[int, float]] = []
            k_mean, k_std, k_n, k_trials = f"{key}_mean", f"{key}_std", f"{key}_n", f"{key}_trials"
            for i, done in enumerate(dones):
                seeds, st = arms[i].seed_summary(name)  # the dashboard's view made it already
                per_seed.append(seeds)
                c.cells.append(_fmt_metric(st, col))
                c.numbers.append(st.mean)
                if want_raw:
                    c.raw[i].update({k_mean: st.mean, k_std: st.std, k_n: st.n,
                                     k_trials: " ".join([t.trial_id for t in done if name in t.final])})
            if d is None:
                continue
            # the arms of the file compared with the baseline in this column are one family (Holm)
            compared = [i for i, arm in enumerate(arms) if arm.declared
                        and arm is not baseline and c.numbers[i] is not None and base_mean is not None]
            results = dict(zip(compared, compare_with_baseline(base_seeds, [per_seed[i] for i in compared], alpha)))
            no_test = dict.fromkeys(f"delta_{key}{x}" for x in ("", "_test", "_pairs", "_p", "_p_holm", "_ci_low",
                                                                "_ci_high", "_significant"))
            for i, arm in enumerate(arms):
                if want_raw:
                    d.raw[i].update(no_test)
                if arm is baseline:
                    d.cells.append("baseline")
                    if test is not None:
                        test.cells.append(MISSING)
                    continue
                if i not in results:
                    d.cells.append(MISSING)
                    if test is not None:
                        test.cells.append(MISSING)
                    continue
                p: Paired = results[i]
                delta = c.numbers[i] - base_mean
                mark = MARKS[p.significant]
                marks_used.add(mark)
                if p.method != "none":
                    tested.append(p)
                d.cells.append(f"{delta:+.2f}{mark}")
                if test is not None:
                    test.cells.append(f"n<{MIN_PAIRS}" if p.p_adjusted is None else f"{p.p_adjusted:.3g}")
                if want_raw:
                    d.raw[i].update({f"delta_{key}": delta, f"delta_{key}_test": p.method, f"delta_{key}_pairs": p.n,
                                     f"delta_{key}_p": p.p_value, f"delta_{key}_p_holm": p.p_adjusted,
                                     f"delta_{key}_ci_low": p.low, f"delta_{key}_ci_high": p.high,
                                     f"delta_{key}_significant": p.significant})
            cols.append(d)
            if test is not None:
                cols.append(test)
        else:
            c.best = col.get("best") or "none"
            fmt = _Formatter({**col, "format": col.get("format") or "human"} if src in ("params", "flops") else col)
            for i, arm in enumerate(arms):
                first = arm.trials[0] if arm.trials else None
                if src in ("params", "flops"):
                    v = None if first is None else (first.n_params if src == "params" else first.flops)
                    text = fmt(v) if v else MISSING
                elif src.startswith("derived:"):
                    fn = DERIVED.get(src.split(":", 1)[1])
                    config = arm.config
                    try:
                        v = fn(config) if fn and config else None
                    except (KeyError, TypeError, ValueError):
                        v = None
                    text = _fmt(v, col)
                elif src == "trial":
                    v = ", ".join(f"{k}={json.dumps(x)}" for k, x in arm.params.items()) or \
                        (first.trial_id if first else MISSING)
                    text = v
                else:
                    v = _config_value(arm, src)
                    text = fmt(v)
                c.cells.append(text)
                c.numbers.append(v if isinstance(v, (int, float)) and not isinstance(v, bool) else None)
                if want_raw:
                    c.raw[i][key] = json.dumps(v) if isinstance(v, (list, dict)) else v

    stale = stale_arms(arms, dones)
    paper_keys = sorted({k for r in spec.get("paper", []) for k in r if k != "match"})
    headers = [c.header for c in cols] + ["Seeds"] + [f"Paper {k}" for k in paper_keys]
    groups = [c.group for c in cols] + [""] * (1 + len(paper_keys))
    bests = [_best([v for i, v in enumerate(c.numbers) if v is not None and arms[i].declared], c.best) for c in cols]
    ranked = [(j, c.numbers, b) for j, (c, b) in enumerate(zip(cols, bests)) if b is not None and c.numbers]
    width = len(cols) + 1 + len(paper_keys)
    rows, bold, raw = [], [], []
    for i, arm in enumerate(arms):
        cells = [c.cells[i] for c in cols]
        tags = ("" if arm.declared else NOT_IN_FILE) + (STALE if i in stale else "")
        if tags and cells:
            cells[0] = f"{cells[0]} {tags}"
        marks = [False] * width  # bold: the best value of a column with one, among the file's arms
        if arm.declared:
            for j, numbers, b in ranked:
                if _is_best(numbers[i], b):
                    marks[j] = True
        n_done = len({t.seed for t in dones[i]})
        n_seeds = arm.seeds_declared if arm.seeds_declared is not None else len({t.seed for t in arm.trials})
        cells.append(f"{n_done}/{n_seeds}")  # = Arm.seeds_cell()
        paper = (_paper_row(spec, arm) or {}) if paper_keys else {}
        cells += [str(paper.get(k, MISSING)) for k in paper_keys]
        rows.append(cells)
        bold.append(marks)
        if not want_raw:
            continue
        values: dict[str, Any] = {f"param_{snake(k)}": (json.dumps(v) if isinstance(v, (list, dict)) else v)
                                  for k, v in arm.params.items()}
        for c in cols:
            values.update(c.raw[i])
        values.update({"seeds_completed": n_done, "seeds": n_seeds,
                       "trial_ids": " ".join([t.trial_id for t in arm.trials]),
                       "baseline": arm is baseline, "in_study_file": arm.declared, "other_code": i in stale})
        values.update({f"paper_{snake(k)}": paper.get(k) for k in paper_keys})
        raw.append(values)

    notes += significance_notes(marks_used, tested, alpha)
    if any(not a.declared for a in arms):
        notes.append(f"{NOT_IN_FILE} Not in the current study file: results the database holds for an arm, seeds or a "
                     "profile the file no longer declares (shown with --all); not compared with the baseline.")
    if stale:
        notes.append(f"{STALE} Made by other code: some of the arm's results come from another ablate version or git "
                     "commit, or a working tree with uncommitted changes (`ablate plan` lists them; "
                     "`ablate run --rerun-stale` retrains them).")
    from_file = isinstance(record.spec.get("axes"), dict)  # = declared_arms(spec) is not None, without expanding
    notes += _incomplete_notes(in_file if from_file else record.trials)
    profile = record.spec.get("profile")
    title = record.name + (f" (profile: {profile})" if profile else "")
    return TableData(title, headers, rows, raw, notes, groups, bold, record.name)


def significance_notes(marks: set[str], tested: list[Paired], alpha: float) -> list[str]:
    """The notes that say how Δ was tested and what each mark that appears in the table means."""
    if not marks:
        return []
    notes = ["Δ is the arm's mean minus the baseline's."]
    if tested:
        ns = sorted({p.n for p in tested})
        n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
        m = "/".join(str(f) for f in sorted({p.family for p in tested}))  # one family per Δ column
        notes[0] += (f" Test: two-sided paired t-test over the seeds an arm shares with the baseline "
                     f"(as scipy.stats.ttest_rel, n = {n} pairs), p-values Holm-adjusted across the arms compared "
                     f"with the baseline (m = {m}), family-wise α = {alpha:g}; the CSV has each arm's p, p_holm and "
                     f"unadjusted {1 - alpha:.0%} CI of the mean per-seed difference.")
    if SIGNIFICANT in marks:
        notes.append(f"{SIGNIFICANT} Significantly different from the baseline: Holm-adjusted p ≤ {alpha:g}.")
    if DAGGER in marks:
        notes.append(f"{DAGGER} Not significantly different from the baseline: Holm-adjusted p > {alpha:g} "
                     "(no difference shown with these seeds, which is not evidence that there is none).")
    if UNTESTED in marks:
        notes.append(f"{UNTESTED.strip()}: not tested, fewer than {MIN_PAIRS} seeds shared with the baseline "
                     "(too few for a t-test to mean much); neither significant nor not.")
    return notes


def _incomplete_notes(trials: list[TrialRecord]) -> list[str]:
    """What is missing and what to do about it: interrupted and transient failures resume on a
    rerun; a failure that will recur (the config) needs the study fixed, not a rerun."""
    total = len(trials)
    statuses = Counter(t.status for t in trials)  # one pass: at 10^5 trials each pass counts
    count = {s: statuses[s] for s in (COMPLETED, FAILED, INTERRUPTED)}
    recurring = sum(t.status == FAILED and getattr(t, "error_kind", None) == "recurring"
                    for t in trials) if count[FAILED] else 0
    if count[COMPLETED] == total:
        return []
    parts = [f"{count[COMPLETED]} of {total} trials completed"]
    if count[INTERRUPTED]:
        parts.append(f"{count[INTERRUPTED]} interrupted")
    if count[FAILED]:
        parts.append(f"{count[FAILED]} failed" + (f" ({recurring} will fail again: fix the study)" if recurring else ""))
    rest = total - sum(count.values())
    if rest:
        parts.append(f"{rest} not run or running")
    todo = "`ablate run` again resumes the others from their last epoch" if recurring else \
        "`ablate run` again resumes them from their last epoch"
    return [f"Incomplete: {', '.join(parts)}. {todo}; `ablate show TRIAL` gives each one's error."]


# -- formats -----------------------------------------------------------------------------------
def _spans(groups: list[str]) -> list[tuple[str, int, int]]:
    """Runs of equal group names: (name, first column, count)."""
    out: list[tuple[str, int, int]] = []
    for i, g in enumerate(groups):
        if out and out[-1][0] == g and g:
            out[-1] = (g, out[-1][1], out[-1][2] + 1)
        else:
            out.append((g, i, 1))
    return out


def _memo(escape: Callable[[str], str]) -> Callable[[str], str]:
    """``escape`` computed once per distinct cell text (10^4 rows repeat a few dozen values)."""
    done: dict[str, str] = {}

    def once(s: str) -> str:
        out = done.get(s)
        if out is None:
            out = done[s] = escape(s)
        return out
    return once


def to_markdown(t: TableData) -> str:
    """GitHub Markdown. Every text from the study file or the database is escaped (``markdown_cell``):
    HTML shows as text, a pipe or line break cannot split a row, no terminal control sequences."""
    esc = _memo(markdown_cell)

    def cell(s: str, b: bool) -> str:
        s = esc(s)
        return f"**{s}**" if b else s

    heads = [markdown_cell(f"{g} {h}" if g else h) for g, h in zip(t.groups, t.headers)]
    lines = [f"**{markdown_cell(t.title)}**", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join([cell(c, b) for c, b in zip(r, bs)]) + " |" for r, bs in zip(t.rows, t.bold)]
    if t.notes:
        lines.append("")
        lines += [f"{i}. {markdown_cell(n)}" for i, n in enumerate(t.notes, 1)]
    return "\n".join(lines) + "\n"


SIGNIFICANT_DIGITS = 6  # of values in the CSV: float noise (-23.699999999999996) goes, precision stays
P_DIGITS = 4  # of p-values


def csv_number(value: Any, key: str = "") -> Any:
    """A float rounded to its meaningful digits for the CSV (p-values to 4 significant digits,
    other values to 6); anything else unchanged."""
    if not isinstance(value, float) or math.isnan(value) or math.isinf(value):
        return value
    digits = P_DIGITS if key.endswith(("_p", "_p_holm")) else SIGNIFICANT_DIGITS
    return float(f"{value:.{digits}g}")


def to_csv(t: TableData) -> str:
    """One row per arm: snake_case headers, mean / std / n / p in columns of their own, numbers
    rounded (``csv_number``), the trial ids behind each cell."""
    buf = io.StringIO()
    seen: dict[str, None] = {}  # every key, in first-seen order
    for r in t.raw:
        seen.update(dict.fromkeys(r))
    keys = list(seen)
    # as csv.DictWriter writes them (a missing key is ""), with each float rounded as ``csv_number``
    # does, by one format spec per column: 10^4 rows x 20 columns
    specs = [f".{P_DIGITS if k.endswith(('_p', '_p_holm')) else SIGNIFICANT_DIGITS}g" for k in keys]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    for r in t.raw:
        w.writerow([float(format(v, spec)) if type(v) is float and v - v == 0.0 else csv_number(v, k)
                    for v, spec, k in zip([r.get(k, "") for k in keys], specs, keys)])
    # no terminal control sequence reaches a terminal the CSV is printed to
    return strip_controls(buf.getvalue())


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "±": r"$\pm$", "×": r"$\times$", "–": "--", "Δ": r"$\Delta$", DAGGER: r"$^\dagger$",
                  SIGNIFICANT: r"$^{*}$", "α": r"$\alpha$", "≤": r"$\leq$", "<": r"$<$", ">": r"$>$",
                  NOT_IN_FILE: r"$^\ddagger$", STALE: r"\S{}"}


_SIGN = re.compile(r"(?<![\w.])-(?=\.?\d)")  # a minus sign: before a number, not inside a word or range


def latex_escape(s: str) -> str:
    """Text for LaTeX: special characters escaped, a minus sign before a number typeset as one
    ($-$, not a hyphen), symbols (± Δ † ∗ ≤) in math mode."""
    s = _SIGN.sub("\x00", strip_controls(s, keep_newlines=False))
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in s).replace("\x00", "$-$")


def to_latex(t: TableData) -> str:
    """A booktabs table, ready to paste into a paper (grouped headers via multicolumn/cmidrule)."""
    n = len(t.headers)
    out = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{" + "l" + "c" * (n - 1) + "}", r"\toprule"]
    if any(t.groups):
        spans = _spans(t.groups)
        parts: list[str] = []
        for g, _, k in spans:
            parts += [r"\multicolumn{%d}{c}{%s}" % (k, latex_escape(g))] if g else [""] * k
        out.append(" & ".join(parts) + r" \\")
        out.append(" ".join(r"\cmidrule(lr){%d-%d}" % (a + 1, a + k) for g, a, k in spans if g))
    out += [" & ".join(latex_escape(h) for h in t.headers) + r" \\", r"\midrule"]
    esc = _memo(latex_escape)
    out += [" & ".join([r"\textbf{" + esc(c) + "}" if b else esc(c) for c, b in zip(r, bs)]) + r" \\"
            for r, bs in zip(t.rows, t.bold)]
    out += [r"\bottomrule", r"\end{tabular}", r"\caption{" + latex_escape(t.title) + "}"]
    if t.label:
        out.append(r"\label{tab:" + re.sub(r"[^A-Za-z0-9_.:-]", "-", t.label) + "}")
    if t.notes:
        out.append(r"\par\footnotesize " + " ".join(f"({i}) {latex_escape(n)}" for i, n in enumerate(t.notes, 1)))
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def to_html_fragment(t: TableData) -> str:
    """The table as an HTML element (no page around it): used by ``to_html`` and the dashboard."""
    e = _memo(lambda s: html.escape(strip_controls(s)))  # escaped, and without control sequences for a terminal

    out = ['<table class="ablate-table">', f"<caption>{e(t.title)}</caption>", "<thead>"]
    if any(t.groups):
        out.append("<tr>" + "".join(f'<th colspan="{k}" class="group">{e(g)}</th>' if g else
                                     f'<th colspan="{k}"></th>' for g, _, k in _spans(t.groups)) + "</tr>")
    out.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in t.headers) + "</tr>")
    out.append("</thead>")
    out.append("<tbody>")
    for r, bs in zip(t.rows, t.bold):
        out.append("<tr>" + "".join([f"<td><b>{e(c)}</b></td>" if b else f"<td>{e(c)}</td>" for c, b in zip(r, bs)])
                   + "</tr>")
    out.append("</tbody></table>")
    if t.notes:
        out.append('<ol class="ablate-notes">' + "".join(f"<li>{e(n)}</li>" for n in t.notes) + "</ol>")
    return "\n".join(out)


def to_html(t: TableData) -> str:
    """A standalone HTML page with the table."""
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(strip_controls(t.title))}</title><style>{TABLE_CSS}</style></head><body>\n"
            + to_html_fragment(t) + "\n</body></html>\n")


def render(record: StudyRecord, fmt: str = "md", *, all_arms: bool = False) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format: one of {', '.join(FORMATS)}, got '{fmt}'")
    table = build_table(record, all_arms=all_arms, raw=fmt == "csv")
    return {"md": to_markdown, "csv": to_csv, "latex": to_latex, "html": to_html}[fmt](table)
