"""Fairness metrics on hand-computed cases: exposure between popularity groups (MGU, DGU) and the
gaps between user groups, with their edge cases (an empty group, ties, one group only)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rollout.metrics import (
    age_band,
    exposure_fairness,
    popularity_groups,
    user_fairness,
    user_group_gap,
    user_groupings,
)


def test_popularity_groups_cut_the_sorted_catalog_into_near_equal_runs():
    counts = [5, 9, 9, 0, 3, 7]                       # ties 9, 9: lower id first
    assert popularity_groups(counts, 2).tolist() == [1, 0, 0, 1, 1, 0]        # order 1, 2, 5 | 0, 4, 3
    assert popularity_groups(counts, 3).tolist() == [1, 0, 0, 2, 2, 1]        # 1, 2 | 5, 0 | 4, 3
    assert popularity_groups([1, 2, 3, 4, 5], 2).tolist() == [1, 1, 0, 0, 0]  # sizes 3 and 2
    with pytest.raises(ValueError, match="groups"):
        popularity_groups(counts, 7)


def test_mgu_and_dgu_by_hand():
    group = np.array([0, 0, 1, 1, 1, 1])              # catalog shares 1/3 and 2/3
    slates = np.array([[0, 1, 2], [0, 1, -1]])        # 4 entries in group 0, 1 in group 1
    out = exposure_fairness(slates, group)
    assert out["head_share"] == pytest.approx(0.8)
    assert out["MGU"] == pytest.approx((abs(0.8 - 1 / 3) + abs(0.2 - 2 / 3)) / 2)
    assert out["DGU"] == pytest.approx(abs(0.8 - 1 / 3))
    # Exposure in proportion to size is fair: both 0.
    fair = exposure_fairness(np.array([[0, 2, 3]]), group)
    assert fair["MGU"] == pytest.approx(0.0) and fair["DGU"] == pytest.approx(0.0)


def test_an_unexposed_group_and_an_empty_group_still_count():
    # Group 2 has no items (share 0 of the catalog, 0 of exposure: gap 0); group 1 is never shown.
    group = np.array([0, 0, 1, 1])
    out = exposure_fairness(np.array([[0, 1]]), group, groups=3)
    assert out["DGU"] == pytest.approx(0.5) and out["MGU"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert math.isnan(exposure_fairness(np.full((2, 3), -1), group)["MGU"])


def test_user_group_gap_over_known_groups_only():
    values = [1.0, 3.0, 2.0, 10.0]
    out = user_group_gap(values, np.array(["F", "M", "F", None], object))
    assert out["means"] == {"F": 1.5, "M": 3.0} and out["gap"] == pytest.approx(1.5)
    assert out["sizes"] == {"F": 2, "M": 1}
    # Groups below the minimum size are reported but not compared.
    small = user_group_gap(values, np.array(["F", "M", "F", None], object), min_size=2)
    assert small["means"] == out["means"] and math.isnan(small["gap"])
    one = user_group_gap([1.0, 2.0], np.array(["F", "F"], object))
    assert one["means"] == {"F": 1.5} and math.isnan(one["gap"])       # nothing to compare
    assert math.isnan(user_group_gap([], np.array([], object))["gap"])


def test_age_bands_and_the_groupings_a_data_set_supports():
    assert age_band([7, 18, 24, 25, 44, 45, 56, 73, float("nan")]).tolist() == [
        "<18", "18-24", "18-24", "25-34", "35-44", "45-55", "56+", "56+", None]
    ml = user_groupings({"gender": np.array(["M", "F"], object), "age": np.array([30.0, 60.0]),
                         "occupation": np.array(["x", "y"], object)})
    assert set(ml) == {"gender", "age"} and ml["age"].tolist() == ["25-34", "56+"]
    assert user_groupings({}) == {}
    assert set(user_groupings({"user_active_degree": np.array(["high_active"], object)})) == {"activity"}


def test_user_fairness_reads_each_evaluated_users_group():
    groupings = {"gender": np.array(["M", "F", "M", "F"], object)}
    out = user_fairness(np.array([0, 1, 1, 2]), np.array([4, 2, 4, 6]), np.array([2.0, 1.0, 1.0, 3.0]), groupings)
    assert out["gender"]["Rcum"] == {"F": 1.0, "M": 2.5} and out["gender"]["Rcum_gap"] == pytest.approx(1.5)
    assert out["gender"]["Tint"] == {"F": 3.0, "M": 5.0} and out["gender"]["Tint_gap"] == pytest.approx(2.0)
    assert out["gender"]["users"] == {"F": 2, "M": 2}
