"""DivRatio, popularity bias, serendipity and the convergence speed on hand-computed cases, and the
ranking metrics against scikit-learn's NDCG."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rollout.metrics import (
    convergence_steps,
    div_ratio,
    late_rise,
    ndcg_at_k,
    popularity_bias,
    popularity_percentiles,
    serendipity,
    unexpected_against_history,
    unexpected_against_popularity,
)


def test_div_ratio_counts_repeats_in_the_denominator():
    assert div_ratio(np.array([[0, 1, 2], [2, 3, -1]])) == pytest.approx(4 / 5)
    assert div_ratio(np.array([[1, 1], [1, 1]])) == pytest.approx(1 / 4)
    assert math.isnan(div_ratio(np.full((1, 3), -1)))


def test_popularity_percentiles_share_ties_and_the_bias_is_their_mean():
    pct = popularity_percentiles([10, 0, 5, 5])      # ranks ascending: 1 -> 0, 2 and 3 -> 1.5, 0 -> 3
    assert pct.tolist() == pytest.approx([1.0, 0.0, 0.5, 0.5])
    assert popularity_bias(np.array([[0, 1], [2, -1]]), [10, 0, 5, 5]) == pytest.approx(0.5)
    assert popularity_bias(np.array([[0, 0]]), [10, 0, 5, 5]) == pytest.approx(1.0)
    assert popularity_percentiles([3]).tolist() == [0.5]


def test_serendipity_is_liked_and_unexpected_over_recommended():
    slates = np.array([[0, 1, 2], [3, 4, -1]])
    liked = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
    unexpected = np.array([[True, False, True], [True, True, False]])
    assert serendipity(slates, liked, unexpected) == pytest.approx(2 / 5)   # (0) and (3) of 5 entries
    with pytest.raises(ValueError, match="must match"):
        serendipity(slates, liked[:1], unexpected)


def test_unexpected_against_popularity_is_outside_the_top_share():
    counts = np.arange(10)[::-1]                      # item 0 the most popular
    got = unexpected_against_popularity(np.array([[0, 5, -1]]), counts, share=0.2)   # top 2: items 0, 1
    assert got.tolist() == [[False, True, False]]


def test_unexpected_against_history_is_a_category_the_user_never_had():
    category = np.array([0, 0, 1, 2, 2])
    history = np.array([[0, 2, -1], [-1, -1, -1]])    # user 0 had categories 0 and 1; user 1 nothing
    slates = np.array([[1, 3], [1, 3]])
    got = unexpected_against_history(slates, np.array([0, 1]), history, category)
    assert got.tolist() == [[False, True], [True, True]]


def test_convergence_steps_to_ninety_percent_of_the_final_return():
    steps = np.arange(1, 11) * 100
    returns = np.array([0.0, 1.0, 2.0, 5.0, 9.0, 10.0, 10.0, 10.0, 10.0, 10.0])
    # No smoothing: final 10, the line at 9: reached at point 5 (500 env steps).
    assert convergence_steps(steps, returns, smooth=1) == 500.0
    # Smoothed over 2 points: 9.5 at point 6 (600); final = mean of the last 2 = 10.
    assert convergence_steps(steps, returns, smooth=2) == 600.0
    # A falling curve is above 90 % of its (lower) final return from the start.
    assert convergence_steps(steps, returns[::-1]) == 100.0
    assert math.isnan(convergence_steps(steps, -returns))                 # no positive final return
    assert math.isnan(convergence_steps([1], [3.0]))


def test_late_rise_compares_a_curves_end_with_its_middle():
    flat = np.full(20, 2.0)
    assert late_rise(flat) == 0.0
    rising = np.arange(1, 21, dtype=float)         # middle (points 11-14) 12.5, last two 19.5
    assert late_rise(rising) == pytest.approx(19.5 / 12.5 - 1)
    assert late_rise(rising[::-1]) < 0                   # falling at the end
    assert math.isnan(late_rise(rising[:9]))              # too short to say
    assert math.isnan(late_rise(-rising))                 # no positive middle
    with pytest.raises(ValueError):
        late_rise(rising, last=0.5, earlier=(0.4, 0.7))


def test_ndcg_agrees_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn (a vLLM dependency) is the reference")
    rng = np.random.default_rng(0)
    users, n, k = 40, 30, 10
    relevant = rng.random((users, n)) < 0.15
    relevant[0] = False
    scores = rng.random((users, n))
    ranked = np.argsort(-scores, axis=1)
    keep = relevant.any(1)                            # sklearn scores a user with nothing relevant 0; we skip them
    expected = sklearn_metrics.ndcg_score(relevant[keep].astype(float), scores[keep], k=k)
    assert ndcg_at_k(ranked, relevant, k) == pytest.approx(expected)
