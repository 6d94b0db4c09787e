"""Every metric the project reports, defined in one place (the survey's evaluation protocol).

Every evaluation (LERL, IL-Rec, LAAC, the references, the LLM world) computes its numbers with
these functions; `learner.evaluation.summarise` is where a simulated evaluation calls them all.
Pure numpy, vectorised over users and slates, on plain arrays: no light library we know of covers
beyond-accuracy and fairness metrics of slates in a simulator, and a per-user library call would
be slower; the ranking metrics are checked against scikit-learn's `ndcg_score` in the tests.

Outcome metrics
- accuracy (`ranking`): HR@k, NDCG@k (one or several relevant items), LAAC's R@k and NCV@k;
- diversity (`slates`): catalog coverage, DivRatio (distinct over recommended items), intra-list
  diversity, category entropy;
- novelty and serendipity (`slates`): popularity novelty (self-information); serendipity, liked and
  unexpected, against a popularity baseline and against the user's own history;
- bias (`slates`): popularity bias, the mean popularity percentile of the recommended items;
- fairness (`fairness`): item-side exposure between popularity groups (MGU, DGU, head share) and
  user-side gaps in return and length between user groups (gender, age band, activity level).
Process metrics (`episodes`): Tint, Rcum, Rsin; convergence speed (env steps to 90 % of a learning
curve's final return) and its late rise (its last 10 % of updates over its 50-70 %: a plateau is 0).
Explanations are scored in `learner.explanations` (they need the LLM service).

Conventions shared by all functions below:

- Item ids are non-negative ints ``< num_items``. In slates and ranked lists the id ``-1`` is
  padding and is ignored; any other negative id raises ``ValueError``.
- ``slates`` / ``ranked`` are int arrays ``[..., K]`` / ``[U, L]`` whose last axis is the list.
- ``k`` larger than the ranked lists' length ``L`` is treated as ``k = L`` (the whole list);
  ``k < 1`` raises ``ValueError``.
- Within one ranked list an item counts once: a repeated id (after its first position) is ignored
  by the accuracy metrics, exactly like padding.
- Means over users/slates skip the ones a metric is undefined for (stated per function); if none
  is left, or the input is empty, the result is ``nan`` (except ``catalog_coverage``: 0.0).
"""
from rollout.metrics.episodes import convergence_steps, episode_metrics, late_rise
from rollout.metrics.fairness import (
    age_band,
    exposure_fairness,
    popularity_groups,
    user_fairness,
    user_group_gap,
    user_groupings,
)
from rollout.metrics.ranking import hit_rate_at_k, ncv_at_k, ndcg_at_k, popular_items, recall_at_k
from rollout.metrics.slates import (
    catalog_coverage,
    category_entropy,
    div_ratio,
    intra_list_diversity,
    novelty,
    popularity_bias,
    popularity_percentiles,
    serendipity,
    slate_metrics,
    unexpected_against_history,
    unexpected_against_popularity,
)

__all__ = [
    "age_band", "catalog_coverage", "category_entropy", "convergence_steps", "div_ratio", "episode_metrics",
    "exposure_fairness", "hit_rate_at_k", "intra_list_diversity", "late_rise", "ncv_at_k", "ndcg_at_k", "novelty",
    "popular_items", "popularity_bias", "popularity_groups", "popularity_percentiles", "recall_at_k",
    "serendipity", "slate_metrics", "unexpected_against_history", "unexpected_against_popularity",
    "user_fairness", "user_group_gap", "user_groupings",
]
