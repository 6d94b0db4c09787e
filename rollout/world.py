"""The simulated world: a data set with its user model, and the config of the users who live in it.

`WorldConfig` holds every setting of the world; `World.build` loads (or generates) the data set and
gets its user model (trained once, then cached); `rollout.users` steps a batch of users in it.
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
)

QUIT_RULES = ("interest", "patience", "window")
REWARD_MODES = ("click", "rating")
USER_MODELS = ("mf", "llm", "hybrid")
SYNTHETIC_ONLY = ("num_items", "num_categories", "num_users", "favourite_categories", "click_scale", "click_bias",
                  "feature_noise")
"""WorldConfig fields the generated world reads and a logged one does not."""
LERL_USERS = {"quit_rule": "patience", "satiation": 0.0, "item_fatigue": 0.0, "max_steps": 20, "initial_patience": 20.0,
              "start_history": False}
"""The LERL paper's users, for its faithful-reproduction rows: a response that never changes,
patience lost to position-aligned category repeats, 20 steps, sessions that start empty
(`WorldConfig(**LERL_USERS)`)."""


def draw_eval_users(num_users: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(evaluation users, training users), sorted ids: `share` of `num_users` held out (at least
    one, never all), drawn by `seed`; share <= 0 = every user in both. The one rule for who is held
    out: the world's episodes and LAAC's offline split both read it."""
    if share <= 0:
        return np.arange(num_users), np.arange(num_users)
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x5E7])).permutation(num_users)
    held = min(max(1, round(share * num_users)), num_users - 1)
    return np.sort(order[:held]), np.sort(order[held:])


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
    max_steps: int = 50
    """Episode cap in steps: well above a session's typical length under the interest rule, so length
    is earned (LERL: 20; DORL: 30)."""
    rho: float = 0.2
    """Weight of the intra-slate similarity penalty on click probability (LERL: 0.2)."""
    satiation: float = 1.0
    """Click-logit drop per unit of a category's recent exposure (a whole slate of it, just shown, is
    1), the mean over users; 0 = users whose response never changes (LERL's and DORL's)."""
    satiation_spread: float = 1.0
    """Standard deviation of log satiation across users (each user's is fixed by the world seed)."""
    exposure_decay: float = 0.8
    """Share of a category's exposure that remains after each step: how fast interest recovers."""
    item_fatigue: float = 5.0
    """Click-logit drop per earlier showing of the same item in the session; 0 = none (the papers')."""
    quit_rule: str = "interest"
    """When a user leaves: interest (patience that satisfaction refills and boredom drains), patience
    (LERL's position rule) or window (DORL's)."""
    interest_patience: float = 1.5
    """Interest rule: starting patience, also its cap (satisfaction beyond it is lost)."""
    boredom_cost: float = 4.0
    """Interest rule: patience lost per unit of boredom (the mean recent exposure of the slate's categories)."""
    satisfaction_gain: float = 3.0
    """Interest rule: patience gained per unit of reward (a fully clicked slate is 1); each step costs 1."""
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
    user_model: str = "mf"
    """Who answers the slates: mf (the learned model: matrix factorisation of the logs; the ground
    truth in the synthetic world), llm (the LLM user: the LLM service's Respond call, its like
    probability put on the learned model's logit scale) or hybrid (the learned model's logit plus the
    LLM's, weighted by a logistic fit on held-out logs). The session's dynamics (satiation, fatigue,
    similarity, the quit rule) are the world's in every mode. llm and hybrid need logged data, the LLM
    service and a calibration (--llm-user-calibration; the entry points make one); oracle references,
    which read every item's response, cannot run there."""
    llm_user_calibration: str = ""
    """llm / hybrid: the calibration file (JSON, rollout.llm_user.Calibration) that puts the LLM's answers
    on the world's scale; "" = made at start from held-out logs and the LLM service, then reused."""
    llm_user_timeout_s: float = 600.0
    """llm / hybrid: the deadline of one Respond call (a step's slates); a call past it is answered by the
    rule user (counted as fallback cases in the evaluation)."""
    history_len: int = 30
    """Items (with feedback) in the observation history: the last history_len shown."""
    start_history: bool = True
    """Start each session with the user's last history_len logged items and their feedback (the
    synthetic world's logs are drawn from its users' true preferences), so step 0 is personal;
    false = every session starts empty (the old world)."""
    eval_user_share: float = 0.2
    """Share of the users held out for evaluation (drawn by the world seed): training episodes never
    meet them; 0 = train and evaluate on every user (the papers')."""
    eval_period_share: float = 0.0
    """Also hold out the later time period: the last share of the logs by timestamp (over all users)
    is the evaluation period. Training users' sessions start from their history before it, and the
    popularity the policy and the references see counts only the earlier logs; evaluation users'
    sessions start from their history to the end of the logs. The user model (the world's truth)
    is fitted on all of it. Needs eval_user_share > 0; 0 = no time split."""

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
        for name in ("satiation", "satiation_spread", "item_fatigue", "boredom_cost", "satisfaction_gain"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.exposure_decay < 1.0:
            raise ValueError(f"exposure_decay must be in [0, 1), got {self.exposure_decay}")
        if not 0.0 <= self.eval_user_share < 1.0:
            raise ValueError(f"eval_user_share must be in [0, 1), got {self.eval_user_share}")
        if not 0.0 <= self.eval_period_share < 1.0:
            raise ValueError(f"eval_period_share must be in [0, 1), got {self.eval_period_share}")
        if self.eval_period_share > 0 and self.eval_user_share <= 0:
            raise ValueError("eval_period_share needs held-out users (eval_user_share > 0): with every user in "
                             "training, the later period would be in training users' histories too")
        if self.eval_period_share > 0 and not self.start_history:
            raise ValueError("eval_period_share splits the starting histories: it needs start_history on")
        if not self.interest_patience >= 0:
            raise ValueError(f"interest_patience must be >= 0, got {self.interest_patience}")
        if self.window_threshold < 0:
            raise ValueError(f"window_threshold must be >= 0, got {self.window_threshold}")
        if self.quit_rule not in QUIT_RULES:
            raise ValueError(f"quit_rule must be one of {QUIT_RULES}, got {self.quit_rule!r}")
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {self.reward_mode!r}")
        if not self.llm_user_timeout_s > 0:
            raise ValueError(f"llm_user_timeout_s must be > 0, got {self.llm_user_timeout_s}")
        if self.user_model not in USER_MODELS:
            raise ValueError(f"user_model must be one of {', '.join(USER_MODELS)}, got {self.user_model!r}")
        if self.user_model != "mf" and self.dataset == "synthetic":
            raise ValueError(f"user_model={self.user_model} needs logged data with item titles (the LLM reads the "
                             "user's history): the synthetic world's items mean nothing to an LLM; use --dataset ml-100k")
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


CATEGORY_FEATURE_SCALE = 4.0
"""The category one-hot's scale in the policy's item features: items' scores under the policy's
untrained action spread with a standard deviation of about 5.6 on MovieLens, so at 1 neither the
action's noise nor a learned correction could move a category's items noticeably (a category
weight of -1 now moves its items by 4)."""

class World:
    """A data set with its user model: everything an environment and a policy need to know."""

    def __init__(self, data: Dataset, user_model: UserModel, item_features: np.ndarray, similarity_vectors: np.ndarray):
        self.data, self.user_model = data, user_model
        self.similarity_vectors = _unit(similarity_vectors)           # [N, d]: cosine similarity for rho
        self.item_category = data.item_category                        # [N] primary category
        self.item_category_matrix = data.item_category_matrix          # [N, C]
        self.category_names = data.category_names
        self.item_titles = data.item_titles
        self._latent_features = np.asarray(item_features, np.float32)
        self.train_users = self.eval_users = np.arange(data.num_users)  # until split_users says otherwise
        self.start_items = self.start_feedback = None                     # until starting_histories
        self.split_timestamp = None                                       # until hold_out_period
        self._count_popularity(np.ones(len(data.interactions), bool))

    def _count_popularity(self, seen: np.ndarray) -> None:
        """Item popularity from the positive interactions marked `seen`, and the policy's item
        features: [N, d + 1 + C], the latent vector, the standardised log popularity and the
        primary category's one-hot x CATEGORY_FEATURE_SCALE: the information the popular and
        round-robin references use (an action's last C entries then score categories directly)."""
        positives = self.data.positive() & seen
        self.item_popularity = np.bincount(self.data.interactions.item[positives],
                                           minlength=self.data.num_items).astype(np.int64)
        log_pop = np.log1p(self.item_popularity.astype(np.float64))
        log_pop = (log_pop - log_pop.mean()) / max(float(log_pop.std()), 1e-8)
        category = CATEGORY_FEATURE_SCALE * np.eye(self.num_categories, dtype=np.float32)[self.item_category]
        self.item_features = np.concatenate([self._latent_features, log_pop[:, None], category], axis=1).astype(np.float32)

    def hold_out_period(self, share: float) -> None:
        """Make the last `share` of the logs by timestamp the evaluation period: popularity counts
        only the earlier logs, and `starting_histories` cuts training users' histories before it."""
        ts = self.data.interactions.timestamp
        if share <= 0 or not len(ts):
            return
        self.split_timestamp = int(np.quantile(ts, 1.0 - share, method="higher"))
        self._count_popularity(ts < self.split_timestamp)

    def starting_histories(self, length: int) -> None:
        """Each user's last `length` logged items in time order with their feedback (1 = positive),
        as [U, length] arrays padded with -1 / 0 at the front: what a session starts from. With a
        held-out period, training users' histories end before it; evaluation users' run to the end."""
        it = self.data.interactions
        keep = np.ones(len(it.user), bool)
        if self.split_timestamp is not None:
            evaluating = np.zeros(self.num_users, bool)
            evaluating[self.eval_users] = True
            keep = evaluating[it.user] | (it.timestamp < self.split_timestamp)
        order = np.lexsort((it.timestamp, it.user))
        order = order[keep[order]]
        users, items = it.user[order], it.item[order]
        positive = self.data.positive()[order].astype(np.float32)
        counts = np.bincount(users, minlength=self.num_users)
        ends = np.cumsum(counts)
        idx = ends[:, None] - length + np.arange(length)[None, :]            # [U, length] positions
        valid = idx >= (ends - counts)[:, None]
        safe = np.clip(idx, 0, max(len(items) - 1, 0))
        self.start_items = np.where(valid, items[safe] if len(items) else -1, -1).astype(np.int32)
        self.start_feedback = np.where(valid, positive[safe] if len(items) else 0.0, 0.0).astype(np.float32)

    def split_users(self, share: float, seed: int) -> None:
        """Hold out `share` of the users (at least one) for evaluation, drawn by `seed`; the rest train."""
        self.eval_users, self.train_users = draw_eval_users(self.num_users, share, seed)

    @property
    def users_held_out(self) -> bool:
        """Whether evaluation users are apart from the training ones."""
        return len(self.eval_users) < self.num_users

    user_model_holdout = UserModelConfig.holdout
    """Each user's latest share of logs the learned user model never saw (its time split)."""

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
        if cfg.eval_user_share > 0 and world.num_users < 2:
            raise ValueError(f"eval_user_share={cfg.eval_user_share} needs at least 2 users; the world has {world.num_users}")
        world.split_users(cfg.eval_user_share, cfg.world_seed)
        world.hold_out_period(cfg.eval_period_share)
        if cfg.start_history:
            world.starting_histories(cfg.history_len)
        if cfg.slate_size > world.num_items:
            raise ValueError(f"slate_size={cfg.slate_size} exceeds the {cfg.dataset} catalog's {world.num_items} items")
        if cfg.reward_mode == "rating" and world.user_model.rating is None:
            raise ValueError(f"reward_mode=rating needs a data set with ratings (ml-100k); {cfg.dataset} has clicks")
        if cfg.remove_recommended and cfg.slate_size * cfg.max_steps > world.num_items:
            raise ValueError(f"remove_recommended with slate_size x max_steps = {cfg.slate_size * cfg.max_steps} "
                             f"exceeds the catalog's {world.num_items} items")
        return world


def policy_spec(cfg: WorldConfig, world: World) -> PolicySpec:
    """What a network needs of this world (policy.networks.PolicySpec)."""
    return PolicySpec(item_features=world.item_features, history_len=cfg.history_len,
                      num_categories=world.num_categories, max_steps=cfg.max_steps, slate_size=cfg.slate_size,
                      item_category=world.item_category)


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
    card["held_out_users"] = int(len(world.eval_users)) if world.users_held_out else 0
    card["held_out_period_from"] = world.split_timestamp
    card["logs"] = repeat_statistics(data)
    report = world.user_model.report or {}
    card["user_model"] = {key: report[key] for key in ("auc", "popularity_auc", "rmse", "mean_rating_rmse")
                          if key in report} or "the generator's ground truth"
    return card


DYNAMICS_SOURCES = {
    "satiation": "chosen for the trade-off (benchmarks/test_bed.py); the logs' category repeat ratio is measured beside it",
    "satiation_spread": "chosen: users differ; not measurable from rating logs",
    "exposure_decay": "chosen: RecSim interest evolution's form; not measurable from rating logs",
    "item_fatigue": "chosen: an item seen again is rarely wanted again (ratings are one per item)",
    "interest_patience": "chosen for the trade-off (benchmarks/test_bed.py)",
    "boredom_cost": "chosen for the trade-off (benchmarks/test_bed.py)",
    "satisfaction_gain": "chosen for the trade-off (benchmarks/test_bed.py)",
}
"""Where each default of the users' dynamics comes from (the data card repeats it per run)."""


def dynamics_card(cfg: WorldConfig) -> dict:
    """The users' dynamics of this run, each setting with where its default comes from."""
    return {"quit_rule": cfg.quit_rule, "max_steps": cfg.max_steps, "start_history": cfg.start_history,
            **{name: {"value": getattr(cfg, name), "default": getattr(WorldConfig, name), "source": source}
               for name, source in DYNAMICS_SOURCES.items()}}


def repeat_statistics(data: Dataset) -> dict:
    """What the logs say about satiation, where they can: the share of a user's consecutive
    interactions that share a timestamp (order unknown), and the median over users of how often
    the next interaction repeats the last one's category, against how often the user's own
    category mix predicts (1 = no satiation or loyalty visible; users with 10+ interactions)."""
    it = data.interactions
    order = np.lexsort((it.timestamp, it.user))
    users, ts, cats = it.user[order], it.timestamp[order], data.item_category[it.item[order]]
    same_user = users[1:] == users[:-1]
    if not same_user.any():
        return {"same_timestamp_share": None, "category_repeat_ratio": None}
    ratios = []
    bounds = np.flatnonzero(np.r_[True, ~same_user, True])
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end - start >= 10:
            c = cats[start:end]
            mix = np.bincount(c, minlength=data.num_categories) / len(c)
            ratios.append(float((c[1:] == c[:-1]).mean() / (mix ** 2).sum()))
    return {"same_timestamp_share": float((ts[1:] == ts[:-1])[same_user].mean()),
            "category_repeat_ratio": float(np.median(ratios)) if ratios else None}


def data_card_line(card: dict) -> str:
    """The data card as the one line a run prints at start."""
    model = card["user_model"]
    quality = (f"user model held-out AUC {model['auc']:.3f} (popularity {model['popularity_auc']:.3f})"
               if isinstance(model, dict) and "auc" in model else f"user model: {model}")
    features = ", ".join(card["user_features"]) or "none"
    return (f"data: {card['dataset']} ({card['source']}, fingerprint {card['fingerprint']}): {card['users']:,} users, "
            f"{card['items']:,} items, {card['categories']} categories, {card['interactions']:,} interactions "
            f"({card['feedback']}, {100 * card['positive_rate']:.1f}% positive); user features: {features}; {quality}")
