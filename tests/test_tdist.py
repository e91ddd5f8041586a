"""ablate.tdist (Student's t without scipy) against scipy.special's stdtr / stdtrit (Boost), to
1e-12 relative over 1..1000 degrees of freedom and t from 1e-8 to 1e150. Where the two disagree,
scipy is the one that is off, checked against closed forms: with 1 degree of freedom (Cauchy) scipy
loses digits for t below ~1e-4 (1 - p is then 2/pi atan t), and underflows past t ~ 1e154."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from ablate import tdist

DF = st.integers(1, 1000)
T = st.floats(-8.0, 150.0).map(lambda e: 10.0 ** e)  # |t| over 158 orders of magnitude


def _reference_p(t: float, df: int) -> float:
    if df == 1:
        return 2 / math.pi * math.atan2(1.0, t)  # exact: the Cauchy tail
    return float(2 * special.stdtr(df, -t))


@settings(max_examples=600, deadline=None)
@given(T, DF)
def test_two_sided_p_is_scipys(t, df):
    want = _reference_p(t, df)
    got = tdist.two_sided_p(t, df)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-300)
    assert tdist.two_sided_p(-t, df) == got


@settings(max_examples=300, deadline=None)
@given(st.floats(0.0, 40.0), DF)
def test_sf_is_scipys(t, df):
    for x in (t, -t):
        want = math.atan2(1.0, x) / math.pi if df == 1 else float(special.stdtr(df, -x))  # Cauchy: exact
        assert tdist.sf(x, df) == pytest.approx(want, rel=1e-12, abs=1e-300)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.sampled_from([0.1, 0.05, 1 - (1 - 0.05), 0.01, 0.001]),
                 st.floats(-12.0, 0.0, exclude_max=True).map(lambda e: 10.0 ** e)), DF)
def test_quantile_is_scipys(p, df):
    """t.ppf(1 - p / 2) as scipy's confidence_interval computes its lower end (stdtrit at p / 2)."""
    want = -float(special.stdtrit(df, p / 2))
    assert tdist.isf_two_sided(p, df) == pytest.approx(want, rel=1e-12)
    assert tdist.two_sided_p(tdist.isf_two_sided(p, df), df) == pytest.approx(p, rel=1e-11)


def test_by_hand_and_degenerate():
    assert tdist.two_sided_p(0.0, 5) == 1.0 and tdist.two_sided_p(math.inf, 5) == 0.0
    assert tdist.two_sided_p(-math.inf, 1) == 0.0 and math.isnan(tdist.two_sided_p(math.nan, 3))
    # df = 2: p = 1 - t / sqrt(2 + t^2); df = 1: 1 - 2/pi atan t
    t = 2 * math.sqrt(3)
    assert tdist.two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-14)
    assert tdist.two_sided_p(1e200, 1) == pytest.approx(2 / math.pi / 1e200, rel=1e-13)  # past t^2 overflow
    assert tdist.isf_two_sided(0.05, 2) == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025), rel=1e-14)
    assert tdist.isf_two_sided(0.05, 1) == pytest.approx(12.706204736174698, rel=1e-14)
    assert tdist.isf_two_sided(1.0, 7) == 0.0 and tdist.isf_two_sided(0.0, 7) == math.inf
    assert tdist.isf_two_sided(0.05, 1000) == pytest.approx(1.9623390808264078, rel=1e-13)
    assert math.isnan(tdist.isf_two_sided(1.5, 3))
