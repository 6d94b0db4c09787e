"""The planner service as a Ray actor: the one class every Ray-hosted planner server uses
(`PlannerReplicas` starts K of them).

`RemotePlannerServer` is `PlannerServer` (the service, with per-RPC request counters and
`serving()`) wrapped with `ray.remote(num_cpus=0)`: the server mostly waits on I/O, so it takes no
CPU from the Ray scheduler by default. Callers may override the resources or placement with
`.options(...)`, e.g. `RemotePlannerServer.options(num_gpus=1).remote()` for an LLM backend. An
actor started on a cluster node must bind an address other nodes can reach: `start(host="node-ip")`
binds the IP Ray uses for that node. The service has no authentication, so only do that on a
private network.

    server = RemotePlannerServer.remote()
    address = ray.get(server.start.remote("heuristic"))
    ...
    ray.get(server.stop.remote())
"""
from __future__ import annotations

import ray

from llm_server.backends import PlannerBackend, make_backend
from llm_server.server import DEFAULT_HOST, PlannerServerActor
from protos import planner_pb2
from rollout.planning import HEURISTIC_BACKEND_NAME, RPC_NAMES

NODE_IP = "node-ip"


class _CountingBackend(PlannerBackend):
    """Another backend, counting the requests it receives per RPC.

    The counts show how the clients spread their calls over the replicas; the heuristic backend
    keeps no counters of its own, and the vllm backend counts engine requests, not RPCs.
    """

    def __init__(self, inner: PlannerBackend) -> None:
        self.inner = inner
        self.name = inner.name
        # Written on the server's event loop, read (copied) by stats() on the actor's thread:
        # single int updates under the GIL need no lock.
        self.requests: dict[str, int] = dict.fromkeys(RPC_NAMES, 0)

    async def plan(self, req: planner_pb2.PlanRequest) -> planner_pb2.PlanResponse:
        self.requests["Plan"] += 1
        return await self.inner.plan(req)

    async def reflect(self, req: planner_pb2.ReflectRequest) -> planner_pb2.ReflectResponse:
        self.requests["Reflect"] += 1
        return await self.inner.reflect(req)

    async def propose(self, req: planner_pb2.ProposeRequest) -> planner_pb2.ProposeResponse:
        self.requests["Propose"] += 1
        return await self.inner.propose(req)

    async def explain(self, req: planner_pb2.ExplainRequest) -> planner_pb2.ExplainResponse:
        self.requests["Explain"] += 1
        return await self.inner.explain(req)

    def stats(self) -> dict:
        return self.inner.stats()

    def close(self) -> None:
        self.inner.close()


class PlannerServer(PlannerServerActor):
    """The planner service as an actor: the service with per-RPC request counters, and `serving()`,
    which tells a fresh (restarted) actor from one that serves."""

    def start(self, backend_name: str = HEURISTIC_BACKEND_NAME, host: str = DEFAULT_HOST, port: int = 0,
              backend_options: dict | None = None) -> str:
        """Serves `backend_name` (built with backend_options) on host:port; host "node-ip" is the
        node's cluster IP. Returns "host:port"; OSError when the port cannot be bound."""
        if host == NODE_IP:
            host = ray.util.get_node_ip_address()
        return self._start(
            lambda: _CountingBackend(make_backend(backend_name, **(backend_options or {}))), host, port)

    def serving(self) -> bool:
        """Whether this actor process serves; False in a process Ray restarted after a crash."""
        return self._address is not None

    def stats(self) -> dict[str, int | float]:
        """{} when not serving; else `rpcs` (requests received since this replica started),
        `rpcs_<rpc>` per RPC, and the backend's own counters."""
        backend = self._backend
        if not isinstance(backend, _CountingBackend):
            return {}
        requests = dict(backend.requests)
        return {**backend.stats(), "rpcs": sum(requests.values()),
                **{f"rpcs_{name.lower()}": count for name, count in requests.items()}}


RemotePlannerServer = ray.remote(num_cpus=0)(PlannerServer)

__all__ = ["NODE_IP", "PlannerServer", "RemotePlannerServer"]
