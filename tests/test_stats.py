"""ablate.stats on cases small enough to compute by hand (and against scipy.stats as an oracle)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ablate.stats import (bootstrap_interval, mean_std, pair_by_seed, paired_compare, paired_t, summarize,
                          t_quantile)


def test_summarize_mean_and_sample_std():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s.mean == 2.5 and s.n == 4
    assert s.std == pytest.approx(math.sqrt(5 / 3))  # squares 2.25+0.25+0.25+2.25 = 5, over n-1 = 3


def test_summarize_one_none_and_nan():
    assert summarize([5.0]) == summarize([5.0, float("nan")])
    assert summarize([5.0]).std is None and summarize([5.0]).mean == 5.0
    assert summarize([]).mean is None and summarize([]).n == 0
    assert mean_std([2.0, 2.0]) == (2.0, 0.0)


def test_pairs_only_shared_seeds_in_seed_order():
    assert pair_by_seed({2: 1.0, 0: 3.0, 5: 9.0}, {0: 4.0, 2: 2.0, 7: 0.0}) == [(3.0, 4.0), (1.0, 2.0)]


def test_t_test_three_pairs_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, t = 2 / (1/sqrt 3) = 2 sqrt 3; with 2 degrees of freedom the
    # two-sided p is 1 - t / sqrt(2 + t^2) = 1 - 2 sqrt3 / sqrt14, and t_0.975 = 0.95 / sqrt(2 * .975 * .025)
    base = {0: 70.0, 1: 71.0, 2: 72.0}
    other = {0: 71.0, 1: 73.0, 2: 75.0}
    p = paired_compare(base, other)
    t = 2 * math.sqrt(3)
    assert p.method == "t-test" and p.n == 3
    assert p.mean_diff == pytest.approx(2.0)
    assert p.p_value == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)  # 0.0742
    q = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # 4.3027
    assert p.low == pytest.approx(2 - q / math.sqrt(3)) and p.high == pytest.approx(2 + q / math.sqrt(3))
    assert p.significant is False  # p = 0.074 > 0.05 and the interval holds 0
    assert p.low < 0 < p.high


def test_t_test_significant_and_matches_scipy():
    from scipy import stats

    base = {0: 80.0, 1: 80.5, 2: 79.8, 3: 80.2}
    other = {0: 81.0, 1: 81.6, 2: 80.7, 3: 81.2}
    p = paired_compare(base, other)
    ref = stats.ttest_rel([other[s] for s in range(4)], [base[s] for s in range(4)])
    assert p.p_value == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert paired_t([o - b for b, o in pair_by_seed(base, other)])[0] == pytest.approx(float(ref.statistic))
    assert p.significant is True and p.p_value < 0.05
    assert p.low > 0


@pytest.mark.parametrize("df", [1, 2, 3, 7, 30])
def test_t_quantile_matches_scipy(df):
    from scipy import stats

    assert t_quantile(0.975, df) == pytest.approx(float(stats.t.ppf(0.975, df)), rel=1e-9)


def test_random_cases_match_scipy():
    from scipy import stats

    rng = np.random.default_rng(1)
    for n in (3, 4, 6, 10):
        b = rng.normal(70, 1, n)
        o = b + rng.normal(0.3, 0.5, n)
        p = paired_compare(dict(enumerate(b)), dict(enumerate(o)))
        assert p.p_value == pytest.approx(float(stats.ttest_rel(o, b).pvalue), rel=1e-8)


def test_identical_differences():
    p = paired_compare({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.5, 1: 2.5, 2: 3.5})
    assert p.significant is True and p.mean_diff == pytest.approx(0.5) and p.low == p.high == pytest.approx(0.5)
    same = paired_compare({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.0, 1: 2.0, 2: 3.0})
    assert same.significant is False and same.p_value == 1.0


def test_two_pairs_use_the_exact_bootstrap():
    # resamples of (1, 3): means 1, 2, 2, 3 with equal weight; the 2.5% and 97.5% points are 1 and 3
    p = paired_compare({0: 10.0, 1: 10.0}, {0: 11.0, 1: 13.0})
    assert p.method == "bootstrap" and (p.low, p.high) == (1.0, 3.0) and p.significant is True
    assert p.mean_diff == 2.0 and p.p_value is None
    q = paired_compare({0: 10.0, 1: 10.0}, {0: 9.0, 1: 12.0})  # differences -1, 2: the interval holds 0
    assert (q.low, q.high) == (-1.0, 2.0) and q.significant is False
    assert "bootstrap" in q.describe()


def test_bootstrap_three_values_by_hand():
    # 27 resamples of (0, 0, 3): the mean is 0 with probability 8/27 > 2.5%, and 3 with 1/27 > 2.5%
    assert bootstrap_interval([0.0, 0.0, 3.0]) == (0.0, 3.0)
    # 256 resamples of (0, 0, 3, 3): the mean is 0 with probability 1/16 and at most 0.75 (at most one 3
    # drawn) with 5/16, so the 10% point is 0.75 and, by symmetry, the 90% point 2.25
    assert bootstrap_interval([0.0, 0.0, 3.0, 3.0], confidence=0.80) == (0.75, 2.25)
    assert bootstrap_interval([0.0, 0.0, 3.0, 3.0], confidence=0.95) == (0.0, 3.0)  # 1/16 > 2.5% at each end


def test_bootstrap_large_n_is_seeded():
    d = list(np.random.default_rng(0).normal(1, 1, 12))
    assert bootstrap_interval(d) == bootstrap_interval(d)


def test_fewer_than_two_pairs_is_untested():
    one = paired_compare({0: 1.0, 1: 2.0}, {1: 5.0})
    assert one.method == "none" and one.significant is None and one.n == 1 and one.mean_diff == 3.0
    none = paired_compare({0: 1.0}, {1: 2.0})
    assert none.n == 0 and none.mean_diff is None
    assert "not tested" in none.describe()
