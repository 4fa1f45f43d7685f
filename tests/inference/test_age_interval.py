from __future__ import annotations

import numpy as np
import pytest

from agegender.inference.age_interval import age_intervals, coverage, tempered


def gaussian(centre: float, sigma: float, bins: int = 117) -> np.ndarray:
    ages = np.arange(bins)
    weights = np.exp(-0.5 * ((ages - centre) / sigma) ** 2)
    return weights / weights.sum()


def test_the_interval_holds_the_central_mass_of_the_distribution():
    probs = np.stack([gaussian(30, 5), gaussian(60, 2)])
    intervals = age_intervals(probs, 0.8)
    # a Gaussian's central 80% is +-1.28 sigma
    assert intervals[0].tolist() == pytest.approx([30 - 6.4, 30 + 6.4], abs=1)
    assert intervals[1].tolist() == pytest.approx([60 - 2.6, 60 + 2.6], abs=1)
    assert np.all(age_intervals(probs, 0.5)[:, 1] - age_intervals(probs, 0.5)[:, 0] < intervals[:, 1] - intervals[:, 0])


def test_a_point_mass_gives_a_one_year_interval():
    probs = np.zeros((1, 117))
    probs[0, 7] = 1
    assert age_intervals(probs).tolist() == [[7, 7]]


def test_a_temperature_above_one_widens_and_below_one_narrows():
    probs = gaussian(40, 4)[None]
    width = {t: np.diff(age_intervals(probs, 0.8, t))[0, 0] for t in (0.5, 1.0, 2.0)}
    assert width[0.5] < width[1.0] < width[2.0]
    assert tempered(probs, 1.0) is probs
    assert tempered(probs, 3.0).sum() == pytest.approx(1)


def test_coverage_counts_exact_ages_inside_and_leaves_unlabelled_out():
    intervals = np.array([[20, 30], [20, 30], [20, 30], [0, 5]], dtype=float)
    assert coverage(intervals, np.array([20, 31, np.nan, 5])) == pytest.approx(2 / 3)


def test_a_level_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="level"):
        age_intervals(gaussian(30, 5)[None], 1.0)
