"""Confidence intervals against published values."""

from __future__ import annotations

import math

import pytest

from kapdata import stats


@pytest.mark.parametrize(
    ("df", "expected"),
    [
        (1, 12.7062),
        (2, 4.3027),
        (3, 3.1824),
        (5, 2.5706),
        (10, 2.2281),
        (20, 2.0860),
        (30, 2.0423),
        (120, 1.9799),
    ],
)
def test_t_quantile_975_matches_tables(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_other_probabilities_and_symmetry():
    assert stats.t_quantile(0.95, 10) == pytest.approx(1.8125, abs=1e-4)
    assert stats.t_quantile(0.995, 4) == pytest.approx(4.6041, abs=1e-4)
    assert stats.t_quantile(0.025, 10) == pytest.approx(-2.2281, abs=1e-4)
    assert stats.t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-9)
    assert stats.t_quantile(0.975, 100000) == pytest.approx(1.95998, abs=1e-4)
    for bad in ((0.0, 5), (1.0, 5), (0.975, 0)):
        with pytest.raises(ValueError):
            stats.t_quantile(*bad)


def test_t_cdf():
    assert stats.t_cdf(0.0, 3) == pytest.approx(0.5)
    assert stats.t_cdf(12.7062, 1) == pytest.approx(0.975, abs=1e-6)
    assert stats.t_cdf(-2.2281, 10) == pytest.approx(0.025, abs=1e-5)
    assert stats.t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (1, 2, 0.094531, 0.905469),
        (0, 10, 0.0, 0.277532),
        (10, 10, 0.722468, 1.0),
        (8, 10, 0.490162, 0.943318),
        (1, 3, 0.061492, 0.792340),
        (50, 100, 0.403832, 0.596168),
    ],
)
def test_wilson_interval_known_values(k, n, low, high):
    r = stats.wilson(k, n)
    assert (r.k, r.n, r.rate) == (k, n, pytest.approx(k / n))
    assert (r.ci_low, r.ci_high) == pytest.approx((low, high), abs=1e-6)


def test_wilson_of_nothing_is_empty():
    assert stats.wilson(0, 0).as_dict() == {"k": 0, "n": 0, "rate": None, "ci_low": None, "ci_high": None}


def test_t_interval_for_changes():
    values = [-6, -14, -2]
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    m = stats.t_interval(3, mean, sd)
    assert m.as_dict() == {
        "n": 3,
        "mean": pytest.approx(-7.333333, abs=1e-6),
        "sd": pytest.approx(6.110101, abs=1e-6),
        "ci_low": pytest.approx(-22.5116, abs=1e-4),
        "ci_high": pytest.approx(7.8450, abs=1e-4),
    }


def test_t_interval_needs_two_values():
    assert stats.t_interval(1, -4.0, None).as_dict() == {
        "n": 1,
        "mean": -4.0,
        "sd": None,
        "ci_low": None,
        "ci_high": None,
    }
    assert stats.t_interval(1, -4.0, float("nan")).ci_low is None
    assert stats.t_interval(0, None, None).mean is None
