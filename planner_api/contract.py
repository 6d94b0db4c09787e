"""The limits of protos/planner.proto, and the checks that enforce them on both sides.

One place for every number the contract documents: the server validates each request with the
`validate_*_request` functions (INVALID_ARGUMENT on failure) and checks each backend answer
with the `check_*_response` functions (a failing check is a server bug: INTERNAL). Every
ValueError names the offending field and index, e.g.
"queries[2].num_items=21 exceeds min(len(candidates), 20)=20".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain

import numpy as np

from planner_api.history import COLUMNS, VALUE_BYTES, column_length, concat_column
from protos import planner_pb2

# --- limits documented in protos/planner.proto ---------------------------------------------
# Plan
# The RPCs of the Planner service, in the .proto's order.
RPC_NAMES: tuple[str, ...] = ("Plan", "Reflect", "Propose", "Explain", "Judge", "Respond")

MIN_USERS = 1
MAX_USERS = 4096
MAX_HISTORY = 256
MAX_PAST = 64
MAX_REFLECTIONS = 8
MAX_REFLECTION_BYTES = 1000
MAX_TITLE_BYTES = 200
MAX_CATEGORY_NAMES = 1024
MIN_FEEDBACK = 0.0
MAX_FEEDBACK = 1.0
# Reflect
MIN_SESSIONS = 1
MAX_SESSIONS = 256
MAX_SHOWN = 1024
MIN_SESSION_LENGTH = 1
# A critique must fit UserContext.reflections.
MAX_CRITIQUE_BYTES = MAX_REFLECTION_BYTES
# Propose
MIN_QUERIES = 1
MAX_QUERIES = 1024
MAX_RECENT = 16
MIN_CANDIDATES = 1
MAX_CANDIDATES = 256
MAX_PROPOSED_ITEMS = 20
# Explain
MIN_SLATE = 1
MAX_SLATE = 32
MAX_EXPLANATION_BYTES = 300
# Judge
MIN_CASES = 1
MAX_CASES = 64
MIN_JUDGE_SCORE = 1.0
MAX_JUDGE_SCORE = 5.0
# Respond (the LLM as the user)
MIN_RESPOND_CASES = 1
MAX_RESPOND_CASES = 1024
MAX_RESPOND_ITEMS = 4096   # slate items over all the cases of one call: each is one engine request
MAX_TRAITS = 8
MAX_TRAIT_BYTES = 100

# One batched request of 4096 users with full histories runs to tens of MiB; gRPC's default
# 4 MiB limit would reject it, so both ends raise the limit.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
GRPC_MESSAGE_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]

# The fully qualified service name, as the health service reports it.
PLANNER_SERVICE_NAME: str = planner_pb2.DESCRIPTOR.services_by_name["Planner"].full_name

# The widest UTF-8 encoding of one code point; a string of at most limit // 4 characters
# cannot exceed `limit` bytes, which spares encoding almost every string.
_MAX_UTF8_BYTES_PER_CHAR = 4


def truncate_utf8(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes without splitting a character."""
    if len(text) <= limit // _MAX_UTF8_BYTES_PER_CHAR:
        return text
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


def _exceeds_bytes(text: str, limit: int) -> int | None:
    """The UTF-8 size of `text` when it is over `limit` bytes, else None."""
    if len(text) <= limit // _MAX_UTF8_BYTES_PER_CHAR:
        return None
    size = len(text.encode("utf-8"))
    return size if size > limit else None


def _check_bytes(field: str, text: str, limit: int) -> None:
    """Raises ValueError when `text` is over `limit` UTF-8 bytes."""
    size = _exceeds_bytes(text, limit)
    if size is not None:
        raise ValueError(f"{field} is {size} bytes; at most {limit}")


def _check_count(field: str, count: int, low: int, high: int, noun: str) -> None:
    """Raises ValueError when a repeated field's length is outside [low, high]."""
    if count < low:
        if count == 0:
            raise ValueError(f"{field} is empty; a request carries {low} to {high} {noun}")
        raise ValueError(f"{field} has {count} entries; at least {low}")
    if count > high:
        raise ValueError(f"{field} has {count} entries; at most {high}")


def _check_category_id(field: str, value: int, n_names: int) -> None:
    """Raises ValueError when `value` does not index category_names."""
    if not 0 <= value < n_names:
        raise ValueError(
            f"{field}={value} is not a valid category id "
            f"(need 0 <= id < len(category_names)={n_names})"
        )


def _check_non_negative(field: str, value: int) -> None:
    """Raises ValueError when an id is negative."""
    if value < 0:
        raise ValueError(f"{field}={value} is negative")


def _check_feedback(field: str, value: float) -> None:
    """Raises ValueError when feedback is outside [0, 1]."""
    # Written as a negated range test so that NaN fails it too.
    if not MIN_FEEDBACK <= value <= MAX_FEEDBACK:
        raise ValueError(f"{field}={value} is outside [{MIN_FEEDBACK}, {MAX_FEEDBACK}]")


def _check_category_names(names: Sequence[str]) -> int:
    """Checks the count of category_names; returns it."""
    if len(names) > MAX_CATEGORY_NAMES:
        raise ValueError(
            f"category_names has {len(names)} entries; at most {MAX_CATEGORY_NAMES}"
        )
    return len(names)


def _history_length(field: str, history: planner_pb2.History, limit: int) -> int:
    """Checks the shape of a History called `field` (e.g. "users[3].history"): every numeric column
    a whole number of 4-byte values and as many as item_ids (titles: that many or empty), at most
    `limit` entries; returns the length."""
    size = len(history.item_ids)
    n = size // VALUE_BYTES
    if not (size % VALUE_BYTES == 0 and len(history.category_ids) == size and len(history.feedback) == size
            and len(history.steps) == size):   # the common case in one test; the loop names the failure
        for name in COLUMNS:
            got, whole = column_length(history, name)
            if not whole:
                raise ValueError(f"{field}.{name} has {len(getattr(history, name))} bytes; need a multiple of "
                                 f"{VALUE_BYTES} (one little-endian 4-byte value per entry)")
            if got != n:
                raise ValueError(f"{field}.{name} has {got} entries; need len(item_ids)={n}")
    titles = len(history.titles)
    if titles not in (0, n):
        raise ValueError(f"{field}.titles has {titles} entries; need 0 (not sent) or len(item_ids)={n}")
    if n > limit:
        raise ValueError(f"{field} has {n} entries; at most {limit}")
    return n


def _validate_histories(fields: Sequence[str], histories: Sequence[planner_pb2.History], n_names: int,
                        limit: int) -> None:
    """Checks the Histories of one request together: shapes (`_history_length`), then each column
    of all of them at once, naming the first failing value, e.g. "users[3].history.category_ids[7]=99
    is not a valid category id (...)".

    Vectorised: each column of the whole request is read once into one numpy array (one join of
    its buffers) and checked as a whole; only a failure is traced back to its history and index."""
    lengths = np.array([_history_length(f, h, limit) for f, h in zip(fields, histories)], np.int64)
    total = int(lengths.sum())
    if not total:
        return
    ends = np.cumsum(lengths)

    def first(bad: np.ndarray, column: str) -> tuple[str, int] | None:
        """(name of the first failing value, its flat index), or None when none fails."""
        if not bad.any():
            return None
        flat = int(np.argmax(bad))
        k = int(np.searchsorted(ends, flat, side="right"))
        return f"{fields[k]}.{column}[{flat - int(ends[k] - lengths[k])}]", flat

    def column(name: str, dtype) -> np.ndarray:
        return concat_column(histories, name, dtype)

    items = column("item_ids", np.int64)
    if failed := first(items < 0, "item_ids"):
        _check_non_negative(failed[0], int(items[failed[1]]))
    categories = column("category_ids", np.int64)
    if failed := first((categories < 0) | (categories >= n_names), "category_ids"):
        _check_category_id(failed[0], int(categories[failed[1]]), n_names)
    feedback = column("feedback", np.float64)
    # A negated range test, so that NaN fails it too.
    if failed := first(~((feedback >= MIN_FEEDBACK) & (feedback <= MAX_FEEDBACK)), "feedback"):
        _check_feedback(failed[0], float(feedback[failed[1]]))
    steps = column("steps", np.int64)
    if failed := first(steps < 0, "steps"):
        _check_non_negative(failed[0], int(steps[failed[1]]))
    for field, history in zip(fields, histories):
        # In order, so that the first title over the limit is the one named (_check_bytes encodes
        # only titles longer than MAX_TITLE_BYTES // 4 characters).
        for j, title in enumerate(history.titles):
            _check_bytes(f"{field}.titles[{j}]", title, MAX_TITLE_BYTES)


def _validate_items(field: str, items, n_names: int, low: int, high: int, distinct: bool) -> None:
    """Checks a list of CandidateItem called `field`; item ids distinct when `distinct`."""
    _check_count(field, len(items), low, high, "items")
    seen: set[int] = set()
    for k, item in enumerate(items):
        prefix = f"{field}[{k}]"
        _check_non_negative(f"{prefix}.item_id", item.item_id)
        _check_category_id(f"{prefix}.category_id", item.category_id, n_names)
        _check_bytes(f"{prefix}.title", item.title, MAX_TITLE_BYTES)
        if distinct:
            if item.item_id in seen:
                raise ValueError(
                    f"{prefix}.item_id={item.item_id} is a duplicate; ids must be distinct"
                )
            seen.add(item.item_id)


# --- requests -------------------------------------------------------------------------------


def _name_bad_candidate(prefix: str, candidates: Sequence[int], n_names: int) -> None:
    """Raises the ValueError naming the first unknown or duplicate candidate category."""
    seen: set[int] = set()
    for k, category in enumerate(candidates):
        _check_category_id(f"{prefix}.candidate_categories[{k}]", category, n_names)
        if category in seen:
            raise ValueError(
                f"{prefix}.candidate_categories[{k}]={category} is a duplicate; "
                "ids must be distinct"
            )
        seen.add(category)


def _validate_candidates(prefix: str, user: planner_pb2.UserContext, n_names: int) -> None:
    """Checks candidate_categories and num_categories of one user."""
    candidates = user.candidate_categories
    if not candidates:
        raise ValueError(f"{prefix}.candidate_categories is empty")
    values = list(candidates)  # one read; the loop below runs only to name a failure
    if min(values) < 0 or max(values) >= n_names or len(set(values)) != len(values):
        _name_bad_candidate(prefix, values, n_names)
    if user.num_categories < 1:
        raise ValueError(f"{prefix}.num_categories={user.num_categories} is below 1")
    if user.num_categories > len(candidates):
        raise ValueError(
            f"{prefix}.num_categories={user.num_categories} exceeds "
            f"len(candidate_categories)={len(candidates)}"
        )


def candidate_arrays(users) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candidates per user [U], each candidate's user [C], the candidate categories [C]) of a plan
    request's users, laid end to end: how the validation, the heuristic rule and the answer check
    read them, once each."""
    lengths = np.fromiter((len(u.candidate_categories) for u in users), np.int64, len(users))
    values = np.fromiter(chain.from_iterable(u.candidate_categories for u in users), np.int64, int(lengths.sum()))
    return lengths, np.repeat(np.arange(len(users)), lengths), values


def _users_fit(users, n_names: int) -> bool:
    """Whether every user's ids, step, candidates (non-empty, distinct, known), num_categories and
    reflection count are within the limits, checked for the whole request at once; the per-user
    checks of `validate_plan_request` run only to name a failure."""
    n = len(users)
    ids = np.fromiter((u.user_id for u in users), np.int64, n)
    steps = np.fromiter((u.step for u in users), np.int64, n)
    wanted = np.fromiter((u.num_categories for u in users), np.int64, n)
    reflections = np.fromiter((len(u.reflections) for u in users), np.int64, n)
    cand_len, cand_user, cands = candidate_arrays(users)
    if not (ids.min() >= 0 and steps.min() >= 0 and cand_len.min() >= 1 and cands.min() >= 0
            and cands.max() < n_names and wanted.min() >= 1 and (wanted <= cand_len).all()
            and reflections.max() <= MAX_REFLECTIONS):
        return False
    cells = cand_user * n_names + cands
    return np.unique(cells).size == cells.size


def _validate_user(prefix: str, user: planner_pb2.UserContext, n_names: int) -> None:
    """The checks of one UserContext besides its histories (naming the field that fails)."""
    _check_non_negative(f"{prefix}.user_id", user.user_id)
    _check_non_negative(f"{prefix}.step", user.step)
    _validate_candidates(prefix, user, n_names)
    if len(user.reflections) > MAX_REFLECTIONS:
        raise ValueError(
            f"{prefix}.reflections has {len(user.reflections)} entries; "
            f"at most {MAX_REFLECTIONS}"
        )


def validate_plan_request(req: planner_pb2.PlanRequest) -> None:
    """Enforces every limit of PlanRequest; ValueError naming the field, e.g.
    "users[3].num_categories=9 exceeds len(candidate_categories)=4"."""
    _check_count("users", len(req.users), MIN_USERS, MAX_USERS, "users")
    n_names = _check_category_names(req.category_names)
    if not _users_fit(req.users, n_names):
        for i, user in enumerate(req.users):
            _validate_user(f"users[{i}]", user, n_names)
    for i, user in enumerate(req.users):
        for r, reflection in enumerate(user.reflections):
            _check_bytes(f"users[{i}].reflections[{r}]", reflection, MAX_REFLECTION_BYTES)
    # Every user's history at once (the costly part of a request: see _validate_histories).
    _validate_histories([f"users[{i}].history" for i in range(len(req.users))],
                        [user.history for user in req.users], n_names, MAX_HISTORY)
    _validate_histories([f"users[{i}].past" for i in range(len(req.users))],
                        [user.past for user in req.users], n_names, MAX_PAST)


def validate_reflect_request(req: planner_pb2.ReflectRequest) -> None:
    """Enforces every limit of ReflectRequest; ValueError naming the field, e.g.
    "sessions[1].feedback has 3 entries; need len(shown_categories)=4"."""
    _check_count("sessions", len(req.sessions), MIN_SESSIONS, MAX_SESSIONS, "sessions")
    n_names = _check_category_names(req.category_names)
    for i, session in enumerate(req.sessions):
        prefix = f"sessions[{i}]"
        _check_non_negative(f"{prefix}.user_id", session.user_id)
        shown = session.shown_categories
        if len(shown) > MAX_SHOWN:
            raise ValueError(f"{prefix}.shown_categories has {len(shown)} entries; "
                             f"at most {MAX_SHOWN}")
        if len(session.feedback) != len(shown):
            raise ValueError(f"{prefix}.feedback has {len(session.feedback)} entries; "
                             f"need len(shown_categories)={len(shown)}")
        for k, category in enumerate(shown):
            _check_category_id(f"{prefix}.shown_categories[{k}]", category, n_names)
        for k, value in enumerate(session.feedback):
            _check_feedback(f"{prefix}.feedback[{k}]", value)
        if session.length < MIN_SESSION_LENGTH:
            raise ValueError(f"{prefix}.length={session.length} is below {MIN_SESSION_LENGTH}")
        if not math.isfinite(session.session_return):
            raise ValueError(f"{prefix}.session_return={session.session_return} is not finite")


def validate_propose_request(req: planner_pb2.ProposeRequest) -> None:
    """Enforces every limit of ProposeRequest; ValueError naming the field, e.g.
    "queries[2].num_items=21 exceeds min(len(candidates), 20)=20"."""
    _check_count("queries", len(req.queries), MIN_QUERIES, MAX_QUERIES, "queries")
    n_names = _check_category_names(req.category_names)
    _validate_histories([f"queries[{i}].recent" for i in range(len(req.queries))],
                        [query.recent for query in req.queries], n_names, MAX_RECENT)
    for i, query in enumerate(req.queries):
        prefix = f"queries[{i}]"
        _check_non_negative(f"{prefix}.user_id", query.user_id)
        _validate_items(f"{prefix}.candidates", query.candidates, n_names,
                        MIN_CANDIDATES, MAX_CANDIDATES, distinct=True)
        if query.num_items < 1:
            raise ValueError(f"{prefix}.num_items={query.num_items} is below 1")
        most = min(len(query.candidates), MAX_PROPOSED_ITEMS)
        if query.num_items > most:
            raise ValueError(f"{prefix}.num_items={query.num_items} exceeds "
                             f"min(len(candidates), {MAX_PROPOSED_ITEMS})={most}")


def validate_explain_request(req: planner_pb2.ExplainRequest) -> None:
    """Enforces every limit of ExplainRequest; ValueError naming the field, e.g.
    "slate[4].category_id=9 is not a valid category id (...)"."""
    n_names = _check_category_names(req.category_names)
    _check_non_negative("user_id", req.user_id)
    _validate_histories(["history"], [req.history], n_names, MAX_HISTORY)
    # The proto does not ask for distinct slate items: a slate may show an item twice.
    _validate_items("slate", req.slate, n_names, MIN_SLATE, MAX_SLATE, distinct=False)


def validate_judge_request(req: planner_pb2.JudgeRequest) -> None:
    """Enforces every limit of JudgeRequest; ValueError naming the field, e.g.
    "cases[2].explanation is 301 bytes; at most 300"."""
    _check_count("cases", len(req.cases), MIN_CASES, MAX_CASES, "cases")
    n_names = _check_category_names(req.category_names)
    _validate_histories([f"cases[{i}].history" for i in range(len(req.cases))],
                        [case.history for case in req.cases], n_names, MAX_HISTORY)
    for i, case in enumerate(req.cases):
        _validate_items(f"cases[{i}].slate", case.slate, n_names, MIN_SLATE, MAX_SLATE, distinct=False)
        _check_bytes(f"cases[{i}].explanation", case.explanation, MAX_EXPLANATION_BYTES)


def validate_respond_request(req: planner_pb2.RespondRequest) -> None:
    """Enforces every limit of RespondRequest; ValueError naming the field, e.g.
    "cases[1].user.traits[0] is 120 bytes; at most 100"."""
    _check_count("cases", len(req.cases), MIN_RESPOND_CASES, MAX_RESPOND_CASES, "cases")
    n_names = _check_category_names(req.category_names)
    items = 0
    for i, case in enumerate(req.cases):
        prefix = f"cases[{i}]"
        _check_non_negative(f"{prefix}.user.user_id", case.user.user_id)
        if len(case.user.traits) > MAX_TRAITS:
            raise ValueError(f"{prefix}.user.traits has {len(case.user.traits)} entries; at most {MAX_TRAITS}")
        for t, trait in enumerate(case.user.traits):
            _check_bytes(f"{prefix}.user.traits[{t}]", trait, MAX_TRAIT_BYTES)
        _validate_items(f"{prefix}.slate", case.slate, n_names, MIN_SLATE, MAX_SLATE, distinct=True)
        items += len(case.slate)
    if items > MAX_RESPOND_ITEMS:
        raise ValueError(f"the cases' slates have {items} items in all; at most {MAX_RESPOND_ITEMS}: split the call")
    _validate_histories([f"cases[{i}].user.past" for i in range(len(req.cases))],
                        [case.user.past for case in req.cases], n_names, MAX_PAST)
    _validate_histories([f"cases[{i}].session" for i in range(len(req.cases))],
                        [case.session for case in req.cases], n_names, MAX_HISTORY)


# --- answers (a failing check is a bug of whoever answered) ----------------------------------


def _check_answer_count(field: str, got: int, expected: int, what: str) -> None:
    if got != expected:
        raise ValueError(f"{field} has {got} entries; need one per {what} ({expected})")


def _check_subset(field: str, ids: Sequence[int], allowed: set[int], what: str) -> None:
    """Raises ValueError unless `ids` are distinct members of `allowed`."""
    seen: set[int] = set()
    for k, value in enumerate(ids):
        if value not in allowed:
            raise ValueError(f"{field}[{k}]={value} is not one of the {what}")
        if value in seen:
            raise ValueError(f"{field}[{k}]={value} is a duplicate")
        seen.add(value)


def check_plan_response(req: planner_pb2.PlanRequest, resp: planner_pb2.PlanResponse) -> None:
    """Checks an answer to a valid PlanRequest: one plan per user, each exactly
    num_categories distinct ids among that user's candidate_categories."""
    _check_answer_count("plans", len(resp.plans), len(req.users), "user")
    if _plans_fit(req.users, resp.plans):
        return
    for i, (user, plan) in enumerate(zip(req.users, resp.plans)):   # names the failure
        field = f"plans[{i}].category_ids"
        if len(plan.category_ids) != user.num_categories:
            raise ValueError(f"{field} has {len(plan.category_ids)} entries; "
                             f"need num_categories={user.num_categories}")
        _check_subset(field, plan.category_ids, set(user.candidate_categories),
                      "candidate_categories")


def _plans_fit(users, plans) -> bool:
    """`check_plan_response`'s rule for the whole answer at once (the answer of a valid request)."""
    n = len(users)
    wanted = np.fromiter((u.num_categories for u in users), np.int64, n)
    got = np.fromiter((len(p.category_ids) for p in plans), np.int64, n)
    if not np.array_equal(wanted, got):
        return False
    _, cand_user, cands = candidate_arrays(users)
    chosen = np.fromiter(chain.from_iterable(p.category_ids for p in plans), np.int64, int(got.sum()))
    if chosen.size and chosen.min() < 0:
        return False
    size = int(max(cands.max(initial=0), chosen.max(initial=0))) + 1
    chosen_cells = np.repeat(np.arange(n), got) * size + chosen
    return bool(np.isin(chosen_cells, cand_user * size + cands).all()) \
        and np.unique(chosen_cells).size == chosen_cells.size


def check_reflect_response(
    req: planner_pb2.ReflectRequest, resp: planner_pb2.ReflectResponse
) -> None:
    """Checks an answer to a valid ReflectRequest: one critique per session, each within
    MAX_CRITIQUE_BYTES."""
    _check_answer_count("critiques", len(resp.critiques), len(req.sessions), "session")
    for i, critique in enumerate(resp.critiques):
        _check_bytes(f"critiques[{i}]", critique, MAX_CRITIQUE_BYTES)


def check_propose_response(
    req: planner_pb2.ProposeRequest, resp: planner_pb2.ProposeResponse
) -> None:
    """Checks an answer to a valid ProposeRequest: one list per query of at most num_items
    distinct ids among that query's candidates."""
    _check_answer_count("proposals", len(resp.proposals), len(req.queries), "query")
    for i, (query, proposal) in enumerate(zip(req.queries, resp.proposals)):
        field = f"proposals[{i}].item_ids"
        if len(proposal.item_ids) > query.num_items:
            raise ValueError(f"{field} has {len(proposal.item_ids)} entries; "
                             f"at most num_items={query.num_items}")
        _check_subset(field, proposal.item_ids, {c.item_id for c in query.candidates},
                      "candidates")


def check_explain_response(
    req: planner_pb2.ExplainRequest, resp: planner_pb2.ExplainResponse
) -> None:
    """Checks an answer to a valid ExplainRequest: an explanation within
    MAX_EXPLANATION_BYTES."""
    del req  # every explanation within the byte limit answers any request
    _check_bytes("explanation", resp.explanation, MAX_EXPLANATION_BYTES)


def check_judge_response(req: planner_pb2.JudgeRequest, resp: planner_pb2.JudgeResponse) -> None:
    """Checks an answer to a valid JudgeRequest: one score per case, each in [1, 5]."""
    _check_answer_count("scores", len(resp.scores), len(req.cases), "case")
    for i, score in enumerate(resp.scores):
        if not MIN_JUDGE_SCORE <= score <= MAX_JUDGE_SCORE:  # negated range test: NaN fails too
            raise ValueError(f"scores[{i}]={score} is outside [{MIN_JUDGE_SCORE:g}, {MAX_JUDGE_SCORE:g}]")


def check_respond_response(req: planner_pb2.RespondRequest, resp: planner_pb2.RespondResponse) -> None:
    """Checks an answer to a valid RespondRequest: one response per case, with one rating and one
    like per slate item, every value (and leave) in [0, 1], leave 0 where it was not asked."""
    _check_answer_count("responses", len(resp.responses), len(req.cases), "case")
    for i, (case, answer) in enumerate(zip(req.cases, resp.responses)):
        for column in ("ratings", "likes"):
            values = getattr(answer, column)
            _check_answer_count(f"responses[{i}].{column}", len(values), len(case.slate), "slate item")
            for k, value in enumerate(values):
                if not 0.0 <= value <= 1.0:  # negated range test: NaN fails too
                    raise ValueError(f"responses[{i}].{column}[{k}]={value} is outside [0, 1]")
        if not 0.0 <= answer.leave <= 1.0:
            raise ValueError(f"responses[{i}].leave={answer.leave} is outside [0, 1]")
        if answer.leave and not case.ask_leave:
            raise ValueError(f"responses[{i}].leave={answer.leave} but cases[{i}].ask_leave is false")
