"""The one episode loop: a freshly reset `UserBatchEnv` stepped until every user has left.

Everything that runs whole episodes goes through `run_episodes`: the rollout worker (policy
network and planner masks), evaluation (reference policies), LAAC's evaluation in the world (a
scoring policy) and IL-Rec's demonstrations (slates from batched Propose calls). What differs is
only how a slate is chosen, so that is the one argument: `act(step, active) -> (slates, extra)`.

With `record=True` the loop also keeps every active user's step as the transition columns of
`rollout.batch_schema` (all but the per-batch labels, `BATCH_COLUMNS`): the columns the loop
knows itself (ids, step, the history before the step, slate, reward, done) and the rest from
`act`'s `extra`, e.g. the behaviour log-probabilities the policy computed.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rollout.batch_schema import ACTOR_COLUMNS
from rollout.users import StepResult, UserBatchEnv

# The columns the loop fills itself; `act` supplies the other ACTOR_COLUMNS.
LOOP_COLUMNS = ("episode_id", "user_id", "step", "history_items", "history_feedback", "slate", "reward", "done")
EXTRA_COLUMNS = tuple(name for name in ACTOR_COLUMNS if name not in LOOP_COLUMNS)

Act = Callable[[int, np.ndarray], tuple[np.ndarray, dict]]
Observe = Callable[[np.ndarray, StepResult, np.ndarray], None]


@dataclass
class EpisodeRun:
    """What one run of episodes produced (one episode per slot of the env)."""

    lengths: np.ndarray        # [B] int32 steps per episode
    returns: np.ndarray        # [B] float64 summed reward per episode
    slates: np.ndarray         # [S, K] the slates shown, step by step, active rows only (S = lengths.sum())
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # with record=True: ACTOR_COLUMNS, sorted
    seconds_env: float = 0.0   # time spent inside env.step
    clicks: np.ndarray | None = None       # [S, K] each shown item's response (aligned with slates)
    slate_users: np.ndarray | None = None  # [S] the user id each slate was shown to
    user_ids: np.ndarray | None = None     # [B] each episode's user (aligned with lengths)


def run_episodes(env: UserBatchEnv, act: Act, max_steps: int, *, record: bool = False,
                 observe: Observe | None = None) -> EpisodeRun:
    """Step `env` (already reset) until no user is active; an episode always ends by `max_steps`
    (the env's done rule), which bounds the loop.

    `act(step, active)` returns ([B, K] slates for every slot, rows of inactive users ignored,
    and a dict of [B, ...] per-slot columns to record, or {}); `observe(slates, result, active)`
    sees each step's outcome (the session planner's `record`). With `record`, `columns` holds one
    row per user step, episodes contiguous and steps in order (rows sorted by episode, then step).
    """
    rows: dict[str, list[np.ndarray]] = {}
    lengths = np.zeros(env.batch_size, np.int32)
    returns = np.zeros(env.batch_size, np.float64)
    shown: list[np.ndarray] = []
    clicked: list[np.ndarray] = []
    shown_to: list[np.ndarray] = []
    seconds_env = 0.0
    for step in range(max_steps):
        active = env.active.copy()
        if not active.any():
            break
        slates, extra = act(step, active)
        # env.step replaces the history arrays instead of writing into them, so these references
        # keep the histories the policy saw before this step.
        hist_items, hist_fb = env.history_items, env.history_feedback
        t0 = time.perf_counter()
        result = env.step(slates)
        seconds_env += time.perf_counter() - t0
        if observe is not None:
            observe(slates, result, active)
        shown.append(slates[active])
        clicked.append(result.clicks[active])
        shown_to.append(env.user_ids[active])
        if record:
            _record_step(rows, env, step, active, hist_items, hist_fb, slates, result, extra)
        lengths += active
        returns += result.reward
    k = env.cfg.slate_size
    slates = np.concatenate(shown) if shown else np.zeros((0, k), np.int32)
    clicks = np.concatenate(clicked) if clicked else np.zeros((0, k), np.float32)
    slate_users = np.concatenate(shown_to) if shown_to else np.zeros(0, np.int64)
    return EpisodeRun(lengths, returns, slates, _sorted_columns(rows), seconds_env, clicks, slate_users,
                      env.user_ids.copy())


def _record_step(rows: dict[str, list[np.ndarray]], env: UserBatchEnv, step: int, active: np.ndarray,
                 hist_items: np.ndarray, hist_fb: np.ndarray, slates: np.ndarray, result: StepResult,
                 extra: dict[str, np.ndarray]) -> None:
    unknown = sorted(set(extra) - set(EXTRA_COLUMNS))
    if unknown:
        raise ValueError(f"act returned columns {unknown}; it may add only {EXTRA_COLUMNS}")
    idx = np.flatnonzero(active)
    values = {"episode_id": idx.astype(np.int64), "user_id": env.user_ids[idx],
              "step": np.full(idx.size, step, np.int32), "history_items": hist_items[idx],
              "history_feedback": hist_fb[idx], "slate": slates[idx], "reward": result.reward[idx],
              "done": result.done[idx]}
    values.update((name, np.asarray(col)[idx]) for name, col in extra.items())
    for name, col in values.items():
        rows.setdefault(name, []).append(col)


def _sorted_columns(rows: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """The recorded steps as columns in ACTOR_COLUMNS order, episodes contiguous and steps in order."""
    if not rows:
        return {}
    columns = {name: np.concatenate(rows[name]) for name in ACTOR_COLUMNS if name in rows}
    order = np.lexsort((columns["step"], columns["episode_id"]))
    return {name: col[order] for name, col in columns.items()}
