"""Tests of the rollout worker run in this process (no Ray), with the in-process planner."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pyarrow as pa
import pytest

from policy.networks import ActorCritic, PolicyConfig, weights_to_numpy
from rollout.actor import RolloutConfig, RolloutWorker
from rollout.batch_schema import batch_dims, column, validate_batch
from rollout.world import World, WorldConfig, policy_spec

WORLD = WorldConfig(dataset="synthetic", num_items=200, num_categories=8, num_users=100, history_len=12)
POLICY = PolicyConfig()
ROLLOUT = RolloutConfig(users_per_actor=16, plan_categories=4, use_planner=True)


def make_worker(seed: int = 0, world: WorldConfig = WORLD, rollout: RolloutConfig = ROLLOUT,
                index: int = 0) -> RolloutWorker:
    return RolloutWorker(world, POLICY, rollout, "in-process" if rollout.use_planner else None, index, seed)


class Weights:
    """Version-0 weights of a freshly built network, as a learner would publish them."""

    def weights(self):
        net = ActorCritic.from_spec(policy_spec(WORLD, World.build(WORLD, log=lambda line: None)), POLICY)
        return weights_to_numpy(net), 0


@pytest.fixture(scope="module")
def learner0() -> Weights:
    return Weights()


@pytest.fixture(scope="module")
def collected(learner0):
    """A worker and one batch it collected with version-0 weights."""
    worker = make_worker()
    weights, version = learner0.weights()
    batch, stats = worker.collect(weights, version)
    return worker, batch, stats


def episode_bounds(episode_ids: np.ndarray) -> list[tuple[int, int]]:
    starts = np.flatnonzero(np.r_[True, episode_ids[1:] != episode_ids[:-1]])
    ends = np.r_[starts[1:], len(episode_ids)]
    return list(zip(starts.tolist(), ends.tolist()))


def check_rows_ordered_with_one_terminal_per_episode(batch: pa.RecordBatch, users: int) -> list[int]:
    episode, step, done = column(batch, "episode_id"), column(batch, "step"), column(batch, "done")
    order = np.lexsort((step, episode))
    np.testing.assert_array_equal(order, np.arange(batch.num_rows))  # already sorted by (episode, step)
    bounds = episode_bounds(episode)
    assert len(bounds) == users
    assert sorted(set(episode.tolist())) == list(range(users))
    lengths = []
    for start, end in bounds:
        assert step[start:end].tolist() == list(range(end - start))  # 0, 1, ..., no gaps
        assert done[start:end].tolist() == [False] * (end - start - 1) + [True]
        lengths.append(end - start)
    return lengths



def test_collected_batch_validates_and_has_the_worlds_dims(collected):
    worker, batch, stats = collected
    dims = validate_batch(batch, worker.dims)
    assert dims == batch_dims(WORLD, worker.world)
    # The action scores items by their features: the latent 16, the log popularity and the
    # category's one-hot (8), then the two session features (recent category share, times shown).
    assert (dims.history_len, dims.num_categories, dims.action_dim, dims.slate_size) == (12, 8, 27, 6)
    assert set(column(batch, "batch_id").tolist()) == {stats.batch_id}
    assert re.fullmatch(r"actor-0\.[0-9a-f]{8}/0", stats.batch_id)
    assert set(column(batch, "policy_version").tolist()) == {0}
    assert stats.policy_version == 0


def test_rows_are_ordered_with_one_terminal_row_per_episode(collected):
    worker, batch, stats = collected
    lengths = check_rows_ordered_with_one_terminal_per_episode(batch, ROLLOUT.users_per_actor)
    assert lengths == stats.episode_lengths.tolist()
    assert int(stats.episode_lengths.sum()) == batch.num_rows == stats.env_steps
    # Returns are the per-episode reward sums.
    reward, episode = column(batch, "reward"), column(batch, "episode_id")
    np.testing.assert_allclose(stats.episode_returns, np.bincount(episode, weights=reward), rtol=1e-6)


def test_slates_stay_inside_the_planners_category_mask(collected):
    worker, batch, stats = collected
    mask = column(batch, "category_mask")
    slate = column(batch, "slate")
    assert stats.masks_widened == 0  # 4 categories x 25 items always fill a slate of 6
    assert (mask.sum(axis=1) == ROLLOUT.plan_categories).all()
    slate_categories = worker.world.item_category[slate]                # [rows, 6]
    inside = np.take_along_axis(mask, slate_categories, axis=1)
    assert inside.all()
    assert all(len(set(row)) == WORLD.slate_size for row in slate.tolist())  # distinct items
    assert stats.planner_calls == max(stats.episode_lengths)  # one batched call per step
    assert stats.planner_fallbacks == 0


def test_history_column_matches_what_was_shown_before(collected):
    worker, batch, stats = collected
    hist, slate, episode = column(batch, "history_items"), column(batch, "slate"), column(batch, "episode_id")
    users = column(batch, "user_id")
    for start, end in episode_bounds(episode)[:4]:
        assert hist[start].tolist() == worker.world.start_items[users[start]].tolist()  # step 0: the logged start
        for row in range(start + 1, end):
            assert hist[row, -6:].tolist() == slate[row - 1].tolist()      # newest last


def test_without_planner_rows_stay_ordered_when_episodes_end_at_different_steps():
    world = dataclasses.replace(WORLD, initial_patience=8.0)
    worker = make_worker(world=world, rollout=dataclasses.replace(ROLLOUT, use_planner=False))
    batch, stats = worker.collect()
    lengths = check_rows_ordered_with_one_terminal_per_episode(batch, ROLLOUT.users_per_actor)
    assert len(set(lengths)) > 1  # the case the sort is for
    assert stats.planner_calls == 0
    assert column(batch, "category_mask").all()
    assert set(column(batch, "policy_version").tolist()) == {-1}  # no weights were ever loaded


def test_use_planner_without_an_address_is_an_error():
    with pytest.raises(ValueError, match="planner address"):
        RolloutWorker(WORLD, POLICY, ROLLOUT, None, 0, 0)


def test_same_seed_and_weights_give_identical_batches_and_different_seeds_differ(learner0):
    weights, version = learner0.weights()
    a, sa = make_worker(seed=7).collect(weights, version)
    b, sb = make_worker(seed=7).collect(weights, version)
    c, _ = make_worker(seed=8).collect(weights, version)
    # Everything but the batch id (a label that differs per worker incarnation) is fixed by the seed.
    data = [name for name in a.schema.names if name != "batch_id"]
    assert a.select(data).equals(b.select(data))
    assert sa.batch_id != sb.batch_id
    np.testing.assert_array_equal(sa.episode_returns, sb.episode_returns)
    assert not a.select(data).equals(c.select(data))
    assert not np.array_equal(column(a, "user_id"), column(c, "user_id"))


def test_successive_batches_get_new_ids(learner0):
    worker = make_worker(index=3)
    weights, version = learner0.weights()
    ids = [worker.collect(weights, version)[1].batch_id for _ in range(2)]
    assert ids == [f"actor-3.{worker.incarnation}/0", f"actor-3.{worker.incarnation}/1"]


def test_with_plan_reuse_each_actor_draws_its_own_share_of_the_training_users(learner0):
    """Reuse on: actor i of n meets only train_users[i::n] (each user planned by one actor), and a
    second batch reuses the session-start plans of the users it meets again."""
    reuse = dataclasses.replace(ROLLOUT, plan_reuse_batches=5, num_rollout_actors=2, users_per_actor=32)
    weights, version = learner0.weights()
    met = []
    for index in (0, 1):
        worker = make_worker(rollout=reuse, index=index)
        share = set(worker.world.train_users[index::2].tolist())
        first, stats1 = worker.collect(weights, version)
        second, stats2 = worker.collect(weights, version)
        users = set(column(first, "user_id").tolist()) | set(column(second, "user_id").tolist())
        assert users <= share
        assert stats1.plans_reused == 0 and stats2.plans_reused > 0
        met.append(users)
        worker.close()
    assert not met[0] & met[1]
    # Reuse off (the heuristic's default): every actor draws from every training user.
    assert (make_worker().env.user_pool == World.build(WORLD, log=lambda line: None).train_users).all()


def test_only_active_users_are_computed_and_their_rows_are_what_the_network_gives_them(learner0):
    """The worker runs the network on the active users only (late in a batch most slots have
    left): every recorded row's value and mean action are the network's on that row alone, and
    the sampled action's log-probability is the network's of that action."""
    import torch

    from policy.networks import load_numpy_weights, log_prob
    from rollout.batch_schema import OBSERVATION_COLUMNS

    world = dataclasses.replace(WORLD, initial_patience=8.0)
    worker = make_worker(world=world)
    weights, version = learner0.weights()
    batch, stats = worker.collect(weights, version)
    lengths = check_rows_ordered_with_one_terminal_per_episode(batch, ROLLOUT.users_per_actor)
    assert len(set(lengths)) > 1   # some steps ran with users gone
    net = ActorCritic.from_spec(policy_spec(world, World.build(world, log=lambda line: None)), POLICY)
    load_numpy_weights(net, weights)
    obs = [torch.from_numpy(np.array(column(batch, name))) for name in OBSERVATION_COLUMNS]
    with torch.no_grad():
        dist, value = net(*obs)
        action = torch.from_numpy(np.array(column(batch, "action")))
        np.testing.assert_allclose(column(batch, "value"), value.numpy(), atol=1e-5)
        np.testing.assert_allclose(column(batch, "behaviour_logp"), log_prob(dist, action).numpy(), rtol=1e-5, atol=1e-3)
    mean, _ = worker.collect(weights, version, act="mean")
    with torch.no_grad():
        dist, _ = net(*[torch.from_numpy(np.array(column(mean, name))) for name in OBSERVATION_COLUMNS])
    np.testing.assert_allclose(column(mean, "action"), dist.mean.numpy(), atol=1e-5)


def test_planning_over_the_service_while_encoding_gives_the_batch_planning_first_gives(learner0):
    """With the planner service, each step's plan is asked for in a thread while the policy encodes
    the histories (RolloutWorker._overlaps_plans); the batch is the in-process planner's, which
    plans first and then encodes, value for value: only the time differs."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from llm_server.backends import HeuristicBackend
    from planner_requests import start_in_background

    host, address = start_in_background(HeuristicBackend())
    try:
        served, local = RolloutWorker(WORLD, POLICY, ROLLOUT, address, 0, 3), make_worker(3)
        assert served._overlaps_plans() and not local._overlaps_plans()
        weights, version = learner0.weights()
        (batch, stats), (expected, local_stats) = served.collect(weights, version), local.collect(weights, version)
        data = [name for name in batch.schema.names if name != "batch_id"]
        assert batch.select(data).equals(expected.select(data))
        assert stats.planner_calls > 0 and stats.planner_fallbacks == 0
        assert 0.0 <= stats.seconds_plan_wait <= stats.seconds_planner   # the wait encoding did not cover
        assert local_stats.seconds_plan_wait == local_stats.seconds_planner
        served.close()
    finally:
        host.stop()
