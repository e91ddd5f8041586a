"""What the dashboard shows of one study, computed once from its trials' final values: the arms
(trials that differ only by seed), which declared axes vary, the baseline and every arm's paired
comparison with it (ablate.stats: paired t-test from 3 seeds, Holm across the arms, n<3 untested).

Data only: no plotting, no HTML. Figures (``figures.py``) and the page (``page.py``) read it.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from typing import Any

from ablate.stats import ALPHA, Paired, compare_with_baseline, summarize
from ablate.store_reads import StudyRecord
from ablate.tables import Arm, find_baseline, table_arms


def study_metric(spec: dict[str, Any]) -> tuple[str, str]:
    """(metric name, "max" | "min") of a study spec."""
    m = spec.get("metric") or {}
    return m.get("name", "top1"), m.get("mode", "max")


def declared_axes(spec: dict[str, Any]) -> list[str]:
    """The axes the study file declares, in the file's order: grid first, then zipped groups."""
    axes = spec.get("axes") or {}
    out = list((axes.get("grid") or {}).keys())
    for group in axes.get("zip") or []:
        out += [k for k in group if k not in out]
    return out


_SCALARS = frozenset({int, float, str, bool, type(None)})


def value_key(v: Any) -> Any:
    """A hashable key for an axis value: the value itself, tagged with its type so that 1, 1.0
    and True stay apart as JSON keeps them; lists (per-stage kernel sizes) as canonical JSON.
    (Only compared and hashed: a page of 10^4 trials asks for ~4 * 10^4 keys.)"""
    kind = type(v)
    if kind in _SCALARS:
        return (kind, v)
    if isinstance(v, (list, dict)):
        return ("json", json.dumps(v, sort_keys=True))
    return (kind, v)


def value_text(v: Any) -> str:
    """An axis value as a person reads it: 31-29-27-13 for per-stage lists."""
    if isinstance(v, list):
        return "-".join(value_text(x) for x in v)
    if v is None:
        return "none"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


SHORT = {"kernel_size": "k", "kernel_sizes": "k", "dilation": "d", "name": "model"}  # last segment -> label


def short_names(paths: list[str]) -> dict[str, str]:
    """Each axis path's shortest unambiguous name: the last segment (k, d for the paper's), longer
    suffixes where two axes end alike (model.kwargs.drop_rate and recipe.drop_rate)."""
    out: dict[str, str] = {}
    for p in paths:
        parts = p.split(".")
        for n in range(1, len(parts) + 1):
            cand = ".".join(parts[-n:])
            if not any(q != p and (q == cand or q.endswith("." + cand)) for q in paths):
                break
        out[p] = SHORT.get(cand, cand) if n == 1 and (cand != "name" or p == "model.name") else cand
    return out


@dataclass
class ArmView:
    """One arm: its settings and its study metric over seeds, compared with the baseline."""

    index: int  # position in the table
    arm: Arm
    label: str  # plain text (escape for HTML where it goes)
    mean: float | None
    std: float | None
    n: int  # completed seeds with the metric
    seeds: dict[int, float]
    compare: Paired | None = None  # None for the baseline, or without one
    is_baseline: bool = False

    @property
    def first(self):
        """One of its trials (the config, params and FLOPs of all), or None for an arm not run yet."""
        return self.arm.trials[0] if self.arm.trials else None


@dataclass
class StudyView:
    record: StudyRecord
    metric: str
    mode: str
    arms: list[ArmView]  # the study file's arms, in its order (the table's rows)
    axes: list[str]  # declared axes present in the trials' params, in file order
    varying: list[str]  # the axes with more than one value across arms
    baseline: ArmView | None
    names: dict[str, str] = field(default_factory=dict)  # axis path -> short name
    alpha: float = ALPHA
    extra: list[ArmView] = field(default_factory=list)  # arms in the database the file no longer declares
    table_arms: list[Arm] = field(default_factory=list)  # the table's arms (``tables.table_arms``), run or not
    _values: dict[str, list[Any]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.record.name

    def best_first(self) -> list[ArmView]:
        """Arms with a value, best first by the study's mode."""
        have = [a for a in self.arms if a.mean is not None]
        return sorted(have, key=lambda a: a.mean, reverse=self.mode != "min")  # type: ignore[arg-type,return-value]

    def values(self, axis: str) -> list[Any]:
        """The axis' distinct values in the order the arms first show them (the file's order)."""
        if axis not in self._values:
            seen: dict[Any, Any] = {}
            for a in self.arms:
                v = a.arm.params.get(axis)
                seen.setdefault(value_key(v), v)
            self._values[axis] = list(seen.values())
        return self._values[axis]


def arm_text(params: dict[str, Any], axes: list[str], names: dict[str, str]) -> str:
    parts = [f"{names.get(k, k)}={value_text(params.get(k))}" for k in axes if k in params]
    return " ".join(parts) or "(single arm)"


def escape(s: str) -> str:
    """Plotly renders a subset of HTML in labels: escaped, a value like "<b>" shows as itself."""
    return html.escape(s, quote=False)


def _finite(values: Any) -> bool:
    """Whether every value is a finite number: their sum is (NaN and inf carry through a sum; a
    finite sum that overflows only says no)."""
    try:
        return math.isfinite(sum(values))
    except (TypeError, OverflowError):  # None, not a number, or an int beyond floats: value by value
        return False


def study_view(record: StudyRecord, alpha: float = ALPHA) -> StudyView:
    metric, mode = study_metric(record.spec)
    listed = table_arms(record, all_arms=True)  # once: the table's rows are its declared part (``table_json``)
    every = [a for a in listed if a.trials]
    arms = [a for a in every if a.declared]
    present = {k for a in arms for k in a.params}
    axes = [k for k in declared_axes(record.spec) if k in present]
    axes += sorted(present - set(axes))  # studies written before axes were stored, synthetic ones
    varying = [k for k in axes if len({value_key(a.params.get(k)) for a in arms}) > 1]
    names = short_names(axes)
    table = record.spec.get("table") or {}
    base_arm = find_baseline(table, arms) if table.get("baseline") else None
    if base_arm is None and record.spec.get("baseline"):
        base_arm = find_baseline({"baseline": record.spec["baseline"]}, arms)
    views = []
    for i, arm in enumerate(arms):
        seeds, s = arm.seed_summary(metric)  # shared with the table (``table_json``)
        if not _finite(seeds.values()):
            seeds = {s: v for s, v in seeds.items() if v is not None and math.isfinite(v)}
            s = summarize(seeds.values())
        views.append(ArmView(i, arm, arm_text(arm.params, varying, names), s.mean, s.std, s.n, seeds,
                             is_baseline=arm is base_arm))
    extra = []
    for i, arm in enumerate((a for a in every if not a.declared), len(views)):
        s = summarize(v for v in arm.by_seed(metric).values() if v is not None and math.isfinite(v))
        extra.append(ArmView(i, arm, arm_text(arm.params, varying or axes, names) + " (not in the study file)",
                             s.mean, s.std, s.n, {}))
    baseline = next((v for v in views if v.is_baseline), None)
    if baseline is not None and baseline.seeds:
        others = [v for v in views if not v.is_baseline and v.seeds]
        for v, p in zip(others, compare_with_baseline(baseline.seeds, [v.seeds for v in others], alpha)):
            v.compare = p
    return StudyView(record, metric, mode, views, axes, varying, baseline, names, alpha, extra,
                     [a for a in listed if a.declared])
