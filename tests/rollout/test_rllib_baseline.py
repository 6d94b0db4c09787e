"""RLlib's PPO (new API stack) trains on our simulator through rollout.vector_env: the baseline of
DESIGN.md, run for a few iterations on a small world to prove the wiring.

RLlib is made to use our VectorEnv itself rather than vectorising single envs: its
SingleAgentEnvRunner.make_env calls `gym.make_vec(config.env, num_envs=num_envs_per_env_runner,
vectorization_mode=config.gym_env_vectorize_mode, **env_config)`. With `env` the gymnasium id
"rollout.vector_env:LLMRec/RecSim-v0" (the module prefix makes gymnasium import and so register it
in whichever process builds the env) and `gym_env_vectorize_mode=VECTOR_ENTRY_POINT`, that call is
`make_vector_env(num_envs, **env_config)`: one RecSimVectorEnv, one UserBatchEnv, no SyncVectorEnv.
"""

from __future__ import annotations

import dataclasses
import math

import gymnasium
import pytest

from rollout.vector_env import ENV_ID, RecSimVectorEnv
from rollout.world import WorldConfig

WORLD = WorldConfig(dataset="synthetic", num_items=200, num_categories=8, num_users=100, history_len=12)
ITERATIONS = 3


@pytest.mark.slow
@pytest.mark.ray
def test_rllib_ppo_trains_on_the_vector_env(local_ray: None) -> None:
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    config = (
        PPOConfig()
        .environment(env=f"rollout.vector_env:{ENV_ID}",
                     env_config={"world_config": dataclasses.asdict(WORLD), "seed": 0})
        .env_runners(num_env_runners=0, num_envs_per_env_runner=16, rollout_fragment_length=32,
                     gym_env_vectorize_mode=gymnasium.VectorizeMode.VECTOR_ENTRY_POINT)
        .training(train_batch_size_per_learner=512, minibatch_size=128, num_epochs=2, lr=3e-4)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[64, 64]))
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        # The runner's env is ours, unwrapped by nothing but RLlib's DictInfoToList.
        env = algo.env_runner.env
        assert isinstance(env.unwrapped, RecSimVectorEnv)
        assert env.unwrapped.num_envs == 16 and env.unwrapped.cfg.num_items == WORLD.num_items
        results = [algo.train() for _ in range(ITERATIONS)]
    finally:
        algo.stop()

    last = results[-1]
    assert last["training_iteration"] == ITERATIONS
    runners = last["env_runners"]
    assert runners["num_env_steps_sampled_lifetime"] >= ITERATIONS * 512
    assert runners["num_episodes_lifetime"] > 0
    episode_return, episode_len = float(runners["episode_return_mean"]), float(runners["episode_len_mean"])
    assert math.isfinite(episode_return) and episode_return >= 0.0
    # Episodes never run past the cap: RLlib cut them where our NEXT_STEP autoreset did. A step
    # earns at most 1 (mean click over the slate), so a return is at most its length.
    assert 1.0 <= episode_len <= WORLD.max_steps
    assert episode_return <= episode_len
