"""The driver's rollout pool on a real local Ray: restarts after a killed actor, stale batches,
backpressure, and no partial or duplicated batch ever reaching the learner."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from learner.config import TrainConfig
from learner.learner_actor import Learner
from learner.ppo import PPOConfig
from learner.rollout_pool import RolloutPool, rollout_seed, start_rollout_actors
from llm_server.backends import HeuristicBackend
from llm_server.server import PlannerServerActor
from policy.networks import PolicyConfig
from rollout.actor import RolloutConfig
from rollout.batch_schema import column
from rollout.world import WorldConfig
from worlds import learner_spec

USERS = 8
HANG_GUARD_S = 120  # hang guards only
CFG = TrainConfig(world=WorldConfig(dataset="synthetic", num_items=200, num_categories=8, num_users=100, history_len=12),
                  policy=PolicyConfig(), ppo=PPOConfig(epochs=1, minibatch_size=128),
                  rollout=RolloutConfig(num_rollout_actors=2, users_per_actor=USERS, rollout_num_cpus=0.5))


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


def whole_episodes(batch) -> bool:
    """Every user slot's episode is in the batch, ending in exactly one terminal row."""
    episode, done = column(batch, "episode_id"), column(batch, "done")
    return sorted(set(episode.tolist())) == list(range(USERS)) and int(done.sum()) == USERS


@pytest.mark.ray
def test_killed_actor_is_restarted_and_its_batch_requested_again(ray_local):
    ray = ray_local
    learner = Learner(*learner_spec(CFG.world), CFG.policy, CFG.ppo, seed=0, device="cpu")
    weights, version = learner.weights()
    actors = start_rollout_actors(CFG, "in-process", seed=0)
    pool = RolloutPool(actors, ray.put(weights), version, max_policy_lag=1)
    used, killed = [], 0
    for iteration in range(6):
        collected = [pool.next() for _ in range(2)]
        if iteration in (1, 3):
            # The actor whose batch came last has just been given its next collect: kill it mid-call.
            ray.kill(actors[collected[-1].actor_index], no_restart=False)
            killed += 1
        batches = ray.get([c.batch_ref for c in collected])
        assert all(whole_episodes(b) for b in batches)  # nothing half-written reaches the learner
        update = learner.update(*batches)
        assert update["duplicates"] == 0
        used += [c.stats.batch_id for c in collected]
        weights, version = learner.weights()
        pool.set_weights(ray.put(weights), version)
    counters = pool.counters
    assert counters.rollout_restarts >= 1 and counters.resubmitted_batches >= counters.rollout_restarts
    assert counters.batches_used == len(used) == 12
    assert len(set(used)) == len(used)  # no batch id seen twice by the learner
    assert learner.seen_batch_ids == set(used)
    distinct = set(used) | set(pool.dropped_batch_ids)
    assert len(distinct) == counters.batches_used + counters.dropped_stale_batches
    # Batches from the restarted incarnations came in (ids carry a fresh incarnation token).
    incarnations = {batch_id.split("/")[0] for batch_id in used}
    assert len(incarnations) > 2


class HeldAfterFirstPlan(HeuristicBackend):
    """The heuristic planner, holding every Plan after the first until `release`: a collect that
    has asked for its first plan is then, for sure, still running (an event, not a delay)."""

    def __init__(self) -> None:
        super().__init__()
        self.first_plan = threading.Event()
        self.release = threading.Event()

    async def plan(self, req):
        if self.first_plan.is_set():
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        self.first_plan.set()
        return await super().plan(req)


@pytest.mark.ray
def test_a_dead_actors_call_yields_an_error_never_a_batch(ray_local, request):
    ray = ray_local
    cfg = TrainConfig(world=CFG.world, policy=CFG.policy, ppo=CFG.ppo,
                      rollout=RolloutConfig(num_rollout_actors=1, users_per_actor=USERS, rollout_num_cpus=0.5,
                                            plan_every=1))
    weights, version = Learner(*learner_spec(cfg.world), cfg.policy, cfg.ppo, seed=0, device="cpu").weights()
    backend = HeldAfterFirstPlan()
    host = PlannerServerActor()
    address = host.start_with_backend(backend, "127.0.0.1", 0)
    request.addfinalizer(lambda: host.stop(0.5))
    (actor,) = start_rollout_actors(cfg, address, seed=0)
    batch_ref, stats_ref = actor.collect.options(num_returns=2).remote(ray.put(weights), version)
    assert backend.first_plan.wait(HANG_GUARD_S), "the collect never asked for a plan"
    ray.kill(actor, no_restart=False)  # mid-collect: its second plan is being held
    backend.release.set()
    for ref in (batch_ref, stats_ref):
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(ref, timeout=60)
    # Ray brings the actor back (calls fail while it restarts); then a call returns a whole batch.
    deadline = time.monotonic() + 60
    while True:
        try:
            batch, stats = ray.get(actor.collect.options(num_returns=2).remote(ray.put(weights), version), timeout=60)
            break
        except ray.exceptions.RayActorError:
            assert time.monotonic() < deadline, "the killed actor was not restarted"
            time.sleep(0.2)
    assert stats.batch_id.startswith("actor-0.") and stats.batch_id.endswith("/0")
    assert batch.num_rows == stats.env_steps and int(column(batch, "done").sum()) == USERS


@pytest.mark.ray
def test_stale_batches_are_dropped_lagged_ones_used_and_in_flight_bounded(ray_local):
    ray = ray_local
    weights, _ = Learner(*learner_spec(CFG.world), CFG.policy, CFG.ppo, seed=0, device="cpu").weights()
    ref = ray.put(weights)
    actors = start_rollout_actors(CFG, "in-process", seed=1)
    with pytest.raises(ValueError, match="max_batches_in_flight"):
        RolloutPool(actors, ref, 0, max_in_flight=3)

    # One actor, so the order of events is fixed.
    pool = RolloutPool(actors[:1], ref, 0, max_policy_lag=2)
    first = pool.next()
    assert first.lag == 0 and first.stats.policy_version == 0
    # The learner moves to v5 (same weights, new label) while the actor's next collect acts with v0.
    pool.set_weights(ref, 5)
    fresh = pool.next()  # the v0 batch is dropped, its actor asked again with v5
    assert pool.counters.dropped_stale_batches == 1 and len(pool.dropped_batch_ids) == 1
    assert fresh.lag == 0 and fresh.stats.policy_version == 5
    assert pool.dropped_batch_ids[0] not in (first.stats.batch_id, fresh.stats.batch_id)
    pool.set_weights(ref, 7)
    lagged = pool.next()  # acted with v5 (submitted before the move): two versions behind, kept
    assert lagged.lag == 2 and lagged.stats.policy_version == 5
    assert pool.counters.lagged_batches == 1 and pool.counters.batches_used == 3
    assert pool.counters.dropped_stale_batches == 1

    bounded = RolloutPool(actors, ref, 0, max_in_flight=1)
    seen_actors = set()
    for _ in range(4):
        seen_actors.add(bounded.next().actor_index)
        assert bounded.in_flight <= 1
    assert seen_actors == {0, 1}  # one in flight at a time, yet every actor takes its turn


def test_resumed_runs_reseed_their_rollout_workers():
    assert rollout_seed(7, 1) == 7  # a fresh run: the run seed, as before
    seeds = {rollout_seed(7, start) for start in (1, 3, 4, 20)}
    assert len(seeds) == 4
    assert rollout_seed(7, 3) == rollout_seed(7, 3) and rollout_seed(7, 3) != rollout_seed(8, 3)
    assert all(isinstance(s, int) and s >= 0 for s in seeds) and np.all(np.array(list(seeds)) < 2**32)


def test_cli_refuses_more_batches_in_flight_than_actors(capsys):
    from learner.main import cli

    with pytest.raises(SystemExit) as exit_info:
        cli(["--max-batches-in-flight", "3", "--num-rollout-actors", "2"])
    assert exit_info.value.code == 2
    assert "max_batches_in_flight=3 exceeds num_rollout_actors=2" in capsys.readouterr().err
