"""Our ActorCritic as an RLlib RLModule (new API stack), so RLlib's PPO can train exactly the
network our learner trains: the baseline comparison (benchmarks/vs_rllib.py) then differs in the
machinery only, not in the model.

It reads the world's observation in `obs_mode="dict"` (rollout.vector_env): the history's item
ids and feedback, which the network embeds through the fixed item features as ours does, the
category mask (all allowed: no planner) and the step. Its
action distribution inputs are (mean, log std) of the same Gaussian, RLlib's TorchDiagGaussian.

    RLModuleSpec(module_class=ActorCriticRLModule,
                 model_config={"item_features": spec.item_features, "history_len": spec.history_len,
                               "num_categories": spec.num_categories, "max_steps": spec.max_steps,
                               "slate_size": spec.slate_size, "item_category": spec.item_category,
                               "policy": {...}})    # spec: policy.networks.PolicySpec
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from policy.networks import ActorCritic, PolicyConfig, PolicySpec


class ActorCriticRLModule(TorchRLModule, ValueFunctionAPI):
    """policy.networks.ActorCritic behind RLlib's RLModule interface."""

    def setup(self) -> None:
        config = dict(self.model_config or {})
        missing = [key for key in ("item_features", "history_len") if key not in config]
        if missing:
            raise ValueError(f"ActorCriticRLModule needs model_config[{missing[0]!r}] (a policy.networks.PolicySpec's "
                             "fields; rollout.world.policy_spec builds one from a world)")
        spec = PolicySpec(np.asarray(config["item_features"], np.float32), int(config["history_len"]),
                          int(config.get("num_categories", 0)), int(config.get("max_steps", 0)),
                          int(config.get("slate_size", 0)), config.get("item_category"))
        self.net = ActorCritic.from_spec(spec, PolicyConfig(**config.get("policy", {})))

    def _state(self, batch: dict[str, Any]) -> torch.Tensor:
        obs = batch[Columns.OBS]
        return self.net.encode(obs["history_items"], obs["history_feedback"].float(), obs.get("category_mask"),
                               obs["step"].reshape(-1) if "step" in obs else None)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        state = self._state(batch)
        mean = self.net.mu_head(state)
        log_std = self.net.log_std.expand_as(mean)
        return {Columns.ACTION_DIST_INPUTS: torch.cat([mean, log_std], dim=-1), Columns.EMBEDDINGS: state}

    def compute_values(self, batch: dict[str, Any], embeddings: torch.Tensor | None = None) -> torch.Tensor:
        state = self._state(batch) if embeddings is None else embeddings
        return self.net.value_head(state).squeeze(-1)
