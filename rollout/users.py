"""A batch of simulated users, stepped together: how each responds to a slate and when they leave.

Response. Item i's click logit for user u at a step is the user model's, minus what the session
has done to the user (RecSim's interest evolution and KuaiSim's leave model are the anchors):
    logit(u, i) - satiation_u x exposure_u[c(i)] - item_fatigue x shown_u[i]
- `exposure_u[c]`: recent exposure to category c; after each slate it decays by `exposure_decay`
  and gains the slate's share of items in c, so interest in a category wanes while it is shown
  and recovers with time. `satiation_u` is the user's own (log-normal around `satiation` with
  spread `satiation_spread`, fixed per user by the world seed): some users tire of a genre fast.
- `shown_u[i]`: how often item i was shown this session (fatigue for items seen again).
The clipped probability then loses rho x the item's similarity to the rest of the slate (LERL's
KuaiSim setting). Each item is clicked or not against the user's outside option: "no click" is
the choice of doing something else, and its odds rise as the session tires the user.
`satiation = item_fatigue = 0` gives the static users of the LERL and DORL papers.

Leaving, by `quit_rule`:
- "interest" (default): patience starts at `interest_patience`, which is also its cap; each step
  it drops 1 plus `boredom_cost` x boredom, where boredom is the mean exposure, before this slate,
  of the slate's distinct categories (a set: reordering a slate changes nothing), and gains
  `satisfaction_gain` x the slate's appeal (its mean click probability: how much the user wanted
  what was shown, whatever the dice then said); the user leaves when it falls below 0.
  Satisfaction beyond the cap is lost, so when to show the user's best items matters, not only
  which.
- "patience" (LERL): patience starts at `initial_patience`, drops 1 a step and 1 more when any slate
  position repeats the primary category shown at that position in the previous slate; the user
  leaves when it falls below 1.
- "window" (DORL): the user leaves when any category of a newly shown item already appears more
  than `window_threshold` times among the `window_size` items shown just before it.
Either way the episode ends at `max_steps`. Every array op is over the whole batch: no Python
loop over users in a step.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from rollout.user_model import sigmoid
from rollout.world import World, WorldConfig


def user_satiation(cfg: WorldConfig, num_users: int) -> np.ndarray:
    """[U] each user's satiation: log-normal around cfg.satiation, fixed by the world seed."""
    z = np.random.default_rng(np.random.SeedSequence([cfg.world_seed, 0x5A7])).standard_normal(num_users)
    return (cfg.satiation * np.exp(cfg.satiation_spread * z - cfg.satiation_spread ** 2 / 2)).astype(np.float32)


@dataclass
class StepResult:
    clicks: np.ndarray   # [B, K] float32 (0 or 1; the probabilities in expected mode); zeros for users gone
    reward: np.ndarray   # [B] float32
    done: np.ndarray     # [B] bool: the episode ended at this step (the user left, or max_steps)
    left: np.ndarray     # [B] bool: the user left by the quit rule at this step (a subset of done)


class UserBatchEnv:
    """A batch of `batch_size` simulated users, stepped together.

    Users that have left stay in the arrays (shapes never change) but are inactive: their rewards
    are 0 and they are not stepped. `reset()` starts a new episode in every slot. `expected_copy()`
    gives a copy that steps in expectation (clicks = their probabilities, no dice): what the
    lookahead oracle plans with.
    """

    def __init__(self, world: World, cfg: WorldConfig, batch_size: int, seed: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.world, self.cfg, self.batch_size = world, cfg, batch_size
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE4F]))
        self.expected = False
        b, h, k, n, c = batch_size, cfg.history_len, cfg.slate_size, world.num_items, world.num_categories
        self._satiation_of_user = user_satiation(cfg, world.num_users)
        self.user_pool = world.train_users   # the users `reset` draws from (a rollout actor may take its share)
        self._slate_share = np.eye(c, dtype=np.float32)[world.item_category] / k   # [N, C]: an item's share
        self.user_ids = np.zeros(b, np.int64)
        self.satiation = np.zeros(b, np.float32)
        self._all_logits = None   # [B, N] the user model's logits for every item, made when first asked
        # The LLM's part of the response (rollout.llm_world.WorldResponder) when the world's user_model
        # is llm or hybrid; set by whoever owns the env (rollout.llm_world.attach_llm_user).
        self.responder = None
        self.patience = np.zeros(b, np.float32)
        self.steps = np.zeros(b, np.int32)
        self.active = np.zeros(b, bool)
        self.history_items = np.full((b, h), -1, np.int32)      # -1 = empty slot; newest last
        self.history_feedback = np.zeros((b, h), np.float32)
        self.last_slate_categories = np.full((b, k), -1, np.int32)
        self.recent_categories = np.zeros((b, cfg.window_size, c), bool)
        self.exposure = np.zeros((b, c), np.float32)
        self.times_shown = np.zeros((b, n), np.float32)
        self.shown = np.zeros((b, n), bool) if cfg.remove_recommended else None
        self._rating_span = world.data.rating_scale
        self._starts = cfg.start_history and world.start_items is not None
        if self._starts and world.start_items.shape[1] != h:
            raise ValueError(f"the world's starting histories hold {world.start_items.shape[1]} items but "
                             f"history_len={h}: build the world with this config")

    def _start(self, rows: np.ndarray, user_ids: np.ndarray) -> None:
        """New episodes for `user_ids` in `rows` (every per-user array, in one place)."""
        if user_ids.size and (user_ids.min() < 0 or user_ids.max() >= self.world.num_users):
            raise ValueError(f"user ids must be in [0, {self.world.num_users})")
        self.user_ids[rows] = user_ids
        self.satiation[rows] = self._satiation_of_user[user_ids]
        self._all_logits = None
        self.patience[rows] = self.cfg.interest_patience if self.cfg.quit_rule == "interest" else self.cfg.initial_patience
        self.steps[rows] = 0
        self.active[rows] = True
        self.history_items[rows], self.history_feedback[rows] = self.starting_history(user_ids)
        self.last_slate_categories[rows] = -1
        self.recent_categories[rows] = False
        self.exposure[rows] = 0.0
        self.times_shown[rows] = 0.0
        if self.shown is not None:
            self.shown[rows] = False

    def starting_history(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([U, H] items, [U, H] feedback) the sessions of `user_ids` start from (-1 / 0 = empty):
        their logged histories when the world has them and the config starts from them."""
        user_ids = np.asarray(user_ids, np.int64)
        if self._starts:
            return self.world.start_items[user_ids], self.world.start_feedback[user_ids]
        shape = (user_ids.size, self.cfg.history_len)
        return np.full(shape, -1, np.int32), np.zeros(shape, np.float32)

    def reset(self, user_ids: np.ndarray | None = None) -> None:
        """Start new episodes: the given users, or training users drawn by this env's RNG."""
        if user_ids is None:
            user_ids = self.user_pool[self.rng.integers(0, len(self.user_pool), self.batch_size)]
        user_ids = np.asarray(user_ids, np.int64)
        if user_ids.shape != (self.batch_size,):
            raise ValueError(f"reset needs {self.batch_size} user ids, got shape {user_ids.shape}")
        self._start(np.arange(self.batch_size), user_ids)

    def reset_slots(self, mask: np.ndarray, user_ids: np.ndarray | None = None) -> None:
        """Start new episodes in the rows where `mask` ([B] bool) is set, leaving the others as
        they are: `reset` for single slots, so a vector env can restart users independently.
        `user_ids` gives one id per masked row (in row order); None draws them with this env's RNG."""
        mask = np.asarray(mask, bool)
        if mask.shape != (self.batch_size,):
            raise ValueError(f"reset_slots needs a mask of shape {(self.batch_size,)}, got {mask.shape}")
        rows = np.flatnonzero(mask)
        if user_ids is None:
            user_ids = self.user_pool[self.rng.integers(0, len(self.user_pool), rows.size)]
        user_ids = np.asarray(user_ids, np.int64)
        if user_ids.shape != rows.shape:
            raise ValueError(f"reset_slots needs {rows.size} user ids, got shape {user_ids.shape}")
        self._start(rows, user_ids)

    def expected_copy(self, rows: np.ndarray | None = None) -> "UserBatchEnv":
        """A copy of the users in `rows` (default: all), in their current state, that steps in
        expectation (clicks are their probabilities; no dice are drawn). Nothing is shared."""
        self._no_oracle_in_llm_world("an expected copy (the lookahead's)")
        rows = np.arange(self.batch_size) if rows is None else np.asarray(rows)
        twin = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray) and name not in ("_satiation_of_user", "_slate_share"):
                setattr(twin, name, value[rows])  # fancy indexing: a copy
        twin.batch_size, twin.expected = len(rows), True
        return twin

    def _no_oracle_in_llm_world(self, what: str) -> None:
        if self.responder is not None:
            raise ValueError(f"{what} cannot be read when the LLM answers the users (user_model "
                             f"{self.cfg.user_model}): it would ask the LLM about every item. Oracle references "
                             "and the lookahead run in the mf world only")

    def available_items(self) -> np.ndarray | None:
        """[B, N] items each user may still be shown (None when every item always may)."""
        return None if self.shown is None else ~self.shown

    def item_logits(self) -> np.ndarray:
        """[B, N] every item's click logit for each user now: the user model's, less satiation
        and fatigue (what a myopic oracle ranks by; the slate's similarity penalty comes after)."""
        self._no_oracle_in_llm_world("the whole catalogue's click logits")
        if self._all_logits is None:  # once per batch of sessions: stepping alone never needs it
            self._all_logits = self.world.user_model.click.all_scores(self.user_ids).astype(np.float32)
        logits = self._all_logits - self.satiation[:, None] * self.exposure[:, self.world.item_category]
        return logits - self.cfg.item_fatigue * self.times_shown if self.cfg.item_fatigue else logits

    def click_probability(self, slates: np.ndarray) -> np.ndarray:
        """[B, K] click probabilities: the state's logits, minus rho x mean similarity to the rest of the slate."""
        rows = np.arange(self.batch_size)[:, None]
        category = self.world.item_category[slates]
        learned = self.world.user_model.click.scores(self.user_ids, slates)
        if self.responder is not None:
            learned = self.responder.logits(self, slates, learned)
        logits = (learned - self.satiation[:, None] * self.exposure[rows, category]
                  - self.cfg.item_fatigue * self.times_shown[rows, slates])
        p = sigmoid(logits)
        k = slates.shape[1]
        if k > 1 and self.cfg.rho > 0:
            v = self.world.similarity_vectors[slates]                        # [B, K, d] unit vectors
            sim = np.einsum("bkd,bjd->bkj", v, v)
            intra = (sim.sum(-1) - 1.0) / (k - 1)                            # mean over the other items
            p = p - self.cfg.rho * np.clip(intra, 0.0, None)
        return np.clip(p, 0.0, 1.0).astype(np.float32)

    def _check_slates(self, slates: np.ndarray) -> np.ndarray:
        b, k = self.batch_size, self.cfg.slate_size
        if slates.shape != (b, k):
            raise ValueError(f"slates must have shape {(b, k)}, got {slates.shape}")
        safe = np.where(self.active[:, None], slates, 0)
        if (safe < 0).any() or (safe >= self.world.num_items).any():
            raise ValueError(f"slate item ids must be in [0, {self.world.num_items})")
        if k > 1:
            ordered = np.sort(safe[self.active], axis=1)
            if (ordered[:, 1:] == ordered[:, :-1]).any():
                raise ValueError("a slate recommends the same item twice")
        if self.shown is not None and np.take_along_axis(self.shown, safe, 1)[self.active].any():
            raise ValueError("remove_recommended is on but a slate repeats an item shown earlier in the episode")
        return safe

    def _leaves(self, safe: np.ndarray, act: np.ndarray, appeal: np.ndarray) -> np.ndarray:
        """[B] which active users leave after this step by the configured quit rule."""
        if self.cfg.quit_rule == "interest":
            rows = np.arange(self.batch_size)[:, None]
            present = np.zeros(self.exposure.shape, bool)
            present[rows, self.world.item_category[safe]] = True             # the slate's categories, as a set
            boredom = (self.exposure * present).sum(1) / present.sum(1)
            drained = self.patience - 1.0 - self.cfg.boredom_cost * boredom + self.cfg.satisfaction_gain * appeal
            self.patience = np.where(act, np.minimum(drained, self.cfg.interest_patience), self.patience)
            return self.patience < 0.0
        if self.cfg.quit_rule == "patience":
            categories = self.world.item_category[safe]
            repeated = (categories == self.last_slate_categories).any(axis=1)
            self.patience -= act * (1.0 + repeated)
            return self.patience < 1.0
        w = self.cfg.window_size
        new = self.world.item_category_matrix[safe]                          # [B, K, C]
        seq = np.concatenate([self.recent_categories, new], axis=1).astype(np.int16)
        cum = np.concatenate([np.zeros_like(seq[:, :1]), np.cumsum(seq, axis=1)], axis=1)
        k = safe.shape[1]
        counts = cum[:, w:w + k] - cum[:, :k]                                # per slate item: its window
        leave = (new & (counts > self.cfg.window_threshold)).any(axis=(1, 2))
        self.recent_categories = np.where(act[:, None, None], seq[:, -w:].astype(bool), self.recent_categories)
        return leave

    def _remember(self, safe: np.ndarray, act: np.ndarray) -> None:
        """What this slate does to the user: category exposure and times each item was shown."""
        rows = np.flatnonzero(act)
        share = self._slate_share[safe].sum(axis=1)                            # [B, C] the slate's share per category
        self.exposure = np.where(act[:, None], self.cfg.exposure_decay * self.exposure + share, self.exposure)
        self.last_slate_categories = np.where(act[:, None], self.world.item_category[safe], self.last_slate_categories)
        self.times_shown[rows[:, None], safe[rows]] += 1.0
        if self.shown is not None:
            self.shown[rows[:, None], safe[rows]] = True

    def step(self, slates: np.ndarray) -> StepResult:
        """Show each active user their slate ([B, K] item ids); inactive rows are ignored."""
        act = self.active
        safe = self._check_slates(np.asarray(slates))
        p = self.click_probability(safe)
        clicks = p.copy() if self.expected else (self.rng.random(p.shape) < p).astype(np.float32)
        clicks[~act] = 0.0
        if self.cfg.reward_mode == "rating":
            low, high = self._rating_span
            rating = self.world.user_model.rating.scores(self.user_ids, safe)
            reward = (clicks * np.clip((rating - low) / (high - low), 0.0, 1.0)).mean(axis=1)
        else:
            reward = clicks.mean(axis=1)
        reward = (reward * act).astype(np.float32)

        leave = self._leaves(safe, act, p.mean(axis=1))
        self._remember(safe, act)
        self.steps += act
        done = act & (leave | (self.steps >= self.cfg.max_steps))

        k, h = safe.shape[1], self.cfg.history_len
        upd = act[:, None]
        shifted_items = np.concatenate([self.history_items[:, k:], safe.astype(np.int32)], axis=1)[:, -h:]
        shifted_fb = np.concatenate([self.history_feedback[:, k:], clicks], axis=1)[:, -h:]
        self.history_items = np.where(upd, shifted_items, self.history_items)
        self.history_feedback = np.where(upd, shifted_fb, self.history_feedback)
        self.active = act & ~done
        return StepResult(clicks=clicks, reward=reward, done=done, left=act & leave)
