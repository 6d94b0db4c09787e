"""Tests of the learner run in this process (no Ray), on batches a rollout worker collected with the
in-process planner."""

from __future__ import annotations


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
from rollout.world import WorldConfig
from worlds import learner_spec

WORLD = WorldConfig(dataset="synthetic", num_items=200, num_categories=8, num_users=100, history_len=12)
POLICY = PolicyConfig()
PPO = PPOConfig(epochs=2, minibatch_size=128)
ROLLOUT = RolloutConfig(users_per_actor=16, plan_categories=4, use_planner=True)


def make_worker(seed: int = 0, world: WorldConfig = WORLD, rollout: RolloutConfig = ROLLOUT,
                index: int = 0) -> RolloutWorker:
    return RolloutWorker(world, POLICY, rollout, "in-process" if rollout.use_planner else None, index, seed)


def make_learner(seed: int = 0) -> Learner:
    return Learner(*learner_spec(WORLD), POLICY, PPO, seed=seed, device="cpu")


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


def test_pick_device_follows_what_torch_sees(monkeypatch):
    """auto takes CUDA exactly when torch reports a GPU; cpu is always honoured; cuda without a GPU
    and unknown names are configuration errors (checked both ways by pretending either machine)."""
    for has_gpu in (False, True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda has_gpu=has_gpu: has_gpu)
        assert pick_device("auto") == torch.device("cuda" if has_gpu else "cpu")
        assert pick_device("cpu") == torch.device("cpu")
        if has_gpu:
            assert pick_device("cuda") == torch.device("cuda")
        else:
            with pytest.raises(ValueError, match="learner_device=cuda"):
                pick_device("cuda")
        with pytest.raises(ValueError, match="learner_device must be auto, cpu or cuda"):
            pick_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present, so learner_device=cuda is valid here")
def test_pick_device_cuda_without_a_gpu_explains_what_to_do():
    with pytest.raises(ValueError, match="learner_device=cuda") as info:
        pick_device("cuda")
    message = str(info.value)
    assert "no GPU" in message and "auto" in message and "cpu" in message
