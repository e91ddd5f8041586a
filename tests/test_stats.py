"""ablate.stats: hand-computed cases, scipy.stats as the oracle on random data (hypothesis), Holm
against its brute-force definition, and a simulation on null data: the share of arms (and of
tables) marked significant when nothing differs stays at or below alpha."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats

from ablate.stats import (ALPHA, MIN_PAIRS, compare_with_baseline, holm, holm_adjust, mean_std, pair_by_seed,
                          paired_compare, paired_t, significant, summarize, t_tests)


def test_summarize_mean_and_sample_std():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s.mean == 2.5 and s.n == 4
    assert s.std == pytest.approx(math.sqrt(5 / 3))  # squares 2.25+0.25+0.25+2.25 = 5, over n-1 = 3


def test_summarize_one_none_and_nan():
    assert summarize([5.0]) == summarize([5.0, float("nan")])
    assert summarize([5.0]).std is None and summarize([5.0]).mean == 5.0
    assert summarize([]).mean is None and summarize([]).n == 0
    assert mean_std([2.0, 2.0]) == (2.0, 0.0)


def test_pairs_only_shared_seeds_with_numbers_in_seed_order():
    assert pair_by_seed({2: 1.0, 0: 3.0, 5: 9.0}, {0: 4.0, 2: 2.0, 7: 0.0}) == [(3.0, 4.0), (1.0, 2.0)]
    assert pair_by_seed({0: 1.0, 1: float("nan"), 2: 2.0}, {0: 1.5, 1: 3.0, 2: float("nan")}) == [(1.0, 1.5)]


# -- the paired t-test -----------------------------------------------------------------------
def test_t_test_three_pairs_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, t = 2 / (1/sqrt 3) = 2 sqrt 3; with 2 degrees of freedom the
    # two-sided p is 1 - t / sqrt(2 + t^2) = 1 - 2 sqrt3 / sqrt14, and t_0.975 = 0.95 / sqrt(2 * .975 * .025)
    base = {0: 70.0, 1: 71.0, 2: 72.0}
    other = {0: 71.0, 1: 73.0, 2: 75.0}
    p = paired_compare(base, other)
    t = 2 * math.sqrt(3)
    assert p.method == "t-test" and p.n == 3 and p.family == 1
    assert p.mean_diff == pytest.approx(2.0) and p.statistic == pytest.approx(t)
    assert p.p_value == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)  # 0.0742
    assert p.p_adjusted == p.p_value  # a family of one: Holm changes nothing
    q = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # 4.3027
    assert p.low == pytest.approx(2 - q / math.sqrt(3)) and p.high == pytest.approx(2 + q / math.sqrt(3))
    assert p.significant is False  # p = 0.074 > 0.05 and the interval holds 0
    assert p.low < 0 < p.high
    assert "paired t-test over 3 seeds: p = 0.0742" in p.describe()


def test_t_test_significant_and_matches_scipy():
    base = {0: 80.0, 1: 80.5, 2: 79.8, 3: 80.2}
    other = {0: 81.0, 1: 81.6, 2: 80.7, 3: 81.2}
    p = paired_compare(base, other)
    ref = stats.ttest_rel([other[s] for s in range(4)], [base[s] for s in range(4)])
    # t is scipy's arithmetic to the bit; p and the CI are ablate.tdist's, scipy's to ~1e-13
    assert p.statistic == float(ref.statistic) and p.mean_diff == float(ref._estimate)
    assert p.p_value == pytest.approx(float(ref.pvalue), rel=1e-13)
    assert (p.low, p.high) == pytest.approx(tuple(map(float, ref.confidence_interval())), rel=1e-13)
    assert p.significant is True and p.p_value < 0.05 and p.low > 0


def test_identical_differences():
    p = paired_compare({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.5, 1: 2.5, 2: 3.5})
    assert p.significant is True and p.mean_diff == pytest.approx(0.5) and p.low == p.high == pytest.approx(0.5)
    same = paired_compare({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.0, 1: 2.0, 2: 3.0})  # scipy: nan; no difference at all
    assert same.significant is False and same.p_value == 1.0 and same.mean_diff == 0.0


def test_two_pairs_are_not_tested():
    # issue 9: per-seed differences -0.6 and -0.3 agree in sign; the old exact bootstrap called that
    # significant (interval [min, max] = [-0.6, -0.3]); a t-test on them gives p = 0.205. Now: untested.
    p = paired_compare({0: 70.0, 1: 71.0}, {0: 69.4, 1: 70.7})
    assert p.method == "none" and p.significant is None and p.n == 2
    assert p.p_value is None and p.low is None and p.high is None
    assert p.mean_diff == pytest.approx(-0.45)
    assert stats.ttest_rel([69.4, 70.7], [70.0, 71.0]).pvalue == pytest.approx(0.205, abs=1e-3)
    assert "not tested (n<3: 2 paired seeds)" == p.describe()


def test_fewer_than_three_pairs_is_untested():
    assert MIN_PAIRS == 3
    one = paired_compare({0: 1.0, 1: 2.0}, {1: 5.0})
    assert one.method == "none" and one.significant is None and one.n == 1 and one.mean_diff == 3.0
    none = paired_compare({0: 1.0}, {1: 2.0})
    assert none.n == 0 and none.mean_diff is None
    assert "not tested" in none.describe()
    # huge, consistent differences on 3 seeds of which only 2 are shared: still untested
    assert paired_compare({0: 0.0, 1: 0.0, 2: 0.0}, {0: 9.0, 1: 9.1, 5: 9.2}).significant is None


def _values(n_min: int = MIN_PAIRS, n_max: int = 12):
    finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
    return st.integers(n_min, n_max).flatmap(lambda n: st.tuples(st.lists(finite, min_size=n, max_size=n),
                                                                 st.lists(finite, min_size=n, max_size=n)))


@settings(max_examples=200, deadline=None)
@given(_values(), st.sampled_from([0.05, 0.01, 0.1]))
@example(([270.0, 0.0, 67.0, 361.0, 239.0, -178.0, 736.0], [-46.0, -276.0, 0.0, -418.0, 385.0, -375.0, 374.0]), 0.05)
def test_one_arm_is_scipy_ttest_rel(pair, alpha):
    """The numbers are scipy's own, to 1e-12, whatever the data (degenerate differences aside). A
    confidence bound is mean -/+ half-width: near 0 it is a difference of two large numbers, so its
    tolerance is 1e-12 of their size (the example: -0.38181306845 from a mean of -141 and a half-width
    of 141, 1e-12 apart from scipy's)."""
    base, other = pair
    d = np.subtract(other, base)
    if np.all(d == d[0]):  # constant differences: scipy gives inf or nan, tested by hand above
        return
    p = paired_compare(dict(enumerate(base)), dict(enumerate(other)), alpha)
    ref = stats.ttest_rel(other, base)
    ci = ref.confidence_interval(confidence_level=1 - alpha)
    assert p.method == "t-test" and p.n == len(base) and p.confidence == 1 - alpha
    for mine, theirs in ((p.statistic, ref.statistic), (p.p_value, ref.pvalue)):
        assert mine == pytest.approx(float(theirs), rel=1e-12, abs=1e-12, nan_ok=True)  # subnormal differences: both nan
    size = abs(float(np.mean(d))) + abs(float(ci.high - ci.low)) / 2
    for mine, theirs in ((p.low, ci.low), (p.high, ci.high)):
        assert mine == pytest.approx(float(theirs), rel=1e-12, abs=1e-12 * max(1.0, size), nan_ok=True)
    assert p.significant == (p.p_value <= alpha)


@settings(max_examples=100, deadline=None)
@given(st.lists(_values(0, 8), min_size=1, max_size=6), st.data())
def test_many_arms_are_scipy_then_holm(arms, data):
    """Arms with different numbers of pairs (tested together, grouped by n) against one baseline:
    each tested arm's p is ttest_rel's, the adjusted p is Holm over the tested arms only."""
    n_base = max([len(b) for b, _ in arms] + [MIN_PAIRS])
    base = data.draw(st.lists(st.floats(-1e3, 1e3), min_size=n_base, max_size=n_base))
    others = [dict(enumerate(o)) for _, o in arms]  # arm j has seeds 0..len-1, all shared with the baseline
    got = compare_with_baseline(dict(enumerate(base)), others)
    raw = []
    for g, o in zip(got, others):
        n = len(o)
        assert g.n == n
        if n < MIN_PAIRS:
            assert g.method == "none" and g.significant is None and g.p_adjusted is None
            continue
        d = np.subtract(list(o.values()), base[:n])
        ref = 1.0 if np.all(d == 0) else float(stats.ttest_rel(list(o.values()), base[:n]).pvalue)
        assert g.p_value == pytest.approx(ref, rel=1e-12, abs=1e-300)
        raw.append(g.p_value)
    tested = [g for g in got if g.method == "t-test"]
    assert all(g.family == len(tested) for g in got)
    for g, adj in zip(tested, _holm_brute(raw)):
        assert g.p_adjusted == pytest.approx(adj, rel=1e-12, abs=1e-300)
        assert g.significant == (g.p_adjusted <= ALPHA)


# -- Holm ------------------------------------------------------------------------------------
def _holm_brute(p: list[float]) -> list[float]:
    """Holm's adjusted p by its definition as closed testing with Bonferroni tests: hypothesis i is
    rejected at level a iff every intersection S that holds i is, i.e. |S| min_{j in S} p_j <= a, so
    its adjusted p is the largest over S containing i of min(1, |S| min_{j in S} p_j)."""
    m = len(p)
    out = []
    for i in range(m):
        worst = 0.0
        for r in range(1, m + 1):
            for s in itertools.combinations(range(m), r):
                if i in s:
                    worst = max(worst, min(1.0, r * min(p[j] for j in s)))
        out.append(worst)
    return out


def test_holm_by_hand():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> max(0.06, 0.04) = 0.06
    adj = holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert list(significant(adj, 0.05)) == [True, False, False, True]
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])  # a family of one


def test_holm_leaves_untested_out_of_the_family():
    adj = holm([0.01, float("nan"), 0.03])  # m = 2, not 3
    assert adj[0] == pytest.approx(0.02) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.03)
    assert list(significant(adj)) == [True, False, True]
    assert np.isnan(holm([float("nan")] * 3)).all()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8))
def test_holm_is_its_brute_force_definition(p):
    assert holm(p) == pytest.approx(_holm_brute(p), rel=1e-12, abs=1e-300)
    assert holm_adjust(p) == list(holm(p))  # the table's pure-Python Holm is the array one, exactly


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.floats(0.0, 1.0), st.just(float("nan"))), min_size=1, max_size=8))
def test_holm_adjust_is_holm_with_untested(p):
    np.testing.assert_array_equal(holm_adjust(p), holm(p))


@settings(max_examples=200, deadline=None)
@given(_values(2, 300), st.sampled_from([0.05, 0.01, 0.1]))
def test_pure_python_t_test_is_the_array_one(pair, alpha):
    """paired_t (one table) and t_tests (simulations) agree: mean and t to the bit (both do numpy's
    pairwise sums, also past 8 and 128 pairs), p and CI to the precision of the t tail."""
    base, other = pair
    mine = paired_t(list(zip(base, other)), alpha)
    arr = t_tests(np.array([base]), np.array([other]), alpha)
    assert mine[0] == float(arr[0][0])
    assert mine[1] == float(arr[1][0]) or (math.isnan(mine[1]) and np.isnan(arr[1][0]))
    for got, want in zip(mine[2:], arr[2:]):
        assert got == pytest.approx(float(want[0]), rel=1e-12, abs=1e-300)


def test_holm_along_an_axis():
    rng = np.random.default_rng(3)
    p = rng.uniform(size=(50, 5))
    p[rng.uniform(size=p.shape) < 0.2] = np.nan
    rows = holm(p, axis=-1)
    cols = holm(p.T, axis=0)
    assert np.array_equal(np.isnan(rows), np.isnan(p)) and np.allclose(rows, cols.T, equal_nan=True)
    for r in range(len(p)):
        keep = ~np.isnan(p[r])
        if keep.any():
            assert rows[r][keep] == pytest.approx(_holm_brute(list(p[r][keep])), rel=1e-12)


# -- null simulation -------------------------------------------------------------------------
TABLES = 10_000  # simulated tables per seed count
ARMS = 4  # arms compared with one baseline per table
SLACK = 3 * math.sqrt(ALPHA * (1 - ALPHA) / TABLES)  # three standard errors of a share that equals alpha


def _null(n: int, rng: np.random.Generator, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """TABLES tables of a baseline and ARMS arms, n seeds each. A seed effect is shared by the arms
    of one seed (what pairing is for); the per-trial noise is independent; arms shifted by ``shift``."""
    seed_effect = rng.normal(0, 2.0, size=(TABLES, 1, n))
    base = 70 + seed_effect[:, 0, :] + rng.normal(0, 0.5, size=(TABLES, n))
    arms = 70 + shift + seed_effect + rng.normal(0, 0.5, size=(TABLES, ARMS, n))
    return base, arms


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_null_data_is_marked_significant_at_most_alpha(n):
    """When no arm differs from the baseline, the share of arms marked significant, and the share
    of tables with any arm marked significant (Holm's family-wise rate), are at most alpha within
    three standard errors; with 2 seeds nothing is tested, so exactly none."""
    rng = np.random.default_rng(100 + n)
    base, arms = _null(n, rng)
    if n < MIN_PAIRS:
        # too few seeds for t_tests: the table path must not test at all
        marked = [p.significant for b, a in zip(base[:2000], arms[:2000])
                  for p in compare_with_baseline(dict(enumerate(b)), [dict(enumerate(x)) for x in a])]
        assert marked.count(True) == 0 and set(marked) == {None}
        return
    _, _, p, _, _ = t_tests(base[:, None, :], arms)  # (tables, arms): the code path of one table, vectorised
    sig = significant(holm(p))
    per_arm, per_table = sig.mean(), sig.any(axis=1).mean()
    assert per_arm <= per_table <= ALPHA + SLACK, (per_arm, per_table)
    # the simulation can see an excess: uncorrected, each arm is called at alpha (the t-test is exact on
    # normal data) and a table with 4 arms has one false "significant" far more often than alpha
    raw = p <= ALPHA
    assert abs(raw.mean() - ALPHA) <= SLACK
    assert raw.any(axis=1).mean() > ALPHA + 5 * SLACK
    # and a real effect is found: the test is not just silent
    base, arms = _null(n, rng, shift=3.0)  # 4 standard deviations of a per-seed difference
    _, _, p_eff, _, _ = t_tests(base[:, None, :], arms)
    assert significant(holm(p_eff)).mean() > 0.5  # measured: 0.72 at 3 seeds, ~1 from 5


def test_table_path_agrees_with_the_vectorised_simulation():
    """compare_with_baseline (one table at a time) marks exactly what the simulation counted."""
    rng = np.random.default_rng(7)
    base, arms = _null(5, rng)
    base, arms = base[:300], arms[:300]
    _, _, p, _, _ = t_tests(base[:, None, :], arms)
    expect = significant(holm(p))
    for b, a, e in zip(base, arms, expect):
        got = compare_with_baseline(dict(enumerate(b)), [dict(enumerate(x)) for x in a])
        assert [g.significant for g in got] == list(e)
