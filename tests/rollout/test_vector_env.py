"""Tests of rollout.vector_env: the simulator as a gymnasium VectorEnv (the RLlib baseline's env).

Gymnasium's env_checker is for single envs; what applies to a VectorEnv is used here: the passive
checker's `check_obs` against the batched spaces and `data_equivalence` for determinism.
"""

from __future__ import annotations

import dataclasses

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.utils.passive_env_checker import check_obs
from gymnasium.vector import AutoresetMode

from policy.networks import SESSION_FEATURES
from rollout.vector_env import ENV_ID, RecSimVectorEnv, make_vector_env
from rollout.world import LERL_USERS, World, WorldConfig
from rollout.users import UserBatchEnv

SMALL = WorldConfig(dataset="synthetic", num_items=200, num_categories=8, num_users=100, latent_dim=8, history_len=12,
                    slate_size=6, world_seed=3, **LERL_USERS)
N = 6


def make(obs_mode: str = "flat", seed: int = 0, **changes) -> RecSimVectorEnv:
    return RecSimVectorEnv(N, dataclasses.replace(SMALL, **changes), seed=seed, obs_mode=obs_mode)


def actions(env: RecSimVectorEnv, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)


def rollout(env: RecSimVectorEnv, seed: int, steps: int) -> list:
    """Everything reset and `steps` steps return, with actions from a fixed RNG."""
    rng = np.random.default_rng(1)
    out = [env.reset(seed=seed)]
    out += [env.step(actions(env, rng)) for _ in range(steps)]
    return out


def fresh_observation(env: RecSimVectorEnv, row: int):
    obs = env._observe()
    return {k: v[row] for k, v in obs.items()} if isinstance(obs, dict) else obs[row]


@pytest.mark.parametrize("obs_mode", ["flat", "dict"])
def test_spaces_contain_what_reset_and_step_return(obs_mode):
    env = make(obs_mode)
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert env.num_envs == N
    feat_dim = env.world.item_features.shape[1]
    action_dim = feat_dim + len(SESSION_FEATURES)   # the fixed features, then the session's
    assert env.single_action_space.shape == (action_dim,)
    assert env.action_space.shape == (N, action_dim)
    obs, info = env.reset(seed=0)
    assert info == {}
    check_obs(obs, env.observation_space, "reset")
    rng = np.random.default_rng(0)
    for _ in range(30):
        obs, reward, terminated, truncated, info = env.step(actions(env, rng))
        check_obs(obs, env.observation_space, "step")
        assert reward.shape == terminated.shape == truncated.shape == (N,)
        assert reward.dtype == np.float32
        assert terminated.dtype == truncated.dtype == bool
        assert not (terminated & truncated).any()
    if obs_mode == "flat":
        assert env.single_observation_space.shape == (SMALL.history_len * (feat_dim + 1) + 1,)


def test_registered_vector_entry_point_builds_this_env_not_a_sync_wrapper():
    env = gymnasium.make_vec(ENV_ID, num_envs=3, world_config=dataclasses.asdict(SMALL), seed=0)
    assert isinstance(env.unwrapped, RecSimVectorEnv) and env.num_envs == 3
    # The module-prefixed id imports the module first: what a fresh process (an RLlib runner) uses.
    env = gymnasium.make_vec(f"rollout.vector_env:{ENV_ID}", num_envs=2, obs_mode="dict")
    assert isinstance(env.unwrapped, RecSimVectorEnv) and env.obs_mode == "dict"
    assert isinstance(make_vector_env(2, dataclasses.asdict(SMALL)), RecSimVectorEnv)


@pytest.mark.parametrize("obs_mode", ["flat", "dict"])
def test_seeded_reset_is_deterministic(obs_mode):
    a = rollout(make(obs_mode, seed=11), seed=5, steps=40)
    b = rollout(make(obs_mode, seed=99), seed=5, steps=40)   # construction seed is overridden
    assert data_equivalence(a, b)
    c = rollout(make(obs_mode, seed=11), seed=6, steps=40)
    assert not data_equivalence(a, c)


def test_step_before_reset_and_bad_actions_raise():
    env = make()
    with pytest.raises(RuntimeError):
        env.step(np.zeros(env.action_space.shape, np.float32))
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(np.zeros((N + 1, env.single_action_space.shape[0]), np.float32))
    with pytest.raises(ValueError):
        env.step(np.full(env.action_space.shape, np.nan, np.float32))


@pytest.mark.parametrize("obs_mode", ["flat", "dict"])
def test_next_step_autoreset_starts_a_fresh_user_and_ignores_the_action(obs_mode):
    env, twin = make(obs_mode), make(obs_mode)
    env.reset(seed=3)
    twin.reset(seed=3)
    rng = np.random.default_rng(2)
    for _ in range(SMALL.max_steps):
        act = actions(env, rng)
        *_, terminated, truncated, info = env.step(act)
        twin.step(act)
        if (terminated | truncated).any():
            break
    done = terminated | truncated
    assert done.any(), "no episode ended within max_steps"
    np.testing.assert_array_equal(info["_session"], done)
    assert (info["session"]["Tint"][done] >= 1).all()
    assert (info["session"]["Tint"][~done] == 0).all()
    # Same actions except in the slots that ended: those must not matter.
    act = actions(env, rng)
    other = act.copy()
    other[done] = -act[done]
    step_a, step_b = env.step(act), twin.step(other)
    assert data_equivalence(step_a, step_b)
    obs, reward, terminated, truncated, info = step_a
    assert (reward[done] == 0).all() and not terminated[done].any() and not truncated[done].any()
    assert (env.users.steps[done] == 0).all() and env.users.active[done].all()
    for row in np.flatnonzero(done):
        empty = fresh_observation(env, row)
        if obs_mode == "dict":
            assert (obs["history_items"][row] == -1).all() and (obs["history_feedback"][row] == 0).all()
            assert data_equivalence({k: v[row] for k, v in obs.items()}, empty)
        else:
            assert (obs[row] == 0).all()
    # The restarted slots run a normal episode from here.
    obs, reward, *_ = env.step(actions(env, rng))
    assert (env.users.steps[done] == 1).all()


def test_quit_rule_ends_are_terminated_and_the_cap_is_truncated():
    env = make(max_steps=5, initial_patience=1000.0)          # nobody runs out of patience
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for t in range(1, 6):
        _, _, terminated, truncated, info = env.step(actions(env, rng))
        assert not terminated.any()
        assert truncated.all() == (t == 5) and truncated.any() == (t == 5)
    np.testing.assert_array_equal(info["session"]["Tint"], np.full(N, 5))

    env = make(max_steps=20, initial_patience=3.0)             # everybody leaves by step 3
    env.reset(seed=0)
    ended = np.zeros(N, bool)
    for _ in range(3):
        _, _, terminated, truncated, _ = env.step(actions(env, rng))
        assert not truncated.any()
        ended |= terminated
    assert ended.all()


@pytest.mark.parametrize("remove_recommended", [False, True])
def test_rewards_equal_the_user_batch_env_for_the_same_slates(remove_recommended):
    env = make(remove_recommended=remove_recommended)
    env.reset(seed=4)
    twin = UserBatchEnv(env.world, env.cfg, N, seed=4)        # what reset(seed=4) builds
    twin.reset()
    rng = np.random.default_rng(3)
    returns = np.zeros(N, np.float32)
    pending = np.zeros(N, bool)
    ended = 0
    for _ in range(60):
        _, reward, terminated, truncated, info = env.step(actions(env, rng))
        result = twin.step(env.last_slates)
        twin.reset_slots(pending)                              # the adapter's order: step, then restart
        np.testing.assert_array_equal(reward, result.reward)
        np.testing.assert_array_equal(terminated | truncated, result.done)
        np.testing.assert_array_equal(env.users.history_items, twin.history_items)
        returns[pending] = 0.0
        returns += reward
        if result.done.any():
            np.testing.assert_allclose(info["session"]["Rcum"][result.done], returns[result.done], rtol=1e-6)
            ended += int(result.done.sum())
        pending = result.done
    assert ended > N   # several generations of users went through the slots


def test_slates_respect_available_items_when_remove_recommended_is_on():
    env = make(remove_recommended=True)
    env.reset(seed=0)
    same = np.tile(np.linspace(-1, 1, env.single_action_space.shape[0], dtype=np.float32), (N, 1))
    seen: list[set[int]] = [set() for _ in range(N)]
    for _ in range(40):
        available = env.users.available_items()
        active = env.users.active.copy()
        slates = env.slates_for(same)
        picked = np.take_along_axis(available, slates, 1)
        assert picked[active].all()
        _, _, terminated, truncated, _ = env.step(same)   # UserBatchEnv would raise on a repeat
        for row in np.flatnonzero(active):
            items = set(env.last_slates[row].tolist())
            assert not items & seen[row]                    # one constant action, no item twice
            seen[row] |= items
        for row in np.flatnonzero(~active):                 # restarted: a new episode's memory
            seen[row] = set()
    # Without the mask one constant action with no weight on the session features shows the
    # same slate every step; a weight against earlier showings shows another.
    plain = make(remove_recommended=False)
    plain.reset(seed=0)
    same[:, -len(SESSION_FEATURES):] = 0.0
    plain.step(same)
    first = plain.last_slates.copy()
    plain.step(same)
    np.testing.assert_array_equal(plain.last_slates[plain.users.active], first[plain.users.active])
    away = same.copy()
    away[:, -1] = -1.0                                      # the times-shown weight
    previous = plain.last_slates.copy()
    active = plain.users.active.copy()
    plain.step(away)
    for row in np.flatnonzero(active & plain.users.active):
        assert not set(plain.last_slates[row].tolist()) & set(previous[row].tolist())


def test_reset_slots_restarts_only_the_masked_rows():
    world = World.build(SMALL)
    users = UserBatchEnv(world, SMALL, 4, seed=0)
    users.reset(np.arange(4))
    users.step(np.tile(np.arange(6), (4, 1)))
    before = users.history_items.copy()
    users.reset_slots(np.array([False, True, False, True]), np.array([7, 8]))
    np.testing.assert_array_equal(users.user_ids, [0, 7, 2, 8])
    np.testing.assert_array_equal(users.steps, [1, 0, 1, 0])
    assert (users.history_items[[1, 3]] == -1).all()
    np.testing.assert_array_equal(users.history_items[[0, 2]], before[[0, 2]])
    with pytest.raises(ValueError):
        users.reset_slots(np.array([True, False, False, False]), np.array([1, 2]))
