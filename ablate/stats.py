"""Statistics for tables over seeds: mean ± std, and paired comparisons of arms with a baseline.

Trials of two arms that share a seed are paired (same data order and initialisation seed), so a
comparison looks at the per-seed differences ``d = arm - baseline`` over the seeds both have:

* 3 or more pairs: a two-sided paired t-test, computed by ``scipy.stats.ttest_rel`` itself (its
  p-value and its ``confidence_interval()`` of the mean difference), so the numbers are scipy's.
* fewer than 3 pairs: no test (``method == "none"``, ``significant is None``). With 2 pairs a
  t-test has one degree of freedom and almost no power, and a bootstrap's interval is just
  [min, max] of the two differences, which excludes 0 whenever the two seeds agree in sign: half
  the time when nothing differs. Such an arm is shown as untested ("n<3"), never as significant.

The arms compared with one baseline are one family: their p-values are adjusted with Holm's
step-down method (``holm``), so the chance that any arm of a table is called significant when none
differs stays at or below ``alpha``. An arm is significant when its Holm-adjusted p <= alpha. The
confidence interval is each arm's own (unadjusted) 1 - alpha interval.

The core (``t_tests``, ``holm``) works on arrays along the last axis, so a simulation of thousands
of tables runs through the same code as one table (``compare_with_baseline``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

ALPHA = 0.05
MIN_PAIRS = 3  # fewest shared seeds for a test


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (None below 2 values) and count of a metric over seeds."""

    mean: float | None
    std: float | None
    n: int


def mean_std(vals: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1; None for one value), in floating point with
    compensated sums (``statistics.stdev`` is exact but ~100x slower, which a 10,000-trial
    dashboard feels)."""
    n = len(vals)
    mean = math.fsum(vals) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))


def summarize(values: Iterable[float]) -> Summary:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return Summary(None, None, 0)
    mean, std = mean_std(vals)
    return Summary(mean, std, len(vals))


@dataclass(frozen=True)
class Paired:
    """The comparison of one arm with the baseline over the seeds both have."""

    n: int  # pairs (seeds present in both)
    mean_diff: float | None  # mean of arm - baseline over the pairs
    low: float | None  # the t confidence interval of the mean difference (unadjusted)
    high: float | None
    p_value: float | None  # the paired t-test's two-sided p (None when untested)
    method: str  # "t-test" or "none"
    significant: bool | None  # Holm-adjusted p <= alpha; None when untested
    confidence: float = 1 - ALPHA
    p_adjusted: float | None = None  # Holm-adjusted over the family (= p_value for a family of one)
    statistic: float | None = None  # t
    family: int = 1  # how many arms were tested against the same baseline (Holm's m)

    def describe(self) -> str:
        if self.method == "none":
            return f"not tested (n<{MIN_PAIRS}: {self.n} paired seed{'s' if self.n != 1 else ''})"
        ci = f"{self.confidence:.0%} CI [{self.low:+.3g}, {self.high:+.3g}]"
        holm = f", Holm-adjusted p = {self.p_adjusted:.3g} over {self.family} arms" if self.family > 1 else ""
        return f"paired t-test over {self.n} seeds: p = {self.p_value:.3g}{holm}, {ci}"


def pair_by_seed(baseline: Mapping[int, float], other: Mapping[int, float]) -> list[tuple[float, float]]:
    """(baseline, other) for every seed present in both with a number in both, in seed order."""
    pairs = [(float(baseline[s]), float(other[s])) for s in sorted(set(baseline) & set(other))
             if baseline[s] is not None and other[s] is not None]
    return [(b, o) for b, o in pairs if not (math.isnan(b) or math.isnan(o))]


def t_tests(base: np.ndarray, other: np.ndarray, alpha: float = ALPHA) -> tuple[np.ndarray, ...]:
    """Paired t-tests of ``other - base`` along the last axis (>= 2 pairs; leading axes broadcast):
    (mean difference, t, two-sided p, CI low, CI high), all from ``scipy.stats.ttest_rel``.

    Differences that are all 0 have no t (scipy gives nan); they show no difference, so p is 1.
    Differences that are all equal and not 0 give t = ±inf and p = 0 (scipy's answer)."""
    from scipy import stats

    base, other = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    with warnings.catch_warnings():  # "catastrophic cancellation" for near-identical differences
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_rel(other, base, axis=-1)
        ci = res.confidence_interval(confidence_level=1 - alpha)
    mean = np.mean(other - base, axis=-1)
    p = np.where(np.isnan(res.pvalue) & (mean == 0.0), 1.0, res.pvalue)
    return mean, np.asarray(res.statistic), p, np.asarray(ci.low), np.asarray(ci.high)


def holm(p: np.ndarray | Sequence[float], axis: int = -1) -> np.ndarray:
    """Holm's step-down adjusted p-values along ``axis``; nan marks a hypothesis not tested, which
    is left out of the family (it stays nan and does not count in m).

    With the m tested p-values sorted, p(1) <= ... <= p(m), the adjusted value of the i-th is
    max over j <= i of min(1, (m - j + 1) p(j)); rejecting where it is <= alpha is Holm's test,
    which keeps the family-wise error rate at alpha under any dependence between the tests.
    (``scipy.stats.false_discovery_control`` is Benjamini-Hochberg, which bounds the false
    discovery rate instead: a weaker promise.)"""
    p = np.moveaxis(np.asarray(p, dtype=float), axis, -1)
    order = np.argsort(p, axis=-1)  # nan sorts last
    ps = np.take_along_axis(p, order, axis=-1)
    m = np.sum(~np.isnan(p), axis=-1, keepdims=True)
    factor = m - np.arange(p.shape[-1])  # m - j + 1 for 1-based j
    running = np.fmax.accumulate(factor * ps, axis=-1)  # fmax skips nan; the nans (last) are put back
    adj = np.where(np.isnan(ps), np.nan, np.minimum(1.0, running))
    out = np.empty_like(adj)
    np.put_along_axis(out, order, adj, axis=-1)
    return np.moveaxis(out, -1, axis)


def significant(p_adjusted: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """True where the adjusted p is <= alpha (False where untested: nan)."""
    return np.asarray(p_adjusted) <= alpha


def compare_with_baseline(baseline: Mapping[int, float], arms: Sequence[Mapping[int, float]],
                          alpha: float = ALPHA) -> list[Paired]:
    """Compare every arm (each {seed: value}) with ``baseline``, pairing by seed; the arms with
    at least ``MIN_PAIRS`` pairs are tested and Holm-adjusted together (see the module doc)."""
    paired = [pair_by_seed(baseline, arm) for arm in arms]
    k = len(arms)
    res = {name: np.full(k, np.nan) for name in ("mean", "t", "p", "low", "high")}
    by_n: dict[int, list[int]] = {}
    for i, pairs in enumerate(paired):
        if len(pairs) >= MIN_PAIRS:
            by_n.setdefault(len(pairs), []).append(i)
    for n, idx in by_n.items():  # one vectorised ttest_rel per number of pairs
        arr = np.array([paired[i] for i in idx])  # (arms, n, 2): baseline, other
        for name, values in zip(("mean", "t", "p", "low", "high"), t_tests(arr[..., 0], arr[..., 1], alpha)):
            res[name][idx] = values
    adjusted = holm(res["p"]) if k else res["p"]
    family = len([i for idxs in by_n.values() for i in idxs])
    out: list[Paired] = []
    for i, pairs in enumerate(paired):
        n = len(pairs)
        if n < MIN_PAIRS:
            mean = math.fsum(o - b for b, o in pairs) / n if n else None
            out.append(Paired(n, mean, None, None, None, "none", None, 1 - alpha, family=family))
            continue
        out.append(Paired(n, float(res["mean"][i]), float(res["low"][i]), float(res["high"][i]),
                          float(res["p"][i]), "t-test", bool(significant(adjusted[i], alpha)), 1 - alpha,
                          float(adjusted[i]), float(res["t"][i]), family))
    return out


def paired_compare(baseline: Mapping[int, float], other: Mapping[int, float], alpha: float = ALPHA) -> Paired:
    """Compare one arm with ``baseline`` on its own (a family of one: no adjustment)."""
    return compare_with_baseline(baseline, [other], alpha)[0]
