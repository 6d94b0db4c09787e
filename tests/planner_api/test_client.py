"""Tests of planner_api.client: the in-process planner and the client's counters.

The rules themselves are tested in test_heuristics.py, the validation in test_contract.py, and
PlannerClient against a real server in tests/llm_server/test_server.py.
"""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from planner_api.client import (
    IN_PROCESS_ADDRESS,
    InProcessPlanner,
    MethodStats,
    PlannerClient,
    channel_target,
    connect_planner,
)
from planner_api import heuristics
from planner_api.contract import RPC_NAMES
from planner_api.history import make_history
from protos import planner_pb2


def entry(category: int, feedback: float) -> planner_pb2.History:
    """A one-entry History: item 1 of `category`, shown at step 0."""
    return make_history([(1, category, feedback, 0)])


def requests() -> dict[str, Message]:
    """One small valid request per RPC."""
    names = ["a", "b", "c"]
    plan = planner_pb2.PlanRequest(category_names=names, seed=1)
    plan.users.add(user_id=1, history=entry(0, 1.0), candidate_categories=[0, 1, 2],
                   num_categories=2)
    reflect = planner_pb2.ReflectRequest(category_names=names)
    reflect.sessions.add(user_id=1, shown_categories=[0, 1], feedback=[1.0, 0.0], length=1,
                         session_return=1.0)
    propose = planner_pb2.ProposeRequest(category_names=names, seed=2)
    propose.queries.add(user_id=1, recent=entry(2, 1.0), num_items=2, candidates=[
        planner_pb2.CandidateItem(item_id=k, category_id=k % 3) for k in range(5)])
    explain = planner_pb2.ExplainRequest(
        user_id=1, history=entry(1, 1.0), category_names=names,
        slate=[planner_pb2.CandidateItem(item_id=4, category_id=2)])
    judge = planner_pb2.JudgeRequest(category_names=names)
    judge.cases.add(history=entry(1, 1.0), slate=explain.slate, explanation="More c, after the b you liked.")
    respond = planner_pb2.RespondRequest(category_names=names)
    respond.cases.add(user=planner_pb2.UserPersona(user_id=1, past=entry(1, 0.75)), slate=explain.slate,
                      ask_leave=True)
    return {"Plan": plan, "Reflect": reflect, "Propose": propose, "Explain": explain, "Judge": judge,
            "Respond": respond}


RULES = {
    "Plan": heuristics.heuristic_plan, "Reflect": heuristics.heuristic_reflect,
    "Propose": heuristics.heuristic_propose, "Explain": heuristics.heuristic_explain,
    "Judge": heuristics.heuristic_judge, "Respond": heuristics.heuristic_respond,
}


def test_in_process_planner_answers_every_rpc_with_the_heuristics() -> None:
    planner = connect_planner(IN_PROCESS_ADDRESS)
    assert isinstance(planner, InProcessPlanner)
    planner.wait_ready(timeout_s=1.0)
    for rpc, req in requests().items():
        response, fell_back = getattr(planner, rpc.lower())(req, timeout_s=1.0)
        assert not fell_back
        assert response == RULES[rpc](req)
    assert (planner.calls, planner.fallbacks) == (len(RPC_NAMES), 0)
    assert set(planner.by_method) == set(RPC_NAMES)
    for rpc in RPC_NAMES:
        stats = planner.by_method[rpc]
        assert (stats.calls, stats.fallbacks) == (1, 0)
        assert stats.total_latency_s > 0
    assert planner.total_latency_s == pytest.approx(
        sum(s.total_latency_s for s in planner.by_method.values()))
    planner.close()


def test_in_process_planner_rejects_invalid_requests_without_counting_them() -> None:
    planner = InProcessPlanner()
    reqs = requests()
    reqs["Plan"].users[0].num_categories = 9
    reqs["Reflect"].sessions[0].length = 0
    reqs["Propose"].queries[0].num_items = 6
    del reqs["Explain"].slate[:]
    reqs["Judge"].cases[0].explanation = "x" * 301
    reqs["Respond"].cases[0].user.user_id = -1
    expected = {
        "Plan": r"users\[0\].num_categories=9", "Reflect": r"sessions\[0\].length=0",
        "Propose": r"queries\[0\].num_items=6", "Explain": "slate is empty",
        "Judge": r"cases\[0\].explanation is 301 bytes", "Respond": r"cases\[0\].user.user_id=-1 is negative",
    }
    for rpc, req in reqs.items():
        with pytest.raises(ValueError, match=expected[rpc]):
            getattr(planner, rpc.lower())(req, timeout_s=1.0)
    assert planner.calls == 0
    assert planner.by_method["Plan"] == MethodStats()


def test_connect_planner_gives_a_grpc_client_for_an_address() -> None:
    planner = connect_planner("127.0.0.1:1")
    try:
        assert isinstance(planner, PlannerClient)
        assert planner.address == "127.0.0.1:1"
        assert set(planner.by_method) == set(RPC_NAMES)
    finally:
        planner.close()


def test_a_single_address_is_the_channel_target_as_it_is() -> None:
    for address in ("127.0.0.1:1", "localhost:50051", "[::1]:7", "planner.example:9"):
        assert channel_target(address) == (address, [])


def test_a_list_of_replicas_is_a_fixed_ip_list_balanced_round_robin() -> None:
    round_robin = [("grpc.lb_policy_name", "round_robin")]
    assert channel_target("127.0.0.1:5001, 10.0.0.2:5002") == (
        "ipv4:127.0.0.1:5001,10.0.0.2:5002", round_robin)
    assert channel_target("[::1]:5001,[fe80::1]:5002") == (
        "ipv6:[::1]:5001,[fe80::1]:5002", round_robin)
    # Names are resolved once, here: gRPC's ipv4/ipv6 schemes take literal IPs only.
    target, _ = channel_target("localhost:5001,localhost:5002")
    assert target in ("ipv4:127.0.0.1:5001,127.0.0.1:5002", "ipv6:[::1]:5001,[::1]:5002")
    client = connect_planner("127.0.0.1:1,127.0.0.1:2")
    try:
        assert isinstance(client, PlannerClient) and client.address == "127.0.0.1:1,127.0.0.1:2"
    finally:
        client.close()


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:1,", "empty entry"),
    ("127.0.0.1:1,127.0.0.1", "not HOST:PORT"),
    ("127.0.0.1:1,127.0.0.1:0", "not HOST:PORT"),
    ("127.0.0.1:1,127.0.0.1:port", "not HOST:PORT"),
    ("127.0.0.1:1,[::1]:2", "mixes IPv4 and IPv6"),
    ("127.0.0.1:1,no-such-host.invalid:2", "cannot resolve"),
])
def test_an_unusable_list_of_replicas_is_refused(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        connect_planner(address)
