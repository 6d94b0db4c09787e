"""Tests of rollout.metrics: hand-computed values, edge cases and invariances of every metric."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rollout.metrics import (catalog_coverage, category_entropy, episode_metrics, hit_rate_at_k,
                             intra_list_diversity, ncv_at_k, ndcg_at_k, novelty, popular_items,
                             recall_at_k, slate_metrics)

# e0 = x, e1 = y, e2 = x + y (45 degrees from both), e3 = -x, e4 = 3x (parallel to e0), e5 = 0.
EMB = np.array([[1, 0], [0, 1], [1, 1], [-1, 0], [3, 0], [0, 0]], np.float64)


# ----------------------------------------------------------------------------- episode_metrics

def test_episode_metrics_values():
    m = episode_metrics(np.array([2, 4]), np.array([1.0, 3.0]))
    assert m == {"Tint": 3.0, "Rcum": 2.0, "Rsin": pytest.approx(0.625), "episodes": 2}


def test_episode_metrics_zero_length_and_empty_and_mismatch():
    assert episode_metrics([0, 2], [0.0, 1.0])["Rsin"] == pytest.approx(0.25)  # 0/max(0,1), 1/2
    empty = episode_metrics([], [])
    assert empty["episodes"] == 0 and all(math.isnan(empty[k]) for k in ("Tint", "Rcum", "Rsin"))
    with pytest.raises(ValueError):
        episode_metrics([1, 2], [1.0])


# ----------------------------------------------------------------------------- coverage

def test_catalog_coverage_counts_distinct_items_ignoring_padding():
    assert catalog_coverage(np.array([[0, 1, -1], [1, 2, -1]]), 5) == pytest.approx(3 / 5)
    # any leading shape [..., K]
    assert catalog_coverage(np.array([[[0, 1]], [[2, 3]]]), 4) == 1.0


def test_catalog_coverage_edge_cases():
    assert catalog_coverage(np.zeros((0, 6), int), 10) == 0.0
    assert catalog_coverage(np.full((2, 3), -1), 10) == 0.0
    with pytest.raises(ValueError):
        catalog_coverage(np.array([[0, 5]]), 5)
    with pytest.raises(ValueError):
        catalog_coverage(np.array([[0, -2]]), 5)
    with pytest.raises(TypeError):
        catalog_coverage(np.array([[0.0, 1.0]]), 5)


# ----------------------------------------------------------------------------- ILD

def test_ild_hand_computed():
    # slate A [0, 1, 3]: d(0,1)=1, d(0,3)=2, d(1,3)=1 -> 4/3.  slate B [0, 2, -1]: 1 - 1/sqrt(2).
    # slate C [1, -1, -1] has a single item: no pairs, skipped.
    slates = np.array([[0, 1, 3], [0, 2, -1], [1, -1, -1]])
    expected = (4 / 3 + (1 - 1 / math.sqrt(2))) / 2
    assert intra_list_diversity(slates, EMB) == pytest.approx(expected)


def test_ild_identical_and_parallel_items_give_zero():
    assert intra_list_diversity(np.array([[2, 2, 2]]), EMB) == pytest.approx(0.0, abs=1e-12)
    assert intra_list_diversity(np.array([[0, 4]]), EMB) == pytest.approx(0.0, abs=1e-12)


def test_ild_zero_vector_has_distance_one():
    assert intra_list_diversity(np.array([[0, 5]]), EMB) == pytest.approx(1.0)


def test_ild_permutation_invariant():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((30, 5))
    slates = rng.integers(0, 30, size=(8, 6))
    slates[0, 3:] = -1
    base = intra_list_diversity(slates, emb)
    for _ in range(3):
        perm = np.argsort(rng.random(slates.shape), axis=1)
        assert intra_list_diversity(np.take_along_axis(slates, perm, 1), emb) == pytest.approx(base)


def test_ild_empty_or_no_pairs_is_nan():
    assert math.isnan(intra_list_diversity(np.zeros((0, 4), int), EMB))
    assert math.isnan(intra_list_diversity(np.array([[1, -1], [3, -1]]), EMB))


# ----------------------------------------------------------------------------- category entropy

CATS = np.array([0, 0, 1, 2])


def test_category_entropy_hand_computed():
    slates = np.array([[0, 1, 2], [3, -1, -1]])      # categories 0, 0, 1, 2 -> p = .5, .25, .25
    h = 1.5 * math.log(2)
    assert category_entropy(slates, CATS, 3) == pytest.approx(h)
    assert category_entropy(slates, CATS, 3, normalized=True) == pytest.approx(h / math.log(3))
    # an unused fourth category changes only the normaliser: 1.5 ln2 / ln4 = 0.75
    assert category_entropy(slates, CATS, 4, normalized=True) == pytest.approx(0.75)


def test_category_entropy_edge_cases():
    assert category_entropy(np.array([[0, 1, 0]]), CATS, 3) == 0.0          # one category
    assert category_entropy(np.array([[0, 1]]), np.array([0, 0]), 1, normalized=True) == 0.0
    assert math.isnan(category_entropy(np.zeros((0, 3), int), CATS, 3))
    assert math.isnan(category_entropy(np.array([[-1, -1]]), CATS, 3))
    with pytest.raises(ValueError):
        category_entropy(np.array([[0]]), CATS, 2)                        # category 2 >= C


# ----------------------------------------------------------------------------- novelty

def test_novelty_laplace_smoothing_hand_computed():
    counts = np.array([3, 1, 0, 0])                  # p = 4/8, 2/8, 1/8, 1/8 -> 1, 2, 3, 3 bits
    assert novelty(np.array([[0, 1], [2, -1]]), counts) == pytest.approx(2.0)
    assert novelty(np.array([[3, 3]]), counts) == pytest.approx(3.0)


def test_novelty_without_smoothing():
    counts = np.array([3, 1, 0, 0])                  # p = 3/4, 1/4
    assert novelty(np.array([[0, 1]]), counts, smoothing=0.0) == pytest.approx(
        (-math.log2(0.75) + 2.0) / 2)
    assert novelty(np.array([[2]]), counts, smoothing=0.0) == math.inf


def test_novelty_edge_cases():
    assert math.isnan(novelty(np.zeros((0, 2), int), np.array([1, 1])))
    with pytest.raises(ValueError):
        novelty(np.array([[0]]), np.array([-1, 2]))
    with pytest.raises(ValueError):
        novelty(np.array([[0]]), np.array([0, 0]), smoothing=0.0)


def test_slate_metrics_matches_individual_functions():
    rng = np.random.default_rng(1)
    n, c = 40, 5
    cats, emb, pop = rng.integers(0, c, n), rng.standard_normal((n, 4)), rng.integers(0, 9, n)
    slates = rng.integers(0, n, size=(6, 4))
    out = slate_metrics(slates, cats, c, emb, pop, n)
    assert out == {"coverage": catalog_coverage(slates, n),
                   "diversity": intra_list_diversity(slates, emb),
                   "category_entropy": category_entropy(slates, cats, c),
                   "novelty": novelty(slates, pop)}


# ----------------------------------------------------------------------------- HR / NDCG

RANKED = np.array([[5, 3, 1], [2, 4, 6], [7, 8, 9]])
TARGET = np.array([3, 6, 0])                         # ranks 1, 2, absent


def test_hit_rate_hand_computed_and_k_beyond_list():
    assert hit_rate_at_k(RANKED, TARGET, 1) == 0.0
    assert hit_rate_at_k(RANKED, TARGET, 2) == pytest.approx(1 / 3)
    assert hit_rate_at_k(RANKED, TARGET, 3) == pytest.approx(2 / 3)
    assert hit_rate_at_k(RANKED, TARGET, 50) == pytest.approx(2 / 3)


def test_hit_rate_edge_cases():
    assert hit_rate_at_k(np.array([[-1, 4]]), np.array([4]), 2) == 1.0
    assert math.isnan(hit_rate_at_k(np.zeros((0, 3), int), np.zeros(0, int), 2))
    with pytest.raises(ValueError):
        hit_rate_at_k(RANKED, TARGET, 0)
    with pytest.raises(ValueError):
        hit_rate_at_k(RANKED, TARGET[:2], 2)


def test_ndcg_single_target_hand_computed():
    assert ndcg_at_k(RANKED, TARGET, 3) == pytest.approx((1 / math.log2(3) + 0.5) / 3)
    assert ndcg_at_k(RANKED, TARGET, 2) == pytest.approx((1 / math.log2(3)) / 3)
    assert ndcg_at_k(RANKED, TARGET, 9) == ndcg_at_k(RANKED, TARGET, 3)
    assert math.isnan(ndcg_at_k(np.zeros((0, 3), int), np.zeros(0, int), 2))


def test_ndcg_multi_target_hand_computed():
    rel = np.zeros((3, 10), bool)
    rel[0, [3, 1]] = True                            # user 0: hits at ranks 1 and 2 of [5, 3, 1]
    rel[1, 2] = True                                 # user 1: hit at rank 0
    # user 2 has no relevant items: skipped
    u0 = (1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(RANKED, rel, 3) == pytest.approx((u0 + 1.0) / 2)
    assert math.isnan(ndcg_at_k(RANKED, np.zeros((3, 10), bool), 3))


def test_ndcg_multi_target_one_hot_equals_single_target():
    rng = np.random.default_rng(2)
    ranked = np.stack([rng.permutation(20)[:8] for _ in range(30)])
    target = rng.integers(0, 20, 30)
    for k in (1, 5, 8, 12):
        assert ndcg_at_k(ranked, np.eye(20, dtype=bool)[target], k) == pytest.approx(
            ndcg_at_k(ranked, target, k))


def test_ndcg_repeats_and_padding_earn_nothing():
    rel = np.zeros((1, 5), bool)
    rel[0, 3] = True
    assert ndcg_at_k(np.array([[3, 3, -1]]), rel, 3) == pytest.approx(1.0)
    assert ndcg_at_k(np.array([[-1, 3, 3]]), rel, 3) == pytest.approx(1 / math.log2(3))


# ----------------------------------------------------------------------------- LAAC R@k / NCV@k

def test_recall_at_k_reward_weighted_hand_computed():
    rew = np.zeros((3, 5))
    rew[0, [1, 3, 4]] = [0.5, 1.0, 2.0]
    rew[1, 2] = 1.0
    rew[1, 0] = -1.0                                 # a negative reward is not a positive
    ranked = np.array([[3, 0, 1, 4], [0, 2, -1, -1], [1, 2, 3, 4]])   # user 2: no positives
    # k=2: user0 {3, 0} -> 1.0 / min(2, 3); user1 {0, 2} -> 1.0 / min(2, 1)
    assert recall_at_k(ranked, rew, 2) == pytest.approx((0.5 + 1.0) / 2)
    # k=10 > L=4: user0 -> 3.5 / min(4, 3); user1 -> 1.0
    assert recall_at_k(ranked, rew, 10) == pytest.approx((3.5 / 3 + 1.0) / 2)


def test_recall_at_k_binary_rewards_is_plain_recall_and_repeats_count_once():
    rel = np.zeros((1, 6))
    rel[0, [0, 1, 2, 3]] = 1.0
    assert recall_at_k(np.array([[0, 5, 1, 4]]), rel, 4) == pytest.approx(2 / 4)
    assert recall_at_k(np.array([[0, 0, 0]]), rel, 3) == pytest.approx(1 / 3)
    assert math.isnan(recall_at_k(np.array([[0, 1]]), np.zeros((1, 6)), 2))


def test_popular_items_top_share_ties_to_lower_id():
    counts = np.array([5, 9, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    assert np.flatnonzero(popular_items(counts, 0.1)).tolist() == [1, 2]
    assert np.flatnonzero(popular_items(counts[:10], 0.1)).tolist() == [1]
    assert np.flatnonzero(popular_items(counts[:15], 0.1)).tolist() == [1]   # floor(1.5) = 1
    assert popular_items(np.arange(30), 0.1).sum() == 3                      # 0.1 * 30 is 3.0000...4
    assert not popular_items(counts, 0.0).any()


def test_ncv_at_k_hand_computed():
    n = 10
    counts = np.zeros(n)
    counts[0] = 100                                  # item 0 is the popular top 10%
    rel = np.zeros((2, n))
    rel[0, [0, 1, 2]] = 1.0
    rel[1, 4] = 2.0
    train = np.zeros((2, n), bool)
    train[0, 1] = True
    ranked = np.array([[0, 1, 2, 3], [4, 5, -1, -1]])
    # user0: 0 popular, 1 seen in training, 2 novel & relevant, 3 not relevant -> 1/4
    # user1: two valid items, 4 novel & relevant -> 1/2
    assert ncv_at_k(ranked, rel, train, counts, 4) == pytest.approx((1 / 4 + 1 / 2) / 2)
    # with no popular set, item 0 becomes novel for user0 -> 2/4
    assert ncv_at_k(ranked, rel, train, counts, 4, popular_share=0.0) == pytest.approx(0.5)
    # k=1: user0 top [0] -> 0; user1 top [4] -> 1
    assert ncv_at_k(ranked, rel, train, counts, 1) == pytest.approx(0.5)


def test_ncv_at_k_edge_cases():
    rel, train, counts = np.ones((1, 4)), np.zeros((1, 4), bool), np.ones(4)
    assert math.isnan(ncv_at_k(np.array([[-1, -1]]), rel, train, counts, 2))
    assert ncv_at_k(np.array([[2, 2]]), rel, train, counts, 10) == 1.0    # repeat counts once
    with pytest.raises(ValueError):
        ncv_at_k(np.array([[0]]), rel, train, np.ones(5), 1)


def test_recall_with_one_held_out_item_per_user_is_its_reward_when_hit() -> None:
    ranked = np.array([[3, 1, 2], [0, 4, 5], [7, 8, 9]])
    target, reward = np.array([1, 9, 2]), np.array([0.8, 0.4, 0.0])
    # user 0 hits (0.8), user 1 misses (0), user 2 has no positive item (skipped)
    assert recall_at_k(ranked, target, 3, weights=reward) == pytest.approx(0.4)
    assert recall_at_k(ranked, target, 3) == pytest.approx(1 / 3)  # unweighted: HR@3
    # the same as the [U, N] form with one positive per user
    dense = np.zeros((3, 10))
    dense[np.arange(3), target] = reward
    assert recall_at_k(ranked, target, 2, weights=reward) == pytest.approx(recall_at_k(ranked, dense, 2))
    with pytest.raises(ValueError, match="weights must be"):
        recall_at_k(ranked, target, 3, weights=reward[:2])
    with pytest.raises(ValueError, match="weights go with one held-out item"):
        recall_at_k(ranked, dense, 3, weights=reward)
