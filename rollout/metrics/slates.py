"""Beyond-accuracy metrics of recommended slates: coverage, diversity, novelty, popularity, serendipity."""
from __future__ import annotations

import numpy as np

from rollout.metrics.core import _ids, _mean_or_nan
from rollout.metrics.ranking import popular_items


def catalog_coverage(slates, num_items: int) -> float:
    """Catalog coverage: ``|{items recommended at least once}| / num_items``.

    ``slates``: int ``[..., K]`` item ids of everything recommended (any leading shape; ``-1``
    padding ignored). ``num_items``: catalog size N (> 0). Returns a value in [0, 1]; an empty
    input (or only padding) recommends nothing, so 0.0. Ids >= N raise ``ValueError``.
    """
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1, got {num_items}")
    ids = _ids(slates, "slates", num_items).ravel()
    seen = np.zeros(num_items, bool)
    seen[ids[ids >= 0]] = True
    return float(seen.mean())


def intra_list_diversity(slates, item_embeddings) -> float:
    """Intra-list diversity (ILD): mean over slates of the mean pairwise cosine distance.

    For a slate s with valid items i_1..i_m (``-1`` padding dropped, duplicates kept)::

        ILD(s) = 2 / (m (m - 1)) * sum_{a < b} (1 - cos(e_{i_a}, e_{i_b}))

    and the result is the mean of ILD(s) over slates with m >= 2 (slates with fewer than two
    valid items have no pairs and are skipped; if none is left, or the input is empty: nan).
    ``slates``: int ``[S, K]`` (any ``[..., K]`` is flattened to slates; a 1-D array is one slate).
    ``item_embeddings``: float ``[N, D]``. Cosine is clipped to [-1, 1], so each distance is in
    [0, 2]; a zero embedding vector has cosine 0 with everything (distance 1). Identical items
    (or parallel embeddings) have distance 0; the order of items within a slate does not matter.
    """
    emb = np.asarray(item_embeddings, np.float64)
    if emb.ndim != 2:
        raise ValueError(f"item_embeddings must be [N, D], got shape {emb.shape}")
    ids = _ids(slates, "slates", emb.shape[0])
    if ids.size == 0:
        return float("nan")
    ids = ids.reshape(-1, ids.shape[-1])                                   # [S, K]
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
    vecs = unit[np.maximum(ids, 0)]                                        # [S, K, D]
    cos = np.clip(np.einsum("skd,sjd->skj", vecs, vecs), -1.0, 1.0)        # [S, K, K]
    valid = ids >= 0
    k = ids.shape[1]
    pairs = valid[:, :, None] & valid[:, None, :] & np.triu(np.ones((k, k), bool), 1)
    n_pairs = pairs.sum(axis=(1, 2))
    dist_sum = np.where(pairs, 1.0 - cos, 0.0).sum(axis=(1, 2))
    keep = n_pairs > 0
    return _mean_or_nan(dist_sum[keep] / n_pairs[keep])


def category_entropy(slates, item_category, num_categories: int, normalized: bool = False) -> float:
    """Shannon entropy (natural log) of the category distribution of all recommended items.

    Every valid entry of ``slates`` (int ``[..., K]``, ``-1`` padding ignored, repeats counted
    each time) adds one count to its item's category ``item_category[i]`` (int ``[N]``, values in
    ``[0, num_categories)``). With p_c = count_c / total::

        H = -sum_{c: p_c > 0} p_c ln p_c          (nats, in [0, ln C])

    ``normalized=True`` returns ``H / ln(C)`` in [0, 1] (C = ``num_categories``, unused categories
    included); for C == 1 the normalised value is 0.0. Empty input (or only padding): nan.
    """
    cats = np.asarray(item_category)
    if cats.ndim != 1:
        raise ValueError(f"item_category must be [N], got shape {cats.shape}")
    if num_categories < 1:
        raise ValueError(f"num_categories must be >= 1, got {num_categories}")
    if cats.size and (cats.min() < 0 or cats.max() >= num_categories):
        raise ValueError(f"item_category values must lie in [0, {num_categories})")
    ids = _ids(slates, "slates", cats.size).ravel()
    ids = ids[ids >= 0]
    if ids.size == 0:
        return float("nan")
    p = np.bincount(cats[ids], minlength=num_categories) / ids.size
    p = p[p > 0]
    h = float(-(p * np.log(p)).sum()) + 0.0                                # + 0.0: no -0.0
    if normalized:
        return h / float(np.log(num_categories)) if num_categories > 1 else 0.0
    return h


def novelty(slates, item_popularity, smoothing: float = 1.0) -> float:
    """Popularity-based novelty: mean self-information ``-log2 p_i`` of the recommended items.

    ``item_popularity``: ``[N]`` non-negative interaction counts of each item in the logs.
    ``p_i`` is the item's share of interactions with additive (Laplace) smoothing ``alpha =
    smoothing`` applied to every item, so that zero-count items get a finite probability::

        p_i = (count_i + alpha) / (sum_j count_j + alpha * N)

    (alpha = 1 by default; alpha = 0 gives the raw share, and ``inf`` for zero-count items).
    The mean is over every valid entry of ``slates`` (int ``[..., K]``, ``-1`` padding ignored,
    repeats counted each time), in bits. Empty input (or only padding): nan.
    """
    counts = np.asarray(item_popularity, np.float64)
    if counts.ndim != 1:
        raise ValueError(f"item_popularity must be [N], got shape {counts.shape}")
    if (counts < 0).any() or smoothing < 0:
        raise ValueError("item_popularity and smoothing must be non-negative")
    denom = counts.sum() + smoothing * counts.size
    if denom <= 0:
        raise ValueError("no interactions and no smoothing: probabilities are undefined")
    ids = _ids(slates, "slates", counts.size).ravel()
    ids = ids[ids >= 0]
    if ids.size == 0:
        return float("nan")
    with np.errstate(divide="ignore"):
        info = -np.log2((counts[ids] + smoothing) / denom)
    return float(info.mean())


def slate_metrics(slates, item_category, num_categories: int, item_embeddings, item_popularity,
                  num_items: int, *, normalized_entropy: bool = False) -> dict[str, float]:
    """The slate-level metrics of the evaluation tables, on the same ``slates`` (int ``[S, K]``).

    Keys: ``coverage`` (``catalog_coverage``), ``diversity`` (``intra_list_diversity``),
    ``category_entropy`` (``category_entropy``, nats unless ``normalized_entropy``) and
    ``novelty`` (``novelty`` with the default Laplace smoothing); see each for its definition.
    """
    return {
        "coverage": catalog_coverage(slates, num_items),
        "diversity": intra_list_diversity(slates, item_embeddings),
        "category_entropy": category_entropy(slates, item_category, num_categories,
                                             normalized=normalized_entropy),
        "novelty": novelty(slates, item_popularity),
    }

def div_ratio(slates) -> float:
    """DivRatio: distinct items over items recommended, ``|{i recommended}| / |recommended entries|``.

    Over every valid entry of ``slates`` (int ``[..., K]``, ``-1`` padding ignored, repeats counted
    in the denominator). 1 = no item was ever recommended twice; empty input: nan."""
    ids = _ids(slates, "slates").ravel()
    ids = ids[ids >= 0]
    return float(np.unique(ids).size / ids.size) if ids.size else float("nan")


def popularity_percentiles(item_popularity) -> np.ndarray:
    """[N] each item's popularity percentile in [0, 1]: its rank by count, ascending, over N - 1
    (ties share their average rank; 1 = the most popular item, 0 = the least; N == 1: 0.5)."""
    counts = np.asarray(item_popularity, np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"item_popularity must be a non-empty [N], got shape {counts.shape}")
    if counts.size == 1:
        return np.full(1, 0.5)
    values, inverse, tied = np.unique(counts, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(tied)[:-1]])                   # rank of each value's first item
    average = first + (tied - 1) / 2.0
    return average[inverse] / (counts.size - 1)


def popularity_bias(slates, item_popularity) -> float:
    """Popularity bias: the mean popularity percentile (`popularity_percentiles`) of the recommended
    items (every valid entry of ``slates``, repeats counted). 0.5 = as popular as a uniformly random
    item of the catalog; higher = the policy leans on popular items. Empty input: nan."""
    pct = popularity_percentiles(item_popularity)
    ids = _ids(slates, "slates", pct.size).ravel()
    ids = ids[ids >= 0]
    return float(pct[ids].mean()) if ids.size else float("nan")


def serendipity(slates, liked, unexpected) -> float:
    """Serendipity (Ge et al. 2010; Kaminskas and Bridge 2016): the share of recommended items that
    are both liked and unexpected, ``|liked ∩ unexpected| / |recommended|``.

    ``slates``: int ``[S, K]`` (``-1`` padding ignored); ``liked``: ``[S, K]`` the user's response
    to each entry (a click, or a value >= 0.5 counts as liked); ``unexpected``: bool ``[S, K]``,
    whether each entry is unexpected against a baseline (`unexpected_against_popularity`,
    `unexpected_against_history`). Empty input: nan."""
    ids = _ids(slates, "slates")
    like = np.asarray(liked, np.float64) >= 0.5
    unexp = np.asarray(unexpected, bool)
    if like.shape != ids.shape or unexp.shape != ids.shape:
        raise ValueError(f"liked {like.shape} and unexpected {unexp.shape} must match slates {ids.shape}")
    valid = ids >= 0
    return float((like & unexp & valid).sum() / valid.sum()) if valid.any() else float("nan")


def unexpected_against_popularity(slates, item_popularity, share: float = 0.1) -> np.ndarray:
    """[S, K] bool: the entry is not among the ``share`` most popular items (`popular_items`): what
    a popularity recommender, the primitive baseline, would not have shown."""
    ids = _ids(slates, "slates", len(item_popularity))
    return ~popular_items(item_popularity, share)[np.maximum(ids, 0)] & (ids >= 0)


def unexpected_against_history(slates, slate_users, history_items, item_category) -> np.ndarray:
    """[S, K] bool: the entry's category is not among the categories of the items in its user's
    history (``history_items``: int ``[U, H]`` per user id, ``-1`` = none; ``slate_users``: [S] the
    user id of each slate). A user with no history finds every category unexpected."""
    ids = _ids(slates, "slates", len(item_category))
    cats = np.asarray(item_category, np.int64)
    hist = _ids(history_items, "history_items", len(cats))
    users = np.asarray(slate_users, np.int64)
    if users.shape != ids.shape[:1]:
        raise ValueError(f"slate_users must be [S={ids.shape[0]}], got {users.shape}")
    c = int(cats.max(initial=0)) + 1
    known = np.zeros((hist.shape[0], c + 1), bool)                          # column c: padding
    known[np.arange(hist.shape[0])[:, None], np.where(hist >= 0, cats[np.maximum(hist, 0)], c)] = True
    return ~known[users[:, None], cats[np.maximum(ids, 0)]] & (ids >= 0)
