"""The deterministic no-LLM rules for every LLM role of the planner contract.

They answer the heuristic backend of the planner service, the client's fallback when the
service is slow or down, and the in-process planner; fast unit tests use them too. Every rule
expects a request that passed its `planner_api.contract.validate_*_request`, is deterministic (the
same request gives the same answer, bit for bit, in any process) and stays within the answer
limits of protos/planner.proto.

Text answers (critiques, explanations) are built from numbers and category names only: the
names are untrusted, so they are cut to a few dozen bytes and stripped of control characters,
and no other request text (titles, reflections) is ever echoed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from planner_api.contract import (
    MAX_CRITIQUE_BYTES,
    MAX_EXPLANATION_BYTES,
    candidate_arrays,
    truncate_utf8,
)
from planner_api.history import column_array, concat_column, history_length, history_lengths
from planner_api.explanations import faithfulness, rule_score
from protos import planner_pb2

HEURISTIC_BACKEND_NAME = "heuristic"
# The plan rule: a category's score drops by EXPOSURE_PENALTY per unit of its recent exposure in
# the session (a whole slate of it at the last step is 1; each step further back counts
# EXPOSURE_DECAY times less), so the plan moves away from what the user was just shown, for as
# long as it was shown. Chosen by a sweep of the planner alone on the default MovieLens world
# (results/lerl-movielens/sweep.md): penalty 0, 0.5, 1, 2, 3, 4 and decay 0.6, 0.8, 0.9.
EXPOSURE_PENALTY = 2.0
EXPOSURE_DECAY = 0.8
# The reflect rule: an item "repeats" when its category is among the REPEAT_WINDOW items shown
# before it (DORL's quit rule looks at such a window); a session where at least
# REPEAT_ADVICE_RATE of the items repeat is told to rotate categories.
REPEAT_WINDOW = 4
REPEAT_ADVICE_RATE = 0.5
# ... and a session whose overall click rate is below LOW_CLICK_RATE is told to explore.
LOW_CLICK_RATE = 0.2
# How many bytes of one category name go into a critique or an explanation: three names of
# this size and the fixed wording stay far below the answer limits.
MAX_NAME_BYTES = 48
# How many of the slate's most frequent categories an explanation names.
EXPLAIN_TOP_CATEGORIES = 2

# splitmix64's constants: a fast, well-mixed, platform-independent 64-bit hash.
_MIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


# --- shared helpers -------------------------------------------------------------------------


def smoothed_feedback(
    categories: np.ndarray, feedback: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per category id < size: (feedback sums, counts, (sum + 1) / (count + 2)).

    Laplace smoothing: an unseen category scores 0.5, one clicked 4 times out of 6 scores 0.625.
    """
    sums = np.bincount(categories, weights=feedback, minlength=size)[:size]
    counts = np.bincount(categories, minlength=size)[:size]
    return sums, counts, (sums + 1.0) / (counts + 2.0)


def _category_feedback(history: planner_pb2.History) -> tuple[np.ndarray, np.ndarray]:
    """(category ids as int64, feedback as float64) of a History: two column reads."""
    return column_array(history, "category_ids", np.int64), column_array(history, "feedback", np.float64)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic, same on every platform)."""
    x = x + _MIX_GAMMA
    x = (x ^ (x >> np.uint64(30))) * _MIX_1
    x = (x ^ (x >> np.uint64(27))) * _MIX_2
    return x ^ (x >> np.uint64(31))


def _item_tie_breakers(seed: int, user_id: int, item_ids: np.ndarray) -> np.ndarray:
    """A stable pseudo-random uint64 per item, fixed by (seed, user_id, item_id).

    Vectorised (a Propose request holds up to 262,144 candidates, too many for one blake2b
    each); stable across processes like `_plan_tie_breakers`.
    """
    key = _mix64(np.array([seed], dtype=np.uint64) ^ _mix64(np.array([user_id], np.uint64)))
    return _mix64(key ^ item_ids.astype(np.uint64))


def _display_name(names: Sequence[str], category: int) -> str:
    """A category's name fit for generated text: printable, one line, at most MAX_NAME_BYTES."""
    raw = names[category] if 0 <= category < len(names) else ""
    # Control characters (newlines included) become spaces, so a name cannot start a new line
    # or a new "instruction" block in a prompt that quotes the text.
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in raw[:MAX_NAME_BYTES]).split())
    return truncate_utf8(cleaned, MAX_NAME_BYTES) or f"category {category}"


def _amount(value: float) -> str:
    """A feedback sum for text: "4" for whole numbers, "2.5" otherwise."""
    return f"{round(float(value), 1):g}"


def _best_and_worst(sums: np.ndarray, counts: np.ndarray, scores: np.ndarray) -> tuple[int, int]:
    """The shown categories with the highest and lowest smoothed feedback.

    Ties go to the category shown more often (more evidence), then to the lower id.
    """
    shown = np.flatnonzero(counts)
    best = min(shown.tolist(), key=lambda c: (-scores[c], -counts[c], c))
    worst = min(shown.tolist(), key=lambda c: (scores[c], -counts[c], c))
    return best, worst


# --- Plan (LERL's high-level planner) ---------------------------------------------------------


def _plan_tie_breakers(seed: int, user_ids: np.ndarray, steps: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """A stable pseudo-random uint64 per (seed, user_id, step, category), one per row of the three
    equally long arrays: splitmix64, vectorised over a whole request and the same in every process
    (Python's hash() is salted per process and would make a rollout actor's fallback plan differ
    from the server's)."""
    key = _mix64(np.array([seed], dtype=np.uint64) ^ _mix64(user_ids.astype(np.uint64)))
    key = _mix64(key ^ steps.astype(np.uint64))
    return _mix64(key ^ categories.astype(np.uint64))


def _owners(lengths: np.ndarray) -> np.ndarray:
    """For groups of these lengths laid end to end: each element's group."""
    return np.repeat(np.arange(len(lengths)), lengths)


def _session_exposure(hist_user: np.ndarray, hist_cat: np.ndarray, hist_step: np.ndarray, user_step: np.ndarray,
                      cells: int, size: int) -> np.ndarray:
    """[users x size] each category's recent exposure in the session, flattened like the score cells:
    an entry shown k steps before the last one counts EXPOSURE_DECAY ** k over the entries shown at
    its step (a whole slate of one category at the last step is 1)."""
    if not len(hist_user):
        return np.zeros(cells)
    key = hist_user * (int(hist_step.max()) + 1) + hist_step
    if (key[1:] >= key[:-1]).all():   # steps ascend within each history (the session planner's): runs
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        per_step = np.diff(np.r_[starts, len(key)])
        group = np.repeat(np.arange(len(starts)), per_step)
    else:
        _, group, per_step = np.unique(key, return_inverse=True, return_counts=True)
    ago = np.maximum(user_step[hist_user] - 1 - hist_step, 0)
    weight = EXPOSURE_DECAY ** ago / per_step[group]
    return np.bincount(hist_user * size + hist_cat, weights=weight, minlength=cells)


def heuristic_plan(req: planner_pb2.PlanRequest) -> planner_pb2.PlanResponse:
    """The deterministic no-LLM planner rule, applied to every user of the request.

    Each candidate category scores (sum of feedback in that category + 1) / (count + 2) over the
    user's logged past and session history, minus EXPOSURE_PENALTY (2) x its recent exposure in the
    session (`_session_exposure`: a whole slate of it at the last step is 1, decaying by 0.8 a step
    back); ties are broken
    by a stable hash of (req.seed, user_id, step, category). The top num_categories candidates
    are returned in descending score order, with backend "heuristic". Expects a request that
    passes `validate_plan_request`.

    Computed for all users at once: the history columns of every user are concatenated, the
    rest is numpy over the whole request (a plan per step for 64 users with 60-entry histories
    is then well under a millisecond of rule).
    """
    users = req.users
    response = planner_pb2.PlanResponse(backend=HEURISTIC_BACKEND_NAME)
    if not users:
        return response
    histories = [u.history for u in users]
    hist_len = history_lengths(histories)
    cand_len, cand_user, cands = candidate_arrays(users)
    hist_cat = concat_column(histories, "category_ids", np.int64)
    hist_fb = concat_column(histories, "feedback", np.float64)
    size = int(max(hist_cat.max(initial=0), cands.max(initial=0))) + 1
    hist_user = _owners(hist_len)
    cell = hist_user * size + hist_cat
    cells = len(users) * size
    sums = np.bincount(cell, weights=hist_fb, minlength=cells)
    counts = np.bincount(cell, minlength=cells)
    # The user's logged past counts like the session's history (it is not recent: no penalty).
    pasts = [u.past for u in users]
    past_len = history_lengths(pasts)
    if past_len.any():
        past_cat = concat_column(pasts, "category_ids", np.int64)
        past_user = _owners(past_len)
        past_cell = past_user * size + np.minimum(past_cat, size - 1)
        keep = past_cat < size                  # a past category no candidate or history names: no score
        past_fb = concat_column(pasts, "feedback", np.float64)
        sums = sums + np.bincount(past_cell[keep], weights=past_fb[keep], minlength=cells)
        counts = counts + np.bincount(past_cell[keep], minlength=cells)
    steps = np.fromiter((u.step for u in users), np.int64, len(users))
    exposure = _session_exposure(hist_user, hist_cat, concat_column(histories, "steps", np.int64),
                                 steps, cells, size)
    cand_cell = cand_user * size + cands
    scores = (sums[cand_cell] + 1.0) / (counts[cand_cell] + 2.0) - EXPOSURE_PENALTY * exposure[cand_cell]
    user_ids = np.fromiter((u.user_id for u in users), np.int64, len(users))
    ties = _plan_tie_breakers(req.seed, user_ids[cand_user], steps[cand_user], cands)
    # lexsort sorts by its last key first: user, then score descending, then the tie-breaker.
    order = np.lexsort((ties, -scores, cand_user))
    ranked = cands[order].tolist()
    starts = (np.cumsum(cand_len) - cand_len).tolist()
    for user, start in zip(users, starts):
        response.plans.add(category_ids=ranked[start:start + user.num_categories])
    return response


# --- Reflect (LERL's reflective critic) -------------------------------------------------------


def _repeat_rate(shown: Sequence[int]) -> float:
    """The share of items (after the first) whose category is among the REPEAT_WINDOW before."""
    if len(shown) < 2:
        return 0.0
    repeats = sum(shown[k] in shown[max(0, k - REPEAT_WINDOW):k] for k in range(1, len(shown)))
    return repeats / (len(shown) - 1)


def _critique(session: planner_pb2.SessionSummary, names: Sequence[str]) -> str:
    """The heuristic critique of one session (see heuristic_reflect for the rule)."""
    parts = [f"Session of {session.length} steps, return {session.session_return:.2f}."]
    shown = list(session.shown_categories)
    if not shown:
        parts.append("No items were recorded; explore a broad mix of categories.")
        return " ".join(parts)
    categories = np.asarray(shown, dtype=np.int64)
    feedback = np.asarray(session.feedback, dtype=np.float64)
    sums, counts, scores = smoothed_feedback(categories, feedback, int(categories.max()) + 1)
    best, worst = _best_and_worst(sums, counts, scores)
    best_name = _display_name(names, best)
    parts.append(f"Liked most: {best_name} ({_amount(sums[best])}/{counts[best]}).")
    if worst != best:
        parts.append(f"Liked least: {_display_name(names, worst)} "
                     f"({_amount(sums[worst])}/{counts[worst]}).")
    repeat_rate = _repeat_rate(shown)
    click_rate = float(feedback.sum()) / len(shown)
    if repeat_rate >= REPEAT_ADVICE_RATE:
        parts.append(f"Repeated the same categories often ({repeat_rate:.0%} of items); "
                     f"rotate categories and favour {best_name}.")
    elif click_rate < LOW_CLICK_RATE:
        parts.append(f"Few clicks overall ({click_rate:.0%}); "
                     "explore categories not shown in this session.")
    elif worst != best:
        parts.append(f"Keep the variety, favour {best_name} and show less "
                     f"{_display_name(names, worst)}.")
    else:
        parts.append(f"Keep {best_name} and add variety.")
    return " ".join(parts)


def heuristic_reflect(req: planner_pb2.ReflectRequest) -> planner_pb2.ReflectResponse:
    """The deterministic no-LLM critic: one short critique per session, in order.

    A critique states the length and return, the shown category with the highest smoothed
    feedback (sum + 1) / (count + 2) ("Liked most", with clicks/shown) and the one with the
    lowest ("Liked least"; ties: more often shown, then lower id), then one piece of advice,
    the first that applies: rotate categories when at least half the items repeat a category
    of the 4 items before them; explore when under 20% of the items were clicked; otherwise
    favour the best and show less of the worst. Each critique is at most MAX_CRITIQUE_BYTES.
    The seed is unused: no tie in the rule changes the text.
    """
    names = req.category_names
    response = planner_pb2.ReflectResponse(backend=HEURISTIC_BACKEND_NAME)
    response.critiques.extend(
        truncate_utf8(_critique(session, names), MAX_CRITIQUE_BYTES) for session in req.sessions
    )
    return response


# --- Propose (LAAC's reference policy) --------------------------------------------------------


def _propose_query(query: planner_pb2.ProposeQuery, seed: int) -> list[int]:
    """The heuristic proposal for one query: the top num_items candidate ids, best first."""
    n = len(query.candidates)
    items = np.fromiter((c.item_id for c in query.candidates), np.int64, n)
    item_categories = np.fromiter((c.category_id for c in query.candidates), np.int64, n)
    if history_length(query.recent):
        categories, feedback = _category_feedback(query.recent)
        size = int(max(categories.max(), item_categories.max())) + 1
        _, _, smoothed = smoothed_feedback(categories, feedback, size)
        scores = smoothed[item_categories]
    else:
        scores = np.full(n, 0.5)
    ties = _item_tie_breakers(seed, query.user_id, items)
    order = np.lexsort((ties, -scores))
    return items[order[: query.num_items]].tolist()


def heuristic_propose(req: planner_pb2.ProposeRequest) -> planner_pb2.ProposeResponse:
    """The deterministic no-LLM reference policy: num_items candidates per query, best first.

    A candidate scores the smoothed feedback (sum + 1) / (count + 2) of its category over the
    query's `recent` items (the heuristic_plan rule, without the recency penalty: proposing
    more of what was just liked is what a reference policy should do); ties are broken by a
    stable hash of (req.seed, user_id, item_id). Expects a request that passes
    `validate_propose_request`.
    """
    response = planner_pb2.ProposeResponse(backend=HEURISTIC_BACKEND_NAME)
    for query in req.queries:
        response.proposals.add(item_ids=_propose_query(query, req.seed))
    return response


# --- Explain ------------------------------------------------------------------------------


def _dominant_categories(categories: Iterable[int], top: int) -> tuple[list[int], int]:
    """The `top` most frequent categories (ties: first seen first) and how many items they hold."""
    counts: dict[int, int] = {}
    for category in categories:
        counts[category] = counts.get(category, 0) + 1
    # dicts keep insertion order and sorted() is stable: ties stay in order of first appearance.
    ranked = sorted(counts, key=lambda c: -counts[c])[:top]
    return ranked, sum(counts[c] for c in ranked)


def heuristic_explain(req: planner_pb2.ExplainRequest) -> planner_pb2.ExplainResponse:
    """The deterministic no-LLM explainer: one sentence of at most MAX_EXPLANATION_BYTES.

    Names the slate's (up to) 2 most frequent categories with how many of its items they hold,
    and the history category with the highest smoothed feedback (sum + 1) / (count + 2) (ties:
    more often shown, then lower id) with its clicks/shown, e.g. "This slate is mostly Comedy
    and Drama (5 of 6 items), in line with your best-liked category so far, Comedy (3/4)."
    ("adding variety beside" when that category is not among the slate's top 2.)
    """
    names = req.category_names
    dominant, held = _dominant_categories(
        (item.category_id for item in req.slate), EXPLAIN_TOP_CATEGORIES
    )
    slate_part = (f"This slate is mostly {' and '.join(_display_name(names, c) for c in dominant)}"
                  f" ({held} of {len(req.slate)} items)")
    if history_length(req.history):
        categories, feedback = _category_feedback(req.history)
        sums, counts, scores = smoothed_feedback(categories, feedback, int(categories.max()) + 1)
        best, _ = _best_and_worst(sums, counts, scores)
        relation = "in line with" if best in dominant else "adding variety beside"
        sentence = (f"{slate_part}, {relation} your best-liked category so far, "
                    f"{_display_name(names, best)} ({_amount(sums[best])}/{counts[best]}).")
    else:
        sentence = f"{slate_part}; there is no history yet to match it against."
    return planner_pb2.ExplainResponse(
        explanation=truncate_utf8(sentence, MAX_EXPLANATION_BYTES),
        backend=HEURISTIC_BACKEND_NAME,
    )


# --- Judge --------------------------------------------------------------------------------


def heuristic_judge(req: planner_pb2.JudgeRequest) -> planner_pb2.JudgeResponse:
    """The deterministic no-LLM judge: each case's explanation rated 1-5 by
    `planner_api.explanations.rule_score` against its slate and history (categories and titles),
    backend "heuristic". Expects a request that passes `validate_judge_request`."""
    response = planner_pb2.JudgeResponse(backend=HEURISTIC_BACKEND_NAME)
    for case in req.cases:
        check = faithfulness(case.explanation, (item.category_id for item in case.slate),
                             column_array(case.history, "category_ids").tolist(), req.category_names,
                             (item.title for item in case.slate), case.history.titles)
        response.scores.append(rule_score(check, len(case.explanation.split())))
    return response


# --- Respond (the user) -------------------------------------------------------------------

# A rating of 4 of 5 stars or more, mapped to [0, 1], is a like (a click counts as 1).
LIKE_FEEDBACK = 0.75
# The rule's user leaves after a slate with probability LEAVE_SCALE x the share of its items they
# would not like: a slate of nothing they like loses half of them.
LEAVE_SCALE = 0.5


def heuristic_respond(req: planner_pb2.RespondRequest) -> planner_pb2.RespondResponse:
    """The deterministic no-LLM user: each slate item answered from its category's record in the
    user's logged past and this session together. rating = the smoothed mean feedback
    (sum + 1) / (count + 2) of the item's category; like = the smoothed share of that category's
    items the user liked (feedback >= LIKE_FEEDBACK), (liked + 1) / (count + 2); leave (when
    asked) = LEAVE_SCALE x the mean of (1 - like) over the slate. An unseen category scores 0.5.
    The fallback of the LLM user, and the popularity-free anchor of its fidelity benchmark."""
    response = planner_pb2.RespondResponse(backend=HEURISTIC_BACKEND_NAME)
    for case in req.cases:
        past_c, past_f = _category_feedback(case.user.past)
        now_c, now_f = _category_feedback(case.session)
        categories, feedback = np.r_[past_c, now_c], np.r_[past_f, now_f]
        slate = np.fromiter((item.category_id for item in case.slate), np.int64, len(case.slate))
        size = int(max(slate.max(), categories.max(initial=0))) + 1
        _, _, rating = smoothed_feedback(categories, feedback, size)
        _, _, like = smoothed_feedback(categories, (feedback >= LIKE_FEEDBACK).astype(np.float64), size)
        likes = like[slate]
        response.responses.add(ratings=rating[slate].tolist(), likes=likes.tolist(),
                               leave=float(LEAVE_SCALE * (1.0 - likes.mean())) if case.ask_leave else 0.0)
    return response
