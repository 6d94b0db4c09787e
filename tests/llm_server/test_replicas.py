"""Planner replicas: one client spreads its calls over them, a dead one is skipped, restarted on its
own address, and serves again (llm_server.replicas, planner_api.client's round-robin channel).

The heuristic backend throughout: the balancing and failover paths do not depend on the backend.
Everything binds 127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from llm_server.ray_actor import PlannerServer
from protos import planner_pb2
from planner_api.contract import check_plan_response
from planner_api.client import PlannerClient, channel_target, connect_planner
from planner_api.heuristics import heuristic_plan

CALL_TIMEOUT_S = 2.0
READY_TIMEOUT_S = 120.0  # hang guards, generous: a slow machine is slower, not broken
FAULT_BOUND_S = 120.0  # hang guard: the kill, the restart and serving again
MAX_FAULT_FALLBACKS = 5  # calls in flight on the dying replica, and none after it: a handful at most


def plan_request(seed: int) -> planner_pb2.PlanRequest:
    req = planner_pb2.PlanRequest(category_names=["a", "b", "c", "d"], seed=seed)
    for user in range(4):
        req.users.add(user_id=user, step=0, candidate_categories=[0, 1, 2, 3], num_categories=2)
    return req


def call_plan(client: PlannerClient, seed: int) -> bool:
    """One plan call; asserts the answer is a valid plan (served or fallback); returns fell_back."""
    req = plan_request(seed)
    response, fell_back = client.plan(req, timeout_s=CALL_TIMEOUT_S)
    check_plan_response(req, response)
    assert response == heuristic_plan(req)  # the heuristic backend and the fallback agree
    return fell_back


def warm_up(client: PlannerClient, served: Callable[[], list[int]]) -> list[int]:
    """Calls until every replica has answered once (bounded), so that all the client's connections
    are READY; returns the replicas' request counts then.

    wait_ready returns as soon as one replica serves; the round-robin spreads calls only over the
    replicas already connected, so a test of the spread starts once all are.
    """
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not all(counts := served()):
        assert time.monotonic() < deadline, f"not every replica got a call: {counts}"
        assert not call_plan(client, 0)
        time.sleep(0.01)
    return counts


# --- without Ray: the client's round-robin over two in-process replicas ---------------------------

@pytest.fixture
def two_servers() -> Iterator[list[PlannerServer]]:
    servers = [PlannerServer(), PlannerServer()]
    for server in servers:
        server.start("heuristic", "127.0.0.1", 0)
    try:
        yield servers
    finally:
        for server in servers:
            server.stop(grace_s=0.5)


def test_client_balances_over_a_list_and_skips_a_stopped_replica(two_servers: list[PlannerServer]) -> None:
    first, second = two_servers
    address = f"{first.address()},{second.address()}"
    with PlannerClient(address) as client:
        assert client.address == address
        client.wait_ready(READY_TIMEOUT_S)
        before = warm_up(client, lambda: [first.stats()["rpcs"], second.stats()["rpcs"]])
        assert not any(call_plan(client, seed) for seed in range(40))
        spread = [first.stats()["rpcs_plan"] - before[0], second.stats()["rpcs_plan"] - before[1]]
        assert sum(spread) == 40 and min(spread) >= 10, spread  # round-robin: about 20 each

        port = int(first.address().rpartition(":")[2])
        second_before = second.stats()["rpcs_plan"]
        first.stop(grace_s=0.5)
        # The dead replica's connection is no longer READY: calls go to the survivor (at most the
        # few that raced the shutdown fall back).
        fallbacks = sum(call_plan(client, seed) for seed in range(40))
        assert fallbacks <= MAX_FAULT_FALLBACKS
        assert second.stats()["rpcs_plan"] - second_before == 40 - fallbacks  # every served call

        first.start("heuristic", "127.0.0.1", port)
        deadline = time.monotonic() + FAULT_BOUND_S
        while first.stats()["rpcs"] == 0:  # back in the rotation once reconnected (backoff <= 1 s)
            assert time.monotonic() < deadline, "the restarted replica never got a call"
            assert not call_plan(client, 0)
            time.sleep(0.02)


def test_single_address_is_used_as_it_is(two_servers: list[PlannerServer]) -> None:
    address = two_servers[0].address()
    assert channel_target(address) == (address, [])  # pick_first, gRPC resolves it: as before lists
    client = connect_planner(address)
    try:
        assert isinstance(client, PlannerClient) and client.address == address
        client.wait_ready(READY_TIMEOUT_S)
        assert not call_plan(client, 3)
        assert two_servers[0].stats()["rpcs"] == 1 and two_servers[1].stats()["rpcs"] == 0
    finally:
        client.close()


# --- with Ray: PlannerReplicas -----------------------------------------------------------------------

@pytest.mark.ray
def test_two_replicas_share_the_calls_of_one_client(local_ray: None) -> None:
    from llm_server.replicas import PlannerReplicas

    with PlannerReplicas(2, "heuristic") as replicas:
        assert len(set(replicas.addresses)) == 2
        assert all(address.startswith("127.0.0.1:") for address in replicas.addresses)
        assert replicas.target() == ",".join(replicas.addresses)
        with connect_planner(replicas.target()) as client:
            client.wait_ready(READY_TIMEOUT_S)

            def served() -> list[int]:
                stats = replicas.stats()
                return [stats["rpcs_replica0"], stats["rpcs_replica1"]]

            before = warm_up(client, served)
            assert not any(call_plan(client, seed) for seed in range(40))
            assert client.fallbacks == 0
        stats = replicas.stats()
        assert stats["replicas"] == stats["replicas_serving"] == 2 and stats["restarts"] == 0
        assert stats["rpcs"] == stats["rpcs_plan"] == sum(before) + 40
        spread = [stats["rpcs_replica0"] - before[0], stats["rpcs_replica1"] - before[1]]
        assert min(spread) >= 10, spread  # round-robin: about 20 each
        assert replicas.ensure_serving() == 0 and replicas.restarts == 0


@pytest.mark.ray
def test_a_killed_replica_is_restarted_on_its_address_while_the_other_serves(local_ray: None) -> None:
    import ray

    from llm_server.replicas import PlannerReplicas

    with PlannerReplicas(2, "heuristic") as replicas:
        addresses = replicas.addresses
        with connect_planner(replicas.target()) as client:
            client.wait_ready(READY_TIMEOUT_S)
            for seed in range(10):
                assert not call_plan(client, seed)

            ray.kill(replicas.actors[0], no_restart=False)  # mid-stream: Ray restarts the actor
            killed = time.monotonic()
            seed, served_again = 10, False
            while not served_again:
                assert time.monotonic() - killed < FAULT_BOUND_S, (
                    f"replica 0 not serving again after {FAULT_BOUND_S:g} s: {replicas.stats()}")
                call_plan(client, seed)  # valid whether served or fallen back
                seed += 1
                replicas.ensure_serving()  # what the driver does once per iteration
                # Its counters restart with it: any request counted means it serves again.
                served_again = replicas.restarts == 1 and replicas.stats()["rpcs_replica0"] > 0
                time.sleep(0.02)

            assert replicas.addresses == addresses  # the list the clients hold stays valid
            assert client.calls == seed and client.fallbacks <= MAX_FAULT_FALLBACKS, (
                f"{client.fallbacks} of {client.calls} calls fell back")
            stats = replicas.stats()
            assert stats["restarts"] == 1 and stats["replicas_serving"] == 2
            assert stats["rpcs_replica1"] > 0
            fallbacks_before = client.fallbacks
            for extra in range(20):  # both serve again: no more fallbacks
                assert not call_plan(client, seed + extra)
            assert client.fallbacks == fallbacks_before
        assert replicas.ensure_serving() == 0 and replicas.restarts == 1


@pytest.mark.ray
def test_a_start_that_fails_kills_the_replicas_it_made(local_ray: None) -> None:
    from llm_server.replicas import PlannerReplicas

    with pytest.raises(ValueError, match="unknown planner backend"):
        PlannerReplicas(2, "no-such-backend")
    with pytest.raises(ValueError, match="num_replicas"):
        PlannerReplicas(0)
