"""The one episode loop (rollout.episodes): the same lengths, returns and slates as a hand-written
loop, recorded transitions in the batch schema, extra columns from `act`, the observe hook."""
from __future__ import annotations

import numpy as np
import pytest

from rollout.batch_schema import (
    ACTOR_COLUMNS,
    BATCH_COLUMNS,
    TRANSITION_COLUMNS,
    batch_dims,
    build_batch,
    validate_batch,
)
from rollout.episodes import EXTRA_COLUMNS, LOOP_COLUMNS, run_episodes
from rollout.reference_policies import ReferencePolicy
from rollout.world import World, WorldConfig
from rollout.users import UserBatchEnv

SMALL = WorldConfig(dataset="synthetic", num_items=80, num_categories=6, num_users=30, latent_dim=8, slate_size=3, max_steps=7,
                    history_len=6, favourite_categories=2, initial_patience=5.0, world_seed=2)
USERS = np.arange(0, 24, 3)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(SMALL, log=lambda *_: None)


def fresh_env(world: World) -> UserBatchEnv:
    env = UserBatchEnv(world, SMALL, len(USERS), seed=5)
    env.reset(USERS)
    return env


def policy_act(env: UserBatchEnv, seed: int = 1):
    policy = ReferencePolicy("random", seed)
    return lambda step, active: (policy.act(env), {})


def test_the_column_lists_are_the_schema_s() -> None:
    assert set(BATCH_COLUMNS) <= set(TRANSITION_COLUMNS)
    assert ACTOR_COLUMNS == tuple(n for n in TRANSITION_COLUMNS if n not in BATCH_COLUMNS)
    assert sorted(LOOP_COLUMNS + EXTRA_COLUMNS) == sorted(ACTOR_COLUMNS)


def test_matches_a_hand_written_loop(world: World) -> None:
    env = fresh_env(world)
    act = policy_act(env)
    lengths, returns, shown = np.zeros(len(USERS), np.int64), np.zeros(len(USERS)), []
    while env.active.any():
        active = env.active.copy()
        slates, _ = act(0, active)
        result = env.step(slates)
        shown.append(slates[active])
        lengths += active
        returns += result.reward
    env = fresh_env(world)
    run = run_episodes(env, policy_act(env), SMALL.max_steps)
    np.testing.assert_array_equal(run.lengths, lengths)
    np.testing.assert_array_equal(run.returns, returns)
    np.testing.assert_array_equal(run.slates, np.concatenate(shown))
    assert run.columns == {} and len(run.slates) == lengths.sum() and lengths.max() <= SMALL.max_steps
    assert 0 < lengths.min() and lengths.min() < SMALL.max_steps  # some users left early (patience)


def with_extras(env: UserBatchEnv, world: World):
    inner = policy_act(env)

    def act(step, active):
        slates, _ = inner(step, active)
        b = env.batch_size
        return slates, {"category_mask": np.ones((b, world.num_categories), bool),
                        "action": np.full((b, batch_dims(SMALL, world).action_dim), step, np.float32),
                        "behaviour_logp": np.arange(b, dtype=np.float32), "value": np.full(b, -step, np.float32)}
    return act


def test_recorded_columns_form_a_valid_batch_with_the_extras(world: World) -> None:
    env = fresh_env(world)
    run = run_episodes(env, with_extras(env, world), SMALL.max_steps, record=True)
    cols = dict(run.columns)
    assert tuple(cols) == ACTOR_COLUMNS
    n = len(cols["step"])
    assert n == run.lengths.sum()
    cols.update(batch_id=np.array(["test/0"] * n, dtype=object), policy_version=np.zeros(n, np.int64))
    validate_batch(build_batch(batch_dims(SMALL, world), cols))
    # episodes contiguous, steps 0.. in order, done exactly at each episode's last step
    order = np.lexsort((cols["step"], cols["episode_id"]))
    np.testing.assert_array_equal(order, np.arange(n))
    for episode in range(len(USERS)):
        rows = cols["episode_id"] == episode
        np.testing.assert_array_equal(cols["step"][rows], np.arange(run.lengths[episode]))
        np.testing.assert_array_equal(cols["done"][rows], np.arange(run.lengths[episode]) == run.lengths[episode] - 1)
        assert (cols["user_id"][rows] == USERS[episode]).all()
        assert cols["reward"][rows].sum() == pytest.approx(run.returns[episode])
    # the extras, taken for active rows: action = step, logp = the row, value = -step
    np.testing.assert_array_equal(cols["action"][:, 0], cols["step"])
    np.testing.assert_array_equal(cols["behaviour_logp"], cols["episode_id"])
    np.testing.assert_array_equal(cols["value"], -cols["step"])
    # histories are those before each step: the user's logged start at step 0, the previous slate
    # at the end after it
    first = cols["step"] == 0
    np.testing.assert_array_equal(cols["history_items"][first], world.start_items[cols["user_id"][first]])
    later = np.flatnonzero(~first)
    np.testing.assert_array_equal(cols["history_items"][later, -SMALL.slate_size:], cols["slate"][later - 1])


def test_unknown_extra_columns_are_refused(world: World) -> None:
    env = fresh_env(world)
    inner = policy_act(env)
    with pytest.raises(ValueError, match="logits"):
        run_episodes(env, lambda step, active: (inner(step, active)[0], {"logits": np.zeros(len(USERS))}),
                     SMALL.max_steps, record=True)


def test_observe_sees_every_step_and_max_steps_bounds_the_loop(world: World) -> None:
    env = fresh_env(world)
    seen = []
    run = run_episodes(env, policy_act(env), 2, observe=lambda slates, result, active: seen.append(
        (slates.copy(), result.reward.copy(), active.copy())))
    assert len(seen) == 2 and run.lengths.max() == 2
    np.testing.assert_array_equal(run.returns, seen[0][1].astype(np.float64) + seen[1][1])  # summed in float64
    np.testing.assert_array_equal(run.slates, np.concatenate([s[a] for s, _, a in seen]))
