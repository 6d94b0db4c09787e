"""Accuracy metrics of ranked lists against held-out items: HR, NDCG, and LAAC's R@k and NCV@k."""
from __future__ import annotations

import numpy as np

from rollout.metrics.core import _first_valid, _gather, _ids, _mean_or_nan, _ranked_topk, _user_matrix


def hit_rate_at_k(ranked, target, k: int) -> float:
    """HR@k: share of users whose one held-out item ``target[u]`` is among their top k.

    ``ranked``: int ``[U, L]`` item ids, best first (``-1`` padding never matches).
    ``target``: int ``[U]``, one held-out item id per user. ``HR@k = mean_u 1[target_u in
    ranked_u[:k]]``. k > L means the whole list. U == 0: nan.
    """
    topk = _ranked_topk(ranked, k)
    tgt = _ids(target, "target")
    if tgt.shape != (topk.shape[0],):
        raise ValueError(f"target must be [U={topk.shape[0]}], got shape {tgt.shape}")
    return _mean_or_nan((topk == tgt[:, None]).any(axis=1).astype(np.float64))


def ndcg_at_k(ranked, target, k: int) -> float:
    """NDCG@k with binary relevance, averaged over users.

    ``ranked``: int ``[U, L]`` item ids, best first (``-1`` padding and repeats earn nothing).
    Rank r is 0-based; the discount of rank r is ``1 / log2(r + 2)``; k > L means k = L.

    - ``target`` int ``[U]`` (one held-out item per user): the user's score is
      ``1 / log2(r + 2)`` if the target sits at rank r < k, else 0 (IDCG = 1). U == 0: nan.
    - ``target`` ``[U, N]`` relevance matrix (bool; nonzero = relevant), several relevant items
      per user: ``DCG_u = sum_{r < k} rel_u(ranked_u[r]) / log2(r + 2)`` and
      ``IDCG_u = sum_{r < min(k, n_u)} 1 / log2(r + 2)`` with n_u the number of relevant items;
      the score is DCG_u / IDCG_u. Users with n_u == 0 are skipped (nan if none is left).
    """
    topk = _ranked_topk(ranked, k)
    users, width = topk.shape
    disc = 1.0 / np.log2(np.arange(width) + 2.0)
    tgt = np.asarray(target)
    if tgt.ndim == 1:
        tgt = _ids(tgt, "target")
        if tgt.shape != (users,):
            raise ValueError(f"target must be [U={users}], got shape {tgt.shape}")
        hits = topk == tgt[:, None]
        gain = np.where(hits.any(axis=1), disc[hits.argmax(axis=1)] if width else 0.0, 0.0)
        return _mean_or_nan(gain)
    rel = _user_matrix(tgt, "target", users) != 0
    dcg = (_gather(rel, topk) & _first_valid(topk)) @ disc
    n_rel = rel.sum(axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(disc)])[np.minimum(n_rel, width)]
    keep = n_rel > 0
    if width == 0:
        return float("nan") if not keep.any() else 0.0
    return _mean_or_nan(dcg[keep] / ideal[keep])


def recall_at_k(ranked, relevant, k: int = 10, weights=None) -> float:
    """R@k, reward-weighted recall of the top k (LAAC's accuracy metric R@10).

    NOTE: this is OUR definition. LAAC (arXiv 2507.21274) reports R@10 as an accuracy metric
    based on the rewards of the top-10 recommendations on held-out data, but the paper's exact
    formula was not available to us.

    ``ranked``: int ``[U, L]`` item ids, best first. ``relevant``: float ``[U, N]`` held-out
    rewards; entries > 0 are the user's held-out positives P_u with reward w_u(i), entries <= 0
    are not positives and earn nothing. With T_u the distinct valid items among the first k::

        R@k = mean_u  sum_{i in T_u, i in P_u} w_u(i) / min(k, |P_u|)

    With 0/1 rewards this is the usual recall@k normalised by min(k, |P_u|) (in [0, 1]); with
    graded rewards it lies in [0, max reward]. Users with no positives are skipped (nan if none is
    left). k > L means k = L, also in the denominator.

    ``relevant`` int ``[U]`` (one held-out item per user, as LAAC's next item) with ``weights``
    float ``[U]`` (its reward; default 1) is the same formula with ``|P_u| = 1``: ``w_u`` when the
    item is in the top k, else 0; users whose item has weight <= 0 are skipped.
    """
    topk = _ranked_topk(ranked, k)
    if np.asarray(relevant).ndim == 1:
        target = _ids(relevant, "relevant")
        if target.shape != (topk.shape[0],):
            raise ValueError(f"relevant must be [U={topk.shape[0]}] item ids, got shape {target.shape}")
        w = np.ones(len(target)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
        if w.shape != target.shape:
            raise ValueError(f"weights must be [U={len(target)}], got shape {np.shape(weights)}")
        hit = (topk == target[:, None]).any(axis=1) & (target >= 0)
        keep = w > 0
        return _mean_or_nan(np.where(hit, w, 0.0)[keep])
    if weights is not None:
        raise ValueError("weights go with one held-out item per user (relevant [U]); a [U, N] relevant holds them")
    rew = _user_matrix(relevant, "relevant", topk.shape[0]).astype(np.float64)
    pos = rew > 0
    gained = np.where(_first_valid(topk), _gather(np.where(pos, rew, 0.0), topk), 0.0).sum(axis=1)
    n_pos = pos.sum(axis=1)
    keep = n_pos > 0
    denom = np.minimum(max(topk.shape[1], 1), n_pos)
    return _mean_or_nan(gained[keep] / denom[keep])


def popular_items(item_popularity, share: float = 0.1) -> np.ndarray:
    """Bool ``[N]``: the ``floor(share * N)`` items with the most interactions (ties: lower id)."""
    counts = np.asarray(item_popularity, np.float64)
    n_top = int(np.floor(share * counts.size + 1e-9))
    mask = np.zeros(counts.size, bool)
    mask[np.argsort(-counts, kind="stable")[:n_top]] = True
    return mask


def ncv_at_k(ranked, relevant, train_interacted, item_popularity, k: int = 10,
             popular_share: float = 0.1) -> float:
    """NCV@k, share of the top k that is novel and relevant (LAAC's novelty metric NCV@10).

    NOTE: this is OUR definition. LAAC (arXiv 2507.21274) reports NCV@10 as its novelty metric,
    but the paper's exact formula was not available to us.

    ``ranked``: int ``[U, L]`` item ids, best first. ``relevant``: ``[U, N]`` held-out relevance
    (nonzero/positive = relevant, e.g. the rewards given to ``recall_at_k``; entries <= 0 are not
    relevant). ``train_interacted``: bool ``[U, N]``, the items each user interacted with in the
    training logs. ``item_popularity``: ``[N]`` interaction counts; the popular set is the
    ``floor(popular_share * N)`` most-interacted items (``popular_items``). An item i is novel for
    user u if it is neither in u's training interactions nor popular. With T_u the distinct valid
    items among the first k::

        NCV@k = mean_u |{i in T_u : i novel for u and relevant to u}| / |T_u|

    Users with an empty T_u (only padding) are skipped; nan if none is left. k > L means k = L.
    """
    topk = _ranked_topk(ranked, k)
    users = topk.shape[0]
    rel = _user_matrix(relevant, "relevant", users) > 0
    seen = _user_matrix(train_interacted, "train_interacted", users).astype(bool)
    popular = popular_items(item_popularity, popular_share)
    if popular.size != rel.shape[1] or seen.shape[1] != rel.shape[1]:
        raise ValueError("relevant, train_interacted and item_popularity disagree on N")
    counted = _first_valid(topk)
    good = counted & _gather(rel & ~seen & ~popular[None, :], topk)
    size = counted.sum(axis=1)
    keep = size > 0
    return _mean_or_nan(good.sum(axis=1)[keep] / size[keep])
