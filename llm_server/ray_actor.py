"""The planner service as a Ray actor: the one class every Ray-hosted planner server uses
(`PlannerReplicas` starts K of them).

`RemotePlannerServer` is `PlannerServer` (the service, with its per-RPC request counters and
`serving()`) wrapped with `ray.remote(num_cpus=0)`: the server mostly waits on I/O, so it takes no
CPU from the Ray scheduler by default. Callers may override the resources or placement with
`.options(...)`, e.g. `RemotePlannerServer.options(num_gpus=1).remote()` for an LLM backend. An
actor started on a cluster node must bind an address other nodes can reach: `start(host="node-ip")`
binds the IP Ray uses for that node. There, require a token and TLS: the actor reads the PLANNER_*
environment variables it inherits (`planner_api.security`), or takes the files as
`start(..., token_file=..., tls_cert=..., tls_key=...)`; paths only, so no secret travels through
Ray's task arguments.

    server = RemotePlannerServer.remote()
    address = ray.get(server.start.remote("heuristic"))
    ...
    ray.get(server.stop.remote())
"""
from __future__ import annotations

import ray

from llm_server.server import DEFAULT_HOST, PlannerServerActor
from planner_api.heuristics import HEURISTIC_BACKEND_NAME

NODE_IP = "node-ip"


class PlannerServer(PlannerServerActor):
    """PlannerServerActor that also understands host="node-ip" (the node's cluster address)."""

    def start(self, backend_name: str = HEURISTIC_BACKEND_NAME, host: str = DEFAULT_HOST, port: int = 0,
              backend_options: dict | None = None, *, token_file: str | None = None,
              tls_cert: str | None = None, tls_key: str | None = None) -> str:
        """Serves `backend_name` (built with backend_options) on host:port; host "node-ip" is the
        node's cluster IP. Token and TLS files as in `PlannerServerActor.start`. Returns
        "host:port"; OSError when the port cannot be bound."""
        if host == NODE_IP:
            host = ray.util.get_node_ip_address()
        return super().start(backend_name, host, port, backend_options, token_file=token_file,
                             tls_cert=tls_cert, tls_key=tls_key)


RemotePlannerServer = ray.remote(num_cpus=0)(PlannerServer)

__all__ = ["NODE_IP", "PlannerServer", "RemotePlannerServer"]
