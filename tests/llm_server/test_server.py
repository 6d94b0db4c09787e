"""Tests of the planner gRPC service, its backends, its CLI and PlannerClient against it.

Plan has its own tests (large batches, repeated invalid requests, the CLI); every RPC (Plan,
Reflect, Propose, Explain) goes through the same table-driven end-to-end tests over real gRPC
on 127.0.0.1: answers equal the heuristics, INVALID_ARGUMENT, INTERNAL for a failing or
contract-breaking backend. The client's fallback is tested beside the client
(tests/planner_api/test_client_fallback.py); the requests both use are in tests/planner_requests.py.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_server.backends import HeuristicBackend, PlannerBackend, backend_names, make_backend
from llm_server.server import PlannerServerActor
from protos import planner_pb2, planner_pb2_grpc
from planner_api.contract import check_plan_response
from planner_api.contract import GRPC_MESSAGE_OPTIONS, PLANNER_SERVICE_NAME, RPC_NAMES
from planner_api.client import PlannerClient
from planner_api.heuristics import heuristic_plan
from planner_requests import (
    ROLES,
    SleepyBackend,
    plan_request,
    start_in_background,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
RPC_TIMEOUT_S = 10.0


async def _fail(self: PlannerBackend, req: Message) -> Message:
    raise RuntimeError("the engine fell over")


class BrokenBackend(PlannerBackend):
    """A backend that fails on every request of every RPC."""

    name = "broken"
    plan = reflect = propose = explain = judge = respond = _fail


# RPC name -> (how LyingBackend breaks the heuristic answer, the server's complaint about it).
LIES: dict[str, tuple[Callable[[Message], object], str]] = {
    "Plan": (lambda a: a.plans[1].category_ids.__setitem__(0, 99),
             "plans[1].category_ids[0]=99 is not one of the candidate_categories"),
    "Reflect": (lambda a: a.critiques.pop(), "critiques has 2 entries; need one per session (3)"),
    "Propose": (lambda a: a.proposals[0].item_ids.append(a.proposals[0].item_ids[0]),
                "proposals[0].item_ids has 11 entries; at most num_items=10"),
    "Explain": (lambda a: setattr(a, "explanation", "é" * 200),
                "explanation is 400 bytes; at most 300"),
    "Judge": (lambda a: a.scores.__setitem__(2, 6.0), "scores[2]=6.0 is outside [1, 5]"),
    "Respond": (lambda a: setattr(a.responses[0], "leave", 0.5),
                "responses[0].leave=0.5 but cases[0].ask_leave is false"),
}


def _lying(rpc: str) -> Callable:
    """HeuristicBackend's answer to `rpc`, broken as LIES[rpc] says."""

    async def answer(self: HeuristicBackend, req: Message) -> Message:
        response = await getattr(HeuristicBackend, rpc.lower())(self, req)
        LIES[rpc][0](response)
        return response

    return answer


class LyingBackend(HeuristicBackend):
    """The heuristic answers, each broken in one way the contract forbids."""

    name = "lying"
    plan, reflect, propose, explain, judge, respond = (_lying(rpc) for rpc in RPC_NAMES)


@pytest.fixture(scope="module")
def heuristic_address() -> Iterator[str]:
    host, address = start_in_background(make_backend("heuristic"))
    yield address
    host.stop()


@pytest.fixture
def planner_stub(heuristic_address: str) -> Iterator[planner_pb2_grpc.PlannerStub]:
    with grpc.insecure_channel(heuristic_address, options=GRPC_MESSAGE_OPTIONS) as channel:
        yield planner_pb2_grpc.PlannerStub(channel)


def test_make_backend_rejects_unknown_names_listing_the_known_ones() -> None:
    assert backend_names() == ["heuristic", "random", "vllm"]
    assert isinstance(make_backend("heuristic"), HeuristicBackend)
    with pytest.raises(ValueError, match="unknown planner backend 'gpt'.*known: heuristic"):
        make_backend("gpt")


def test_random_backend_plans_valid_seeded_random_sets() -> None:
    backend = make_backend("random")
    req = planner_pb2.PlanRequest(category_names=[f"c{i}" for i in range(10)], seed=5)
    for user_id in range(20):
        req.users.add(user_id=user_id, step=3, num_categories=4, candidate_categories=range(10))
    first = asyncio.run(backend.plan(req))
    again = asyncio.run(backend.plan(req))
    plans = [list(p.category_ids) for p in first.plans]
    assert plans == [list(p.category_ids) for p in again.plans]  # the seed fixes them
    assert all(len(p) == 4 == len(set(p)) and set(p) <= set(range(10)) for p in plans)
    assert len({tuple(p) for p in plans}) > 10  # and users get different sets
    check_plan_response(req, first)


def test_random_backend_proposes_seeded_uniform_picks_of_the_candidates() -> None:
    from planner_api.contract import check_propose_response
    from planner_api.heuristics import heuristic_propose
    from tests.planner_requests import propose_request

    backend, req = make_backend("random"), propose_request()
    first, again = asyncio.run(backend.propose(req)), asyncio.run(backend.propose(req))
    check_propose_response(req, first)
    picks = [list(p.item_ids) for p in first.proposals]
    assert picks == [list(p.item_ids) for p in again.proposals] and first.backend == "random"  # the seed fixes them
    assert picks != [list(p.item_ids) for p in heuristic_propose(req).proposals]  # not the heuristic's ranking
    req.seed += 1
    assert picks != [list(p.item_ids) for p in asyncio.run(backend.propose(req)).proposals]
    # Uniform: over many queries every candidate is picked about equally often (10 of 100 each time).
    many = planner_pb2.ProposeRequest(category_names=req.category_names, seed=0)
    for user in range(400):
        many.queries.add(user_id=user, recent=req.queries[0].recent, num_items=10, candidates=req.queries[0].candidates)
    counts = np.bincount([i for p in asyncio.run(backend.propose(many)).proposals for i in p.item_ids], minlength=100)
    assert counts.sum() == 4000 and 20 <= counts.min() and counts.max() <= 65  # mean 40


def test_health_service_reports_serving(heuristic_address: str) -> None:
    with grpc.insecure_channel(heuristic_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", PLANNER_SERVICE_NAME):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service),
                                 timeout=RPC_TIMEOUT_S)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_large_batched_request_fits(planner_stub: planner_pb2_grpc.PlannerStub) -> None:
    # About 4.5 MiB: over gRPC's default 4 MiB limit, under the configured 64 MiB.
    req = plan_request(num_users=4096)
    for user in req.users:
        user.reflections.extend(["x" * 1000])
    assert req.ByteSize() > 4 * 1024 * 1024
    response = planner_stub.Plan(req, timeout=60.0)
    assert len(response.plans) == 4096


def test_invalid_requests_get_invalid_argument_and_the_server_keeps_serving(
    planner_stub: planner_pb2_grpc.PlannerStub,
) -> None:
    for attempt in range(200):
        req = plan_request(num_users=3)
        req.users[attempt % 3].num_categories = 7 + attempt % 5
        with pytest.raises(grpc.RpcError) as caught:
            planner_stub.Plan(req, timeout=RPC_TIMEOUT_S)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        expected = (f"users[{attempt % 3}].num_categories={7 + attempt % 5} exceeds "
                    "len(candidate_categories)=6")
        assert caught.value.details() == expected
    valid = plan_request()
    assert planner_stub.Plan(valid, timeout=RPC_TIMEOUT_S) == heuristic_plan(valid)


def test_backend_failure_is_internal_and_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    host, address = start_in_background(BrokenBackend())
    try:
        with grpc.insecure_channel(address) as channel:
            stub = planner_pb2_grpc.PlannerStub(channel)
            for rpc in [*RPC_NAMES, "Plan"]:  # the server still answers after failures
                with pytest.raises(grpc.RpcError) as caught:
                    getattr(stub, rpc)(ROLES[rpc][0](), timeout=RPC_TIMEOUT_S)
                assert caught.value.code() == grpc.StatusCode.INTERNAL
                assert "'broken' failed" in caught.value.details()
                assert "fell over" not in caught.value.details()
    finally:
        host.stop()
    assert "the engine fell over" in caplog.text


def test_answers_that_break_the_contract_are_internal(caplog: pytest.LogCaptureFixture) -> None:
    host, address = start_in_background(LyingBackend())
    try:
        with PlannerClient(address) as client, grpc.insecure_channel(address) as channel:
            stub = planner_pb2_grpc.PlannerStub(channel)
            for rpc in RPC_NAMES:
                with pytest.raises(grpc.RpcError) as caught:
                    getattr(stub, rpc)(ROLES[rpc][0](), timeout=RPC_TIMEOUT_S)
                assert caught.value.code() == grpc.StatusCode.INTERNAL
                assert caught.value.details() == (
                    f"planner backend 'lying' gave an invalid {rpc} answer: {LIES[rpc][1]}"
                )
                # The client never passes a broken answer on: it falls back to the heuristic.
                req = ROLES[rpc][0]()
                response, fell_back = getattr(client, rpc.lower())(req, timeout_s=RPC_TIMEOUT_S)
                assert fell_back and response == ROLES[rpc][1](req)
    finally:
        host.stop()
    assert "'lying' broke the contract on a Propose request of 3 queries" in caplog.text


@pytest.mark.parametrize("rpc", RPC_NAMES)
def test_every_rpc_answers_like_its_heuristic(heuristic_address: str, rpc: str) -> None:
    make_request, rule, _, _ = ROLES[rpc]
    req = make_request()
    with PlannerClient(heuristic_address) as client:
        client.wait_ready(timeout_s=RPC_TIMEOUT_S)
        response, fell_back = getattr(client, rpc.lower())(req, timeout_s=RPC_TIMEOUT_S)
        assert not fell_back
        assert response.SerializeToString() == rule(req).SerializeToString()
        stats = client.by_method[rpc]
        assert (stats.calls, stats.fallbacks) == (1, 0) and stats.total_latency_s > 0
        assert sum(s.calls for s in client.by_method.values()) == client.calls == 1


@pytest.mark.parametrize("rpc", RPC_NAMES)
def test_every_rpc_rejects_invalid_requests(heuristic_address: str, rpc: str) -> None:
    make_request, _, break_request, message = ROLES[rpc]
    req = make_request()
    break_request(req)
    with grpc.insecure_channel(heuristic_address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            getattr(planner_pb2_grpc.PlannerStub(channel), rpc)(req, timeout=RPC_TIMEOUT_S)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == message
        with pytest.raises(grpc.RpcError) as caught:
            getattr(planner_pb2_grpc.PlannerStub(channel), rpc)(
                type(req)(), timeout=RPC_TIMEOUT_S)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "is empty" in caught.value.details()
    with PlannerClient(heuristic_address) as client:
        with pytest.raises(ValueError, match=f"rejected the {rpc} request: ") as raised:
            getattr(client, rpc.lower())(req, timeout_s=RPC_TIMEOUT_S)
        assert message in str(raised.value)
        assert (client.by_method[rpc].calls, client.fallbacks) == (1, 0)
        # The server keeps serving the same RPC.
        _, fell_back = getattr(client, rpc.lower())(make_request(), timeout_s=RPC_TIMEOUT_S)
        assert not fell_back


def test_server_actor_lifecycle() -> None:
    host = PlannerServerActor()
    with pytest.raises(RuntimeError, match="not started"):
        host.address()
    address = host.start("heuristic")
    try:
        assert host.address() == address
        with pytest.raises(RuntimeError, match="already serving"):
            host.start()
    finally:
        host.stop()
    host.stop()  # stopping twice is harmless
    with pytest.raises(RuntimeError, match="not started"):
        host.address()


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)


def test_cli_serves_and_exits_cleanly_on_sigterm() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "llm_server", "--port", "0"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
        try:
            first_line = lines.get(timeout=30.0)
        except queue.Empty:
            pytest.fail("the CLI printed nothing within 30 s")
        assert first_line.startswith("planner serving on 127.0.0.1:")
        assert first_line.rstrip().endswith("(backend=heuristic)")
        address = first_line.split()[3]
        with PlannerClient(address) as client:
            client.wait_ready(timeout_s=RPC_TIMEOUT_S)
            _, fell_back = client.plan(plan_request(), timeout_s=RPC_TIMEOUT_S)
            assert not fell_back
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10.0) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10.0)
        process.stdout.close()
        process.stderr.close()


@pytest.mark.parametrize(
    ("args", "complaint"),
    [(["--port", "70000"], "--port"), (["--backend", "gpt"], "--backend")],
)
def test_cli_rejects_bad_options_with_one_line(args: list[str], complaint: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llm_server", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60.0,
    )
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and complaint in error_lines[0]
    assert "Traceback" not in result.stderr


def test_calls_beyond_the_concurrency_bound_are_refused_and_the_rest_answered() -> None:
    """The server holds at most MAX_CONCURRENT_RPCS calls at once (each may carry up to 64 MiB):
    the ones beyond get RESOURCE_EXHAUSTED at once, the others their answer."""
    from llm_server.server import MAX_CONCURRENT_RPCS

    extra = 6
    host, address = start_in_background(SleepyBackend(delay_s=1.5))
    try:
        with grpc.insecure_channel(address, options=GRPC_MESSAGE_OPTIONS) as channel:
            stub = planner_pb2_grpc.PlannerStub(channel)
            req = plan_request()
            futures = [stub.Plan.future(req, timeout=30) for _ in range(MAX_CONCURRENT_RPCS + extra)]
            codes = []
            for future in futures:
                try:
                    future.result()
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as error:
                    codes.append(error.code())
    finally:
        host.stop()
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= extra
    assert codes.count(grpc.StatusCode.OK) + codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == len(codes)
    assert codes.count(grpc.StatusCode.OK) >= MAX_CONCURRENT_RPCS // 2


class AbandonedBackend(SleepyBackend):
    """SleepyBackend that records when its Plan work is cancelled (what the vllm backend turns
    into engine aborts, tests/llm_server/test_smollm2.py)."""

    name = "abandoned"

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s)
        self.started = threading.Event()
        self.cancelled_at: float | None = None

    async def plan(self, req: Message) -> Message:
        self.started.set()
        try:
            return await SleepyBackend.plan(self, req)
        except asyncio.CancelledError:
            self.cancelled_at = time.perf_counter()
            raise


@pytest.mark.parametrize("how", ["deadline", "cancel"])
def test_a_call_nobody_waits_for_is_cancelled_in_the_backend(how: str) -> None:
    """Issue 18: the service computes only what someone will read. When a call's deadline passes
    or its caller cancels it, the server cancels the backend's work for it (within a second),
    instead of computing an answer that has already been replaced by the fallback."""
    backend = AbandonedBackend(delay_s=30.0)
    host, address = start_in_background(backend)
    try:
        with grpc.insecure_channel(address, options=GRPC_MESSAGE_OPTIONS) as channel:
            stub = planner_pb2_grpc.PlannerStub(channel)
            future = stub.Plan.future(plan_request(), timeout=0.5 if how == "deadline" else 30)
            assert backend.started.wait(10)
            if how == "cancel":
                future.cancel()
            gone = time.perf_counter()
            with pytest.raises((grpc.RpcError, grpc.FutureCancelledError)):
                future.result()
            deadline = time.perf_counter() + 5
            while backend.cancelled_at is None and time.perf_counter() < deadline:
                time.sleep(0.02)
    finally:
        host.stop()
    assert backend.cancelled_at is not None, "the backend kept working on a call nobody waits for"
    assert backend.cancelled_at - gone < 1.0


class RefusingBackend(HeuristicBackend):
    """Refuses every Plan call as over its token budget (what the vllm backend does with one)."""

    name = "refusing"

    async def plan(self, req: Message) -> Message:
        from llm_server.backends import CallRefused

        raise CallRefused("this Plan call's prompts add up to 9999 tokens, over the service's per-call budget of 10")


def test_a_call_over_the_backends_budget_gets_resource_exhausted_and_the_client_falls_back() -> None:
    host, address = start_in_background(RefusingBackend())
    try:
        with grpc.insecure_channel(address, options=GRPC_MESSAGE_OPTIONS) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                planner_pb2_grpc.PlannerStub(channel).Plan(plan_request(), timeout=RPC_TIMEOUT_S)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "per-call budget" in refused.value.details()
        client = PlannerClient(address)
        try:
            req = plan_request()
            response, fell_back = client.plan(req, RPC_TIMEOUT_S)
        finally:
            client.close()
        assert fell_back and response == heuristic_plan(req)
    finally:
        host.stop()
