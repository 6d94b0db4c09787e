"""A rollout worker keeps going when its planner service goes away, and uses it again when it comes back.

The worker runs serially (no Ray) against a heuristic-backend server on 127.0.0.1: fast, and the
fallback path (PlannerClient -> the heuristic on any gRPC failure) does not depend on the backend.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from llm_server.server import PlannerServerActor
from policy.networks import PolicyConfig, weights_to_numpy
from rollout.actor import RolloutConfig, RolloutWorker
from rollout.batch_schema import column
from rollout.world import WorldConfig

WORLD = WorldConfig(dataset="synthetic", num_items=200, num_categories=8, num_users=100, history_len=12)
POLICY = PolicyConfig()
ROLLOUT = RolloutConfig(users_per_actor=8, plan_every=1, planner_timeout_s=2.0)
COLLECT_BOUND_S = 30.0  # a collect of 8 users must never hang on a dead planner
RECONNECT_BOUND_S = 10.0  # after a short outage the client must use the restarted service again within this


class Planner:
    """A heuristic planner service that can be stopped and restarted on the same port."""

    def __init__(self) -> None:
        self.host = PlannerServerActor()
        self.address = self.host.start("heuristic", "127.0.0.1", 0)
        self.port = int(self.address.rsplit(":", 1)[1])

    def stop(self) -> None:
        self.host.stop(grace_s=0.5)

    def restart(self) -> None:
        assert self.host.start("heuristic", "127.0.0.1", self.port) == self.address


@pytest.fixture
def planner() -> Iterator[Planner]:
    server = Planner()
    try:
        yield server
    finally:
        server.stop()


def make_worker(address: str, seed: int = 0) -> RolloutWorker:
    return RolloutWorker(WORLD, POLICY, ROLLOUT, address, 0, seed)


def collect(worker: RolloutWorker, weights: dict | None = None):
    started = time.monotonic()
    batch, stats = worker.collect(weights, 0 if weights is not None else None)
    assert time.monotonic() - started < COLLECT_BOUND_S
    assert stats.env_steps == batch.num_rows > 0
    assert stats.planner_calls >= 1
    assert len(stats.episode_lengths) == ROLLOUT.users_per_actor
    return batch, stats


def assert_served(stats) -> None:
    assert stats.planner_fallbacks == 0, f"{stats.planner_fallbacks} of {stats.planner_calls} plans fell back"
    assert stats.reflect_calls >= 1 and stats.reflect_fallbacks == 0


def assert_all_fell_back(stats) -> None:
    assert stats.planner_fallbacks == stats.planner_calls >= 1
    assert stats.reflect_fallbacks == stats.reflect_calls >= 1


def collect_until_served(worker: RolloutWorker) -> float:
    """Collects until a collect has no fallback (bounded); returns the seconds that took."""
    started = time.monotonic()
    while True:
        _, stats = collect(worker)
        if stats.planner_fallbacks == 0:
            assert_served(stats)
            return time.monotonic() - started
        assert time.monotonic() - started < RECONNECT_BOUND_S, \
            f"the client still falls back {RECONNECT_BOUND_S:g} s after the server came back"
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_stopped_between_collects_falls_back_then_reconnects_on_restart(planner: Planner) -> None:
    worker = make_worker(planner.address)
    try:
        _, stats = collect(worker)
        assert_served(stats)

        planner.stop()
        _, stats = collect(worker)
        assert_all_fell_back(stats)
        # A refused connection is answered at once, not after the 2 s deadline of every call.
        assert stats.seconds_planner < stats.planner_calls * ROLLOUT.planner_timeout_s / 2
        _, stats = collect(worker)  # still down: still counted, still bounded
        assert_all_fell_back(stats)

        planner.restart()
        collect_until_served(worker)
        _, stats = collect(worker)
        assert_served(stats)
    finally:
        worker.close()


OUTAGE_S = 10.0
PROMPT_RECOVERY_S = 2.5


def test_recovery_after_a_longer_outage_is_prompt(planner: Planner) -> None:
    worker = make_worker(planner.address)
    try:
        assert_served(collect(worker)[1])
        planner.stop()
        down, slowest = time.monotonic(), 0.0
        while time.monotonic() - down < OUTAGE_S:  # rollouts go on meanwhile, on the heuristic
            started = time.monotonic()
            assert_all_fell_back(collect(worker)[1])
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.2)
        planner.restart()
        took = collect_until_served(worker)
        # The client's reconnect backoff is capped at 1 s (rollout/planning.py): served again within
        # that plus the few collects that run meanwhile, timed here on this machine (gRPC's default
        # backoff would have grown to ~6 s by the end of a 10 s outage).
        bound = PROMPT_RECOVERY_S + 3 * slowest
        assert took < bound, f"fell back for {took:.1f} s after the server came back (bound {bound:.1f} s)"
    finally:
        worker.close()


def test_stopped_from_another_thread_during_a_collect(planner: Planner) -> None:
    worker = make_worker(planner.address)
    client = worker.planner.client
    real_plan = client.plan
    served_calls = 2
    stop_now, stopped = threading.Event(), threading.Event()
    calls = 0

    def plan(req, timeout_s):
        # After the second answered call, hand over to the stopping thread and go on only once
        # the server is down: the rest of this collect runs against a stopped service.
        nonlocal calls
        answer = real_plan(req, timeout_s)
        calls += 1
        if calls == served_calls:
            stop_now.set()
            assert stopped.wait(COLLECT_BOUND_S), "the server did not stop"
        return answer

    def stopper() -> None:
        if stop_now.wait(COLLECT_BOUND_S):
            planner.stop()
            stopped.set()

    thread = threading.Thread(target=stopper, name="stop-the-planner", daemon=True)
    try:
        _, stats = collect(worker)  # warm: the channel is connected before the test proper
        assert_served(stats)
        client.plan = plan
        thread.start()
        _, stats = collect(worker)
        thread.join(COLLECT_BOUND_S)
        assert stopped.is_set() and not thread.is_alive()
        assert stats.planner_calls > served_calls, "the episodes ended before the server was stopped"
        # Deterministic: the first two plans were served, every later one fell back.
        assert stats.planner_fallbacks == stats.planner_calls - served_calls >= 1
        assert stats.reflect_fallbacks == stats.reflect_calls >= 1

        client.plan = real_plan
        _, stats = collect(worker)
        assert_all_fell_back(stats)

        planner.restart()
        collect_until_served(worker)
    finally:
        stop_now.set()
        worker.close()


def test_fallback_plans_are_the_heuristic_servers_plans(planner: Planner) -> None:
    """Same seed, one worker served, one with nothing listening: the heuristic fallback makes
    exactly the masks (and so the same slates) that the heuristic backend makes."""
    served = make_worker(planner.address, seed=5)
    orphan = make_worker(f"127.0.0.1:{free_port()}", seed=5)
    try:
        weights = weights_to_numpy(served.model)  # the same policy for both (each builds its own at random)
        batch_a, stats_a = collect(served, weights)
        batch_b, stats_b = collect(orphan, weights)
        assert_served(stats_a)
        assert_all_fell_back(stats_b)
        assert stats_a.planner_calls == stats_b.planner_calls
        for name in ("category_mask", "slate", "reward", "step", "user_id"):
            np.testing.assert_array_equal(column(batch_a, name), column(batch_b, name), err_msg=name)
    finally:
        served.close()
        orphan.close()
