"""The driver's rollout pool: N rollout actors collecting asynchronously, the driver taking
whichever batch finishes first (`ray.wait`).

- Backpressure: at most `max_in_flight` collects are outstanding (each actor at most one), so
  the object store holds at most that many finished-but-unused batches besides the ones the
  learner is working on, however slow the learner is.
- Versions: a collect acts with the newest weights at the time it is submitted; its batch carries
  that policy version. A batch more than `max_policy_lag` versions behind the learner is dropped
  (counted, `dropped_stale_batches`); the others are used, their lag corrected by the PPO ratio
  against the behaviour log-probabilities the batch carries (counted when the lag is > 0,
  `lagged_batches`).
- Failures: actors are created with `max_restarts` (Ray restarts a dead one, running its
  constructor again) and `max_task_retries=0` (a call lost with its actor surfaces as an error
  instead of being replayed behind our back). The pool counts the death (`rollout_restarts`) and
  submits that actor's collect again (`resubmitted_batches`), with a backoff while Ray restarts it
  (calls to a restarting actor fail too), giving up after `restart_timeout_s`. The actor-seconds
  a death cost (from submitting the collect that died to submitting the one that then succeeded:
  the lost work plus the restart) are summed in `restart_seconds_lost`. A collect's batch and stats are the two results of one task: they exist only once the
  whole call returned, and Ray objects are immutable, so a dead actor's call yields an error,
  never part of a batch.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import ray

from rollout.actor import make_rollout_actor_class


@dataclass
class PoolCounters:
    """Totals since the run started (carried over a resume)."""

    batches_collected: int = 0      # every finished collect: used (handed to the learner) + dropped
    batches_used: int = 0
    lagged_batches: int = 0
    dropped_stale_batches: int = 0
    rollout_restarts: int = 0
    resubmitted_batches: int = 0
    restart_seconds_lost: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def count(self, stats, version: int, max_policy_lag: int, dropped_ids: list[str]) -> int | None:
        """Counts one finished collect against the learner's `version`: its lag, or None when it
        is more than `max_policy_lag` versions behind (dropped; its id appended to `dropped_ids`)."""
        self.batches_collected += 1
        lag = version - int(stats.policy_version)
        if lag > max_policy_lag:
            self.dropped_stale_batches += 1
            dropped_ids.append(stats.batch_id)
            return None
        self.batches_used += 1
        self.lagged_batches += int(lag > 0)
        return lag


@dataclass
class Collected:
    """A finished collect the learner may use: the batch stays in the object store (the learner
    reads it from there), the stats come to the driver."""

    batch_ref: Any
    stats: Any  # rollout.actor.RolloutStats
    lag: int
    actor_index: int


def rollout_seed(run_seed: int, start_iteration: int) -> int:
    """Seed of the rollout workers of a run (re)started at `start_iteration`: the run seed itself
    for a fresh run, a different one derived from it for each resume, so a resumed run's users
    and dice are not those of its first iterations again."""
    if start_iteration <= 1:
        return run_seed
    return int(np.random.SeedSequence([run_seed, start_iteration, 0x2E5]).generate_state(1)[0])


def start_rollout_actors(cfg, planner_address: str | None, seed: int, max_restarts: int = -1) -> list:
    """`cfg.rollout.num_rollout_actors` rollout actors that Ray restarts when they die (-1: always)."""

    cls = make_rollout_actor_class(cfg.rollout.rollout_num_cpus).options(max_restarts=max_restarts,
                                                                        max_task_retries=0)
    return [cls.remote(cfg.world, cfg.policy, cfg.rollout, planner_address, i, seed)
            for i in range(cfg.rollout.num_rollout_actors)]


class RolloutPool:
    """Keeps rollout actors busy and hands the driver finished batches, one at a time (`next`)."""

    def __init__(self, actors: list, weights_ref, version: int, *, max_in_flight: int = 0,
                 max_policy_lag: int = 4, reflections: Callable[[], list[str]] | None = None,
                 restart_timeout_s: float = 300.0, retry_delay_s: float = 0.2):
        if not actors:
            raise ValueError("a rollout pool needs at least one actor")
        if not 0 <= max_in_flight <= len(actors):
            raise ValueError(f"max_batches_in_flight must be between 0 (= one per actor) and the number of "
                             f"rollout actors ({len(actors)}), got {max_in_flight}")
        if max_policy_lag < 0:
            raise ValueError(f"max_policy_lag must be >= 0, got {max_policy_lag}")
        self._ray = ray  # kept on the instance: tests hand in a stand-in
        self.actors = list(actors)
        self.max_in_flight = max_in_flight or len(actors)
        self.max_policy_lag = max_policy_lag
        self.reflections = reflections or (lambda: [])
        self.restart_timeout_s, self.retry_delay_s = restart_timeout_s, retry_delay_s
        self.weights_ref, self.version = weights_ref, version
        self.counters = PoolCounters()
        self.dropped_batch_ids: list[str] = []
        self.pending: dict = {}                      # stats ref -> (actor index, batch ref)
        self.idle: deque[int] = deque(range(len(actors)))
        self.retry_at: dict[int, float] = {}         # failed actors -> when to submit again
        self.failures = [0] * len(actors)            # consecutive failed calls per actor
        self.failing_since = [0.0] * len(actors)
        self.submitted_at = [0.0] * len(actors)      # when each actor's current collect was submitted
        self.lost_since = [0.0] * len(actors)        # submission time of the collect a death lost
        self.collected_from = [0] * len(actors)      # finished collects per actor (used or dropped)

    def close(self) -> None:
        """Nothing to release here: the actors end with the run's Ray (SerialRolloutPool.close
        closes its in-process workers; the driver calls either the same way)."""

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    def set_weights(self, weights_ref, version: int) -> None:
        """The learner published `version`: collects submitted from now on act with it, and
        finished batches are measured against it."""
        self.weights_ref, self.version = weights_ref, version

    def _submit(self, index: int) -> None:
        actor = self.actors[index]
        batch_ref, stats_ref = actor.collect.options(num_returns=2).remote(
            self.weights_ref, self.version, reflections=self.reflections())
        self.pending[stats_ref] = (index, batch_ref)
        self.submitted_at[index] = time.monotonic()
        if self.failures[index]:
            self.counters.resubmitted_batches += 1

    def _fill(self) -> None:
        now = time.monotonic()
        for index in [i for i, at in self.retry_at.items() if at <= now]:
            del self.retry_at[index]
            self.idle.appendleft(index)  # its lost batch is the first one requested again
        while self.idle and len(self.pending) < self.max_in_flight:
            self._submit(self.idle.popleft())

    def _failed(self, index: int, exc: Exception) -> None:
        """A call died with its actor (or the actor is still restarting): ask again after a backoff."""
        now = time.monotonic()
        self.failures[index] += 1
        if self.failures[index] == 1:
            self.counters.rollout_restarts += 1
            self.failing_since[index] = now
            self.lost_since[index] = self.submitted_at[index]
        elif now - self.failing_since[index] > self.restart_timeout_s:
            raise RuntimeError(f"rollout actor {index} has failed every call for {now - self.failing_since[index]:.0f} s "
                               f"({self.failures[index]} calls; Ray could not bring it back); last error: {exc}") from exc
        self.retry_at[index] = now + min(self.retry_delay_s * 2 ** (self.failures[index] - 1), 2.0)

    def next(self) -> Collected:
        """The next finished batch the learner may use (blocks until there is one). Its lag is
        measured against the newest weights (`set_weights`), i.e. the learner's version."""
        ray = self._ray
        while True:
            self._fill()
            wake = min(self.retry_at.values()) - time.monotonic() if self.retry_at else None
            if not self.pending:
                time.sleep(max(wake or 0.0, 0.0))
                continue
            ready, _ = ray.wait(list(self.pending), num_returns=1,
                                timeout=None if wake is None else max(wake, 0.0))
            if not ready:
                continue
            index, batch_ref = self.pending.pop(ready[0])
            try:
                stats = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:  # died (or unreachable) mid-call: no batch
                self._failed(index, exc)
                continue
            if self.failures[index]:  # back after a death: what it cost, up to this collect's start
                self.counters.restart_seconds_lost += self.submitted_at[index] - self.lost_since[index]
            self.failures[index] = 0
            self.idle.append(index)
            self.collected_from[index] += 1
            lag = self.counters.count(stats, self.version, self.max_policy_lag, self.dropped_batch_ids)
            if lag is None:
                continue
            self._fill()  # the actor that just finished starts its next collect at once
            return Collected(batch_ref, stats, lag, index)
