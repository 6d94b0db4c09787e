"""FAULT INJECTION for reliability tests: a planner that hangs on purpose. Off unless asked for.

`PlanHang`, installed on a real backend, holds one Plan request in `every` for `hang_s` seconds
before the backend answers (an `asyncio.sleep`, so the replica keeps serving every other request meanwhile).
With `hang_s` past the callers' deadline (`--planner-timeout-s`) the caller sees
DEADLINE_EXCEEDED, answers that step with its local heuristic and counts a fallback: the path a
stuck LLM engine takes in production. `ChaosPlannerServer` is the Ray-hosted planner server with
it installed on its backend; `llm_server.replicas.PlannerReplicas(..., chaos=PlannerChaos(...))` starts
replicas of it, and `python -m learner.main --chaos-planner-hang-every N` asks for that.

Counters (in the replica's `stats()`, summed over replicas as `planner_chaos_*` in metrics):
`chaos_plan_requests` (Plan requests seen), `chaos_hangs` (requests held) and
`chaos_hang_seconds` (how long they were held: until the answer, or until the caller's deadline
cancelled the call; i.e. the time callers lost waiting before their fallback) and
`chaos_hangs_completed` (holds that slept their whole `hang_s`, i.e. that no deadline cut; 0 when
every caller's deadline is below `hang_s` and the service honours it).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import ray

from llm_server.backends import PlannerBackend
from llm_server.ray_actor import PlannerServer
from protos import planner_pb2

__all__ = ["ChaosPlannerServer", "PlanHang", "PlannerChaos", "chaos_server_class"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannerChaos:
    """What to inject: hold one Plan request in `hang_every` (0 = never) for `hang_s` seconds."""

    hang_every: int = 0
    hang_s: float = 0.0

    def __post_init__(self) -> None:
        if self.hang_every < 0:
            raise ValueError(f"chaos hang_every must be >= 0, got {self.hang_every}")
        if self.hang_every and self.hang_s <= 0:
            raise ValueError(f"chaos hang_s must be > 0 when hang_every is set, got {self.hang_s}")

    @property
    def active(self) -> bool:
        return self.hang_every > 0


class PlanHang:
    """FAULT INJECTION: installed on a backend instance (`install`), makes Plan requests number
    every, 2 x every, ... (counted from the install) wait `hang_s` seconds before the backend
    answers. Every other call, and every other RPC, goes straight through."""

    def __init__(self, chaos: PlannerChaos) -> None:
        self._chaos = chaos
        self._plans = 0
        self._hangs = 0
        self._hang_seconds = 0.0
        self._hangs_completed = 0

    def install(self, backend: PlannerBackend) -> PlannerBackend:
        """Wraps `backend.plan` on that instance (the service looks the method up on each call)."""
        plan = backend.plan

        async def plan_with_hangs(req: planner_pb2.PlanRequest) -> planner_pb2.PlanResponse:
            self._plans += 1
            if self._chaos.hang_every and self._plans % self._chaos.hang_every == 0:
                self._hangs += 1
                started = time.perf_counter()
                try:
                    await asyncio.sleep(self._chaos.hang_s)  # cancelled when the caller's deadline passes
                    self._hangs_completed += 1  # not cancelled: nothing cut this hold short
                finally:
                    self._hang_seconds += time.perf_counter() - started
            return await plan(req)

        backend.plan = plan_with_hangs
        return backend

    def stats(self) -> dict:
        return {"chaos_plan_requests": self._plans, "chaos_hangs": self._hangs,
                "chaos_hang_seconds": self._hang_seconds, "chaos_hangs_completed": self._hangs_completed}


class ChaosPlannerServer(PlannerServer):
    """FAULT INJECTION: the Ray-hosted planner server with `PlanHang` installed on its backend.
    The chaos settings are constructor arguments, so a replica Ray restarts keeps them."""

    def __init__(self, chaos: PlannerChaos) -> None:
        super().__init__()
        self._chaos = chaos
        self._hang: PlanHang | None = None

    def start(self, *args, **kwargs) -> str:
        """`PlannerServer.start`, then the hang installed on the backend it built."""
        address = super().start(*args, **kwargs)
        backend = getattr(self, "_backend", None)
        if not isinstance(backend, PlannerBackend):
            raise RuntimeError("fault injection cannot find the backend of the planner server (the _backend "
                               "attribute of llm_server.server.PlannerServerActor); update llm_server/chaos.py")
        self._hang = PlanHang(self._chaos)
        self._hang.install(backend)
        logger.warning("FAULT INJECTION: planner on %s holds one Plan request in %d for %.1f s",
                       address, self._chaos.hang_every, self._chaos.hang_s)
        return address

    def stats(self) -> dict:
        counters = super().stats()
        return {**counters, **self._hang.stats()} if counters and self._hang is not None else counters


def chaos_server_class():
    """The Ray actor class of `ChaosPlannerServer` (built on first use: only runs that inject faults
    pay for it)."""
    return ray.remote(num_cpus=0)(ChaosPlannerServer)
