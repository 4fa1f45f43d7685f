from __future__ import annotations

import math

import numpy as np
import pytest

from agegender.data.age_groups import (
    ADIENCE_GROUPS,
    AgeGroupError,
    group_interval,
    parse_age_group,
    resolve_age_groups,
)


def test_group_interval_widens_whole_years_by_half_a_year() -> None:
    assert group_interval("25-32") == (24.5, 32.5)
    assert group_interval("60+") == (59.5, math.inf)
    assert group_interval("(0, 2)") == (-0.5, 2.5)


@pytest.mark.parametrize("text", ["twenty", "30-20", "", "20-"])
def test_unparseable_groups_raise_one_line_naming_the_text(text: str) -> None:
    with pytest.raises(AgeGroupError, match="age group") as error:
        parse_age_group(text)
    assert "\n" not in str(error.value) and repr(text) in str(error.value)


def test_group_starting_beyond_the_oldest_predicted_age_is_rejected() -> None:
    with pytest.raises(AgeGroupError, match="oldest age"):
        parse_age_group("150+")


def test_adience_scheme_names_and_gap_ages_go_to_the_nearer_group() -> None:
    scheme = resolve_age_groups("adience")
    assert scheme.names == tuple(ADIENCE_GROUPS)
    ages = np.array([2, 3, 7, 14, 22, 23, 34, 35, 45, 46, 56, 57, 116])
    names = [scheme.names[i] for i in scheme.index_of_ages(ages)]
    assert names == [
        "0-2",
        "4-6",
        "8-13",
        "15-20",
        "15-20",
        "25-32",
        "25-32",
        "38-43",
        "38-43",
        "48-53",
        "48-53",
        "60+",
        "60+",
    ]


def test_predicted_ages_are_rounded_before_choosing_a_group() -> None:
    scheme = resolve_age_groups("fairface")
    assert [scheme.names[i] for i in scheme.index_of_ages(np.array([29.4, 29.5, 69.6]))] == ["20-29", "30-39", "70+"]


def test_labels_map_to_the_scheme_group_that_holds_them() -> None:
    scheme = resolve_age_groups("adience")
    assert scheme.index_of_label("(25, 32)") == scheme.names.index("25-32")
    assert scheme.index_of_label("30") == scheme.names.index("25-32")
    assert scheme.index_of_label("20-29") is None  # spans a gap and two groups: not scoreable


def test_group_probabilities_sum_bins_including_gap_bins() -> None:
    scheme = resolve_age_groups("adience")
    probs = np.zeros((2, 117))
    probs[0, [3, 5]] = 0.5  # 3 is a gap age that belongs to "4-6"
    probs[1, 33], probs[1, 36], probs[1, 90] = 0.2, 0.3, 0.5
    groups = scheme.probabilities(probs)
    assert groups.shape == (2, 8)
    np.testing.assert_allclose(groups.sum(1), 1.0)
    assert groups[0, scheme.names.index("4-6")] == pytest.approx(1.0)
    assert groups[1, [4, 5, 7]] == pytest.approx([0.2, 0.3, 0.5])


def test_custom_scheme_is_sorted_and_overlaps_are_rejected() -> None:
    assert resolve_age_groups("20-39, 0-19,40+").names == ("0-19", "20-39", "40+")
    with pytest.raises(AgeGroupError, match="'20-30' and '25-35' overlap"):
        resolve_age_groups("0-19,20-30,25-35")
    with pytest.raises(AgeGroupError, match="overlap"):
        resolve_age_groups("0-19,60+,70+")


@pytest.mark.parametrize("text", ["adiance", "imdb"])
def test_unknown_scheme_name_lists_the_known_ones(text: str) -> None:
    with pytest.raises(AgeGroupError, match="unknown age-group scheme .*adience, fairface"):
        resolve_age_groups(text)


def test_unparseable_group_in_a_custom_scheme_is_named() -> None:
    with pytest.raises(AgeGroupError, match="'twenty'"):
        resolve_age_groups("0-19,twenty")
