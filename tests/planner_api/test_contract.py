"""Tests of planner_api.contract: every request's validation, at and over each limit, and the
checks of backend answers.

Each request type has one table of cases: a small valid request is changed in one place, and
the case gives the fragment the ValueError must contain (naming the field and index), or None
when the change stays within the contract (limits themselves are accepted).
"""

from __future__ import annotations

from collections.abc import Callable

import re
import pytest

from planner_api import contract
from planner_api.contract import (
    MAX_CANDIDATES,
    MAX_CATEGORY_NAMES,
    MAX_CRITIQUE_BYTES,
    MAX_EXPLANATION_BYTES,
    MAX_HISTORY,
    MAX_PAST,
    MAX_PROPOSED_ITEMS,
    MAX_QUERIES,
    MAX_RECENT,
    MAX_REFLECTION_BYTES,
    MAX_REFLECTIONS,
    MAX_SESSIONS,
    MAX_SHOWN,
    MAX_SLATE,
    MAX_TITLE_BYTES,
    MAX_USERS,
    check_explain_response,
    check_plan_response,
    check_propose_response,
    check_reflect_response,
    truncate_utf8,
    validate_explain_request,
    validate_plan_request,
    validate_propose_request,
    validate_reflect_request,
)
from planner_api.heuristics import (
    heuristic_explain,
    heuristic_plan,
    heuristic_propose,
    heuristic_reflect,
)
from planner_api.history import extend_history, make_history
from protos import planner_pb2
from planner_requests import column_values, set_column

Case = tuple[Callable, str | None]
NAMES = ["a", "b", "c", "d"]


def history(*entries: tuple[int, float, int]) -> planner_pb2.History:
    """A History of (category, feedback, item) entries, all at step 0, no titles."""
    return make_history((item_id, category, feedback, 0) for category, feedback, item_id in entries)


def grow(h: planner_pb2.History, count: int, category: int, feedback: float) -> None:
    """Appends `count` entries of item 0 at step 0 (every column, so the History stays valid)."""
    extend_history(h, [(0, category, feedback, 0)] * count)


def put(h: planner_pb2.History, column: str, index: int, value) -> None:
    """Sets one value of one column (the titles column is first filled with "" when not sent)."""
    if column == "titles" and not h.titles:
        h.titles.extend([""] * len(column_values(h, "item_ids")))
    if column == "titles":
        h.titles[index] = value
        return
    values = column_values(h, column)
    values[index] = value
    set_column(h, column, values)


def drop_last(h: planner_pb2.History, column: str) -> None:
    set_column(h, column, column_values(h, column)[:-1])


def append(h: planner_pb2.History, column: str, value) -> None:
    set_column(h, column, column_values(h, column) + [value])


def item(item_id: int, category: int) -> planner_pb2.CandidateItem:
    return planner_pb2.CandidateItem(item_id=item_id, category_id=category)


def _resize(repeated, count: int) -> None:
    """Makes a repeated message field hold `count` copies of its first element."""
    template = type(repeated[0])()
    template.CopyFrom(repeated[0])
    del repeated[:]
    for _ in range(count):
        repeated.add().CopyFrom(template)


def _run_case(validate: Callable, req, expected: str | None) -> None:
    if expected is None:
        validate(req)
        return
    with pytest.raises(ValueError) as caught:
        validate(req)
    assert expected in str(caught.value)


def test_limits_match_the_proto() -> None:
    # The numbers documented in protos/planner.proto; the cases below are built from the
    # constants, so this pins the constants themselves.
    assert (MAX_USERS, MAX_HISTORY, MAX_REFLECTIONS, MAX_REFLECTION_BYTES) == (4096, 256, 8, 1000)
    assert (MAX_TITLE_BYTES, MAX_CATEGORY_NAMES) == (200, 1024)
    assert (MAX_SESSIONS, MAX_SHOWN, MAX_CRITIQUE_BYTES) == (256, 1024, 1000)
    assert (MAX_QUERIES, MAX_RECENT, MAX_CANDIDATES, MAX_PROPOSED_ITEMS) == (1024, 16, 256, 20)
    assert (MAX_SLATE, MAX_EXPLANATION_BYTES) == (32, 300)


def test_truncate_utf8_never_splits_a_character() -> None:
    assert truncate_utf8("abc", 10) == "abc"
    assert truncate_utf8("é" * 10, 5) == "éé"
    assert truncate_utf8("€€", 4) == "€"


# --- Plan -------------------------------------------------------------------------------------


def plan_request() -> planner_pb2.PlanRequest:
    req = planner_pb2.PlanRequest(category_names=NAMES, seed=5)
    for user_id in range(3):
        req.users.add(
            user_id=user_id, step=1, history=history((0, 1.0, 3), (2, 0.0, 4)),
            candidate_categories=[0, 1, 2, 3], num_categories=2, reflections=["short critique"],
        )
    return req


def _max_history(r: planner_pb2.PlanRequest) -> None:
    grow(r.users[0].history, MAX_HISTORY - 2, 3, 0.5)


PLAN_CASES: dict[str, Case] = {
    "empty users": (lambda r: _resize(r.users, 0), "users is empty"),
    "users at the limit": (lambda r: _resize(r.users, MAX_USERS), None),
    "too many users": (lambda r: _resize(r.users, MAX_USERS + 1), f"users has {MAX_USERS + 1}"),
    "too many category names": (
        lambda r: r.category_names.extend(["x"] * MAX_CATEGORY_NAMES), "category_names has"),
    "negative user id": (lambda r: setattr(r.users[1], "user_id", -1), "users[1].user_id=-1"),
    "negative step": (lambda r: setattr(r.users[2], "step", -4), "users[2].step=-4"),
    "negative item id": (lambda r: put(r.users[1].history, "item_ids", 0, -2),
                         "users[1].history.item_ids[0]=-2 is negative"),
    "unknown history category": (lambda r: put(r.users[2].history, "category_ids", 1, 4),
                                 "users[2].history.category_ids[1]=4 is not a valid category id"),
    "negative history category": (lambda r: put(r.users[0].history, "category_ids", 1, -1),
                                  "users[0].history.category_ids[1]=-1"),
    "the first failing entry is named": (
        lambda r: (put(r.users[1].history, "category_ids", 1, 7), grow(r.users[1].history, 1, 9, 0.0)),
        "users[1].history.category_ids[1]=7"),
    "feedback 0 and 1": (lambda r: put(r.users[1].history, "feedback", 1, 1.0), None),
    "feedback above 1": (lambda r: put(r.users[1].history, "feedback", 1, 1.5),
                         "users[1].history.feedback[1]=1.5 is outside"),
    "feedback NaN": (lambda r: put(r.users[1].history, "feedback", 0, float("nan")),
                     "users[1].history.feedback[0]=nan"),
    "negative history step": (lambda r: put(r.users[2].history, "steps", 1, -3),
                              "users[2].history.steps[1]=-3 is negative"),
    "title at the limit": (lambda r: put(r.users[2].history, "titles", 0, "é" * (MAX_TITLE_BYTES // 2)),
                           None),
    "oversize title": (lambda r: put(r.users[2].history, "titles", 1, "é" * (MAX_TITLE_BYTES // 2 + 1)),
                       "users[2].history.titles[1] is 202 bytes; at most 200"),
    "feedback column short": (lambda r: drop_last(r.users[1].history, "feedback"),
                              "users[1].history.feedback has 1 entries; need len(item_ids)=2"),
    "category column long": (lambda r: append(r.users[0].history, "category_ids", 1),
                             "users[0].history.category_ids has 3 entries; need len(item_ids)=2"),
    "steps column missing": (lambda r: r.users[2].history.ClearField("steps"),
                             "users[2].history.steps has 0 entries; need len(item_ids)=2"),
    "item ids column short": (lambda r: drop_last(r.users[2].history, "item_ids"),
                              "users[2].history.category_ids has 2 entries; need len(item_ids)=1"),
    "titles for some entries only": (lambda r: r.users[1].history.titles.append("one title"),
                                      "users[1].history.titles has 1 entries; "
                                      "need 0 (not sent) or len(item_ids)=2"),
    "history at the limit": (_max_history, None),
    "too many history entries": (lambda r: grow(r.users[1].history, MAX_HISTORY, 0, 1.0),
                                 f"users[1].history has {MAX_HISTORY + 2} entries; at most {MAX_HISTORY}"),
    "too long a past": (lambda r: grow(r.users[0].past, MAX_PAST + 1, 0, 1.0),
                        f"users[0].past has {MAX_PAST + 1} entries; at most {MAX_PAST}"),
    "unknown category in the past": (lambda r: grow(r.users[2].past, 3, 8, 1.0),
                                     "users[2].past.category_ids[0]=8"),
    "past at the limit": (lambda r: grow(r.users[1].past, MAX_PAST, 1, 0.0), None),
    "empty candidates": (lambda r: r.users[2].ClearField("candidate_categories"),
                         "users[2].candidate_categories is empty"),
    "unknown candidate": (lambda r: r.users[1].candidate_categories.append(9),
                          "users[1].candidate_categories[4]=9"),
    "negative candidate": (lambda r: r.users[0].candidate_categories.__setitem__(2, -3),
                           "users[0].candidate_categories[2]=-3"),
    "duplicate candidate": (lambda r: r.users[2].candidate_categories.__setitem__(3, 1),
                            "users[2].candidate_categories[3]=1 is a duplicate"),
    "num_categories 0": (lambda r: setattr(r.users[1], "num_categories", 0),
                         "users[1].num_categories=0"),
    "num_categories at the limit": (lambda r: setattr(r.users[1], "num_categories", 4), None),
    "num_categories too large": (lambda r: setattr(r.users[2], "num_categories", 9),
                                 "users[2].num_categories=9 exceeds len(candidate_categories)=4"),
    "reflections at the limit": (
        lambda r: r.users[0].reflections.extend(["€" * (MAX_REFLECTION_BYTES // 3)]
                                                * (MAX_REFLECTIONS - 1)), None),
    "too many reflections": (lambda r: r.users[0].reflections.extend(["x"] * MAX_REFLECTIONS),
                             f"users[0].reflections has {MAX_REFLECTIONS + 1}"),
    "oversize reflection": (
        lambda r: r.users[1].reflections.append("€" * (MAX_REFLECTION_BYTES // 3 + 1)),
        "users[1].reflections[1]"),
}


@pytest.mark.parametrize("case", sorted(PLAN_CASES))
def test_plan_validation(case: str) -> None:
    change, expected = PLAN_CASES[case]
    req = plan_request()
    change(req)
    _run_case(validate_plan_request, req, expected)


# --- Reflect ----------------------------------------------------------------------------------


def reflect_request() -> planner_pb2.ReflectRequest:
    req = planner_pb2.ReflectRequest(category_names=NAMES, seed=5)
    for user_id in range(3):
        req.sessions.add(user_id=user_id, shown_categories=[0, 1, 2, 1], feedback=[1, 0, 0.5, 0],
                         length=2, session_return=1.5)
    return req


def _shown(r: planner_pb2.ReflectRequest, index: int, count: int) -> None:
    session = r.sessions[index]
    session.ClearField("shown_categories")
    session.ClearField("feedback")
    session.shown_categories.extend([3] * count)
    session.feedback.extend([1.0] * count)


REFLECT_CASES: dict[str, Case] = {
    "empty sessions": (lambda r: _resize(r.sessions, 0), "sessions is empty"),
    "sessions at the limit": (lambda r: _resize(r.sessions, MAX_SESSIONS), None),
    "too many sessions": (lambda r: _resize(r.sessions, MAX_SESSIONS + 1),
                          f"sessions has {MAX_SESSIONS + 1} entries; at most {MAX_SESSIONS}"),
    "too many category names": (
        lambda r: r.category_names.extend(["x"] * MAX_CATEGORY_NAMES), "category_names has"),
    "negative user id": (lambda r: setattr(r.sessions[2], "user_id", -3),
                         "sessions[2].user_id=-3 is negative"),
    "no items shown": (lambda r: _shown(r, 1, 0), None),
    "shown at the limit": (lambda r: _shown(r, 1, MAX_SHOWN), None),
    "too many shown": (lambda r: _shown(r, 1, MAX_SHOWN + 1),
                       f"sessions[1].shown_categories has {MAX_SHOWN + 1} entries"),
    "feedback shorter than shown": (lambda r: r.sessions[0].feedback.pop(),
                                    "sessions[0].feedback has 3 entries; "
                                    "need len(shown_categories)=4"),
    "unknown shown category": (lambda r: r.sessions[1].shown_categories.__setitem__(2, 4),
                               "sessions[1].shown_categories[2]=4 is not a valid category id"),
    "negative shown category": (lambda r: r.sessions[0].shown_categories.__setitem__(0, -1),
                                "sessions[0].shown_categories[0]=-1"),
    "feedback below 0": (lambda r: r.sessions[2].feedback.__setitem__(3, -0.5),
                         "sessions[2].feedback[3]=-0.5 is outside"),
    "feedback NaN": (lambda r: r.sessions[2].feedback.__setitem__(1, float("nan")),
                     "sessions[2].feedback[1]=nan"),
    "length at the limit": (lambda r: setattr(r.sessions[1], "length", 1), None),
    "length 0": (lambda r: setattr(r.sessions[1], "length", 0),
                 "sessions[1].length=0 is below 1"),
    "negative return": (lambda r: setattr(r.sessions[0], "session_return", -2.0), None),
    "infinite return": (lambda r: setattr(r.sessions[0], "session_return", float("inf")),
                        "sessions[0].session_return=inf is not finite"),
    "NaN return": (lambda r: setattr(r.sessions[2], "session_return", float("nan")),
                   "sessions[2].session_return=nan is not finite"),
}


@pytest.mark.parametrize("case", sorted(REFLECT_CASES))
def test_reflect_validation(case: str) -> None:
    change, expected = REFLECT_CASES[case]
    req = reflect_request()
    change(req)
    _run_case(validate_reflect_request, req, expected)


# --- Propose ----------------------------------------------------------------------------------


def propose_request() -> planner_pb2.ProposeRequest:
    req = planner_pb2.ProposeRequest(category_names=NAMES, seed=5)
    for user_id in range(3):
        req.queries.add(user_id=user_id, recent=history((0, 1.0, 90), (1, 0.0, 91)),
                        candidates=[item(k, k % 4) for k in range(10)], num_items=3)
    return req


def _candidates(r: planner_pb2.ProposeRequest, index: int, count: int) -> None:
    query = r.queries[index]
    query.ClearField("candidates")
    query.candidates.extend(item(k, k % 4) for k in range(count))


PROPOSE_CASES: dict[str, Case] = {
    "empty queries": (lambda r: _resize(r.queries, 0), "queries is empty"),
    "queries at the limit": (lambda r: _resize(r.queries, MAX_QUERIES), None),
    "too many queries": (lambda r: _resize(r.queries, MAX_QUERIES + 1),
                         f"queries has {MAX_QUERIES + 1} entries; at most {MAX_QUERIES}"),
    "too many category names": (
        lambda r: r.category_names.extend(["x"] * MAX_CATEGORY_NAMES), "category_names has"),
    "negative user id": (lambda r: setattr(r.queries[1], "user_id", -1),
                         "queries[1].user_id=-1 is negative"),
    "no recent items": (lambda r: r.queries[1].ClearField("recent"), None),
    "recent at the limit": (lambda r: grow(r.queries[1].recent, MAX_RECENT - 2, 2, 1.0), None),
    "too many recent": (lambda r: grow(r.queries[1].recent, MAX_RECENT - 1, 2, 1.0),
                        f"queries[1].recent has {MAX_RECENT + 1} entries; at most {MAX_RECENT}"),
    "recent feedback above 1": (lambda r: put(r.queries[0].recent, "feedback", 1, 2.0),
                                "queries[0].recent.feedback[1]=2.0"),
    "recent unknown category": (lambda r: put(r.queries[2].recent, "category_ids", 0, 7),
                                "queries[2].recent.category_ids[0]=7"),
    "recent negative item id": (lambda r: put(r.queries[1].recent, "item_ids", 1, -1),
                                "queries[1].recent.item_ids[1]=-1 is negative"),
    "recent columns unequal": (lambda r: append(r.queries[2].recent, "steps", 0),
                               "queries[2].recent.steps has 3 entries; need len(item_ids)=2"),
    "oversize recent title": (lambda r: put(r.queries[2].recent, "titles", 1, "x" * (MAX_TITLE_BYTES + 1)),
                              "queries[2].recent.titles[1] is 201 bytes"),
    "empty candidates": (lambda r: _candidates(r, 2, 0), "queries[2].candidates is empty"),
    "candidates at the limit": (lambda r: _candidates(r, 2, MAX_CANDIDATES), None),
    "too many candidates": (lambda r: _candidates(r, 2, MAX_CANDIDATES + 1),
                            f"queries[2].candidates has {MAX_CANDIDATES + 1} entries"),
    "negative candidate id": (lambda r: setattr(r.queries[0].candidates[4], "item_id", -1),
                              "queries[0].candidates[4].item_id=-1 is negative"),
    "duplicate candidate": (lambda r: setattr(r.queries[1].candidates[5], "item_id", 2),
                            "queries[1].candidates[5].item_id=2 is a duplicate"),
    "unknown candidate category": (lambda r: setattr(r.queries[1].candidates[3], "category_id", 4),
                                   "queries[1].candidates[3].category_id=4"),
    "candidate title at the limit": (lambda r: setattr(r.queries[1].candidates[0], "title",
                                                       "€" * (MAX_TITLE_BYTES // 3)), None),
    "oversize candidate title": (lambda r: setattr(r.queries[1].candidates[0], "title",
                                                   "€" * (MAX_TITLE_BYTES // 3 + 1)),
                                 "queries[1].candidates[0].title"),
    "num_items 0": (lambda r: setattr(r.queries[0], "num_items", 0),
                    "queries[0].num_items=0 is below 1"),
    "num_items all candidates": (lambda r: setattr(r.queries[0], "num_items", 10), None),
    "num_items over the candidates": (
        lambda r: setattr(r.queries[0], "num_items", 11),
        "queries[0].num_items=11 exceeds min(len(candidates), 20)=10"),
    "num_items at the cap": (lambda r: (_candidates(r, 1, 50),
                                        setattr(r.queries[1], "num_items", MAX_PROPOSED_ITEMS)),
                             None),
    "num_items over the cap": (lambda r: (_candidates(r, 1, 50),
                                          setattr(r.queries[1], "num_items", 21)),
                               "queries[1].num_items=21 exceeds min(len(candidates), 20)=20"),
}


@pytest.mark.parametrize("case", sorted(PROPOSE_CASES))
def test_propose_validation(case: str) -> None:
    change, expected = PROPOSE_CASES[case]
    req = propose_request()
    change(req)
    _run_case(validate_propose_request, req, expected)


# --- Explain ----------------------------------------------------------------------------------


def explain_request() -> planner_pb2.ExplainRequest:
    return planner_pb2.ExplainRequest(
        user_id=4, history=history((0, 1.0, 1), (2, 0.0, 2)),
        slate=[item(k, k % 4) for k in range(6)], category_names=NAMES, seed=5,
    )


def _slate(r: planner_pb2.ExplainRequest, count: int) -> None:
    r.ClearField("slate")
    r.slate.extend(item(k, k % 4) for k in range(count))


EXPLAIN_CASES: dict[str, Case] = {
    "negative user id": (lambda r: setattr(r, "user_id", -1), "user_id=-1 is negative"),
    "too many category names": (
        lambda r: r.category_names.extend(["x"] * MAX_CATEGORY_NAMES), "category_names has"),
    "no history": (lambda r: r.ClearField("history"), None),
    "history at the limit": (lambda r: grow(r.history, MAX_HISTORY - 2, 1, 0.5), None),
    "too many history entries": (lambda r: grow(r.history, MAX_HISTORY - 1, 1, 0.5),
                                 f"history has {MAX_HISTORY + 1} entries; at most {MAX_HISTORY}"),
    "history unknown category": (lambda r: put(r.history, "category_ids", 1, 4),
                                 "history.category_ids[1]=4"),
    "history feedback NaN": (lambda r: put(r.history, "feedback", 0, float("nan")),
                             "history.feedback[0]=nan"),
    "history titles short": (lambda r: r.history.titles.append("t"),
                             "history.titles has 1 entries; need 0 (not sent) or len(item_ids)=2"),
    "empty slate": (lambda r: _slate(r, 0), "slate is empty"),
    "slate at the limit": (lambda r: _slate(r, MAX_SLATE), None),
    "slate too long": (lambda r: _slate(r, MAX_SLATE + 1),
                       f"slate has {MAX_SLATE + 1} entries; at most {MAX_SLATE}"),
    "repeated slate item": (lambda r: setattr(r.slate[3], "item_id", 0), None),
    "negative slate item": (lambda r: setattr(r.slate[2], "item_id", -5),
                            "slate[2].item_id=-5 is negative"),
    "unknown slate category": (lambda r: setattr(r.slate[5], "category_id", 9),
                               "slate[5].category_id=9 is not a valid category id"),
    "oversize slate title": (lambda r: setattr(r.slate[1], "title", "x" * 300),
                             "slate[1].title is 300 bytes; at most 200"),
}


@pytest.mark.parametrize("case", sorted(EXPLAIN_CASES))
def test_explain_validation(case: str) -> None:
    change, expected = EXPLAIN_CASES[case]
    req = explain_request()
    change(req)
    _run_case(validate_explain_request, req, expected)


# --- answers ----------------------------------------------------------------------------------


def test_heuristic_answers_pass_the_answer_checks() -> None:
    check_plan_response(plan_request(), heuristic_plan(plan_request()))
    check_reflect_response(reflect_request(), heuristic_reflect(reflect_request()))
    check_propose_response(propose_request(), heuristic_propose(propose_request()))
    check_explain_response(explain_request(), heuristic_explain(explain_request()))


def _answer(name: str, change: Callable) -> tuple[Callable, object, object]:
    builders = {
        "plan": (check_plan_response, plan_request, heuristic_plan),
        "reflect": (check_reflect_response, reflect_request, heuristic_reflect),
        "propose": (check_propose_response, propose_request, heuristic_propose),
        "explain": (check_explain_response, explain_request, heuristic_explain),
    }
    check, build, rule = builders[name]
    req = build()
    resp = rule(req)
    change(resp)
    return check, req, resp


ANSWER_CASES: dict[str, tuple[str, Callable, str]] = {
    "plan missing": ("plan", lambda a: a.plans.pop(), "plans has 2 entries; need one per user"),
    "plan short": ("plan", lambda a: a.plans[1].category_ids.pop(),
                   "plans[1].category_ids has 1 entries; need num_categories=2"),
    "plan foreign id": ("plan", lambda a: a.plans[0].category_ids.__setitem__(1, 7),
                        "plans[0].category_ids[1]=7 is not one of the candidate_categories"),
    "plan duplicate": ("plan", lambda a: a.plans[2].category_ids.__setitem__(
        1, a.plans[2].category_ids[0]), "plans[2].category_ids[1]"),
    "critique extra": ("reflect", lambda a: a.critiques.append("x"), "critiques has 4 entries"),
    "critique oversize": ("reflect", lambda a: a.critiques.__setitem__(1, "x" * 1001),
                          "critiques[1] is 1001 bytes"),
    "proposal missing": ("propose", lambda a: a.proposals.pop(), "proposals has 2 entries"),
    "proposal too long": ("propose", lambda a: a.proposals[0].item_ids.append(9),
                          "proposals[0].item_ids has 4 entries; at most num_items=3"),
    "proposal foreign id": ("propose", lambda a: a.proposals[2].item_ids.__setitem__(0, 99),
                            "proposals[2].item_ids[0]=99 is not one of the candidates"),
    "explanation oversize": ("explain", lambda a: setattr(a, "explanation", "é" * 151),
                             "explanation is 302 bytes; at most 300"),
}


@pytest.mark.parametrize("case", sorted(ANSWER_CASES))
def test_answer_checks_reject_contract_breaks(case: str) -> None:
    name, change, expected = ANSWER_CASES[case]
    check, req, resp = _answer(name, change)
    with pytest.raises(ValueError) as caught:
        check(req, resp)
    assert expected in str(caught.value)


def test_a_shorter_proposal_is_within_the_contract() -> None:
    # "up to num_items": a backend may propose fewer items than asked for.
    check, req, resp = _answer("propose", lambda a: a.proposals[1].item_ids.pop())
    check(req, resp)


def test_every_validator_is_public() -> None:
    names = {name for name in dir(contract) if name.startswith(("validate_", "check_"))}
    pairs = (("validate", "request"), ("check", "response"))
    rpcs = [rpc.lower() for rpc in contract.RPC_NAMES]
    assert {f"{verb}_{rpc}_{kind}" for verb, kind in pairs for rpc in rpcs} == names


# --- Respond (the LLM as the user) -------------------------------------------------------------


def respond_request() -> planner_pb2.RespondRequest:
    req = planner_pb2.RespondRequest(category_names=["a", "b", "c"], seed=1)
    for user_id, ask_leave in ((1, True), (2, False)):
        req.cases.add(user=planner_pb2.UserPersona(
            user_id=user_id, traits=["age 30"],
            past=make_history([(1, 0, 1.0, 0), (2, 1, 0.25, 0)])),
            slate=[planner_pb2.CandidateItem(item_id=k, category_id=k % 3) for k in range(4)], ask_leave=ask_leave)
    return req


RESPOND_CASES = {
    "valid": (lambda r: None, None),
    "no cases": (lambda r: r.ClearField("cases"), "cases is empty"),
    "too many traits": (lambda r: r.cases[1].user.traits.extend(["t"] * 8), "cases[1].user.traits has 9 entries"),
    "oversize trait": (lambda r: r.cases[0].user.traits.append("é" * 51), "cases[0].user.traits[1] is 102 bytes"),
    "repeated slate item": (lambda r: setattr(r.cases[1].slate[2], "item_id", 0),
                            "cases[1].slate[2].item_id=0 is a duplicate"),
    "past too long": (lambda r: extend_history(r.cases[0].user.past, [(1, 0, 0.0, 0)] * 63),
        "cases[0].user.past has 65 entries; at most 64"),
    "bad session feedback": (lambda r: extend_history(r.cases[1].session, [(1, 0, 2.0, 0)]),
                             "cases[1].session.feedback[0]=2.0"),
    "too many items in all": (lambda r: [r.cases.add(slate=[planner_pb2.CandidateItem(item_id=k) for k in range(32)])
                                         for _ in range(128)], "4104 items in all; at most 4096"),
}


@pytest.mark.parametrize("case", sorted(RESPOND_CASES))
def test_respond_validation(case: str) -> None:
    from planner_api.contract import validate_respond_request

    change, expected = RESPOND_CASES[case]
    req = respond_request()
    change(req)
    _run_case(validate_respond_request, req, expected)


@pytest.mark.parametrize("change, expected", [
    (lambda a: a.responses.pop(), "responses has 1 entries; need one per case (2)"),
    (lambda a: a.responses[0].likes.pop(), "responses[0].likes has 3 entries; need one per slate item (4)"),
    (lambda a: a.responses[1].ratings.__setitem__(0, float("nan")), "responses[1].ratings[0]=nan is outside [0, 1]"),
    (lambda a: setattr(a.responses[0], "leave", 1.5), "responses[0].leave=1.5 is outside [0, 1]"),
    (lambda a: setattr(a.responses[1], "leave", 0.2), "but cases[1].ask_leave is false"),
])
def test_respond_answer_checks(change, expected: str) -> None:
    from planner_api.contract import check_respond_response
    from planner_api.heuristics import heuristic_respond

    req = respond_request()
    answer = heuristic_respond(req)
    check_respond_response(req, answer)
    change(answer)
    with pytest.raises(ValueError, match=re.escape(expected)):
        check_respond_response(req, answer)
