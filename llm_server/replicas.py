"""Planner replicas: K planner services as Ray actors, each on an address it keeps across restarts.

The driver starts a `PlannerReplicas`, hands `target()` ("h1:p1,h2:p2") to the rollout actors,
whose `PlannerClient` spreads its calls round-robin over the replicas that are up (gRPC client-side
load balancing; no proxy in between), and calls `ensure_serving()` once per iteration:

    replicas = PlannerReplicas(2, "vllm", {"model": ..., "tensor_parallel_size": 1},
                               resources={"num_gpus": 1})
    address = replicas.target()           # to every rollout actor
    ...
    replicas.ensure_serving()             # each iteration: brings back replicas that died
    metrics.update(replicas.stats())      # restarts, requests per replica, summed counters
    ...
    replicas.stop()

A replica whose process dies is restarted by Ray (`max_restarts`), but a restarted actor is a fresh
process that serves nothing: `ensure_serving` notices and starts the service again with the same
backend and options on the same port, so the address list the rollout actors hold stays valid.
Meanwhile their clients skip the dead replica (its connection is not READY) and the survivors take
the traffic; a call that was in flight on the dying replica falls back to the heuristic, counted
by the client as every fallback is. Each replica binds port 0 the first time and keeps the port it
got: gRPC servers set SO_REUSEADDR, so the port can be bound again at once after a crash.

With host="node-ip" a replica binds its node's cluster IP. If its node dies Ray restarts it on
another node, so its host changes: `addresses` and `target()` then say so (and it is logged);
clients built from the old target keep using the surviving replicas.

FAULT INJECTION (reliability tests only; off by default): `chaos=PlannerChaos(hang_every,
hang_s)` starts the replicas as `llm_server.chaos.ChaosPlannerServer`, which holds one Plan
request in `hang_every` for `hang_s` seconds. Its `chaos_*` counters are kept across replica
restarts (the other counters count from each replica's last start).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import ray
from ray.actor import ActorHandle

from llm_server.chaos import PlannerChaos, chaos_server_class
from llm_server.ray_actor import RemotePlannerServer
from llm_server.server import BACKEND_START_TIMEOUT_S, DEFAULT_HOST, PlannerServerActor
from planner_api.heuristics import HEURISTIC_BACKEND_NAME

__all__ = ["PlannerReplicas"]

logger = logging.getLogger(__name__)

# A replica's stats() or stop() that takes longer than this is treated as down (or ignored).
STATS_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 10.0
# Suffixes of the vllm backend's prefix-cache counters: the hit rate of a sum is recomputed from
# the summed token counts, since averaging the replicas' rates would weigh an idle replica like a
# busy one.
_CACHED_SUFFIX = "cached_prompt_tokens"
_PROMPT_SUFFIX = "prompt_tokens"
_RATE_SUFFIX = "prefix_cache_hit_rate"
# Float counters summed over replicas (integers always are; rates are recomputed, not summed).
_SECONDS_SUFFIX = "_seconds"
# Counters carried over a replica's restart (fault-injection totals must not vanish with the replica).
_CARRIED_PREFIX = "chaos_"


@dataclass
class _Replica:
    actor: ActorHandle
    address: str  # "host:port" it serves; the port never changes
    pending: ray.ObjectRef | None = None  # a serving() probe or a start() in flight
    starting: bool = False  # whether `pending` is a start()
    failing: bool = False  # the last probe or start failed (logged once until it recovers)

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])


class PlannerReplicas:
    """K planner replicas started as Ray actors; see the module's docstring.

    Driver-side and single-threaded: call its methods from one thread.
    """

    def __init__(self, num_replicas: int, backend: str = HEURISTIC_BACKEND_NAME,
                 backend_options: dict | None = None, host: str = DEFAULT_HOST,
                 resources: dict | None = None, max_restarts: int = -1,
                 start_timeout_s: float = BACKEND_START_TIMEOUT_S, chaos: PlannerChaos | None = None) -> None:
        """Starts `num_replicas` replicas of `backend` (built with backend_options) bound to
        `host` ("node-ip": each its node's cluster IP), all at once, and returns when every one
        serves. `resources` are Ray options per replica (e.g. {"num_gpus": tp} for vLLM on CUDA);
        Ray restarts a dead replica up to `max_restarts` times (-1: always).

        Raises ValueError for num_replicas < 1; whatever a replica's start raised (OSError for an
        address that cannot be bound, a backend that cannot be built), or ray's GetTimeoutError
        after start_timeout_s, having killed the replicas it created. `chaos` injects faults
        (see the module's docstring); None or an inactive one starts plain replicas.
        """
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        self._backend, self._options, self._host = backend, dict(backend_options or {}), host
        self.restarts = 0
        actor_options = {"max_restarts": max_restarts, **(resources or {})}
        self._last_seen: dict[int, dict] = {}  # each replica's latest counters (to carry over a restart)
        self._carried: dict[str, float] = {}
        if chaos is not None and chaos.active:
            logger.warning("FAULT INJECTION: planner replicas hold one Plan request in %d for %.1f s",
                           chaos.hang_every, chaos.hang_s)
            cls = chaos_server_class()
            actors = [cls.options(**actor_options).remote(chaos) for _ in range(num_replicas)]
        else:
            actors = [RemotePlannerServer.options(**actor_options).remote() for _ in range(num_replicas)]
        try:
            addresses = ray.get([actor.start.remote(backend, host, 0, self._options) for actor in actors],
                                timeout=start_timeout_s)
        except BaseException:
            for actor in actors:
                ray.kill(actor, no_restart=True)
            raise
        self._replicas = [_Replica(actor, address) for actor, address in zip(actors, addresses)]

    @property
    def addresses(self) -> list[str]:
        """"host:port" of every replica, in replica order."""
        return [replica.address for replica in self._replicas]

    @property
    def actors(self) -> list[ActorHandle]:
        """The replicas' Ray actors, in replica order (fault tests kill them)."""
        return [replica.actor for replica in self._replicas]

    def target(self) -> str:
        """The address to give rollout actors: every replica, comma-separated, which
        `planner_api.client.PlannerClient` balances round-robin."""
        return ",".join(self.addresses)

    def ensure_serving(self, wait_s: float = 0.0) -> int:
        """Brings back replicas that Ray restarted after a crash: starts their service again on
        the same port, with the same backend and options. Returns how many came back during
        this call (also added to `restarts`).

        Waits at most wait_s seconds (0: only collects what is already answered): a vLLM replica
        takes minutes to start, and the driver should not stall meanwhile, so a start still
        running is collected by a later call. A probe or start that fails (the replica died
        again, its port is taken) is retried by the next call.
        """
        deadline = time.monotonic() + wait_s
        for replica in self._replicas:
            if replica.pending is None:
                replica.pending, replica.starting = replica.actor.serving.remote(), False
        came_back = 0
        while in_flight := [replica.pending for replica in self._replicas if replica.pending is not None]:
            ready, _ = ray.wait(in_flight, num_returns=len(in_flight),
                                timeout=max(0.0, deadline - time.monotonic()))
            for replica in self._replicas:
                if replica.pending is not None and replica.pending in ready:
                    came_back += self._collect(replica)
            # Loop again only for starts just submitted, and only while there is time for them.
            if not ready or time.monotonic() >= deadline:
                break
        return came_back

    def _collect(self, replica: _Replica) -> int:
        """Handles a finished probe or start of `replica`; returns 1 when it came back."""
        ref, starting = replica.pending, replica.starting
        replica.pending, replica.starting = None, False
        try:
            result = ray.get(ref)
        except ray.exceptions.ActorUnavailableError:
            return 0  # Ray is restarting it: the next check finds the fresh process
        except ray.exceptions.RayError as error:
            if not replica.failing:
                logger.warning("planner replica %s: %s failed (%s); retrying at the next check",
                               replica.address, "restarting its service" if starting else "the health probe",
                               error)
            replica.failing = True
            return 0
        replica.failing = False
        if starting:
            self.restarts += 1
            if result != replica.address:  # only with "node-ip", after its node was lost
                logger.warning("planner replica %s came back on another node, at %s",
                               replica.address, result)
                replica.address = result
            logger.info("planner replica %s serves again (restarts so far: %d)",
                        replica.address, self.restarts)
            return 1
        if not result:  # a fresh process: Ray restarted the actor after it died
            index = self._replicas.index(replica)
            for key, value in self._last_seen.pop(index, {}).items():
                if key.startswith(_CARRIED_PREFIX):
                    self._carried[key] = self._carried.get(key, 0) + value
            logger.warning("planner replica %s was restarted by Ray; starting its service again",
                           replica.address)
            replica.pending = replica.actor.start.remote(self._backend, self._host, replica.port,
                                                         self._options)
            replica.starting = True
        return 0

    def stats(self, timeout_s: float = STATS_TIMEOUT_S) -> dict[str, int | float]:
        """Counters over all replicas, flat (for metrics): `replicas`, `replicas_serving`,
        `restarts`, `rpcs` (requests received) and `rpcs_<rpc>` summed, `rpcs_replica<i>` per
        replica, and the backends' integer counters summed (vllm: tokens, prefix-cache hits,
        with the hit rates recomputed from the sums).

        A replica counts from its last (re)start, except for the `chaos_*` fault-injection
        counters, which add up over restarts. Float counters named `*_seconds` are summed too.
        One that does not answer within timeout_s, or is being brought back, counts as not serving.
        """
        asked = {i: replica.actor.stats.remote() for i, replica in enumerate(self._replicas)
                 if not replica.starting}  # a start in flight would hold the stats call behind it
        ready = ray.wait(list(asked.values()), num_returns=len(asked), timeout=timeout_s)[0] if asked else []
        per_replica: dict[int, dict] = {}
        for i, ref in asked.items():
            if ref in ready:
                try:
                    if counters := ray.get(ref):
                        per_replica[i] = self._last_seen[i] = counters
                except ray.exceptions.RayError:
                    pass  # died since: not serving
        return summed_stats(per_replica, len(self._replicas), self.restarts, self._carried)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stops every replica's service (in-flight calls get their grace) and ends its actor,
        for good. Safe to call twice."""
        replicas, self._replicas = self._replicas, []
        if not replicas:
            return
        stops = [replica.actor.stop.remote() for replica in replicas]
        try:
            ray.wait(stops, num_returns=len(stops), timeout=timeout_s)
        finally:
            for replica in replicas:
                ray.kill(replica.actor, no_restart=True)

    def __enter__(self) -> PlannerReplicas:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def summed_stats(per_replica: dict[int, dict], num_replicas: int, restarts: int,
                 carried: dict[str, float] | None = None) -> dict[str, int | float]:
    """The flat counters of `PlannerReplicas.stats` from each serving replica's own `stats()`."""
    totals: dict[str, int | float] = {}
    for counters in per_replica.values():
        for key, value in counters.items():
            if ((isinstance(value, int) and not isinstance(value, bool))
                    or (isinstance(value, float) and key.endswith(_SECONDS_SUFFIX))):
                totals[key] = totals.get(key, 0) + value
    for key, value in (carried or {}).items():
        totals[key] = totals.get(key, 0) + value
    for key in [key for key in totals if key.endswith(_CACHED_SUFFIX)]:
        prefix = key[:-len(_CACHED_SUFFIX)]
        if totals.get(prefix + _PROMPT_SUFFIX):
            totals[prefix + _RATE_SUFFIX] = totals[key] / totals[prefix + _PROMPT_SUFFIX]
    totals.setdefault("rpcs", 0)
    for i in range(num_replicas):
        totals[f"rpcs_replica{i}"] = per_replica.get(i, {}).get("rpcs", 0)
    return {"replicas": num_replicas, "replicas_serving": len(per_replica), "restarts": restarts, **totals}


class LocalPlannerService:
    """One planner service in this process (a server thread; serial mode, no Ray), with the
    calls the driver makes on `PlannerReplicas`: `target`, `ensure_serving`, `stats`, `stop`."""

    def __init__(self, backend: str, backend_options: dict | None = None, host: str = DEFAULT_HOST):
        self._server = PlannerServerActor()
        self._address = self._server.start(backend, host, 0, dict(backend_options or {}))

    def target(self) -> str:
        return self._address

    def ensure_serving(self, wait_s: float = 0.0) -> int:
        return 0  # it lives and dies with this process

    def stats(self) -> dict[str, int | float]:
        counters = self._server.stats()
        return summed_stats({0: counters} if counters else {}, 1, 0)

    def stop(self) -> None:
        self._server.stop()
