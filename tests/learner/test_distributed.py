"""Tests of data-parallel learners (learner.distributed): M ranks that each back-propagate a shard
of every minibatch end one update with the weights one learner gets on the whole batch."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest
import torch

from learner.distributed import LearnerGroup, worker_device
from learner.learner_actor import Learner
from learner.ppo import DataParallel, PPOConfig
from policy.networks import PolicyConfig
from rollout.actor import RolloutConfig, RolloutWorker
from rollout.world import WorldConfig
from worlds import learner_spec

WORLD = WorldConfig(dataset="synthetic", num_items=200, num_categories=8, num_users=100, history_len=12)
POLICY = PolicyConfig()
ROLLOUT = RolloutConfig(users_per_actor=16, plan_categories=4, use_planner=True)
SEED = 0
ATOL = 1e-5


def reference_learner(ppo: PPOConfig) -> Learner:
    return Learner(*learner_spec(WORLD), POLICY, ppo, seed=SEED, device="cpu")


def assert_weights_close(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], atol: float = ATOL) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=0, atol=atol, err_msg=name)


LOSSES = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac")


def assert_metrics_match(actual: dict, expected: dict) -> None:
    for key in ("rows", "duplicates", "policy_lags", "version"):
        assert actual[key] == expected[key], key
    for key in LOSSES:
        if key in expected:
            assert actual[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key


@pytest.fixture(scope="module")
def batches() -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """Two batches acted by the version-0 policy (what a seed-0 learner starts from)."""
    weights, version = reference_learner(PPOConfig()).weights()
    worker = RolloutWorker(WORLD, POLICY, ROLLOUT, "in-process", 0, SEED)
    first, _ = worker.collect(weights, version)
    second, _ = worker.collect(weights, version)
    return first, second


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


# --- the sharded PPO step, ranks as threads (no Ray) ------------------------------------------------


class ThreadRanks:
    """`world_size` ranks as threads of this process, with an all-reduce built on a barrier."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size)
        self.slots: list[torch.Tensor | None] = [None] * world_size

    def data_parallel(self, rank: int) -> DataParallel:
        def all_reduce_sum(tensor: torch.Tensor) -> None:
            self.slots[rank] = tensor.clone()
            self.barrier.wait()
            total = sum(self.slots[1:], self.slots[0].clone())  # same order on every rank: same bits
            self.barrier.wait()  # everyone has read the slots before any rank writes the next ones
            tensor.copy_(total)

        return DataParallel(rank, self.world_size, all_reduce_sum)


def test_data_parallel_shards_cover_a_minibatch_once():
    for n in (1, 2, 5, 127, 128):
        for world_size in (1, 2, 3):
            shards = [DataParallel(r, world_size, lambda t: None).shard(n) for r in range(world_size)]
            covered = [i for s in shards for i in range(n)[s]]
            assert covered == list(range(n))
            assert max(s.stop - s.start for s in shards) - min(s.stop - s.start for s in shards) <= 1


@pytest.mark.parametrize("normalize", [True, False])
def test_three_sharded_ranks_equal_one_learner_even_with_an_empty_shard(batches, normalize):
    # A minibatch size that 3 ranks cannot split evenly (e.g. 11 rows: 3, 4, 4) and that leaves a
    # single row at the end of the epoch (two ranks back-propagate nothing there), or when the
    # batch's row count has no such size, two rows (one rank back-propagates nothing).
    batch = batches[0]
    size = next(m for rest in (1, 2) for m in range(5, batch.num_rows) if batch.num_rows % m == rest and m % 3)
    ppo = PPOConfig(epochs=2, minibatch_size=size, normalize_advantages=normalize)
    reference = reference_learner(ppo)
    ranks = [reference_learner(ppo) for _ in range(3)]
    expected = reference.update(batch)
    world = ThreadRanks(3)
    results: list[dict | BaseException | None] = [None] * 3

    def run(rank: int) -> None:
        torch.set_num_threads(1)
        ranks[rank].data_parallel = world.data_parallel(rank)
        try:
            results[rank] = ranks[rank].update(batch)
        except BaseException as exc:  # surfaced below; the other ranks would wait at the barrier
            results[rank] = exc
            world.barrier.abort()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    failures = [r for r in results if isinstance(r, BaseException)]
    for failure in sorted(failures, key=lambda exc: isinstance(exc, threading.BrokenBarrierError)):
        raise failure  # the root cause first, not the barrier it broke for the others
    for result, learner in zip(results, ranks):
        assert_metrics_match(result, expected)
        assert_weights_close(learner.weights()[0], reference.weights()[0])


# --- LearnerGroup on Ray --------------------------------------------------------------------------


def test_bad_configurations_are_refused_before_any_actor_starts():
    ppo = PPOConfig()
    with pytest.raises(ValueError, match="num_learners must be an integer >= 1"):
        LearnerGroup(*learner_spec(WORLD), POLICY, ppo, SEED, num_learners=0)
    with pytest.raises(ValueError, match="num_gpus"):
        LearnerGroup(*learner_spec(WORLD), POLICY, ppo, SEED, num_learners=2, num_gpus=-1)
    with pytest.raises(ValueError, match="learner_num_gpus >= 1"):
        LearnerGroup(*learner_spec(WORLD), POLICY, ppo, SEED, num_learners=2, device="cuda", num_gpus=0)
    with pytest.raises(ValueError, match="NCCL does not allow"):
        LearnerGroup(*learner_spec(WORLD), POLICY, ppo, SEED, num_learners=2, device="auto", num_gpus=0.5)
    with pytest.raises(ValueError, match="learner_device"):
        worker_device("tpu", 0)
    assert worker_device("auto", 0) == "cpu"  # unreserved GPUs are not shared between ranks
    assert worker_device("cpu", 1) == "cpu"


def minibatch_cases(rows: int) -> dict[str, int]:
    # "uneven": odd minibatches, so the two ranks' shards differ by a row; "empty": the epoch's
    # last minibatch has a single row, so rank 0 back-propagates nothing there.
    return {"uneven": 101, "empty": rows - 1}


@pytest.mark.ray
@pytest.mark.parametrize("case", ["uneven", "empty"])
def test_two_gloo_learners_match_one_learner_on_the_whole_batch(ray_local, batches, case):
    ray = ray_local
    first, second = batches
    ppo = PPOConfig(epochs=2, minibatch_size=minibatch_cases(first.num_rows)[case])
    reference = reference_learner(ppo)
    refs = [ray.put(first), ray.put(second)]
    with LearnerGroup(*learner_spec(WORLD), POLICY, ppo, SEED, num_learners=2, device="cpu", num_cpus=1) as group:
        assert group.backend == "gloo"
        weights_ref, version = group.publish()
        assert version == 0
        assert_weights_close(ray.get(weights_ref), reference.weights()[0], atol=0)

        metrics, (weights_ref, version) = group.update_and_publish(refs[:1])
        expected = reference.update(first)
        assert_metrics_match(metrics, expected)
        assert version == expected["version"] == 1
        assert_weights_close(ray.get(weights_ref), reference.weights()[0])

        # The first batch again (a retried call) beside a new one: both learn from the new one only.
        metrics, (weights_ref, version) = group.update_and_publish(refs)
        expected = reference.update(first, second)
        assert (metrics["duplicates"], metrics["rows"], metrics["policy_lags"]) == (1, second.num_rows, [1])
        assert_metrics_match(metrics, expected)
        assert_weights_close(ray.get(weights_ref), reference.weights()[0])

        state = group.state()
        assert state["version"] == 2 and state["seen_batch_ids"] == sorted(reference.seen_batch_ids)

        # Nothing new: no update, and every rank still agrees on the version.
        metrics, (_, version) = group.update_and_publish(refs[1:])
        assert (metrics["rows"], metrics["duplicates"], version) == (0, 1, 2)

        # A state loaded into the group reaches every rank: from a fresh learner, the next update
        # matches again (a rank left behind would fail the ranks' agreement check or the weights).
        fresh = reference_learner(ppo)
        group.load_state(fresh.state())
        weights_ref, version = group.publish()
        assert version == 0
        assert_weights_close(ray.get(weights_ref), fresh.weights()[0], atol=0)
        metrics, (weights_ref, _) = group.update_and_publish(refs[1:])
        assert_metrics_match(metrics, fresh.update(second))
        assert_weights_close(ray.get(weights_ref), fresh.weights()[0])


@pytest.mark.ray
def test_one_learner_group_is_the_plain_learner_actor(ray_local, batches):
    ray = ray_local
    first, _ = batches
    ppo = PPOConfig(epochs=2, minibatch_size=128)
    reference = reference_learner(ppo)
    with LearnerGroup(*learner_spec(WORLD), POLICY, ppo, SEED, num_learners=1, device="cpu", num_cpus=1) as group:
        assert group.backend is None  # no process group
        ref = ray.put(first)
        metrics, (weights_ref, version) = group.update_and_publish([ref])
        timings = {k: metrics.pop(k) for k in ("compute_seconds", "publish_seconds")}  # its update and its ray.put
        assert all(seconds >= 0 for seconds in timings.values())
        assert metrics == reference.update(first)  # same process layout as before: same numbers
        assert_weights_close(ray.get(weights_ref), reference.weights()[0], atol=0)
        metrics, _ = group.update_and_publish([ref])
        assert (metrics["rows"], metrics["duplicates"], metrics["version"]) == (0, 1, 1)
        assert group.state()["version"] == 1
    with pytest.raises(RuntimeError, match="shut down"):
        group.publish()

