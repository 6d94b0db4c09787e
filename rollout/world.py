"""The simulated world: a data set, a user-response model, and a batch of users stepped together.

Each step every active user is shown a slate; item i is clicked with probability (user-model
probability - rho x i's mean cosine similarity to the rest of the slate), clipped to [0, 1]
(LERL's KuaiSim setting); reward = mean click over the slate, or for rating data optionally the
mean of click x normalised predicted rating. Users leave by one of two rules (DESIGN.md):
- "patience" (LERL): patience starts at `initial_patience`, drops 1 a step and 1 more when any
  slate position repeats the primary category shown at that position in the previous slate; the
  user leaves when it falls below 1.
- "window" (DORL): the user leaves when any category of a newly shown item already appears more
  than `window_threshold` times among the `window_size` items shown just before it.
Either way the episode ends at `max_steps`. Every array op is over the whole batch: no Python
loop over users in a step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policy.networks import PolicySpec
from rollout.data.atomic import AtomicOptions
from rollout.data.dataset import Dataset
from rollout.data.registry import DATASETS, load_dataset
from rollout.data.synthetic import synthetic_dataset
from rollout.user_model import (
    DotProductModel,
    UserModel,
    UserModelConfig,
    load_or_train,
    sigmoid,
)

QUIT_RULES = ("patience", "window")
REWARD_MODES = ("click", "rating")
SYNTHETIC_ONLY = ("num_items", "num_categories", "num_users", "favourite_categories", "click_scale", "click_bias",
                  "feature_noise")
"""WorldConfig fields the generated world reads and a logged one does not."""


@dataclass
class WorldConfig:
    """The data set, the simulated users and their quit rule (LERL defaults where the paper fixes them)."""

    dataset: str = "ml-100k"
    """Data set the world is built on: ml-100k (the default: GroupLens' files, or with no --data-dir
    and none downloaded the copy inside the recbole wheel, so no download), synthetic (a generated
    world for systems work and benchmarks: its categories mean nothing to an LLM), kuairand-pure,
    kuairec, or atomic (any data set in RecBole's atomic files: --data-dir DIR, --atomic-*)."""
    data_dir: str = ""
    """Folder with the data set's files; "" = $LLMREC_DATA_DIR/<dataset>, then the download cache
    (then, for ml-100k, the embedded copy)."""
    atomic_name: str = ""
    """--dataset atomic: the files' stem, NAME.inter / NAME.item / NAME.user; "" = the folder's name."""
    atomic_category_field: str = ""
    """--dataset atomic: the .item column (token or token_seq) of categories; "" = class, genre,
    category or tag when present, else the first token column that is not the id or the title."""
    atomic_feedback_field: str = ""
    """--dataset atomic: the .inter float column of feedback; "" = rating, label or click when
    present, else the first float column (0/1 values are clicks, others ratings)."""
    atomic_positive_threshold: float = -1.0
    """--dataset atomic: feedback at or above this counts as positive; -1 = 4 of 5 stars on the
    file's rating scale, or a click."""
    num_items: int = 1000
    """Synthetic world only: items in the catalog."""
    num_categories: int = 20
    """Synthetic world only: content categories; each item belongs to one."""
    num_users: int = 5000
    """Synthetic world only: size of the user pool that episodes draw users from."""
    latent_dim: int = 16
    """Dimension of the user/item vectors: the synthetic ground truth's, or the trained user model's."""
    favourite_categories: int = 3
    """Synthetic world only: categories each user leans towards."""
    click_scale: float = 4.0
    """Synthetic world only: p = sigmoid(click_scale * <u, v> + click_bias + item bias)."""
    click_bias: float = -1.0
    """Synthetic world only: offset of the user model's logit (the base click rate of an unrelated item)."""
    feature_noise: float = 0.3
    """Synthetic world only: noise on the item features the policy sees (it never sees the truth)."""
    world_seed: int = 0
    """Seed of the synthetic catalog and user pool, and of the user model's training (the world, not the episodes)."""
    user_model_epochs: int = 20
    """Logged data only: epochs of matrix-factorisation training of the user model (cached once trained)."""
    slate_size: int = 6
    """Items recommended per step (LERL: 6)."""
    max_steps: int = 20
    """Episode cap in steps (LERL: 20; DORL: 30)."""
    rho: float = 0.2
    """Weight of the intra-slate similarity penalty on click probability (LERL: 0.2)."""
    quit_rule: str = "patience"
    """When a user leaves: patience (LERL) or window (DORL)."""
    initial_patience: float = 20.0
    """Patience rule: starting patience; the user leaves when it falls below 1 (LERL: 20)."""
    window_size: int = 4
    """Window rule: how many previously shown items are checked (DORL: 4)."""
    window_threshold: int = 0
    """Window rule: leave when a new item's category appears more than this often in the window (DORL: 0)."""
    remove_recommended: bool = False
    """Never show a user an item twice in an episode (shown items are masked out of the policy's choice)."""
    reward_mode: str = "click"
    """click: mean click over the slate; rating (rating data only): mean of click x predicted rating in [0, 1]."""
    history_len: int = 30
    """Items (with feedback) in the observation history: the last history_len shown."""

    def validate(self) -> None:
        """Raise ValueError naming the field when the world cannot be built as configured."""

        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.dataset == "atomic" and not self.data_dir:
            raise ValueError("dataset=atomic needs --data-dir: the folder with NAME.inter and NAME.item")
        if self.dataset != "synthetic":
            # Silently ignoring them would let a user believe they shaped a logged world.
            changed = [f for f in SYNTHETIC_ONLY if getattr(self, f) != getattr(WorldConfig, f)]
            if changed:
                raise ValueError(f"{', '.join(changed)} {'applies' if len(changed) == 1 else 'apply'} only to dataset=synthetic (the {self.dataset} world "
                                 "takes its catalog and users from the data): add --dataset synthetic or drop them")
        for name in ("num_items", "num_categories", "num_users", "latent_dim", "slate_size", "max_steps",
                     "history_len", "favourite_categories", "window_size", "user_model_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dataset == "synthetic" and self.slate_size > self.num_items:
            raise ValueError(f"slate_size={self.slate_size} exceeds num_items={self.num_items}")
        if self.num_categories > self.num_items:
            raise ValueError(f"num_categories={self.num_categories} exceeds num_items={self.num_items}")
        if self.favourite_categories > self.num_categories:
            raise ValueError(f"favourite_categories={self.favourite_categories} exceeds "
                             f"num_categories={self.num_categories}")
        if not self.feature_noise >= 0:
            raise ValueError(f"feature_noise must be >= 0, got {self.feature_noise}")
        if not 0.0 <= self.rho <= 1.0:
            raise ValueError(f"rho must be in [0, 1], got {self.rho}")
        if self.initial_patience < 1:
            raise ValueError(f"initial_patience must be >= 1, got {self.initial_patience}")
        if self.window_threshold < 0:
            raise ValueError(f"window_threshold must be >= 0, got {self.window_threshold}")
        if self.quit_rule not in QUIT_RULES:
            raise ValueError(f"quit_rule must be one of {QUIT_RULES}, got {self.quit_rule!r}")
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {self.reward_mode!r}")
        if self.max_steps * self.slate_size > 10 ** 7:
            raise ValueError("max_steps x slate_size is implausibly large")


    def atomic_options(self) -> AtomicOptions:
        """The --atomic-* options as the atomic loader takes them."""
        return AtomicOptions(name=self.atomic_name or None, category_field=self.atomic_category_field or None,
                             feedback_field=self.atomic_feedback_field or None,
                             positive_threshold=None if self.atomic_positive_threshold == -1
                             else self.atomic_positive_threshold)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-8)).astype(np.float32)


class World:
    """A data set with its user model: everything an environment and a policy need to know."""

    def __init__(self, data: Dataset, user_model: UserModel, item_features: np.ndarray, similarity_vectors: np.ndarray):
        self.data, self.user_model = data, user_model
        self.item_features = item_features.astype(np.float32)        # [N, d]: what the policy scores items by
        self.similarity_vectors = _unit(similarity_vectors)           # [N, d]: cosine similarity for rho
        self.item_category = data.item_category                        # [N] primary category
        self.item_category_matrix = data.item_category_matrix          # [N, C]
        self.category_names = data.category_names
        self.item_titles = data.item_titles
        positives = data.positive()
        self.item_popularity = np.bincount(data.interactions.item[positives],
                                           minlength=data.num_items).astype(np.int64)

    num_items = property(lambda self: self.data.num_items)
    num_categories = property(lambda self: self.data.num_categories)
    num_users = property(lambda self: self.data.num_users)

    @classmethod
    def build(cls, cfg: WorldConfig, log=print) -> "World":
        """Load (or generate) the data set and get its user model (trained once, then cached)."""
        cfg.validate()
        if cfg.dataset == "synthetic":

            data = synthetic_dataset(cfg.num_items, cfg.num_categories, cfg.num_users, cfg.latent_dim,
                                     cfg.favourite_categories, cfg.world_seed, click_scale=cfg.click_scale,
                                     click_bias=cfg.click_bias)
            truth = data.extra
            click = DotProductModel(cfg.click_scale * truth["user_latent"], truth["item_latent"],
                                    np.zeros(data.num_users, np.float32), truth["item_bias"], cfg.click_bias)
            noise_rng = np.random.default_rng(np.random.SeedSequence([cfg.world_seed, 0xF0F0]))
            features = truth["item_latent"] + cfg.feature_noise * noise_rng.standard_normal(
                truth["item_latent"].shape) / np.sqrt(cfg.latent_dim)
            world = cls(data, UserModel(click=click), features, truth["item_latent"])
        else:

            options = {"atomic": cfg.atomic_options()} if cfg.dataset == "atomic" else {}
            data = load_dataset(cfg.dataset, cfg.data_dir or None, **options)
            model = load_or_train(data, UserModelConfig(dim=cfg.latent_dim, epochs=cfg.user_model_epochs,
                                                        seed=cfg.world_seed), log=log)
            world = cls(data, model, model.click.item_vectors, model.click.item_vectors)
        if cfg.slate_size > world.num_items:
            raise ValueError(f"slate_size={cfg.slate_size} exceeds the {cfg.dataset} catalog's {world.num_items} items")
        if cfg.reward_mode == "rating" and world.user_model.rating is None:
            raise ValueError(f"reward_mode=rating needs a data set with ratings (ml-100k); {cfg.dataset} has clicks")
        if cfg.remove_recommended and cfg.slate_size * cfg.max_steps > world.num_items:
            raise ValueError(f"remove_recommended with slate_size x max_steps = {cfg.slate_size * cfg.max_steps} "
                             f"exceeds the catalog's {world.num_items} items")
        return world


@dataclass
class StepResult:
    clicks: np.ndarray   # [B, K] float32 (0 or 1); zeros for users already gone
    reward: np.ndarray   # [B] float32
    done: np.ndarray     # [B] bool: the episode ended at this step (the user left, or max_steps)
    left: np.ndarray     # [B] bool: the user left by the quit rule at this step (a subset of done)


class UserBatchEnv:
    """A batch of `batch_size` simulated users, stepped together.

    Users that have left stay in the arrays (shapes never change) but are inactive: their rewards
    are 0 and they are not stepped. `reset()` starts a new episode in every slot.
    """

    def __init__(self, world: World, cfg: WorldConfig, batch_size: int, seed: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.world, self.cfg, self.batch_size = world, cfg, batch_size
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE4F]))
        b, h, k = batch_size, cfg.history_len, cfg.slate_size
        self.user_ids = np.zeros(b, np.int64)
        self.patience = np.zeros(b, np.float32)
        self.steps = np.zeros(b, np.int32)
        self.active = np.zeros(b, bool)
        self.history_items = np.full((b, h), -1, np.int32)      # -1 = empty slot; newest last
        self.history_feedback = np.zeros((b, h), np.float32)
        self.last_slate_categories = np.full((b, k), -1, np.int32)
        self.recent_categories = np.zeros((b, cfg.window_size, world.num_categories), bool)
        self.shown = np.zeros((b, world.num_items), bool) if cfg.remove_recommended else None
        self._rating_span = world.data.rating_scale

    def reset(self, user_ids: np.ndarray | None = None) -> None:
        """Start new episodes: the given users, or users drawn from the pool by this env's RNG."""
        if user_ids is None:
            user_ids = self.rng.integers(0, self.world.num_users, self.batch_size)
        user_ids = np.asarray(user_ids, np.int64)
        if user_ids.shape != (self.batch_size,):
            raise ValueError(f"reset needs {self.batch_size} user ids, got shape {user_ids.shape}")
        if user_ids.min() < 0 or user_ids.max() >= self.world.num_users:
            raise ValueError(f"user ids must be in [0, {self.world.num_users})")
        self.user_ids[:] = user_ids
        self.patience[:] = self.cfg.initial_patience
        self.steps[:] = 0
        self.active[:] = True
        self.history_items[:] = -1
        self.history_feedback[:] = 0.0
        self.last_slate_categories[:] = -1
        self.recent_categories[:] = False
        if self.shown is not None:
            self.shown[:] = False

    def reset_slots(self, mask: np.ndarray, user_ids: np.ndarray | None = None) -> None:
        """Start new episodes in the rows where `mask` ([B] bool) is set, leaving the others as
        they are: `reset` for single slots, so a vector env can restart users independently.
        `user_ids` gives one id per masked row (in row order); None draws them with this env's RNG."""
        mask = np.asarray(mask, bool)
        if mask.shape != (self.batch_size,):
            raise ValueError(f"reset_slots needs a mask of shape {(self.batch_size,)}, got {mask.shape}")
        rows = np.flatnonzero(mask)
        if user_ids is None:
            user_ids = self.rng.integers(0, self.world.num_users, rows.size)
        user_ids = np.asarray(user_ids, np.int64)
        if user_ids.shape != rows.shape:
            raise ValueError(f"reset_slots needs {rows.size} user ids, got shape {user_ids.shape}")
        if rows.size == 0:
            return
        if user_ids.min() < 0 or user_ids.max() >= self.world.num_users:
            raise ValueError(f"user ids must be in [0, {self.world.num_users})")
        self.user_ids[rows] = user_ids
        self.patience[rows] = self.cfg.initial_patience
        self.steps[rows] = 0
        self.active[rows] = True
        self.history_items[rows] = -1
        self.history_feedback[rows] = 0.0
        self.last_slate_categories[rows] = -1
        self.recent_categories[rows] = False
        if self.shown is not None:
            self.shown[rows] = False

    def available_items(self) -> np.ndarray | None:
        """[B, N] items each user may still be shown (None when every item always may)."""
        return None if self.shown is None else ~self.shown

    def click_probability(self, slates: np.ndarray) -> np.ndarray:
        """[B, K] click probabilities: user model minus rho x mean similarity to the rest of the slate."""
        p = sigmoid(self.world.user_model.click.scores(self.user_ids, slates))
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

    def _leaves(self, safe: np.ndarray, act: np.ndarray) -> np.ndarray:
        """[B] which active users leave after this step by the configured quit rule."""
        if self.cfg.quit_rule == "patience":
            categories = self.world.item_category[safe]
            repeated = (categories == self.last_slate_categories).any(axis=1)
            self.patience -= act * (1.0 + repeated)
            self.last_slate_categories = np.where(act[:, None], categories, self.last_slate_categories)
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

    def step(self, slates: np.ndarray) -> StepResult:
        """Show each active user their slate ([B, K] item ids); inactive rows are ignored."""
        act = self.active
        safe = self._check_slates(np.asarray(slates))
        p = self.click_probability(safe)
        clicks = (self.rng.random(p.shape) < p).astype(np.float32)
        clicks[~act] = 0.0
        if self.cfg.reward_mode == "rating":
            low, high = self._rating_span
            rating = self.world.user_model.rating.scores(self.user_ids, safe)
            reward = (clicks * np.clip((rating - low) / (high - low), 0.0, 1.0)).mean(axis=1)
        else:
            reward = clicks.mean(axis=1)
        reward = (reward * act).astype(np.float32)

        leave = self._leaves(safe, act)
        self.steps += act
        done = act & (leave | (self.steps >= self.cfg.max_steps))

        k, h = safe.shape[1], self.cfg.history_len
        upd = act[:, None]
        shifted_items = np.concatenate([self.history_items[:, k:], safe.astype(np.int32)], axis=1)[:, -h:]
        shifted_fb = np.concatenate([self.history_feedback[:, k:], clicks], axis=1)[:, -h:]
        self.history_items = np.where(upd, shifted_items, self.history_items)
        self.history_feedback = np.where(upd, shifted_fb, self.history_feedback)
        if self.shown is not None:
            rows = np.flatnonzero(act)
            self.shown[rows[:, None], safe[rows]] = True
        self.active = act & ~done
        return StepResult(clicks=clicks, reward=reward, done=done, left=act & leave)


def policy_spec(cfg: WorldConfig, world: World) -> PolicySpec:
    """What a network needs of this world (policy.networks.PolicySpec)."""
    return PolicySpec(item_features=world.item_features, history_len=cfg.history_len)


def data_card(world: World) -> dict:
    """What a run's world is made of (printed at start, data.json in the run directory): the data
    set's sizes, its positive rate, its user features, where its files came from and a checksum of
    their content, and how well the user model it was given predicts held-out interactions."""
    data = world.data
    card = {"dataset": data.name, "source": data.source, "fingerprint": data.fingerprint(),
            "users": data.num_users, "items": data.num_items, "categories": data.num_categories,
            "interactions": len(data.interactions), "feedback": data.feedback,
            "positive_rate": float(data.positive().mean()) if len(data.interactions) else 0.0,
            "user_features": sorted(data.user_features)}
    report = world.user_model.report or {}
    card["user_model"] = {key: report[key] for key in ("auc", "popularity_auc", "rmse", "mean_rating_rmse")
                          if key in report} or "the generator's ground truth"
    return card


def data_card_line(card: dict) -> str:
    """The data card as the one line a run prints at start."""
    model = card["user_model"]
    quality = (f"user model held-out AUC {model['auc']:.3f} (popularity {model['popularity_auc']:.3f})"
               if isinstance(model, dict) and "auc" in model else f"user model: {model}")
    features = ", ".join(card["user_features"]) or "none"
    return (f"data: {card['dataset']} ({card['source']}, fingerprint {card['fingerprint']}): {card['users']:,} users, "
            f"{card['items']:,} items, {card['categories']} categories, {card['interactions']:,} interactions "
            f"({card['feedback']}, {100 * card['positive_rate']:.1f}% positive); user features: {features}; {quality}")
