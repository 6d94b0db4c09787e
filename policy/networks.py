"""The actor-critic shared by rollout actors (acting) and the learner (training).

State encoder: a Transformer over the user's recent history (item features projected to the model
width, plus a feedback embedding and a position embedding) with a learned summary token in front,
beside what the decision needs that the history does not say: the categories the planner allows
this step (the mask the slate must come from) and how far into the session it is (the step over
the session's cap: the budget left, which decides whether a quit penalty ten steps away matters).
Actor: a Gaussian over an action vector in item-feature space; an item's score is the dot product
of the action with its feature vector, so a slate is the top-K allowed items (LERL / HAC style
"hyper-action"). An item's features are fixed ones, then two the session changes
(SESSION_FEATURES: its category's share of the last slates, its earlier showings), so one weight
each says "away from what just tired this user" and "not this item again". The world's item
features end with the primary category's one-hot, so part of the action scores categories
directly. The Gaussian's mean is a learned correction on
top of the user's ridge estimate: the least-squares fit of the history's feedback on its items'
features (a deterministic function of the observation, as a state tracker's summary), scaled to
a fixed norm; the correction starts at zero, so an untrained policy ranks by the estimate and
learning goes to what the estimate misses (when to change category, how the session tires the
user). The context also carries the categories' share of the last two slates. Critic: a value
head on the same state.
"""
from __future__ import annotations

from dataclasses import dataclass

import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.distributions import Normal

from policy.ridge import _ridge_fit_lu, ridge_fit
from policy.summary_attention import summary_layer_output

RECENT_SLATES = 2
"""Slates back whose category shares the policy observes (what has just tired the user)."""
SESSION_FEATURES = ("category_share", "times_shown")
"""An item's features that the session changes, scored by the action's last entries (after the
fixed features): its category's share of this session's last RECENT_SLATES slates, and how often
it was shown earlier this session, both read off the history the policy observes. The fixed
features alone cannot say "not what just tired this user" or "not this item again" with one
weight: a category weight would have to follow the context step by step. On the default
MovieLens world's 189 evaluation users the rule ridge-exposure (the first) scores Rcum 2.248,
and 2.641 with the second (ridge-exposure-fresh); flat PPO, 120 s on 2 cores, went from 1.449
(without them) to 2.396 (lr 3e-4) and 2.843 (lr 1e-3, scale 10)."""
SESSION_FEATURE_SCALE = 10.0
"""Scale of the session features in scores. The learned weights start at 0 and move slowly (Adam
moves a bias by about lr per step): at 4, flat PPO's weights reached -0.36 and -0.42 in 258
updates (2.641); at 10 the same weights cost more and the exploration noise on them says more
(2.843 in 232 updates). The fixed features' scores spread over about 5."""


@dataclass
class PolicyConfig:
    """Network sizes of the actor-critic."""

    model_dim: int = 32
    """Width of the Transformer state encoder."""
    num_layers: int = 1
    """Transformer encoder layers."""
    num_heads: int = 2
    """Attention heads per layer (model_dim must be divisible by it)."""
    init_log_std: float = -1.0
    """Initial log standard deviation of the Gaussian action (state-independent, learned)."""

    def validate(self) -> None:
        if self.model_dim < 1 or self.num_layers < 1 or self.num_heads < 1:
            raise ValueError("model_dim, num_layers and num_heads must be >= 1")
        if self.model_dim % self.num_heads:
            raise ValueError(f"model_dim={self.model_dim} must be divisible by num_heads={self.num_heads}")


@dataclass(frozen=True, eq=False)
class PolicySpec:
    """All the networks know of a world: its items' fixed features (the action lives in their
    space; row i is item i) and how many past items a state holds. Built by the world's side
    (rollout.world.policy_spec) and handed to whoever builds a network: a learner, an RLlib module."""

    item_features: np.ndarray  # [num_items, feature_dim] float32
    history_len: int
    num_categories: int = 0    # width of the category mask the policy observes (0 = none observed)
    max_steps: int = 0         # the session's cap, to observe the step as a share of it (0 = not observed)
    slate_size: int = 0        # items per step, to observe the last slates' categories (0 = not observed)
    item_category: np.ndarray | None = None  # [num_items] primary category ids (with num_categories)

    @property
    def action_dim(self) -> int:
        """The item features' width, plus the session features' when observed."""
        return int(self.item_features.shape[1]) + session_dims(self.item_category is not None, self.num_categories,
                                                               self.slate_size, self.max_steps)


def session_dims(has_categories: bool, num_categories: int, slate_size: int, max_steps: int) -> int:
    """The action's entries for the session features (SESSION_FEATURES), 0 when a network of
    these sizes cannot read them: it must know the items' categories, the slate size (where a
    step's slate lies in the history) and the session's cap."""
    observed = has_categories and num_categories > 0 and slate_size > 0 and max_steps > 0
    return len(SESSION_FEATURES) if observed else 0


class ActorCritic(nn.Module):
    """Transformer state encoder + Gaussian action head + value head + item scoring."""

    @classmethod
    def from_spec(cls, spec: PolicySpec, cfg: PolicyConfig, reference_path: bool = False) -> "ActorCritic":
        return cls(spec.item_features, spec.history_len, cfg, spec.num_categories, spec.max_steps, spec.slate_size,
                   spec.item_category, reference_path)

    def __init__(self, item_features: np.ndarray, history_len: int, cfg: PolicyConfig, num_categories: int = 0,
                 max_steps: int = 0, slate_size: int = 0, item_category: np.ndarray | None = None,
                 reference_path: bool = False):
        super().__init__()
        cfg.validate()
        # The reference path: the implementation before the fast one, kept so that
        # benchmarks/learner_update.py and the tests can compare against it: every token through
        # every layer, each history slot projected on its own, and (learner.ppo) the preference
        # estimate made again in every minibatch. The default computes the same outputs with the
        # work nobody reads left out (_summary) and the work that does not change done once.
        self.reference_path = reference_path
        num_items, feat_dim = item_features.shape
        self.num_items, self.feature_dim, self.history_len = num_items, feat_dim, history_len
        self.num_categories, self.max_steps, self.slate_size = num_categories, max_steps, slate_size
        self.recent = min(RECENT_SLATES * slate_size, history_len) if item_category is not None else 0
        self.session_dims = session_dims(item_category is not None, num_categories, slate_size, max_steps)
        self.action_dim = feat_dim + self.session_dims
        self.register_buffer("item_category", torch.as_tensor(
            np.asarray(item_category if self.session_dims else np.zeros(num_items), np.int64)), persistent=False)
        # Category one-hots of the items (a zero row for empty slots): the recent slates' shares.
        onehot = np.zeros((num_items + 1, num_categories), np.float32)
        if item_category is not None and num_categories:
            onehot[np.arange(num_items), np.asarray(item_category, np.int64)] = 1.0
        self.register_buffer("item_onehot", torch.from_numpy(onehot), persistent=False)
        # Fixed item features (a buffer, not a parameter): the action lives in their space. Row
        # num_items is the padding row for empty history slots.
        padded = np.concatenate([item_features, np.zeros((1, feat_dim), np.float32)]).astype(np.float32)
        self.register_buffer("item_features", torch.from_numpy(padded), persistent=False)
        d = cfg.model_dim
        self.item_proj = nn.Linear(feat_dim, d)
        self.feedback_emb = nn.Linear(1, d)
        self.pos_emb = nn.Parameter(torch.zeros(history_len + 1, d))
        self.summary_token = nn.Parameter(torch.zeros(1, 1, d))
        layer = nn.TransformerEncoderLayer(d, cfg.num_heads, dim_feedforward=2 * d, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        # Beside the Transformer summary, the feedback-weighted mean of the history's item
        # features: "what this user responded to" in action space, which the actor can map to
        # an action almost linearly (learning it through attention alone takes far more samples).
        self.pooled_proj = nn.Linear(2 * feat_dim, d)
        # The step's context: the allowed categories (1/0 each) and the step's share of the cap.
        self.context_proj = nn.Linear(2 * num_categories + 1, d)
        self.mu_head = ResidualActionHead(3 * d, d, self.action_dim)
        self.log_std = nn.Parameter(torch.full((self.action_dim,), cfg.init_log_std))
        self.value_head = nn.Sequential(nn.Linear(3 * d + self.action_dim, d), nn.Tanh(), nn.Linear(d, 1))
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.normal_(self.summary_token, std=0.02)

    def encode(self, history_items: torch.Tensor, history_feedback: torch.Tensor,
               category_mask: torch.Tensor | None = None, step: torch.Tensor | None = None,
               fixed: torch.Tensor | None = None, summary: torch.Tensor | None = None) -> torch.Tensor:
        """[B, H] item ids (-1 = empty), [B, H] feedback, [B, C] allowed categories (None = all)
        and [B] steps (None = 0) -> [B, 3 * model_dim + A] state (its last A entries: the
        preference estimate in action space, what `mu_head` corrects). `fixed`: what the state
        takes from the history without parameters, if already made (`self.fixed_features` of the
        same history; a learner makes it once per batch, not once per minibatch of every epoch),
        None = make it here. `summary`: the encoder's summary of the same history, if already made
        (`history_state`), None = make it here."""
        if self.reference_path:
            return self._encode_reference(history_items, history_feedback, category_mask, step)
        empty = history_items < 0
        ids = history_items.masked_fill(empty, self.num_items).long()
        b = ids.shape[0]
        if summary is None:
            summary = self._summary(ids, history_feedback, empty)
        if fixed is None:
            fixed = self._fixed_of(ids, history_feedback, empty)
        f2, c = 2 * self.feature_dim, self.num_categories
        pooled, recent, preference = fixed[:, :f2], fixed[:, f2:f2 + c], fixed[:, f2 + c:]
        context = torch.cat([self._allowed(b, category_mask, ids.device), self._step_share(b, step, ids.device), recent],
                            dim=1)
        return torch.cat([self.norm(summary), self.pooled_proj(pooled), self.context_proj(context), preference], dim=-1)

    def history_state(self, history_items: torch.Tensor, history_feedback: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(summary, fixed): the parts of `encode`'s state that read the history alone, most of its
        work (the rest reads the category mask and the step). A rollout actor makes them while the
        planner plans the same step, and passes them to `forward`."""
        empty = history_items < 0
        ids = history_items.masked_fill(empty, self.num_items).long()
        return self._summary(ids, history_feedback, empty), self._fixed_of(ids, history_feedback, empty)

    def fixed_features(self, history_items: torch.Tensor, history_feedback: torch.Tensor) -> torch.Tensor:
        """[B, 2F + C + A] what the state takes from these histories without parameters (no
        gradient): the feedback-weighted and the plain mean of the history's item features, the
        categories' shares of the last RECENT_SLATES slates, and the preference estimate. Fixed
        functions of a row's observation, so a learner makes them once per batch (`encode`'s
        `fixed`); the reference path makes them in every minibatch."""
        empty = history_items < 0
        return self._fixed_of(history_items.masked_fill(empty, self.num_items).long(), history_feedback, empty)

    def _fixed_of(self, ids: torch.Tensor, feedback: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
        """`fixed_features` from catalog rows `ids` ([B, H], the padding row for empty slots)."""
        with torch.no_grad():
            shown = (~empty).float()
            liked = feedback * shown
            # The feedback-weighted and the plain mean of the history's item features, as weighted
            # bags of the catalog's rows (no [B, H, F] copy of the history's features is made).
            starts = torch.arange(0, ids.numel(), ids.shape[1], device=ids.device)
            pooled = [F.embedding_bag(ids.reshape(-1), self.item_features, starts, mode="sum",
                                      per_sample_weights=(w / w.sum(1, keepdim=True).clamp(min=1.0)).reshape(-1))
                      for w in (liked, shown)]                                            # 2 x [B, F]
            return torch.cat([*pooled, self._recent(ids), self._preference_of(ids, feedback, shown)], dim=-1)

    def _encode_reference(self, history_items: torch.Tensor, history_feedback: torch.Tensor,
                          category_mask: torch.Tensor | None, step: torch.Tensor | None) -> torch.Tensor:
        """`encode` as it was before the fast path, kept as the reference the benchmark and the
        tests compare against: every token through every layer, each history slot projected on
        its own, the ridge fit by LU in the primal form."""
        empty = history_items < 0
        ids = history_items.masked_fill(empty, self.num_items).long()
        features = self.item_features[ids]                                     # [B, H, F], zeros when empty
        tokens = self.item_proj(features) + self.feedback_emb(history_feedback.unsqueeze(-1))
        b = tokens.shape[0]
        x = torch.cat([self.summary_token.expand(b, -1, -1), tokens], dim=1) + self.pos_emb
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=empty.device), empty], dim=1)
        x = self.encoder(x, src_key_padding_mask=pad)
        shown = (~empty).float().unsqueeze(-1)
        liked = history_feedback.unsqueeze(-1) * shown
        pooled = torch.cat([(features * liked).sum(1) / liked.sum(1).clamp(min=1.0),
                            (features * shown).sum(1) / shown.sum(1).clamp(min=1.0)], dim=-1)
        context = self._context(b, category_mask, step, features.device, ids)
        return torch.cat([self.norm(x[:, 0]), self.pooled_proj(pooled), self.context_proj(context),
                          self._preference(features, history_feedback, shown, _ridge_fit_lu)], dim=-1)

    def _summary(self, ids: torch.Tensor, feedback: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
        """[B, d] the summary token's output, as the reference path computes it, without the work
        nobody reads: the item projection is affine, so the catalog is projected once and
        gathered; the feedback embedding and the positions are one fused add; the last layer
        computes token 0's output only (policy.summary_attention)."""
        b, h = ids.shape
        d = self.pos_emb.shape[1]
        projected = self.item_proj(self.item_features).index_select(0, ids.reshape(-1)).view(b, h, d)
        tokens = torch.addcmul(projected + (self.pos_emb[1:] + self.feedback_emb.bias), feedback.unsqueeze(-1),
                               self.feedback_emb.weight.view(d))
        first = (self.summary_token[0] + self.pos_emb[:1]).expand(b, d)
        layers = self.encoder.layers
        if len(layers) > 1:   # earlier layers: every token, the summary first
            pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=empty.device), empty], dim=1)
            x = torch.cat([first.unsqueeze(1), tokens], dim=1)
            for layer in layers[:-1]:
                x = layer(x, src_key_padding_mask=pad)
            first, tokens = x[:, 0], x[:, 1:]
        return summary_layer_output(layers[-1], first, tokens, empty)

    def _preference_of(self, ids: torch.Tensor, feedback: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
        """`preference` from catalog rows `ids` ([B, H], the padding row for empty slots) and
        `shown` ([B, H], 1/0)."""
        return self._preference(F.embedding(ids, self.item_features), feedback, shown.unsqueeze(-1))

    def _preference(self, features: torch.Tensor, feedback: torch.Tensor, shown: torch.Tensor,
                    fit=None) -> torch.Tensor:
        """[B, A] the ridge fit of the history's feedback on its items' features (ridge_fit, or
        `fit`), scaled to norm sqrt(F): a ranking direction in action space (0 when empty); 0 for
        the session features, which the fit does not see (what the policy learns to weigh)."""
        with torch.no_grad():
            weights = (fit or ridge_fit)(features, feedback, shown)[:, :-1]
            norm = weights.norm(dim=-1, keepdim=True)
            direction = torch.where(norm > 1e-8, weights / norm.clamp(min=1e-8), 0.0) * self.feature_dim ** 0.5
            return F.pad(direction, (0, self.session_dims))

    def _context(self, b: int, category_mask: torch.Tensor | None, step: torch.Tensor | None, device,
                 ids: torch.Tensor) -> torch.Tensor:
        """[B, 2C + 1]: the allowed categories, the step's share of the session's cap, and the
        categories' shares of the last RECENT_SLATES slates."""
        return torch.cat([self._allowed(b, category_mask, device), self._step_share(b, step, device),
                          self._recent(ids)], dim=1)

    def _allowed(self, b: int, category_mask: torch.Tensor | None, device) -> torch.Tensor:
        """[B, C] the categories the planner allows (1/0 each; all when None)."""
        mask = (torch.ones(b, self.num_categories, device=device) if category_mask is None
                else category_mask.to(device=device, dtype=torch.float32))
        if mask.shape[1] != self.num_categories:
            raise ValueError(f"category_mask has {mask.shape[1]} categories, the network was built for {self.num_categories}")
        return mask

    def _step_share(self, b: int, step: torch.Tensor | None, device) -> torch.Tensor:
        """[B, 1] the step's share of the session's cap (0 when not observed)."""
        return (torch.zeros(b, 1, device=device) if step is None or not self.max_steps
                else (step.to(device=device, dtype=torch.float32) / self.max_steps).reshape(b, 1))

    def _recent(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, C] the categories' shares of the last RECENT_SLATES slates of catalog rows `ids`."""
        return (F.embedding(ids[:, -self.recent:], self.item_onehot).mean(1) if self.recent
                else torch.zeros(ids.shape[0], self.num_categories, device=ids.device))

    def forward(self, history_items: torch.Tensor, history_feedback: torch.Tensor,
                category_mask: torch.Tensor | None = None, step: torch.Tensor | None = None,
                fixed: torch.Tensor | None = None, summary: torch.Tensor | None = None):
        """Returns (action distribution, value [B]). `fixed`, `summary`: as in `encode`."""
        state = self.encode(history_items, history_feedback, category_mask, step, fixed, summary)
        mu = self.mu_head(state)
        # The fast path skips the distribution's argument checks (a dozen small ops per call on
        # values this network made finite by construction); the reference path keeps them.
        dist = Normal(mu, self.log_std.exp().expand_as(mu), validate_args=None if self.reference_path else False)
        return dist, self.value_head(state).squeeze(-1)

    def item_scores(self, action: torch.Tensor, history_items: torch.Tensor | None = None,
                    step: torch.Tensor | None = None) -> torch.Tensor:
        """[B, A] actions -> [B, N] scores: the dot product with every item's fixed features, plus,
        when the network observes the session, the last entries' with its session features (from
        the observed [B, H] history and [B] steps, which it then needs)."""
        fixed = action[:, :self.feature_dim] @ self.item_features[: self.num_items].T
        if not self.session_dims:
            return fixed
        if history_items is None or step is None:
            raise ValueError("this network's actions also score the session features (policy.networks."
                             "SESSION_FEATURES): pass the observed history_items and step to item_scores")
        share, shown = session_features(history_items, step, self.item_category, self.num_categories,
                                        self.num_items, self.slate_size)
        session = action[:, self.feature_dim:] * SESSION_FEATURE_SCALE
        return fixed + session[:, :1] * share[:, self.item_category] + session[:, 1:2] * shown


def session_features(history_items: torch.Tensor, step: torch.Tensor, item_category: torch.Tensor,
                     num_categories: int, num_items: int, slate_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, C], [B, N]): each category's share of the last RECENT_SLATES slates of this session,
    and how often each item was shown earlier this session, from the history the policy
    observes ([B, H] ids, -1 = empty; the session's slates are its last step x slate_size slots,
    as far as the window reaches) and the [B] steps."""
    b, h = history_items.shape
    slot = torch.arange(h, device=history_items.device).flip(0)            # slots back from the newest
    step = step.reshape(b, 1).to(history_items.device).long()
    session = (slot < step * slate_size) & (history_items >= 0)             # [B, H]
    recent = session & (slot < RECENT_SLATES * slate_size)
    ids = history_items.clamp(min=0).long()
    shown = torch.zeros(b, num_items, device=history_items.device).scatter_add_(1, ids, session.float())
    cats = item_category[ids]
    share = torch.zeros(b, num_categories, device=history_items.device).scatter_add_(1, cats, recent.float())
    return share / recent.sum(1, keepdim=True).clamp(min=1), shown


class ResidualActionHead(nn.Module):
    """The Gaussian's mean from a state whose last `action_dim` entries are the preference
    estimate: that estimate plus an MLP's correction from the rest (zero at initialisation)."""

    def __init__(self, state_dim: int, hidden: int, action_dim: int):
        super().__init__()
        self.action_dim = action_dim
        self.correction = nn.Sequential(nn.Linear(state_dim, hidden), nn.Tanh(), nn.Linear(hidden, action_dim))
        nn.init.zeros_(self.correction[-1].weight)
        nn.init.zeros_(self.correction[-1].bias)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return state[:, -self.action_dim:] + self.correction(state[:, :-self.action_dim])


def log_prob(dist: Normal, action: torch.Tensor) -> torch.Tensor:
    """Log-probability of a whole action vector (independent dimensions)."""
    return dist.log_prob(action).sum(-1)


def weights_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """The parameters as a dict of numpy arrays: the form weights travel in (DESIGN.md)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_numpy_weights(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    """Load weights published by `weights_to_numpy` (strict: names and shapes must match)."""
    # One copy, straight from the object store's read-only pages into the parameters:
    # torch.from_numpy only views them (its warning about read-only memory does not apply, since
    # nothing writes through the view), and load_state_dict copies into the live tensors.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()}, strict=True)
