"""Slate building blocks the rule-based policies share: the k best items, and exposure-priced scores."""
from __future__ import annotations

import numpy as np

from rollout.users import UserBatchEnv


def top_k(scores: np.ndarray, available: np.ndarray | None, k: int) -> np.ndarray:
    """[B, K] the k best-scored items per row, best first, skipping items not `available`."""
    if available is not None:
        scores = np.where(available, scores, -np.inf)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    return np.take_along_axis(top, order, 1)


def exposure_scores(env: UserBatchEnv, price: float) -> np.ndarray:
    """[B, N] click logits now, less `price` x each item's category's recent exposure."""
    logits = env.item_logits()
    return logits - price * env.exposure[:, env.world.item_category] if price else logits


def exposure_greedy(env: UserBatchEnv, price: float) -> np.ndarray:
    """[B, K] greedy on exposure-priced scores among the items each user may still see (the
    greedy-exposure reference at its price, the lookahead's base rule, the price sweep's rule)."""
    return top_k(exposure_scores(env, price), env.available_items(), env.cfg.slate_size)
