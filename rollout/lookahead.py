"""The lookahead oracle: plans several steps ahead with the true user model, as the estimate of
the ceiling every learned row is measured against.

It is Bertsekas' rollout algorithm over a family of rules: at every step, for every user, each
candidate slate is shown to a copy of the user that steps in expectation (clicks are their
probabilities, no dice), which is then served by the base rule (greedy-exposure) until it leaves
or `horizon` steps have passed; the candidate with the highest simulated return is shown. In the
expected model it is never worse than its base rule. Candidates: the top slate of exposure-priced
scores for each price in `prices`, with the best `skip` items of those scores held back for each
skip in `skips` (holding the best items back is how it saves them for when patience runs low).
Cost: candidates x horizon expected steps per real step (benchmarks/test_bed.py measures it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rollout.slates import exposure_greedy, exposure_scores, top_k
from rollout.users import UserBatchEnv


@dataclass(frozen=True)
class LookaheadOracle:
    prices: tuple[float, ...] = (0.0, 2.0, 5.0, 8.0, 16.0)
    """Exposure prices of the candidate slates (click logits per unit of a category's exposure)."""
    skips: tuple[int, ...] = (0, 2, 4, 6, 9, 12, 18, 24, 36)
    """How many of the best-scored items each candidate holds back."""
    base_price: float = 5.0
    """The base rule's exposure price (greedy-exposure's) for the simulated steps after a candidate."""
    horizon: int = 40
    """Simulated steps after each candidate (a simulated user that leaves stops earlier)."""

    def candidates(self, env: UserBatchEnv) -> list[np.ndarray]:
        """Every candidate slate, [B, K] each; a user with fewer than skip + K items left to see
        gets the unskipped slate for that skip."""
        k, available = env.cfg.slate_size, env.available_items()
        left = available.sum(1) if available is not None else np.full(env.batch_size, env.world.num_items)
        out = []
        for price in self.prices:
            scores = exposure_scores(env, price)
            order = np.argsort(-np.where(available, scores, -np.inf) if available is not None else -scores, axis=1)
            for skip in self.skips:
                if skip + k > env.world.num_items:
                    continue
                held = np.zeros(scores.shape, bool)
                np.put_along_axis(held, order[:, :skip], True, axis=1)
                held &= (left >= skip + k)[:, None]
                out.append(top_k(np.where(held, -np.inf, scores), available, k))
        return out

    def simulated_return(self, env: UserBatchEnv, rows: np.ndarray, slate: np.ndarray) -> np.ndarray:
        """[len(rows)] the expected return of showing `slate` ([len(rows), K]) to the users in
        `rows` now, then following the base rule; users who leave drop out of the simulation."""
        twin = env.expected_copy(rows)
        value = twin.step(slate).reward.astype(np.float64)
        alive = np.arange(len(rows))                   # positions in `value` of the twin's rows
        for _ in range(self.horizon):
            if not twin.active.any():
                break
            if twin.active.mean() < 0.5:               # compact: simulate only who is still there
                keep = np.flatnonzero(twin.active)
                twin, alive = twin.expected_copy(keep), alive[keep]
            value[alive] += twin.step(exposure_greedy(twin, self.base_price)).reward
        return value

    def act(self, env: UserBatchEnv) -> np.ndarray:
        """[B, K] the best candidate per user (rows of users who have left get any valid slate)."""
        rows = np.flatnonzero(env.active)
        best = top_k(env.item_logits(), env.available_items(), env.cfg.slate_size)
        if rows.size == 0:
            return best
        here = env.expected_copy(rows)
        tried: list[np.ndarray] = []   # the candidates so far, each slate's items sorted
        best_value = np.full(rows.size, -np.inf)
        for slate in self.candidates(here):
            # A user whose candidate repeats one already tried for them is not simulated again.
            as_set = np.sort(slate, 1)
            new = np.ones(rows.size, bool)
            for earlier in tried:
                new &= (as_set != earlier).any(1)
            tried.append(as_set)
            if not new.any():
                continue
            value = np.full(rows.size, -np.inf)
            value[new] = self.simulated_return(here, np.flatnonzero(new), slate[new])
            better = value > best_value
            best[rows[better]] = slate[better]
            best_value = np.where(better, value, best_value)
        return best
