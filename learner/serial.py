"""Serial mode (`--serial`): the rollout workers and the learner in this one process, no Ray, behind
the interfaces the driver uses with Ray (`RolloutPool`, `LearnerGroup`), for a debugger or a
profiler (Sample Factory's serial mode).

The pool keeps the Ray pool's semantics, so a seed gives the same metrics either way: a collect
acts with the weights current when it was *submitted* (with Ray, an actor that hands in its batch
at once starts the next one with the weights of that moment, before the learner has updated), and
collects are run in submission order. Here a submission is only recorded, and run when the driver
asks for the next batch; a worker's output depends only on what it was given and its own seeded
state, so running it later changes nothing.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable

from learner.learner_actor import Learner
from learner.rollout_pool import Collected, PoolCounters


class SerialRolloutPool:
    """`RolloutPool`'s interface over plain `RolloutWorker`s; batches are the RecordBatches themselves."""

    def __init__(self, workers: list, weights: dict, version: int, *, max_in_flight: int = 0,
                 max_policy_lag: int = 4, reflections: Callable[[], list[str]] | None = None):
        if not workers:
            raise ValueError("a rollout pool needs at least one worker")
        self.actors = list(workers)
        self.max_in_flight = max_in_flight or len(workers)
        self.max_policy_lag = max_policy_lag
        self.reflections = reflections or (lambda: [])
        self.weights_ref, self.version = weights, version
        self.counters = PoolCounters()
        self.dropped_batch_ids: list[str] = []
        self.pending: deque = deque()  # (worker index, weights, version, reflections), in submission order
        self.idle: deque[int] = deque(range(len(self.actors)))
        self.collected_from = [0] * len(self.actors)  # finished collects per worker (used or dropped)

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    def set_weights(self, weights: dict, version: int) -> None:
        self.weights_ref, self.version = weights, version

    def _fill(self) -> None:
        """As RolloutPool._fill: idle workers get a collect while fewer than max_in_flight are out."""
        while self.idle and len(self.pending) < self.max_in_flight:
            self.pending.append((self.idle.popleft(), self.weights_ref, self.version, self.reflections()))

    def next(self) -> Collected:
        """Runs the oldest submitted collect; the next batch the learner may use."""
        while True:
            self._fill()
            index, weights, version, reflections = self.pending.popleft()
            batch, stats = self.actors[index].collect(weights, version, reflections=reflections)
            self.idle.append(index)
            self.collected_from[index] += 1
            lag = self.counters.count(stats, self.version, self.max_policy_lag, self.dropped_batch_ids)
            if lag is None:
                continue
            self._fill()  # with Ray the worker starts its next collect as it hands this one in
            return Collected(batch, stats, lag, index)

    def close(self) -> None:
        for worker in self.actors:
            worker.close()


class SerialLearnerGroup:
    """`LearnerGroup`'s interface over one in-process learner; weights travel as the dict itself."""

    def __init__(self, learner: Learner):
        self.learner = learner

    def publish(self) -> tuple[dict, int]:
        return self.learner.weights()

    def update_and_publish(self, batches) -> tuple[dict, tuple[dict, int]]:
        t0 = time.perf_counter()
        metrics = self.learner.update(*batches)
        t1 = time.perf_counter()
        published = self.learner.weights()
        metrics.update(compute_seconds=t1 - t0, publish_seconds=time.perf_counter() - t1)
        return metrics, published

    def state(self) -> dict:
        return self.learner.state()

    def load_state(self, state: dict) -> None:
        self.learner.load_state(state)

    def shutdown(self) -> None:
        pass
