"""RLlib's PPO trains our own ActorCritic (policy/rllib_module.py) on the dict observations of
the VectorEnv: the RLlib baseline then uses the very network our learner trains."""
from __future__ import annotations

import dataclasses
import math

import gymnasium
import pytest

from policy.networks import ActorCritic, PolicyConfig
from rollout.vector_env import ENV_ID
from rollout.world import World, WorldConfig, policy_spec

WORLD = WorldConfig(dataset="synthetic", num_items=200, num_categories=8, num_users=100, history_len=12)


@pytest.mark.slow
@pytest.mark.ray
def test_rllib_ppo_trains_our_actor_critic() -> None:
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from policy.rllib_module import ActorCriticRLModule

    spec = policy_spec(WORLD, World.build(WORLD, log=lambda line: None))
    spec_config = {"item_features": spec.item_features, "history_len": spec.history_len,
                   "num_categories": spec.num_categories, "max_steps": spec.max_steps, "slate_size": spec.slate_size,
                   "item_category": spec.item_category}
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        config = (
            PPOConfig()
            .environment(env=f"rollout.vector_env:{ENV_ID}",
                         env_config={"world_config": dataclasses.asdict(WORLD), "seed": 0, "obs_mode": "dict"})
            .env_runners(num_env_runners=0, num_envs_per_env_runner=16, rollout_fragment_length=32,
                         gym_env_vectorize_mode=gymnasium.VectorizeMode.VECTOR_ENTRY_POINT)
            .training(train_batch_size_per_learner=512, minibatch_size=128, num_epochs=2)
            .rl_module(rl_module_spec=RLModuleSpec(module_class=ActorCriticRLModule,
                                                   model_config=spec_config))
            .debugging(seed=0)
        )
        algo = config.build_algo()
        try:
            module = algo.get_module()
            world = World.build(WORLD, log=lambda line: None)
            ours = ActorCritic.from_spec(policy_spec(WORLD, world), PolicyConfig())
            assert isinstance(module, ActorCriticRLModule)
            assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in ours.parameters())
            before = {k: v.clone() for k, v in module.net.state_dict().items()}
            results = [algo.train() for _ in range(2)]
            after = module.net.state_dict() if algo.get_module() is module else algo.get_module().net.state_dict()
        finally:
            algo.stop()
    finally:
        ray.shutdown()
    runners = results[-1]["env_runners"]
    assert runners["num_env_steps_sampled_lifetime"] >= 1024
    assert math.isfinite(float(runners["episode_return_mean"]))
    assert any(not (before[k] == after[k]).all() for k in before)  # PPO moved the weights
