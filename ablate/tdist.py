"""Student's t distribution in pure Python: the two-sided tail probability and its inverse.

Why not ``scipy.stats.t``: importing scipy.stats costs about a second (scipy.special alone half a
second), which every ``ablate table`` typed at a prompt would pay for a handful of t-tests over
seeds. The numbers agree with scipy's (``special.stdtr`` / ``stdtrit``, i.e. Boost) to about
1e-13 relative over 1 to 1000 degrees of freedom, including far tails (tests/test_tdist.py).

The tail is the regularized incomplete beta function, P(|T| > t) = I_x(df/2, 1/2) with
x = df / (df + t^2), evaluated by its continued fraction (modified Lentz) on the side where it
converges fast, with the prefactor x^a (1-x)^b / B(a, b) taken in logs and log B computed by a
Stirling difference for large a, so that neither t^2 near 0 nor df near 1000 loses digits. The
quantile solves tail(t) = p by Newton steps on log tail, kept inside a bracket.
"""

from __future__ import annotations

import math
from functools import lru_cache

_EPS = 1e-16
_TINY = 1e-300
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _stirling_rest(a: float) -> float:
    """log Gamma(a) - ((a - 1/2) log a - a + log(2 pi) / 2), by its asymptotic series (a >= 10)."""
    r = 1.0 / (a * a)
    return (1.0 / 12 - r * (1.0 / 360 - r * (1.0 / 1260 - r * (1.0 / 1680 - r * (1.0 / 1188 - r * (
        691.0 / 360360 - r / 156.0)))))) / a


def _log_gamma_ratio(a: float, b: float) -> float:
    """log Gamma(a + b) - log Gamma(a), without the cancellation of two large lgamma values."""
    if a < 10:
        return math.lgamma(a + b) - math.lgamma(a)
    return ((a - 0.5) * math.log1p(b / a) + b * math.log(a + b) - b
            + _stirling_rest(a + b) - _stirling_rest(a))


def _log_beta(a: float, b: float) -> float:
    """log B(a, b) for the t distribution's arguments (one of them 1/2, the other df / 2)."""
    big, small = (a, b) if a >= b else (b, a)
    return math.lgamma(small) - _log_gamma_ratio(big, small)


def _beta_cf(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz), converging for x < (a+1)/(a+b+2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def _betainc(a: float, b: float, x: float, y: float) -> float:
    """Regularized incomplete beta I_x(a, b), given x and y = 1 - x (each computed without
    subtraction by the caller, so both keep their relative precision)."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    if x < (a + 1.0) / (a + b + 2.0):
        log_front = a * math.log(x) + b * math.log(y) - _log_beta(a, b)
        return math.exp(log_front) * _beta_cf(a, b, x) / a
    log_front = b * math.log(y) + a * math.log(x) - _log_beta(b, a)
    return 1.0 - math.exp(log_front) * _beta_cf(b, a, y) / b


def two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for T ~ Student's t with ``df`` degrees of freedom: the two-sided p of a
    t-test (``2 * scipy.stats.t.sf(abs(t), df)``). nan for nan; 0 for an infinite t."""
    if math.isnan(t) or math.isnan(df):
        return math.nan
    t = abs(t)
    if math.isinf(t):
        return 0.0
    if t == 0.0:
        return 1.0
    a = df / 2
    if t > 1e150:  # x = df / t^2 < 1e-297 (t^2 would overflow): the first term of the fraction
        return math.exp(a * (math.log(df) - 2 * math.log(t)) - _log_beta(a, 0.5)) / a
    tt = t * t
    return _betainc(a, 0.5, df / (df + tt), tt / (df + tt))


def sf(t: float, df: float) -> float:
    """P(T > t) (``scipy.stats.t.sf``)."""
    half = 0.5 * two_sided_p(t, df)
    return half if t >= 0 or math.isnan(t) else 1.0 - half


def pdf(t: float, df: float) -> float:
    """Density of Student's t at ``t``."""
    return math.exp(-(df + 1) / 2 * math.log1p(t * t / df) - 0.5 * math.log(df) - _log_beta(df / 2, 0.5))


@lru_cache(maxsize=1024)  # a table asks for the same (alpha, seeds - 1) once per arm
def isf_two_sided(p: float, df: float) -> float:
    """The t >= 0 with P(|T| >= t) = p (0 < p <= 1): the half-width, in standard errors, of a
    1 - p confidence interval (``scipy.stats.t.ppf(1 - p / 2, df)``)."""
    if math.isnan(p) or math.isnan(df) or not 0.0 <= p <= 1.0:
        return math.nan
    if p == 0.0:
        return math.inf
    if p == 1.0:
        return 0.0
    if df == 1:  # Cauchy: closed form (tan of the small angle when p is near 1)
        return math.tan(math.pi * (1.0 - p) / 2) if p > 0.5 else 1.0 / math.tan(math.pi * p / 2)
    if df == 2:  # p = 1 - t / sqrt(2 + t^2)
        return math.sqrt(2.0) * (1.0 - p) / math.sqrt(p * (2.0 - p))
    # start: the normal quantile, widened (Cornish-Fisher's first term) - within a few percent
    z = _normal_isf_two_sided(p)
    t = z + (z ** 3 + z) / (4 * df)
    lo, hi = 0.0, math.inf
    for _ in range(200):
        q = two_sided_p(t, df)
        if q > p:
            lo = t
        else:
            hi = t
        if q == p:
            return t
        # Newton on log q(t): d log q / dt = -2 pdf(t) / q
        step = (math.log(q) - math.log(p)) * q / (2.0 * pdf(t, df))
        new = t + step
        if not lo < new < hi:  # outside the bracket: bisect (or double while unbounded above)
            new = (lo + hi) / 2 if hi < math.inf else max(2 * t, lo * 2, 1.0)
        if abs(new - t) <= 4e-16 * t:
            return new
        t = new
    return t


def _normal_isf_two_sided(p: float) -> float:
    """z with P(|Z| >= z) = p for a standard normal Z (a starting point): statistics.NormalDist's
    inv_cdf, through CPython's C function it calls where there is one (importing ``statistics``
    imports fractions, decimal and random: ~5 ms of an `ablate table`)."""
    if not p > 1e-300:
        return 37.5
    try:
        from _statistics import _normal_dist_inv_cdf
    except ImportError:  # another Python
        from statistics import NormalDist

        return -NormalDist().inv_cdf(p / 2)
    return -_normal_dist_inv_cdf(p / 2, 0.0, 1.0)
