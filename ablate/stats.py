"""Statistics for tables over seeds: mean ± std, and paired comparisons of arms with a baseline.

Trials of two arms that share a seed are paired (same data order and initialisation seed), so a
comparison looks at the per-seed differences ``d = arm - baseline`` over the seeds both have:

* 3 or more pairs: a two-sided paired t-test, the arithmetic of ``scipy.stats.ttest_rel`` (the
  same mean, variance and t, its p-value and its ``confidence_interval()`` of the mean difference)
  in pure Python: Student's t comes from ``ablate.tdist``, which equals scipy's to ~1e-13, because
  importing scipy.stats would cost a second of every ``ablate table`` (tests/test_stats.py checks
  the numbers against scipy's).
* fewer than 3 pairs: no test (``method == "none"``, ``significant is None``). With 2 pairs a
  t-test has one degree of freedom and almost no power, and a bootstrap's interval is just
  [min, max] of the two differences, which excludes 0 whenever the two seeds agree in sign: half
  the time when nothing differs. Such an arm is shown as untested ("n<3"), never as significant.

The arms compared with one baseline are one family: their p-values are adjusted with Holm's
step-down method (``holm``), so the chance that any arm of a table is called significant when none
differs stays at or below ``alpha``. An arm is significant when its Holm-adjusted p <= alpha. The
confidence interval is each arm's own (unadjusted) 1 - alpha interval.

``compare_with_baseline`` (one table: ``paired_t``, ``holm_adjust``) needs neither numpy nor scipy.
``t_tests`` and ``holm`` do the same on arrays along the last axis, for simulations of thousands of
tables (numpy, and scipy.special for the t tail, imported when called); the tests check that both
paths mark the same arms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ablate import tdist

if TYPE_CHECKING:
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
    return mean, math.sqrt(math.fsum([(v - mean) ** 2 for v in vals]) / (n - 1))


def summarize(values: Iterable[float]) -> Summary:
    vals = [float(v) for v in values if v is not None]
    total = sum(vals)  # NaN when a value is NaN (or when inf meets -inf): then NaNs are left out one by one
    if total != total:  # (one float() and no per-value test in the common case: a table summarizes 10^4 arms)
        vals = [v for v in vals if v == v]
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
    pairs = [(float(baseline[s]), float(other[s])) for s in sorted(baseline.keys() & other.keys())
             if baseline[s] is not None and other[s] is not None]
    return [(b, o) for b, o in pairs if b == b and o == o]  # not NaN (a float unequal to itself)


def _numpy_sum(x: Sequence[float], lo: int = 0, n: int | None = None) -> float:
    """The sum numpy's ``np.sum`` / ``np.mean`` computes (pairwise, 8-way unrolled blocks of up to
    128), term for term, so that mean, t and CI are scipy's to the last bit, not just close."""
    n = len(x) - lo if n is None else n
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += x[i]
        return res
    if n <= 128:
        r = list(x[lo:lo + 8])
        i = 8
        while i < n - n % 8:
            for j in range(8):
                r[j] += x[lo + i + j]
            i += 8
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for i in range(i, n):
            res += x[lo + i]
        return res
    half = n // 2
    half -= half % 8
    return _numpy_sum(x, lo, half) + _numpy_sum(x, lo + half, n - half)


def paired_t(pairs: Sequence[tuple[float, float]], alpha: float = ALPHA) -> tuple[float, float, float, float, float]:
    """The paired t-test of ``other - base`` over (base, other) pairs (>= 2): (mean difference, t,
    two-sided p, CI low, CI high), as ``scipy.stats.ttest_rel(other, base)`` computes them.

    Differences that are all 0 have no t (nan); they show no difference, so p is 1.
    Differences that are all equal and not 0 give t = ±inf and p = 0 (scipy's answer)."""
    d = [o - b for b, o in pairs]
    n = len(d)
    mean = 0.0 + _numpy_sum(d) / n
    var = _numpy_sum([(x - mean) * (x - mean) for x in d]) / n * (n / (n - 1))  # x*x as numpy squares, not pow
    se = math.sqrt(var / n)
    t = mean / se if se else (math.nan if mean == 0 or math.isnan(mean) else math.copysign(math.inf, mean))
    p = 1.0 if math.isnan(t) and mean == 0.0 else tdist.two_sided_p(t, n - 1)
    q = tdist.isf_two_sided(1 - (1 - alpha), n - 1)  # the CI's quantile, at scipy's (1 - confidence) / 2
    return mean, t, p, -q * se + mean, q * se + mean


def t_tests(base: "np.ndarray", other: "np.ndarray", alpha: float = ALPHA) -> tuple["np.ndarray", ...]:
    """``paired_t`` along the last axis of arrays (>= 2 pairs; leading axes broadcast), for
    simulations of many tables: (mean difference, t, two-sided p, CI low, CI high). The tail comes
    from ``scipy.special.stdtr`` (what ``ttest_rel`` uses; ablate.tdist equals it to ~1e-13), the
    quantile from ablate.tdist, once per call."""
    import numpy as np
    from scipy import special

    base, other = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    d = other - base
    n = d.shape[-1]
    mean = np.mean(d, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.mean((d - mean[..., None]) ** 2, axis=-1) * (n / (n - 1))
        se = np.sqrt(var / n)
        t = mean / se
    p = 2 * special.stdtr(n - 1, -np.abs(t))
    p = np.where(np.isnan(p) & (mean == 0.0), 1.0, p)
    q = tdist.isf_two_sided(1 - (1 - alpha), n - 1)
    return mean, t, p, -q * se + mean, q * se + mean


def holm_adjust(p: Sequence[float]) -> list[float]:
    """``holm`` of one family, in pure Python (what one table needs): nan stays nan, out of m."""
    tested = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m = len(tested)
    out = [math.nan] * len(p)
    running = 0.0
    for j, (v, i) in enumerate(tested):
        running = max(running, (m - j) * v)
        out[i] = min(1.0, running)
    return out


def holm(p: "np.ndarray | Sequence[float]", axis: int = -1) -> "np.ndarray":
    """Holm's step-down adjusted p-values along ``axis``; nan marks a hypothesis not tested, which
    is left out of the family (it stays nan and does not count in m).

    With the m tested p-values sorted, p(1) <= ... <= p(m), the adjusted value of the i-th is
    max over j <= i of min(1, (m - j + 1) p(j)); rejecting where it is <= alpha is Holm's test,
    which keeps the family-wise error rate at alpha under any dependence between the tests.
    (``scipy.stats.false_discovery_control`` is Benjamini-Hochberg, which bounds the false
    discovery rate instead: a weaker promise.)"""
    import numpy as np

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


def significant(p_adjusted: "np.ndarray", alpha: float = ALPHA) -> "np.ndarray":
    """True where the adjusted p is <= alpha (False where untested: nan)."""
    import numpy as np

    return np.asarray(p_adjusted) <= alpha


_RECENT: dict[Any, list[Paired]] = {}  # the last comparisons made, by their inputs (see below)
RECENT_COMPARISONS = 64  # a dashboard builds every study's view before their tables


def compare_with_baseline(baseline: Mapping[int, float], arms: Sequence[Mapping[int, float]],
                          alpha: float = ALPHA) -> list[Paired]:
    """Compare every arm (each {seed: value}) with ``baseline``, pairing by seed; the arms with
    at least ``MIN_PAIRS`` pairs are tested and Holm-adjusted together (see the module doc).

    The last few results are kept by their inputs: the dashboard's view of a study and its table
    compare the same arms with the same baseline, and at 10^4 trials the tests are a tenth of the
    page's build. (The results are immutable; a copy of the list is returned.)"""
    key = (alpha, tuple(baseline.items()), tuple([tuple(a.items()) for a in arms]))
    done = _RECENT.get(key)
    if done is None:
        done = _compare(baseline, arms, alpha)
        if len(_RECENT) >= RECENT_COMPARISONS:  # the oldest goes (dicts keep insertion order)
            _RECENT.pop(next(iter(_RECENT)), None)
        _RECENT[key] = done
    return list(done)


def _compare(baseline: Mapping[int, float], arms: Sequence[Mapping[int, float]], alpha: float) -> list[Paired]:
    paired = [pair_by_seed(baseline, arm) for arm in arms]
    tests = {i: paired_t(pairs, alpha) for i, pairs in enumerate(paired) if len(pairs) >= MIN_PAIRS}
    adjusted = holm_adjust([tests[i][2] if i in tests else math.nan for i in range(len(arms))])
    family = len(tests)
    out: list[Paired] = []
    for i, pairs in enumerate(paired):
        n = len(pairs)
        if i not in tests:
            mean = math.fsum(o - b for b, o in pairs) / n if n else None
            out.append(Paired(n, mean, None, None, None, "none", None, 1 - alpha, family=family))
            continue
        mean, t, p, low, high = tests[i]
        out.append(Paired(n, mean, low, high, p, "t-test", adjusted[i] <= alpha, 1 - alpha, adjusted[i], t, family))
    return out


def paired_compare(baseline: Mapping[int, float], other: Mapping[int, float], alpha: float = ALPHA) -> Paired:
    """Compare one arm with ``baseline`` on its own (a family of one: no adjustment)."""
    return compare_with_baseline(baseline, [other], alpha)[0]
