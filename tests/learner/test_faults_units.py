"""The pieces behind test_faults.py, each checked on its own and fast (no Ray): the learner rejects
and counts a corrupted batch instead of learning from it, and the planner's fault injection holds
requests past the caller's deadline, which falls back and counts it."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from learner.chaos import DriverChaos, corrupt_batch
from learner.learner_actor import Learner
from learner.ppo import PPOConfig
from llm_server.backends import HeuristicBackend
from llm_server.chaos import PlanHang, PlannerChaos
from llm_server.server import PlannerServerActor
from policy.networks import PolicyConfig
from rollout.actor import RolloutConfig, RolloutWorker
from rollout.batch_schema import validate_batch
from rollout.world import LERL_USERS, WorldConfig
from worlds import learner_spec

WORLD = WorldConfig(dataset="synthetic", num_items=200, num_categories=8, num_users=100, history_len=12,
                    **LERL_USERS)  # 20-step sessions: enough planner calls to count
ROLLOUT = RolloutConfig(users_per_actor=8, plan_categories=4, plan_every=1)


def _batches(n: int):
    worker = RolloutWorker(WORLD, PolicyConfig(), ROLLOUT, "in-process", 0, seed=1)
    return [worker.collect()[0] for _ in range(n)]


def test_a_corrupted_batch_is_rejected_counted_and_not_learned_from():
    learner = Learner(*learner_spec(WORLD), PolicyConfig(), PPOConfig(epochs=1, minibatch_size=128), seed=0, device="cpu")
    good, victim = _batches(2)
    bad = corrupt_batch(victim)
    with pytest.raises(ValueError, match="reward: expected float, got double"):
        validate_batch(bad)
    before = {k: v.copy() for k, v in learner.weights()[0].items()}

    m = learner.update(bad)  # nothing valid: no update, the version stays
    assert (m["rows"], m["version"], m["rejected"]) == (0, 0, 1)
    assert m["rejected_batch_ids"] == [victim.column("batch_id")[0].as_py()]
    assert "reward" in m["rejected_reasons"][0]
    assert all(np.array_equal(v, before[k]) for k, v in learner.weights()[0].items())

    m = learner.update(good, bad)  # the good one is learned from, the bad one only counted
    assert (m["rows"], m["version"], m["rejected"], m["duplicates"]) == (good.num_rows, 1, 1, 0)
    assert learner.seen_batch_ids == {good.column("batch_id")[0].as_py()}
    m = learner.update(victim)  # the intact original of the rejected batch is new to the learner
    assert m["version"] == 2 and "rejected" not in m and m["duplicates"] == 0


def test_the_planner_fault_holds_plan_requests_until_the_callers_deadline():
    # A hold of 60 s against a 0.3 s deadline: a hold the deadline cuts and one it does not differ by
    # minutes, not by milliseconds, so no machine is too slow (or too fast) to tell them apart.
    hang = PlanHang(PlannerChaos(hang_every=4, hang_s=60.0))
    host = PlannerServerActor()
    address = host.start_with_backend(hang.install(HeuristicBackend()), "127.0.0.1", 0)
    try:
        rollout = RolloutConfig(users_per_actor=8, plan_categories=4, plan_every=1, planner_timeout_s=0.3)
        worker = RolloutWorker(WORLD, PolicyConfig(), rollout, address, 0, seed=0)
        _, stats = worker.collect()
    finally:
        host.stop(0.5)
    counters = hang.stats()
    assert counters["chaos_plan_requests"] == stats.planner_calls >= 8
    # Every held call was given up by its caller (a fallback each), and every hold was cut by the
    # caller's deadline (gRPC cancelled it): none slept its 60 s.
    assert counters["chaos_hangs"] == stats.planner_calls // 4 == stats.planner_fallbacks >= 2
    assert counters["chaos_hangs_completed"] == 0
    assert 0 < counters["chaos_hang_seconds"] < counters["chaos_hangs"] * 60.0


def test_chaos_settings_are_checked():
    with pytest.raises(ValueError, match="hang_every must be >= 0"):
        PlannerChaos(hang_every=-1, hang_s=1.0)
    with pytest.raises(ValueError, match="hang_s must be > 0"):
        PlannerChaos(hang_every=3, hang_s=0.0)
    assert not PlannerChaos().active


def test_the_time_based_killer_waits_for_its_last_victim_to_deliver_again():
    """One fault at a time: however slow a restart, the next kill waits until the actor killed last
    has finished a collect; else, with restarts slower than the actors' turn, nothing would ever run."""
    kills: list[str] = []
    killed = threading.Semaphore(0)
    fake_ray = SimpleNamespace(kill=lambda actor, no_restart: (kills.append(actor), killed.release()))
    collected_from = [0, 0]
    cfg = SimpleNamespace(chaos_kill_rollout_every=0, chaos_kill_rollout_every_s=0.01, chaos_kill_planner_every=0,
                          chaos_corrupt_batch_every=0)
    chaos = DriverChaos(fake_ray, cfg, ["actor-0", "actor-1"], collected_from=collected_from)
    chaos.start()
    try:
        assert killed.acquire(timeout=60)
        assert not killed.acquire(timeout=0.5)  # 50 periods: no second kill while actor-0 has not delivered
        collected_from[1] += 1  # the other actor delivering does not count
        assert not killed.acquire(timeout=0.2)
        collected_from[0] += 1  # the victim is back
        assert killed.acquire(timeout=60)
        assert kills == ["actor-0", "actor-1"] and chaos.counts["rollout_kills"] == 2
    finally:
        chaos.stop()
