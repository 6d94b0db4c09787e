"""Valid requests of every planner RPC, the heuristic that answers each, one way to break each, and
servers to test clients against: shared by the server's and the client's tests."""
from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from google.protobuf.message import Message

from llm_server.backends import HeuristicBackend, PlannerBackend
from llm_server.server import PlannerServerActor
from planner_api.contract import RPC_NAMES
from planner_api.heuristics import (
    heuristic_explain,
    heuristic_judge,
    heuristic_plan,
    heuristic_propose,
    heuristic_reflect,
    heuristic_respond,
)
from planner_api.history import column_array, encode_column, history_from_columns, slice_history
from protos import planner_pb2


def column_values(history: planner_pb2.History, name: str) -> list:
    """A numeric History column as a list (tests change columns as lists, then `set_column`)."""
    return column_array(history, name).tolist()


def set_column(history: planner_pb2.History, name: str, values) -> None:
    """Replaces a numeric History column (any length: tests also break the columns' lengths)."""
    setattr(history, name, encode_column(name, values))


def plan_request(num_users: int = 4, seed: int = 11) -> planner_pb2.PlanRequest:
    """A valid request whose users have a little history each."""
    req = planner_pb2.PlanRequest(category_names=[f"c{c}" for c in range(6)], seed=seed)
    for user_id in range(num_users):
        req.users.add(
            user_id=user_id, step=user_id % 3,
            history=history_from_columns(
                range(10), [(user_id + k) % 6 for k in range(10)], [float(k % 2) for k in range(10)], [0] * 10,
                [f"item {k}" for k in range(10)]),
            candidate_categories=[0, 1, 2, 3, 4, 5], num_categories=3,
        )
    return req


def reflect_request() -> planner_pb2.ReflectRequest:
    """A valid request of 3 finished sessions of 12 items over 6 categories."""
    req = planner_pb2.ReflectRequest(category_names=[f"c{c}" for c in range(6)], seed=3)
    for user_id in range(3):
        req.sessions.add(user_id=user_id, shown_categories=[(user_id + k) % 6 for k in range(12)],
                         feedback=[k % 3 == 0 for k in range(12)], length=2, session_return=4.0)
    return req


def propose_request() -> planner_pb2.ProposeRequest:
    """A valid request of 3 LAAC-shaped queries: 5 recent items, 100 candidates, 10 answers."""
    req = planner_pb2.ProposeRequest(category_names=[f"c{c}" for c in range(6)], seed=4)
    for user, recent in enumerate(plan_request(num_users=3).users):
        req.queries.add(user_id=user, recent=slice_history(recent.history, -5), num_items=10, candidates=[
            planner_pb2.CandidateItem(item_id=k, category_id=k % 6) for k in range(100)])
    return req


def explain_request() -> planner_pb2.ExplainRequest:
    """A valid request: a slate of 6 for a user with some history."""
    return planner_pb2.ExplainRequest(
        user_id=5, category_names=[f"c{c}" for c in range(6)], seed=5,
        history=plan_request(num_users=1).users[0].history,
        slate=[planner_pb2.CandidateItem(item_id=k, category_id=k % 4) for k in range(6)],
    )


def judge_request() -> planner_pb2.JudgeRequest:
    """A valid request: three explanations of the explain request's slate."""
    explain = explain_request()
    req = planner_pb2.JudgeRequest(category_names=explain.category_names, seed=5)
    for text in ("Mostly c0 and c1, like the c0 you liked.", "Something for everyone.", "More c5 items."):
        req.cases.add(history=explain.history, slate=explain.slate, explanation=text)
    return req


def respond_request() -> planner_pb2.RespondRequest:
    """A valid request: two users, with a rated past and traits, answering the explain request's
    slate (the second also asked whether they leave)."""
    explain = explain_request()
    req = planner_pb2.RespondRequest(category_names=explain.category_names, seed=6)
    for user_id, ask_leave in ((5, False), (6, True)):
        past = history_from_columns([20, 21, 22], [0, 0, 3], [1.0, 0.75, 0.25], [0, 0, 0], ["a", "b", "c"])
        req.cases.add(user=planner_pb2.UserPersona(user_id=user_id, past=past, traits=["age 31", "gender F"]),
                      session=explain.history, slate=explain.slate, ask_leave=ask_leave)
    return req


# RPC name -> (valid request, the heuristic that answers it, a change that makes the request
# invalid, the message the server answers it with).
ROLES: dict[str, tuple[Callable[[], Message], Callable[[Message], Message],
                       Callable[[Message], object], str]] = {
    "Plan": (plan_request, heuristic_plan,
             lambda r: setattr(r.users[2], "num_categories", 0),
             "users[2].num_categories=0 is below 1"),
    "Reflect": (reflect_request, heuristic_reflect, lambda r: r.sessions[1].feedback.pop(),
                "sessions[1].feedback has 11 entries; need len(shown_categories)=12"),
    "Propose": (propose_request, heuristic_propose,
                lambda r: setattr(r.queries[2].candidates[7], "item_id", 3),
                "queries[2].candidates[7].item_id=3 is a duplicate; ids must be distinct"),
    "Explain": (explain_request, heuristic_explain,
                lambda r: setattr(r.slate[4], "category_id", 6),
                "slate[4].category_id=6 is not a valid category id "
                "(need 0 <= id < len(category_names)=6)"),
    "Judge": (judge_request, heuristic_judge, lambda r: setattr(r.cases[1], "explanation", "é" * 151),
              "cases[1].explanation is 302 bytes; at most 300"),
    "Respond": (respond_request, heuristic_respond, lambda r: r.cases[1].user.traits.append("x" * 101),
                "cases[1].user.traits[2] is 101 bytes; at most 100"),
}


def _delayed(method: str) -> Callable:
    """HeuristicBackend's `method`, answering only after the backend's delay_s."""

    async def answer(self: SleepyBackend, req: Message) -> Message:
        await asyncio.sleep(self.delay_s)
        return await getattr(HeuristicBackend, method)(self, req)

    return answer


class SleepyBackend(HeuristicBackend):
    """The heuristic backend, answering only after a delay (to miss a client's deadline)."""

    name = "sleepy"
    plan, reflect, propose, explain, judge, respond = (_delayed(rpc.lower()) for rpc in RPC_NAMES)

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s


def start_in_background(backend: PlannerBackend) -> tuple[PlannerServerActor, str]:
    """The real grpc.aio server on 127.0.0.1, port 0, on an event loop in a background thread."""
    host = PlannerServerActor()
    return host, host.start_with_backend(backend, "127.0.0.1", 0)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
