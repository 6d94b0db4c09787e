"""Simulated users against logged sessions: each user's next logged session, shown to the simulated
user as it happened (its items in time order, cut into slates), so that what the simulated user does
can be set beside what the real one did on the very same items.

- `logged_sessions`: per user, the first session (ratings less than `gap_s` apart) that starts in the
  logs the learned model never saw (its held-out period), with at least one whole slate.
- `replay`: steps a world's users through those slates in expectation (clicks are probabilities, no
  dice), from the logged history before the session; a user whose logged session has run out stops
  there (the log says no more). Returns, per world: the click rate on the shown items beside the
  logged like share of the same items, the AUC of the click probability against the logged likes,
  how many slates the simulated user stayed for against the logged session's, and the Jensen-Shannon
  divergence between the categories of what the simulated users clicked and of what the real ones liked.
- `leave_cases`: after each whole slate of those sessions, a Respond case asking stay-or-leave (the
  persona, the session so far with the logged likes, the slate), labelled by whether the logged
  session ended there; how the LLM user's leave answer is checked against the logs
  (benchmarks/leave_fidelity.py).
"""
from __future__ import annotations

import numpy as np

from planner_api.history import history_from_columns
from protos import planner_pb2
from rollout.llm_user import item_title, slate_items, user_persona
from rollout.llm_world import persona_rows
from rollout.user_model import auc, time_split
from rollout.users import UserBatchEnv
from rollout.world import World, WorldConfig

SESSION_GAP_S = 3600
"""Ratings less than an hour apart belong to one session."""


def logged_sessions(world: World, users: np.ndarray, slate_size: int, max_slates: int,
                    gap_s: int = SESSION_GAP_S) -> dict[int, np.ndarray]:
    """{user: the interaction rows of their first held-out session, cut to whole slates (at most
    max_slates)}; users without such a session are left out."""
    it = world.data.interactions
    _, test = time_split(world.data, world.user_model_holdout)
    sessions = {}
    for u in users:
        rows = np.flatnonzero(it.user == u)
        held = rows[test[rows]]
        if not len(held):
            continue
        start = held[0]
        times = it.timestamp[rows[rows >= start]]
        cut = np.flatnonzero(np.diff(times) >= gap_s)
        length = (cut[0] + 1) if len(cut) else len(times)
        whole = min(length // slate_size, max_slates) * slate_size
        if whole:
            sessions[int(u)] = rows[rows >= start][:whole]
    return sessions


def _js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    p, q = p / max(p.sum(), 1e-12), q / max(q.sum(), 1e-12)
    m = (p + q) / 2

    def kl(a, b):
        inside = a > 0
        return float((a[inside] * np.log2(a[inside] / b[inside])).sum())

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def replay(world: World, cfg: WorldConfig, sessions: dict[int, np.ndarray], seed: int = 0, attach=None) -> dict:
    """Replay `sessions` in the world of `cfg` (`attach(env)` makes it an LLM user's world); see the module."""
    users = np.asarray(sorted(sessions), np.int64)
    k, h, it = cfg.slate_size, cfg.history_len, world.data.interactions
    env = UserBatchEnv(world, cfg, len(users), seed)
    if attach is not None:
        attach(env)
    env.reset(users)
    env.expected = True
    positive = world.data.positive()
    for r, u in enumerate(users):  # the history the session started from, not the logs' end
        before = np.flatnonzero((it.user == u) & (np.arange(len(it.user)) < sessions[u][0]))[-h:]
        env.history_items[r] = -1
        env.history_feedback[r] = 0.0
        env.history_items[r, h - len(before):] = it.item[before]
        env.history_feedback[r, h - len(before):] = positive[before]
    slates = {u: it.item[rows].reshape(-1, k) for u, rows in sessions.items()}
    logged = np.array([len(slates[u]) for u in users])
    stayed = np.zeros(len(users), np.int64)
    shown_p, shown_liked, shown_category = [], [], []
    for t in range(int(logged.max())):
        env.active &= logged > t  # the logged session has run out: the log says no more
        if not env.active.any():
            break
        rows = np.flatnonzero(env.active)
        step_slates = np.stack([slates[u][t] if logged[r] > t else slates[u][0] for r, u in enumerate(users)])
        result = env.step(step_slates)
        stayed[rows] += 1
        shown = np.concatenate([sessions[users[r]][t * k:(t + 1) * k] for r in rows])
        shown_p.append(result.clicks[rows].ravel())
        shown_liked.append(positive[shown])
        shown_category.append(world.item_category[it.item[shown]])
    p, liked, category = np.concatenate(shown_p), np.concatenate(shown_liked), np.concatenate(shown_category)
    c = world.num_categories
    return {"users": int(len(users)), "shown_items": int(len(p)), "click_rate": float(p.mean()),
            "logged_like_share": float(liked.mean()), "auc": auc(p, liked),
            "slates_stayed": float(stayed.mean()), "logged_slates": float(logged.mean()),
            "stayed_to_the_end": float((stayed == logged).mean()),
            "category_js": _js_divergence(np.bincount(category, weights=p, minlength=c),
                                          np.bincount(category, weights=liked.astype(float), minlength=c))}


def leave_cases(world: World, sessions: dict[int, np.ndarray], slate_size: int, max_slates: int):
    """(Respond cases asking to leave, ended [N] bool, slate index [N]): one case after each of the
    first `max_slates` whole slates of every session; `ended` is True where the log has no whole
    slate after it (pass sessions cut to at least max_slates + 1 slates, so that a session cut by
    the bound is not read as ended)."""
    data, it, k = world.data, world.data.interactions, slate_size
    before, _ = time_split(data, world.user_model_holdout)
    positive = data.positive()
    cases, ended, index = [], [], []
    for user, rows in sessions.items():
        slates = len(rows) // k
        persona = user_persona(data, user, persona_rows(world, user, before))
        for t in range(min(slates, max_slates)):
            shown = rows[:t * k]
            items = it.item[shown]
            session = history_from_columns(items, data.item_category[items], positive[shown].astype(np.float64),
                                           (np.arange(len(shown)) // k).astype(np.int32),
                                           [item_title(data, i) for i in items])
            cases.append(planner_pb2.RespondCase(user=persona, session=session, ask_leave=True,
                                                 slate=slate_items(data, it.item[rows[t * k:(t + 1) * k]])))
            ended.append(t == slates - 1)
            index.append(t)
    return cases, np.asarray(ended, bool), np.asarray(index, np.int64)
