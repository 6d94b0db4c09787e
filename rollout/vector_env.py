"""The simulated world as a gymnasium VectorEnv, so other libraries (RLlib's PPO: the baseline in
DESIGN.md) train on exactly the world our rollout actors step.

One `RecSimVectorEnv` wraps ONE `UserBatchEnv` of `num_envs` users: sub-env i is user slot i.

- Action (per sub-env): the same "hyper-action" our policy emits, a vector in item-feature space
  (Box float32 [-1, 1]^A, A = `policy_spec(cfg, world).action_dim`: the item features, then the
  session features, policy.networks.SESSION_FEATURES). Items are scored as our policy scores them
  (`ActorCritic.item_scores`: action . features, session features from the history),
  items the user may not be shown (remove_recommended) are masked with -inf by
  `policy.masking.select_slate`, and the top `slate_size` items are the slate. Only the action's
  direction matters to a ranking, so the bounds lose nothing; they exist so that RLlib's default
  action normalisation has a finite range to map onto. Out-of-bounds actions are used as given.
- Observation (per sub-env), `obs_mode`:
  - "flat" (default): Box float32 [H * F + H + 1]: the item features of the last H shown items
    (zeros for empty slots), flattened oldest first, then their H click feedbacks, then the step
    over `max_steps`. RLlib's default new-API-stack model (an MLP encoder) takes a flat Box only,
    and this carries the same information our ActorCritic sees (it, too, sees items only through
    their features; with no planner every category is allowed).
  - "dict": Dict("history_items": Box int32 [-1, N-1]^H (-1 = empty), "history_feedback": Box
    float32 [0, 1]^H, "category_mask": Box int8 {0, 1}^C (all 1: no planner), "step": Box int32
    [0, max_steps]^1): the UserBatchEnv's own arrays, `ActorCritic.forward`'s inputs.
- Autoreset: gymnasium's NEXT_STEP mode (`metadata["autoreset_mode"]`). When slot i ends at step t,
  the step t+1 call ignores action i, starts a fresh user there (drawn by the env's RNG) and returns
  that episode's first observation with reward 0 and terminated = truncated = False.
- terminated: the user left by the quit rule (also when that happens on the cap step);
  truncated: the episode hit `max_steps` with the user still there.
- infos: `{}` except on steps where episodes end; then `infos["session"] = {"Rcum": [n] float32,
  "Tint": [n] int32}` (return and length, 0 elsewhere) with `infos["_session"]` the [n] bool mask
  of slots that ended, the vector-info convention of gymnasium's RecordEpisodeStatistics (whose
  own "episode" key is left free, so that wrapper can still be applied).
- Seeding: `reset(seed=s)` rebuilds the UserBatchEnv with seed s (users drawn and clicks sampled
  from it), so a seeded reset followed by the same actions gives the same trajectory.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from policy.masking import select_slate
from policy.networks import ActorCritic, PolicyConfig
from rollout.world import World, WorldConfig, policy_spec
from rollout.users import UserBatchEnv

ENV_ID = "LLMRec/RecSim-v0"
"""Registered id; "rollout.vector_env:LLMRec/RecSim-v0" also imports this module first (any process)."""
OBS_MODES = ("flat", "dict")


class RecSimVectorEnv(VectorEnv):
    """`num_envs` simulated users stepped together as one gymnasium VectorEnv (see module doc)."""

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int, world_config: WorldConfig | dict | None = None, seed: int | None = None,
                 obs_mode: str = "flat", world: World | None = None):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        if isinstance(world_config, dict):
            world_config = WorldConfig(**world_config)
        self.cfg = dataclasses.replace(world_config) if world_config is not None else WorldConfig()
        self.world = world if world is not None else World.build(self.cfg)
        self.num_envs, self.obs_mode = num_envs, obs_mode
        n_items, feat_dim = self.world.item_features.shape
        h = self.cfg.history_len
        # Row n_items is all zeros: the features an empty history slot shows in flat observations.
        self._padded_features = np.concatenate([self.world.item_features, np.zeros((1, feat_dim), np.float32)])
        # The scoring of our policy (no parameters of it are used): one definition of a slate.
        self._scorer = ActorCritic.from_spec(policy_spec(self.cfg, self.world), PolicyConfig())
        self._all_allowed = torch.ones(num_envs, n_items, dtype=torch.bool)

        if obs_mode == "flat":
            self.single_observation_space = spaces.Box(-np.inf, np.inf, (h * feat_dim + h + 1,), np.float32)
        else:
            self.single_observation_space = spaces.Dict({
                "history_items": spaces.Box(-1, n_items - 1, (h,), np.int32),
                "history_feedback": spaces.Box(0.0, 1.0, (h,), np.float32),
                "category_mask": spaces.Box(0, 1, (self.world.num_categories,), np.int8),
                "step": spaces.Box(0, self.cfg.max_steps, (1,), np.int32),
            })
        self.single_action_space = spaces.Box(-1.0, 1.0, (self._scorer.action_dim,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

        if seed is None:
            seed = int(np.random.SeedSequence().entropy % 2 ** 63)
        self.users = UserBatchEnv(self.world, self.cfg, num_envs, seed)
        """The wrapped batch of users (slot i = sub-env i); read it, step it only through this env."""
        self.last_slates: np.ndarray | None = None
        """[n, K] the slates of the last step (rows of slots that were autoreset are unused)."""
        self._autoreset = np.zeros(num_envs, bool)
        self._returns = np.zeros(num_envs, np.float32)
        self._lengths = np.zeros(num_envs, np.int32)
        self._was_reset = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """New episodes in every slot. `seed` makes them (and everything after) deterministic;
        `options={"user_ids": [n] ints}` picks the users instead of drawing them."""
        super().reset(seed=seed)
        if seed is not None:
            self.users = UserBatchEnv(self.world, self.cfg, self.num_envs, int(seed))
        user_ids = None if not options else options.get("user_ids")
        self.users.reset(user_ids)
        self._autoreset[:] = False
        self._returns[:] = 0.0
        self._lengths[:] = 0
        self.last_slates = None
        self._was_reset = True
        return self._observe(), {}

    def slates_for(self, actions: np.ndarray) -> np.ndarray:
        """[n, A] actions -> [n, K] slates: the top-K items by our policy's scores among those available."""
        actions = np.asarray(actions, np.float32).reshape(self.action_space.shape)
        if not np.isfinite(actions).all():
            raise ValueError("actions must be finite")
        with torch.no_grad():
            scores = self._scorer.item_scores(torch.from_numpy(np.ascontiguousarray(actions)),
                                              torch.from_numpy(self.users.history_items), torch.from_numpy(self.users.steps))
        available = self.users.available_items()
        allowed = self._all_allowed if available is None else torch.from_numpy(available)
        return select_slate(scores, allowed, self.cfg.slate_size).numpy()

    def step(self, actions: np.ndarray):
        """One step of every slot; slots that ended last step restart instead (NEXT_STEP autoreset)."""
        if not self._was_reset:
            raise RuntimeError("call reset() before step()")
        pending = self._autoreset.copy()       # ended last step: restart now, their actions are ignored
        stepped = self.users.active.copy()     # exactly ~pending: every other slot is mid-episode
        slates = self.slates_for(actions)
        result = self.users.step(slates)       # inactive (pending) rows are not stepped and earn 0
        self.last_slates = slates
        done = result.done
        terminated = result.left
        truncated = done & ~terminated
        reward = result.reward.astype(np.float32)
        self._returns += reward
        self._lengths += stepped
        infos: dict[str, Any] = {}
        if done.any():
            infos["session"] = {"Rcum": np.where(done, self._returns, 0.0).astype(np.float32),
                                "Tint": np.where(done, self._lengths, 0).astype(np.int32)}
            infos["_session"] = done.copy()
        if pending.any():
            self.users.reset_slots(pending)
            self._returns[pending] = 0.0
            self._lengths[pending] = 0
        self._autoreset = done.copy()
        return self._observe(), reward, terminated, truncated, infos

    def _observe(self):
        items, feedback = self.users.history_items, self.users.history_feedback
        if self.obs_mode == "dict":
            return {"history_items": items.astype(np.int32, copy=True),
                    "history_feedback": feedback.astype(np.float32, copy=True),
                    "category_mask": np.ones((self.num_envs, self.world.num_categories), np.int8),
                    "step": self.users.steps.astype(np.int32).reshape(self.num_envs, 1)}
        n_items = self.world.num_items
        feats = self._padded_features[np.where(items < 0, n_items, items)]      # [n, H, F]
        share = self.users.steps.astype(np.float32).reshape(self.num_envs, 1) / self.cfg.max_steps
        return np.concatenate([feats.reshape(self.num_envs, -1), feedback, share], axis=1).astype(np.float32)


def make_vector_env(num_envs: int, world_config: WorldConfig | dict | None = None, seed: int | None = None,
                    **kwargs: Any) -> RecSimVectorEnv:
    """The registered vector entry point: `gymnasium.make_vec(ENV_ID, num_envs, world_config=...,
    seed=..., obs_mode=...)` lands here; kwargs go to `RecSimVectorEnv`."""
    return RecSimVectorEnv(num_envs, world_config=world_config, seed=seed, **kwargs)


if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, vector_entry_point="rollout.vector_env:make_vector_env")
