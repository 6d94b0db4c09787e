"""Reference policies that need no training, acting on a `UserBatchEnv` batch at once.

Each is marked oracle (reads the true user model and the user's state) or not:
- random: distinct items drawn uniformly from those the user may still see;
- popular: the most popular items in the logs (the same slate for everyone);
- round-robin: slate positions cycle through the categories (most popular first) step by step,
  so no position repeats its category from one step to the next (with at least 2 categories);
  the item in each slot is the category's most popular one the user may still see;
- history-mean: items scored by their features' dot product with the mean features of the items
  the user liked in the history the policy sees (the zero-parameter rule: a policy that outputs
  this action needs no learning; what the trained policy must beat);
- history-ridge: items scored by the ridge fit of the history's feedback on its items' features
  (`policy.ridge.ridge_fit`): the preference estimate the policy's action starts from;
- ridge-exposure: history-ridge minus HISTORY_EXPOSURE_PRICE x the item category's share
  of the last two slates in the history (no user model, no hidden state);
- ridge-exposure-fresh: ridge-exposure that never shows an item again that the history shows
  was shown earlier this session (the policy's session features, policy.networks.session_features):
  the strongest rule we found that reads only what the policy observes;
- posterior-exposure (population model): the posterior-mean click logits over the training
  users' true models given the history the policy sees (`rollout.population_posterior`), less
  the population's mean satiation and the fatigue for the session's exposure and showings, less
  POSTERIOR_EXPOSURE_PRICE x the exposure: the observable ceiling, what the observation supports
  when the population's model is known exactly (it never reads this user's vector or state);
- greedy (oracle, myopic): the items most likely clicked now, by the true model and the user's
  current satiation and fatigue;
- greedy-no-repeat (oracle): greedy, but never the category shown at that position in the last
  slate (the rule that games LERL's position-aligned patience);
- greedy-rotation (oracle): greedy, but never a category shown anywhere in the last slate (the
  rotation rule LERL's session planner used to apply to every planner row);
- greedy-exposure (oracle): greedy on the click logit minus EXPOSURE_PRICE x the category's recent
  exposure: the best simple diversity rule we found (it prices the satiation an item will cause);
- lookahead (oracle): plans ahead with the true model (`rollout.lookahead`): the ceiling's estimate.
Evaluations with a planner add random+planner (random items inside the planner's categories),
greedy+planner (oracle: the best items inside them by the true model now) and
ridge-exposure-fresh+planner (that rule inside them: the planner's worth to a policy that sees only
what ours sees).
"""
from __future__ import annotations

import numpy as np
import torch

from policy.networks import RECENT_SLATES, session_features
from policy.ridge import ridge_fit
from rollout.lookahead import LookaheadOracle
from rollout.population_posterior import PopulationPosterior
from rollout.slates import exposure_greedy, top_k
from rollout.users import UserBatchEnv

REFERENCE_POLICIES = ("random", "popular", "round-robin", "history-mean", "history-ridge", "ridge-exposure",
                      "ridge-exposure-fresh", "posterior-exposure", "greedy", "greedy-no-repeat", "greedy-rotation",
                      "greedy-exposure", "lookahead")
ORACLES = frozenset({"greedy", "greedy-no-repeat", "greedy-rotation", "greedy-exposure", "lookahead", "greedy+planner"})
"""The references that read the true user model and the user's state."""
POPULATION_MODEL = frozenset({"posterior-exposure", "posterior-exposure+planner"})
"""The references that read the true user model of the training population, not this user's."""
MYOPIC_ORACLES = ("greedy", "greedy-no-repeat", "greedy-rotation", "greedy-exposure")
"""The oracles that choose each slate for the step at hand (no plan beyond it)."""
EXPOSURE_PRICE = 5.0
"""greedy-exposure's price of exposure, in click logits: the best of 1, 2, 3, 4, 5, 6, 8, 12, 16 on
the default MovieLens world's evaluation users (benchmarks/test_bed.py: 5 to 8 are within 1 %)."""
HISTORY_EXPOSURE_PRICE = 5.0
"""ridge-exposure's price of a category's recent share, in predicted feedback: 3, 5 and 8
give Rcum 2.61, 2.66 and 2.61 on the default MovieLens world's 128 evaluation users."""
POSTERIOR_EXPOSURE_PRICE = 8.0
"""posterior-exposure's price of exposure, in click logits: 5, 8, 12 and 16 give Rcum 4.32, 4.51,
4.51 and 4.49 on the default MovieLens world's 189 evaluation users (at temperature 0.25)."""
CHEAP_REFERENCES = tuple(name for name in REFERENCE_POLICIES if name != "lookahead")
"""Every reference but the lookahead oracle, which costs about as much as a short training run."""


def history_mean_action(env: UserBatchEnv) -> np.ndarray:
    """[B, F] the mean item features of each user's liked history items (their shown items when
    none was liked; zeros when the history is empty): an action in the policy's own space."""
    items, feedback = env.history_items, env.history_feedback
    shown = (items >= 0).astype(np.float32)
    features = env.world.item_features[np.where(items >= 0, items, 0)] * shown[..., None]   # [B, H, F]
    liked = feedback * shown
    weights = np.where(liked.sum(1, keepdims=True) > 0, liked, shown)
    return (features * weights[..., None]).sum(1) / np.maximum(weights.sum(1, keepdims=True), 1.0)


def history_ridge_scores(env: UserBatchEnv) -> np.ndarray:
    """[B, N] each item's predicted feedback by the ridge fit (with an intercept) of the user's
    history feedback on its items' features."""
    items = env.history_items
    shown = torch.from_numpy((items >= 0).astype(np.float64)[..., None])
    features = torch.from_numpy(env.world.item_features[np.where(items >= 0, items, 0)].astype(np.float64))
    weights = ridge_fit(features, torch.from_numpy(env.history_feedback.astype(np.float64)), shown).numpy()
    return (weights[:, :-1] @ env.world.item_features.T.astype(np.float64) + weights[:, -1:]).astype(np.float32)


def recent_category_share(env: UserBatchEnv, slates: int = RECENT_SLATES) -> np.ndarray:
    """[B, C] each category's share of the last `slates` slates in the history (0 when empty)."""
    recent = env.history_items[:, -slates * env.cfg.slate_size:]
    onehot = np.eye(env.world.num_categories + 1, dtype=np.float32)[np.where(recent >= 0, env.world.item_category[
        np.maximum(recent, 0)], env.world.num_categories)][..., :-1]
    return onehot.sum(1) / np.maximum((recent >= 0).sum(1, keepdims=True), 1)


def shown_this_session(env: UserBatchEnv) -> np.ndarray:
    """[B, N] how often each item was shown earlier this session, as far as the history the
    policy observes reaches (policy.networks.session_features)."""
    world = env.world
    _, shown = session_features(torch.from_numpy(env.history_items), torch.from_numpy(env.steps),
                                torch.from_numpy(world.item_category.astype(np.int64)), world.num_categories,
                                world.num_items, env.cfg.slate_size)
    return shown.numpy()


def ridge_exposure_scores(env: UserBatchEnv, fresh: bool = True) -> np.ndarray:
    """[B, N] ridge-exposure's item scores (with `fresh`: ridge-exposure-fresh's, items the history
    shows were shown this session last): the strongest rule that reads only what the policy
    observes, also the scorer of ridge-exposure-fresh+planner (`RolloutWorker.collect(act="rule")`)."""
    scores = history_ridge_scores(env) - HISTORY_EXPOSURE_PRICE * recent_category_share(env)[:, env.world.item_category]
    if fresh:
        scores = scores - 1e6 * (shown_this_session(env) > 0)  # last, whatever the rest scores
    return scores


def posterior_exposure_scores(env: UserBatchEnv, posterior: PopulationPosterior) -> np.ndarray:
    """[B, N] posterior-exposure's item scores: the population posterior's logits from the observed
    history, less the population's mean satiation and the exposure's price for the session's
    exposure and the fatigue for its showings (also the scorer of posterior-exposure+planner,
    `RolloutWorker.collect(act="posterior")`)."""
    exposure = env.exposure[:, env.world.item_category]
    logits = posterior.logit_estimate(env.history_items, env.history_feedback)
    return logits - (env.cfg.satiation + POSTERIOR_EXPOSURE_PRICE) * exposure - env.cfg.item_fatigue * env.times_shown


class ReferencePolicy:
    """`act(env)` returns [B, K] slates for every slot (rows of inactive users are ignored by the env)."""

    def __init__(self, name: str, seed: int = 0):
        if name not in REFERENCE_POLICIES:
            raise ValueError(f"unknown reference policy {name!r}; known: {', '.join(REFERENCE_POLICIES)}")
        self.name = name
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9E1]))
        self._planner = LookaheadOracle(base_price=EXPOSURE_PRICE) if name == "lookahead" else None
        self._posterior: PopulationPosterior | None = None   # made on the first act (it needs the world)

    @property
    def oracle(self) -> bool:
        return self.name in ORACLES

    def act(self, env: UserBatchEnv) -> np.ndarray:
        world, k = env.world, env.cfg.slate_size
        available = env.available_items()
        b, n = env.batch_size, world.num_items
        if self.name == "random":
            return top_k(self.rng.random((b, n), dtype=np.float32), available, k)
        if self.name == "popular":
            # Ties broken towards lower ids, so the slate is a pure function of the logs.
            scores = np.broadcast_to(world.item_popularity - np.arange(n) / (2.0 * n), (b, n))
            return top_k(scores, available, k)
        if self.name == "greedy":
            return top_k(env.item_logits(), available, k)
        if self.name == "history-mean":
            return top_k(history_mean_action(env) @ world.item_features.T, available, k)
        if self.name == "history-ridge":
            return top_k(history_ridge_scores(env), available, k)
        if self.name in ("ridge-exposure", "ridge-exposure-fresh"):
            return top_k(ridge_exposure_scores(env, fresh=self.name == "ridge-exposure-fresh"), available, k)
        if self.name == "posterior-exposure":
            if self._posterior is None or self._posterior.world is not world:
                self._posterior = PopulationPosterior(world)
            return top_k(posterior_exposure_scores(env, self._posterior), available, k)
        if self.name == "greedy-no-repeat":
            return self._greedy_no_repeat(env, available, k)
        if self.name == "greedy-rotation":
            return self._greedy_rotation(env, available, k)
        if self.name == "greedy-exposure":
            return exposure_greedy(env, EXPOSURE_PRICE)
        if self.name == "lookahead":
            return self._planner.act(env)
        return self._round_robin(env, available, k)

    @staticmethod
    def _greedy_no_repeat(env: UserBatchEnv, available: np.ndarray | None, k: int) -> np.ndarray:
        """Position by position, the best item whose category differs from the last slate's there."""
        scores = env.item_logits()
        allowed = np.ones(scores.shape, bool) if available is None else available.copy()
        slates = np.empty((env.batch_size, k), np.int64)
        rows = np.arange(env.batch_size)
        for pos in range(k):
            banned = env.world.item_category[None, :] == env.last_slate_categories[:, pos:pos + 1]
            pick = np.where(allowed & ~banned, scores, -np.inf)
            pick = np.where(np.isfinite(pick).any(1, keepdims=True), pick, np.where(allowed, scores, -np.inf))
            slates[:, pos] = pick.argmax(1)
            allowed[rows, slates[:, pos]] = False
        return slates

    @staticmethod
    def _greedy_rotation(env: UserBatchEnv, available: np.ndarray | None, k: int) -> np.ndarray:
        """The best items whose categories were not in the last slate (any item when too few are left)."""
        b, c = env.batch_size, env.world.num_categories
        last = env.last_slate_categories
        shown = np.zeros((b, c + 1), bool)                              # column c absorbs "no last slate"
        shown[np.arange(b)[:, None], np.where(last >= 0, last, c)] = True
        allowed = np.ones((b, env.world.num_items), bool) if available is None else available
        fresh = allowed & ~shown[:, env.world.item_category]
        enough = fresh.sum(1, keepdims=True) >= k
        return top_k(env.item_logits(), np.where(enough, fresh, allowed), k)

    def _round_robin(self, env: UserBatchEnv, available: np.ndarray | None, k: int) -> np.ndarray:
        world = env.world
        c = world.num_categories
        category_pop = np.bincount(world.item_category, weights=world.item_popularity, minlength=c)
        order = np.argsort(-category_pop, kind="stable")
        b, n = env.batch_size, world.num_items
        # A stride that is a multiple of C would give every position the same category each step.
        stride = k + 1 if (c > 1 and k % c == 0) else k
        wanted = order[(env.steps[:, None] * stride + np.arange(k)[None, :]) % c]  # [B, K] categories
        item_score = world.item_popularity - np.arange(n) / (2.0 * n)
        allowed = np.ones((b, n), bool) if available is None else available.copy()
        slates = np.empty((b, k), np.int64)
        rows = np.arange(b)
        for pos in range(k):  # K positions, each vectorised over the batch
            in_category = world.item_category[None, :] == wanted[:, pos:pos + 1]
            scores = np.where(allowed & in_category, item_score, -np.inf)
            fallback = np.where(allowed, item_score, -np.inf)          # category exhausted: any item
            scores = np.where(np.isfinite(scores).any(axis=1, keepdims=True), scores, fallback)
            slates[:, pos] = scores.argmax(axis=1)
            allowed[rows, slates[:, pos]] = False
        return slates
