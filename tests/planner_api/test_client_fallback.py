"""PlannerClient's fallback: every RPC answered by its heuristic when nothing listens or the
deadline passes, counted per RPC, and a clear error when the service never becomes ready."""
from __future__ import annotations

import logging

import pytest

from planner_api.client import PlannerClient
from planner_api.contract import RPC_NAMES
from planner_requests import ROLES, SleepyBackend, free_port, plan_request, start_in_background

RPC_TIMEOUT_S = 10.0


def test_every_rpc_falls_back_when_nothing_listens(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="planner_api.client"):
        with PlannerClient(f"127.0.0.1:{free_port()}") as client:
            for rpc in RPC_NAMES:
                make_request, rule, _, _ = ROLES[rpc]
                for _ in range(2):
                    req = make_request()
                    response, fell_back = getattr(client, rpc.lower())(req, timeout_s=5.0)
                    assert fell_back and response == rule(req)
                stats = client.by_method[rpc]
                assert (stats.calls, stats.fallbacks) == (2, 2)
            assert (client.calls, client.fallbacks) == (2 * len(RPC_NAMES), 2 * len(RPC_NAMES))
    for rpc in RPC_NAMES:
        warnings = [r for r in caplog.records if f"failed {rpc} with UNAVAILABLE" in r.getMessage()]
        assert len(warnings) == 1, f"{rpc}: a failure code is logged once per RPC"


def test_every_rpc_falls_back_when_the_deadline_is_missed() -> None:
    host, address = start_in_background(SleepyBackend(delay_s=1.0))
    try:
        with PlannerClient(address) as client:
            client.wait_ready(timeout_s=RPC_TIMEOUT_S)
            for rpc in RPC_NAMES:
                make_request, rule, _, _ = ROLES[rpc]
                req = make_request()
                response, fell_back = getattr(client, rpc.lower())(req, timeout_s=0.1)
                assert fell_back and response == rule(req)
                assert client.by_method[rpc].fallbacks == 1
                assert client.by_method[rpc].total_latency_s < 1.0
            # A generous deadline is met by the same server.
            response, fell_back = client.plan(plan_request(), timeout_s=RPC_TIMEOUT_S)
            assert not fell_back
            assert (client.calls, client.fallbacks) == (len(RPC_NAMES) + 1, len(RPC_NAMES))
    finally:
        host.stop()


def test_wait_ready_times_out_with_a_clear_message() -> None:
    address = f"127.0.0.1:{free_port()}"
    with PlannerClient(address) as client:
        with pytest.raises(TimeoutError, match=f"planner at {address} did not report SERVING"):
            client.wait_ready(timeout_s=0.5)
