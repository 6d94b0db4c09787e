"""Tests of the learner and the rollout worker used serially (no Ray), with the in-process planner."""

from __future__ import annotations

import re

import dataclasses

import numpy as np
import pyarrow as pa
import pytest
import torch

from learner.checkpoint import load_checkpoint, save_checkpoint
from learner.learner_actor import Learner, pick_device
from learner.ppo import PPOConfig
from policy.networks import PolicyConfig
from rollout.actor import RolloutConfig, RolloutWorker
from rollout.batch_schema import batch_dims, column, validate_batch
from rollout.world import WorldConfig
from worlds import learner_spec

WORLD = WorldConfig(num_items=200, num_categories=8, num_users=100, history_len=12)
POLICY = PolicyConfig()
PPO = PPOConfig(epochs=2, minibatch_size=128)
ROLLOUT = RolloutConfig(users_per_actor=16, plan_categories=4, use_planner=True)


def make_worker(seed: int = 0, world: WorldConfig = WORLD, rollout: RolloutConfig = ROLLOUT,
                index: int = 0) -> RolloutWorker:
    return RolloutWorker(world, POLICY, rollout, "in-process" if rollout.use_planner else None, index, seed)


def make_learner(seed: int = 0) -> Learner:
    return Learner(*learner_spec(WORLD), POLICY, PPO, seed=seed, device="cpu")


@pytest.fixture(scope="module")
def learner0() -> Learner:
    """A learner at version 0 (tests that update use their own)."""
    return make_learner()


@pytest.fixture(scope="module")
def collected(learner0):
    """A worker and one batch it collected with the learner's version-0 weights."""
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


# --- the rollout worker -------------------------------------------------------------------------


def test_collected_batch_validates_and_has_the_worlds_dims(collected):
    worker, batch, stats = collected
    dims = validate_batch(batch, worker.dims)
    assert dims == batch_dims(WORLD, worker.world)
    assert (dims.history_len, dims.num_categories, dims.action_dim, dims.slate_size) == (12, 8, 16, 6)
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
    for start, end in episode_bounds(episode)[:4]:
        assert (hist[start] == -1).all()                                  # step 0: empty history
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


# --- the learner --------------------------------------------------------------------------------


def test_update_bumps_version_and_reports_policy_lags():
    learner = make_learner()
    worker = make_worker(seed=1)
    weights, version = learner.weights()
    assert version == 0
    batches = [worker.collect(weights, version)[0] for _ in range(3)]  # all acted by version 0

    m = learner.update(batches[0])
    assert (m["version"], m["policy_lags"], m["duplicates"]) == (1, [0], 0)
    assert m["rows"] == batches[0].num_rows
    assert all(np.isfinite(m[k]) for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac"))
    m = learner.update(batches[1])
    assert (m["version"], m["policy_lags"]) == (2, [1])
    m = learner.update(batches[2])
    assert (m["version"], m["policy_lags"]) == (3, [2])  # acted by v0, learned on after two updates
    assert learner.version == 3
    assert learner.weights()[1] == 3


def test_update_changes_the_weights():
    learner = make_learner()
    before, version = learner.weights()
    batch, _ = make_worker(seed=2).collect(before, version)
    learner.update(batch)
    after, _ = learner.weights()
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert "log_std" in changed and len(changed) > len(before) // 2


def test_a_duplicate_batch_is_counted_and_not_learned_from():
    learner = make_learner()
    worker = make_worker(seed=3)
    weights, version = learner.weights()
    first, _ = worker.collect(weights, version)
    second, _ = worker.collect(weights, version)
    learner.update(first)
    snapshot, v1 = learner.weights()

    m = learner.update(first)
    assert m == {"rows": 0, "duplicates": 1, "policy_lags": [], "version": 1}
    assert learner.version == v1 == 1
    for name, value in learner.weights()[0].items():
        np.testing.assert_array_equal(value, snapshot[name], err_msg=name)

    m = learner.update(first, second)  # the duplicate is skipped, the new batch is learned from
    assert (m["duplicates"], m["rows"], m["policy_lags"], m["version"]) == (1, second.num_rows, [1], 2)


def test_a_batch_from_a_different_world_is_rejected():
    learner = make_learner()
    other_world = dataclasses.replace(WORLD, history_len=10)
    batch, _ = make_worker(world=other_world).collect()
    with pytest.raises(ValueError, match="dims"):
        learner.update(batch)
    assert learner.version == 0
    assert learner.seen_batch_ids == set()
    with pytest.raises(ValueError, match="at least one batch"):
        learner.update()


def trained_learner_and_next_batch() -> tuple[Learner, pa.RecordBatch]:
    learner = make_learner(seed=0)
    worker = make_worker(seed=4)
    w, v = learner.weights()
    b1, _ = worker.collect(w, v)
    b2, _ = worker.collect(w, v)
    learner.update(b1)
    return learner, b2


def test_state_round_trip_reproduces_weights_version_and_training(tmp_path):
    a, next_batch = trained_learner_and_next_batch()
    b = make_learner(seed=99)
    assert not all(np.array_equal(a.weights()[0][k], b.weights()[0][k]) for k in a.weights()[0])
    # Through a checkpoint file, as a resumed run would (learner.checkpoint).
    save_checkpoint(tmp_path / "latest.pt", {"learner": a.state()})
    b.load_state(load_checkpoint(tmp_path / "latest.pt")["learner"])
    wa, va = a.weights()
    wb, vb = b.weights()
    assert va == vb == 1
    assert wa.keys() == wb.keys()
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)
    assert b.seen_batch_ids == a.seen_batch_ids and len(a.seen_batch_ids) == 1

    # Optimizer and minibatch generator came along too: the next update is the same on both.
    ma, mb = a.update(next_batch), b.update(next_batch)
    assert ma == mb
    for name, value in a.weights()[0].items():
        np.testing.assert_array_equal(value, b.weights()[0][name], err_msg=name)


def test_in_process_state_round_trip_does_not_share_optimizer_state():
    a, next_batch = trained_learner_and_next_batch()
    b = make_learner(seed=99)
    b.load_state(a.state())
    ma = a.update(next_batch)  # must not move b's Adam moments
    mb = b.update(next_batch)
    assert ma == mb


def test_a_fresh_worker_after_resume_is_learned_from():
    a, _ = trained_learner_and_next_batch()          # has seen one batch of worker 0
    b = make_learner(seed=0)
    b.load_state(a.state())
    w, v = b.weights()
    batch, _ = make_worker(seed=5).collect(w, v)    # a new worker 0, e.g. after restarting the run
    m = b.update(batch)
    assert (m["duplicates"], m["rows"]) == (0, batch.num_rows)


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="learner_device"):
        pick_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present, so learner_device=cuda is valid here")
def test_pick_device_cuda_without_a_gpu_explains_what_to_do():
    with pytest.raises(ValueError, match="learner_device=cuda") as info:
        pick_device("cuda")
    message = str(info.value)
    assert "no GPU" in message and "auto" in message and "cpu" in message
