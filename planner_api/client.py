"""The client side of the planner service: `PlannerClient`, `InProcessPlanner`, `connect_planner`.

Rollout actors and the learner send batched requests for every LLM role (Plan, Reflect, Propose,
Explain) to the planner service (llm_server) through `PlannerClient`. When the service is slow
or down the client answers with the matching deterministic rule of `planner_api.heuristics`, so a
rollout never stalls on the LLM.

The contract's limits and checks live in `planner_api.contract`, the no-LLM rules in
`planner_api.heuristics`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from planner_api.contract import (
    GRPC_MESSAGE_OPTIONS,
    PLANNER_SERVICE_NAME,
    RPC_NAMES,
    validate_explain_request,
    validate_judge_request,
    validate_plan_request,
    validate_propose_request,
    validate_reflect_request,
    validate_respond_request,
)
from planner_api.heuristics import (
    heuristic_explain,
    heuristic_judge,
    heuristic_plan,
    heuristic_propose,
    heuristic_reflect,
    heuristic_respond,
)
from planner_api.security import ClientSecurity
from protos import planner_pb2, planner_pb2_grpc

logger = logging.getLogger(__name__)

# RPC name -> (request validation, the no-LLM rule that answers it).
_LOCAL_RULES: dict[str, tuple[Callable[[Message], None], Callable[[Message], Message]]] = {
    "Plan": (validate_plan_request, heuristic_plan),
    "Reflect": (validate_reflect_request, heuristic_reflect),
    "Propose": (validate_propose_request, heuristic_propose),
    "Explain": (validate_explain_request, heuristic_explain),
    "Judge": (validate_judge_request, heuristic_judge),
    "Respond": (validate_respond_request, heuristic_respond),
}


@dataclass
class MethodStats:
    """The counters of one RPC: calls, those answered by the heuristic, and the time the
    callers waited (fallbacks included)."""

    calls: int = 0
    fallbacks: int = 0
    total_latency_s: float = 0.0


class _Counters:
    """Totals (`calls`, `fallbacks`, `total_latency_s`) and per-RPC `by_method` counters.

    Read them, don't write them. Updated under a lock, so one planner can serve many threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.fallbacks = 0
        self.total_latency_s = 0.0
        self.by_method: dict[str, MethodStats] = {name: MethodStats() for name in RPC_NAMES}

    def _record(self, method: str, started: float, fell_back: bool) -> None:
        """Counts one finished call of `method` that began at perf_counter() == started."""
        elapsed = time.perf_counter() - started
        with self._lock:
            stats = self.by_method[method]
            for counters in (self, stats):
                counters.calls += 1
                counters.fallbacks += int(fell_back)
                counters.total_latency_s += elapsed


# gRPC's default reconnect backoff grows to 120 s: a planner back after an outage would go on
# being bypassed for minutes. Retrying every second at most brings the LLM back within a second.
RECONNECT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


# Spreads the calls of one channel over every replica whose connection is READY: a replica that is
# down (connecting, or in backoff after a failure) is skipped until it serves again.
ROUND_ROBIN_OPTIONS: list[tuple[str, str]] = [("grpc.lb_policy_name", "round_robin")]


def _split_address(entry: str) -> tuple[str, int]:
    """("host", port) of one "host:port" or "[v6]:port"; ValueError when it is not one."""
    host, sep, port = entry.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"planner address {entry!r} is not HOST:PORT")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _resolve(host: str, port: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IP of `host`: itself when it is a literal, else its first IPv4 address from the
    resolver (the first IPv6 one when it has none)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ValueError(f"cannot resolve planner host {host!r}: {error}") from None
    ips = [ipaddress.ip_address(info[4][0]) for info in infos]
    return next((ip for ip in ips if ip.version == 4), ips[0])


def channel_target(address: str) -> tuple[str, list[tuple[str, str]]]:
    """The gRPC channel target and the extra channel options for a planner `address`.

    One "host:port" is passed on as it is (gRPC resolves it; pick_first). A comma-separated list
    of replicas becomes a fixed list of IPs ("ipv4:a:p1,b:p2" or "ipv6:[a]:p1,[b]:p2") balanced
    round-robin: gRPC's ipv4/ipv6 schemes take only literal IPs of one family, so host names are
    resolved here, once (a replica is expected to keep its address, see llm_server.replicas).
    Raises ValueError for an entry that is not HOST:PORT, a name that does not resolve, or a list
    that mixes IPv4 and IPv6 replicas.
    """
    entries = [entry.strip() for entry in address.split(",")]
    if len(entries) == 1:
        return address, []
    if not all(entries):
        raise ValueError(f"planner address list {address!r} has an empty entry")
    endpoints = [(_resolve(host, port), port) for host, port in map(_split_address, entries)]
    versions = {ip.version for ip, _ in endpoints}
    if len(versions) > 1:
        raise ValueError(f"planner address list {address!r} mixes IPv4 and IPv6 replicas; "
                         "gRPC balances over one family only")
    if versions == {4}:
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in endpoints), ROUND_ROBIN_OPTIONS
    return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in endpoints), ROUND_ROBIN_OPTIONS


class PlannerClient(_Counters):
    """A gRPC client of the planner service that falls back to the heuristics on failure.

    One method per RPC: plan, reflect, propose, explain, judge, respond; each returns (response, fell_back).
    Counters: see `_Counters` (`calls`, `fallbacks`, `total_latency_s`, `by_method[rpc]`).
    Safe to share between threads.

    `address` is one "host:port", or several comma-separated ("h1:p1,h2:p2", planner replicas):
    calls then go round-robin to the replicas that are up, and one that goes down is skipped
    until it serves again. A call already sent to a replica that dies fails and falls back (it is
    not retried elsewhere: the deadline stays the caller's bound).
    """

    def __init__(self, address: str, security: ClientSecurity | None = None) -> None:
        """Opens a channel to the planner at `address` ("host:port", or a comma-separated list of
        replicas); connects lazily. `security` (default: the PLANNER_* environment variables, see
        `planner_api.security`) adds the bearer token and TLS. ValueError for a list that
        cannot be used (see `channel_target`) or a security setting that cannot be read."""
        super().__init__()
        self.address = address
        target, balancing = channel_target(address)
        security = ClientSecurity.from_env() if security is None else security
        self._metadata = security.metadata()
        self._channel = security.open_channel(
            target, GRPC_MESSAGE_OPTIONS + RECONNECT_OPTIONS + balancing)
        self._planner = planner_pb2_grpc.PlannerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._warned: set[tuple[str, grpc.StatusCode | None]] = set()

    def plan(
        self, req: planner_pb2.PlanRequest, timeout_s: float
    ) -> tuple[planner_pb2.PlanResponse, bool]:
        """Plans a batch of users (LERL's planner): returns (response, fell_back)."""
        return self._call("Plan", req, timeout_s)

    def reflect(
        self, req: planner_pb2.ReflectRequest, timeout_s: float
    ) -> tuple[planner_pb2.ReflectResponse, bool]:
        """One critique per finished session (LERL's critic): returns (response, fell_back)."""
        return self._call("Reflect", req, timeout_s)

    def propose(
        self, req: planner_pb2.ProposeRequest, timeout_s: float
    ) -> tuple[planner_pb2.ProposeResponse, bool]:
        """Candidate items per query (LAAC's reference policy): returns (response, fell_back)."""
        return self._call("Propose", req, timeout_s)

    def explain(
        self, req: planner_pb2.ExplainRequest, timeout_s: float
    ) -> tuple[planner_pb2.ExplainResponse, bool]:
        """One sentence on why a slate suits the user: returns (response, fell_back)."""
        return self._call("Explain", req, timeout_s)

    def judge(
        self, req: planner_pb2.JudgeRequest, timeout_s: float
    ) -> tuple[planner_pb2.JudgeResponse, bool]:
        """A 1-5 rating per explanation (the LLM as judge): returns (response, fell_back)."""
        return self._call("Judge", req, timeout_s)

    def respond(
        self, req: planner_pb2.RespondRequest, timeout_s: float
    ) -> tuple[planner_pb2.RespondResponse, bool]:
        """Each slate answered by a simulated user (the LLM as the user): returns (response, fell_back)."""
        return self._call("Respond", req, timeout_s)

    def _call(self, method: str, req: Message, timeout_s: float) -> tuple[Message, bool]:
        """Calls RPC `method` with a deadline of timeout_s seconds.

        Any gRPC failure (DEADLINE_EXCEEDED, UNAVAILABLE, INTERNAL, ...) is answered by the
        method's heuristic with fell_back=True, except INVALID_ARGUMENT: the request itself
        breaks the contract, so ValueError is raised with the server's message rather than
        hiding the bug (and the call is not counted as a fallback); and UNAUTHENTICATED: a
        missing or wrong token is a configuration error, raised as PermissionError.
        """
        started = time.perf_counter()
        fell_back = False
        try:
            try:
                response = getattr(self._planner, method)(req, timeout=timeout_s,
                                                          metadata=self._metadata)
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise ValueError(
                        f"planner at {self.address} rejected the {method} request: "
                        f"{error.details()}"
                    ) from None
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    raise PermissionError(
                        f"planner at {self.address} refused the {method} call: {error.details()} "
                        "(set PLANNER_TOKEN_FILE or PLANNER_TOKEN to the server's token)"
                    ) from None
                self._warn_once(method, code, error)
                response = _LOCAL_RULES[method][1](req)
                fell_back = True
        finally:
            self._record(method, started, fell_back)
        return response, fell_back

    def _warn_once(self, method: str, code: grpc.StatusCode | None, error: grpc.RpcError) -> None:
        """Logs the first failure of each (RPC, status code); later ones only count."""
        with self._lock:
            if (method, code) in self._warned:
                return
            self._warned.add((method, code))
        code_name = code.name if code is not None else "UNKNOWN"
        logger.warning(
            "planner at %s failed %s with %s (%s); answering with the heuristic "
            "(further %s failures of %s are not logged)",
            self.address, method, code_name, error.details(), code_name, method,
        )

    def wait_ready(self, timeout_s: float) -> None:
        """Blocks until the planner's health service reports SERVING.

        With a list of replicas each check goes to one replica that is up (round-robin), so this
        returns as soon as at least one replica serves; the others join the rotation when they do.

        Raises TimeoutError naming the address and the last status or error seen when that
        does not happen within timeout_s seconds.
        """
        deadline = time.monotonic() + timeout_s
        last_seen = "no answer"
        request = health_pb2.HealthCheckRequest(service=PLANNER_SERVICE_NAME)
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                reply = self._health.Check(
                    request, timeout=min(remaining, 1.0), wait_for_ready=True,
                    metadata=self._metadata,
                )
            except grpc.RpcError as error:
                last_seen = f"{error.code().name}: {error.details()}"
            else:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last_seen = (
                    "status " + health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                )
            time.sleep(max(0.0, min(0.05, deadline - time.monotonic())))
        raise TimeoutError(
            f"planner at {self.address} did not report SERVING within {timeout_s:g} s "
            f"(last seen: {last_seen})"
        )

    def close(self) -> None:
        """Closes the channel; the client cannot be used afterwards."""
        self._channel.close()

    def __enter__(self) -> PlannerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


IN_PROCESS_ADDRESS = "in-process"


class InProcessPlanner(_Counters):
    """The heuristic rules called directly, with PlannerClient's interface and counters.

    For the serial debugging mode and tests: no server, no network, the same answers a
    heuristic-backend server would give. Requests are validated the same way (ValueError, as
    PlannerClient raises for INVALID_ARGUMENT); it never falls back.
    """

    address = IN_PROCESS_ADDRESS

    def plan(
        self, req: planner_pb2.PlanRequest, timeout_s: float
    ) -> tuple[planner_pb2.PlanResponse, bool]:
        """heuristic_plan on a validated request: returns (response, False)."""
        return self._call("Plan", req)

    def reflect(
        self, req: planner_pb2.ReflectRequest, timeout_s: float
    ) -> tuple[planner_pb2.ReflectResponse, bool]:
        """heuristic_reflect on a validated request: returns (response, False)."""
        return self._call("Reflect", req)

    def propose(
        self, req: planner_pb2.ProposeRequest, timeout_s: float
    ) -> tuple[planner_pb2.ProposeResponse, bool]:
        """heuristic_propose on a validated request: returns (response, False)."""
        return self._call("Propose", req)

    def explain(
        self, req: planner_pb2.ExplainRequest, timeout_s: float
    ) -> tuple[planner_pb2.ExplainResponse, bool]:
        """heuristic_explain on a validated request: returns (response, False)."""
        return self._call("Explain", req)

    def judge(
        self, req: planner_pb2.JudgeRequest, timeout_s: float
    ) -> tuple[planner_pb2.JudgeResponse, bool]:
        """heuristic_judge on a validated request: returns (response, False)."""
        return self._call("Judge", req)

    def respond(
        self, req: planner_pb2.RespondRequest, timeout_s: float
    ) -> tuple[planner_pb2.RespondResponse, bool]:
        """heuristic_respond on a validated request: returns (response, False)."""
        return self._call("Respond", req)

    def _call(self, method: str, req: Message) -> tuple[Message, bool]:
        """Validates and answers one request; an invalid one raises and is not counted."""
        started = time.perf_counter()
        validate, rule = _LOCAL_RULES[method]
        validate(req)
        response = rule(req)
        self._record(method, started, fell_back=False)
        return response, False

    def wait_ready(self, timeout_s: float) -> None:
        """Always ready: there is nothing to wait for."""
        return None

    def close(self) -> None:
        """Holds nothing to release."""
        return None


def connect_planner(address: str) -> PlannerClient | InProcessPlanner:
    """A planner for `address`: "host:port" of a planner service, a comma-separated list of
    replicas ("h1:p1,h2:p2", balanced round-robin), or "in-process" for the heuristic rules.
    A service client takes its token and TLS settings from the PLANNER_* environment variables
    (`planner_api.security`), which Ray actors inherit."""
    return InProcessPlanner() if address == IN_PROCESS_ADDRESS else PlannerClient(address)
