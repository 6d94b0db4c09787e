"""FAULT INJECTION in the driver, for reliability tests (`--chaos-*` options; all off by default).

- `--chaos-kill-rollout-every N`: kill one rollout actor (round-robin) before every N-th iteration;
- `--chaos-kill-rollout-every-s S`: kill one every S seconds of training, from a background thread,
  so kills land at any point of a collect or an update; one fault at a time: the next kill waits
  until the last victim has delivered a batch again (else, where a restart takes longer than the
  actors' turn, the killer would kill actors that are still restarting and the run would never
  progress);
- `--chaos-kill-planner-every N`: kill one planner replica before every N-th iteration;
- `--chaos-corrupt-batch-every N`: every N-th iteration, replace one collected batch by a copy that
  breaks the transition schema (its reward column turned float64) before it reaches the learner,
  which must reject and count it, not learn from it.

Kills are `ray.kill(..., no_restart=False)`, what a crash looks like to Ray: it restarts the actor
and the loop must recover (rollout_pool.RolloutPool resubmits, PlannerReplicas.ensure_serving
restarts the service). The planner's own fault (a request held past its deadline) lives in the
service: llm_server/chaos.py. Counts go to every metrics row (`chaos_*`) and survive a resume.
"""
from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

COUNTERS = ("rollout_kills", "planner_kills", "corrupted_batches")


class DriverChaos:
    """The driver's fault injector; `before_iteration` and `corrupt` are called by the loop,
    `start`/`stop` run the time-based killer."""

    def __init__(self, ray, run_cfg, actors: list, planner_replicas=None, counts: dict | None = None,
                 collected_from: list[int] | None = None):
        """`collected_from`: finished collects per actor, kept up to date by the loop (the pool's
        list); with it, a time-based kill waits until the previous victim has delivered again."""
        self._ray, self._cfg = ray, run_cfg
        self._actors, self._replicas = actors, planner_replicas
        self._collected_from = collected_from
        self._last_victim: tuple[int, int] | None = None  # (actor index, its collects when killed)
        self.counts = {name: int((counts or {}).get(name, 0)) for name in COUNTERS}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.active:
            log.warning("FAULT INJECTION is on: %s", ", ".join(
                f"{name}={getattr(run_cfg, name)}" for name in (
                    "chaos_kill_rollout_every", "chaos_kill_rollout_every_s", "chaos_kill_planner_every",
                    "chaos_corrupt_batch_every") if getattr(run_cfg, name)))

    @property
    def active(self) -> bool:
        c = self._cfg
        return bool(c.chaos_kill_rollout_every or c.chaos_kill_rollout_every_s or c.chaos_kill_planner_every
                    or c.chaos_corrupt_batch_every)

    def _kill_rollout_actor(self) -> None:
        with self._lock:
            index = self.counts["rollout_kills"] % len(self._actors)
            self._ray.kill(self._actors[index], no_restart=False)
            self.counts["rollout_kills"] += 1
            if self._collected_from is not None:
                self._last_victim = (index, self._collected_from[index])

    def _last_victim_is_back(self) -> bool:
        """Whether the actor killed last has finished a collect since (True when none was killed)."""
        if self._last_victim is None or self._collected_from is None:
            return True
        index, before = self._last_victim
        return self._collected_from[index] > before

    def start(self) -> None:
        """Starts the time-based killer (when `chaos_kill_rollout_every_s` is set)."""
        every = self._cfg.chaos_kill_rollout_every_s
        if not every or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(every):
                while not self._last_victim_is_back():  # one fault at a time
                    if self._stop.wait(0.05):
                        return
                try:
                    self._kill_rollout_actor()
                except Exception as exc:  # noqa: BLE001 - an injector must not end the run it tests
                    log.warning("chaos: could not kill a rollout actor: %s", exc)

        self._thread = threading.Thread(target=loop, name="chaos-kill-rollout", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def before_iteration(self, iteration: int) -> None:
        """The iteration-based kills (before collecting: the kill hits collects in flight)."""
        every = self._cfg.chaos_kill_rollout_every
        if every and iteration % every == 0:
            self._kill_rollout_actor()
        every = self._cfg.chaos_kill_planner_every
        if every and iteration % every == 0 and self._replicas is not None:
            replicas = self._replicas.actors
            self._ray.kill(replicas[self.counts["planner_kills"] % len(replicas)], no_restart=False)
            self.counts["planner_kills"] += 1

    def corrupt(self, iteration: int, batch_refs: list) -> list:
        """The batch refs the learner gets this iteration: on every `chaos_corrupt_batch_every`-th
        iteration the first one is swapped for a schema-breaking copy of it."""
        every = self._cfg.chaos_corrupt_batch_every
        if not every or iteration % every or not batch_refs:
            return batch_refs
        bad = corrupt_batch(self._ray.get(batch_refs[0]))
        self.counts["corrupted_batches"] += 1
        return [self._ray.put(bad), *batch_refs[1:]]

    def row(self) -> dict:
        """chaos_rollout_kills, chaos_planner_kills, chaos_corrupted_batches: totals since the run began."""
        return {f"chaos_{name}": value for name, value in self.counts.items()}


def corrupt_batch(batch):
    """A copy of an Arrow batch whose reward column is float64 instead of float32 (the schema
    metadata kept): readable, plausible, and invalid under the transition schema."""
    import pyarrow as pa

    i = batch.schema.get_field_index("reward")
    arrays = [batch.column(j).cast(pa.float64()) if j == i else batch.column(j) for j in range(batch.num_columns)]
    schema = batch.schema.set(i, pa.field("reward", pa.float64(), nullable=False))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)

