"""Statistics for tables over seeds: mean ± std, and a paired comparison with the baseline arm.

Trials of two arms that share a seed are paired (same data order and initialisation seed), so the
comparison looks at the per-seed differences ``d = arm - baseline``:

* 3 or more pairs: a paired t-test (``scipy.stats.ttest_rel``'s numbers) with its two-sided
  p-value and the t confidence interval of the mean difference.
* 2 pairs: too few for a t-test to mean much (one degree of freedom), so a paired bootstrap
  percentile interval of the mean difference; with so few pairs the resampling is enumerated
  exactly (all n^n resamples), so the interval is deterministic. A difference is significant when
  the interval excludes 0.
* 0 or 1 pair: no test (``method == "none"``, ``significant is None``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

ALPHA = 0.05
EXACT_BOOTSTRAP_MAX = 200_000  # enumerate all n^n resamples up to this many, else sample
BOOTSTRAP_RESAMPLES = 20_000


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
    low: float | None  # confidence interval of the mean difference
    high: float | None
    p_value: float | None  # t-test only
    method: str  # "t-test", "bootstrap" or "none"
    significant: bool | None  # None when untested
    confidence: float = 1 - ALPHA

    def describe(self) -> str:
        if self.method == "none":
            return f"not tested ({self.n} paired seed{'s' if self.n != 1 else ''})"
        ci = f"{self.confidence:.0%} CI [{self.low:+.3g}, {self.high:+.3g}]"
        if self.method == "t-test":
            return f"paired t-test over {self.n} seeds: p = {self.p_value:.3g}, {ci}"
        return f"paired bootstrap over {self.n} seeds: {ci}"


def pair_by_seed(baseline: Mapping[int, float], other: Mapping[int, float]) -> list[tuple[float, float]]:
    """(baseline, other) for every seed present in both, in seed order."""
    return [(float(baseline[s]), float(other[s])) for s in sorted(set(baseline) & set(other))]


def bootstrap_interval(diffs: list[float], confidence: float = 1 - ALPHA, *, n_resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of ``diffs`` under resampling with replacement.

    Exact (every one of the n^n equally likely resamples) when that is at most
    ``EXACT_BOOTSTRAP_MAX``, else ``n_resamples`` random resamples from a fixed seed. Quantiles are
    the inverted empirical CDF, so for two values the 95% interval is [min, max].
    """
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n == 0:
        raise ValueError("bootstrap of no values")
    if n ** n <= EXACT_BOOTSTRAP_MAX:
        idx = np.array(list(itertools.product(range(n), repeat=n)))
    else:
        idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    means = d[idx].mean(axis=1)
    tail = (1 - confidence) / 2
    lo = float(np.quantile(means, tail, method="inverted_cdf"))
    hi = float(np.quantile(means, 1 - tail, method="inverted_cdf"))
    return lo, hi


def paired_compare(baseline: Mapping[int, float], other: Mapping[int, float], alpha: float = ALPHA) -> Paired:
    """Compare ``other`` with ``baseline`` (each {seed: value}), pairing by seed (see module doc)."""
    pairs = pair_by_seed(baseline, other)
    n = len(pairs)
    diffs = [o - b for b, o in pairs]
    if n < 2:
        return Paired(n, diffs[0] if diffs else None, None, None, None, "none", None, 1 - alpha)
    mean, sd = mean_std(diffs)
    if n == 2:
        lo, hi = bootstrap_interval(diffs, 1 - alpha)
        return Paired(n, mean, lo, hi, None, "bootstrap", not (lo <= 0.0 <= hi), 1 - alpha)
    assert sd is not None
    if sd == 0.0:  # identical differences: the t statistic is undefined; the answer is plain
        sig = mean != 0.0
        return Paired(n, mean, mean, mean, 0.0 if sig else 1.0, "t-test", sig, 1 - alpha)
    t, p = paired_t(diffs)
    half = t_quantile(1 - alpha / 2, n - 1) * sd / math.sqrt(n)
    return Paired(n, mean, mean - half, mean + half, p, "t-test", p < alpha, 1 - alpha)


def paired_t(diffs: list[float]) -> tuple[float, float]:
    """t statistic and two-sided p-value of the paired t-test on the differences: the same numbers
    as ``scipy.stats.ttest_rel(other, baseline)``, computed from scipy.special's Student t CDF
    because ttest_rel's per-call overhead (milliseconds) adds up over thousands of arms."""
    from scipy.special import stdtr

    n = len(diffs)
    mean, sd = mean_std(diffs)
    if not sd:
        raise ValueError("paired t-test needs differences that vary")
    t = mean / (sd / math.sqrt(n))
    return t, float(2 * stdtr(n - 1, -abs(t)))


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (scipy.stats.t.ppf)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, q))
