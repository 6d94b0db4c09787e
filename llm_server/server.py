"""The planner gRPC service (grpc.aio): Plan, Reflect, Propose, Explain, Judge and Respond over a backend, plus
the gRPC health service.

Run it with `python -m llm_server` (or `llmrec-planner`), start it inside a program with
`start_server`, or host it in a Ray actor with `llm_server.ray_actor.RemotePlannerServer`.
It binds 127.0.0.1 unless told otherwise; on an address others can reach, require a token and TLS
(`llm_server.security`). Requests arrive as bytes and are parsed here, so that undecodable ones
(garbage, truncation, invalid UTF-8) get INVALID_ARGUMENT naming the field, like invalid ones.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from llm_server.backends import CallRefused, PlannerBackend, make_backend
from llm_server.request_decoding import parse_request
from llm_server.security import ServerSecurity
from planner_api.contract import (
    GRPC_MESSAGE_OPTIONS,
    PLANNER_SERVICE_NAME,
    RPC_NAMES,
    check_explain_response,
    check_judge_response,
    check_plan_response,
    check_propose_response,
    check_reflect_response,
    check_respond_response,
    validate_explain_request,
    validate_judge_request,
    validate_plan_request,
    validate_propose_request,
    validate_reflect_request,
    validate_respond_request,
)
from planner_api.heuristics import HEURISTIC_BACKEND_NAME
from protos import planner_pb2

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50051
# In-flight requests get this long to finish when the server stops.
SHUTDOWN_GRACE_S = 2.0
# How long PlannerServerActor waits for its server thread to start or stop.
THREAD_TIMEOUT_S = 30.0
# Building a backend may mean converting the embedded model once and starting an LLM engine.
BACKEND_START_TIMEOUT_S = 900.0


def format_address(host: str, port: int) -> str:
    """"host:port", with an IPv6 host in brackets as gRPC expects."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


@dataclass(frozen=True)
class _RpcSpec:
    """What the service does for one RPC: validate, ask the backend, check the answer."""

    name: str  # the RPC's name in the .proto
    request_type: type[Message]
    validate: Callable[[Message], None]  # raises ValueError for an invalid request
    backend_method: str  # the PlannerBackend coroutine that answers it
    response_type: type[Message]
    check: Callable[[Message, Message], None]  # raises ValueError for an invalid answer
    batch_field: str  # the request's repeated field that sizes it, for log lines


_PLAN = _RpcSpec("Plan", planner_pb2.PlanRequest, validate_plan_request, "plan",
                 planner_pb2.PlanResponse, check_plan_response, "users")
_REFLECT = _RpcSpec("Reflect", planner_pb2.ReflectRequest, validate_reflect_request, "reflect",
                    planner_pb2.ReflectResponse, check_reflect_response, "sessions")
_PROPOSE = _RpcSpec("Propose", planner_pb2.ProposeRequest, validate_propose_request, "propose",
                    planner_pb2.ProposeResponse, check_propose_response, "queries")
_EXPLAIN = _RpcSpec("Explain", planner_pb2.ExplainRequest, validate_explain_request, "explain",
                    planner_pb2.ExplainResponse, check_explain_response, "slate")
_JUDGE = _RpcSpec("Judge", planner_pb2.JudgeRequest, validate_judge_request, "judge",
                  planner_pb2.JudgeResponse, check_judge_response, "cases")
_RESPOND = _RpcSpec("Respond", planner_pb2.RespondRequest, validate_respond_request, "respond",
                    planner_pb2.RespondResponse, check_respond_response, "cases")
_RPCS = (_PLAN, _REFLECT, _PROPOSE, _EXPLAIN, _JUDGE, _RESPOND)


class PlannerService:
    """Plan, Reflect, Propose, Explain, Judge, Respond, served by one generic handler (`_service_handler`, which
    takes the raw bytes so that undecodable requests get INVALID_ARGUMENT): each validates the
    request, asks the backend and checks the answer against the contract.

    Invalid requests get INVALID_ARGUMENT with the validation message. A failing backend gets
    INTERNAL with a short message (the traceback goes to the log), and so does a backend answer
    that breaks the contract (wrong count, ids outside what was allowed, oversize text): that is
    a server bug, never passed on to the caller. None of these stops the server.
    """

    def __init__(self, backend: PlannerBackend, requests: dict[str, int] | None = None) -> None:
        self._backend = backend
        # Validated requests per RPC, when the host wants them counted (how clients spread their
        # calls over replicas). Written on the server's loop, read as a copy from other threads:
        # single int updates under the GIL need no lock.
        self._requests = requests

    async def _handle(
        self, rpc: _RpcSpec, request: Message, context: grpc.aio.ServicerContext
    ) -> Message:
        """The one path of every RPC: validate, ask the backend, check its answer."""
        try:
            rpc.validate(request)
        except ValueError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        if self._requests is not None:
            self._requests[rpc.name] += 1
        backend_name = self._backend.name
        size = len(getattr(request, rpc.batch_field))
        try:
            response = await getattr(self._backend, rpc.backend_method)(request)
        except CallRefused as refusal:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(refusal))
        except Exception:
            logger.exception("planner backend %r failed on a %s request of %d %s",
                             backend_name, rpc.name, size, rpc.batch_field)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"planner backend {backend_name!r} failed; see server log"
            )
        try:
            if not isinstance(response, rpc.response_type):
                raise ValueError(f"answered a {type(response).__name__}, "
                                 f"not a {rpc.response_type.__name__}")
            rpc.check(request, response)
        except ValueError as error:
            logger.error("planner backend %r broke the contract on a %s request of %d %s: %s",
                         backend_name, rpc.name, size, rpc.batch_field, error)
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"planner backend {backend_name!r} gave an invalid {rpc.name} answer: {error}",
            )
        return response

    async def handle_bytes(self, rpc: _RpcSpec, data: bytes, context: grpc.aio.ServicerContext) -> Message:
        """Parses the request bytes of `rpc` (INVALID_ARGUMENT naming the field when they do not
        decode), then answers as `_handle` does."""
        try:
            request = parse_request(rpc.request_type, data)
        except ValueError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return await self._handle(rpc, request, context)


# Calls in progress at once; more are refused with RESOURCE_EXHAUSTED (the client falls back to its
# heuristic). With messages of up to 64 MiB this bounds the memory requests can pin; a rollout
# actor keeps at most two Plan calls in flight, so 128 serves 64 actors per replica.
MAX_CONCURRENT_RPCS = 128


def _service_handler(service: PlannerService) -> grpc.GenericRpcHandler:
    """The Planner service's methods, taking raw request bytes (see `PlannerService.handle_bytes`)."""

    def method(rpc: _RpcSpec) -> grpc.RpcMethodHandler:
        async def call(data: bytes, context: grpc.aio.ServicerContext) -> Message:
            return await service.handle_bytes(rpc, data, context)

        return grpc.unary_unary_rpc_method_handler(call, response_serializer=rpc.response_type.SerializeToString)

    return grpc.method_handlers_generic_handler(PLANNER_SERVICE_NAME, {rpc.name: method(rpc) for rpc in _RPCS})


async def start_server(
    backend: PlannerBackend, host: str = DEFAULT_HOST, port: int = 0, requests: dict[str, int] | None = None,
    security: ServerSecurity | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Starts the planner service on host:port (port 0 picks a free one); `requests`, when
    given, counts the validated requests per RPC name; `security` (default: none) adds TLS and
    the token every Planner call must carry.

    Returns (server, bound_port) once the server accepts calls; stop it with
    `await server.stop(grace)`. Raises OSError when the address cannot be bound. Must be awaited
    on the event loop that will run the server.
    """
    security = security or ServerSecurity()
    server = grpc.aio.server(options=GRPC_MESSAGE_OPTIONS, interceptors=security.interceptors(),
                             maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
    server.add_generic_rpc_handlers((_service_handler(PlannerService(backend, requests)),))
    health_servicer = health.aio.HealthServicer()
    for service in (health.OVERALL_HEALTH, PLANNER_SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = format_address(host, port)
    try:
        bound_port = security.bind(server, address)
    except RuntimeError as error:
        raise OSError(f"cannot bind the planner service to {address}: {error}") from None
    if bound_port == 0:
        raise OSError(f"cannot bind the planner service to {address}")
    security.warn_if_exposed(host)
    await server.start()
    return server, bound_port


class PlannerServerActor:
    """Hosts the planner service in a background thread with its own asyncio event loop.

    A plain class so that it can run in-process (tests, benchmarks); `llm_server.ray_actor`
    wraps it with `ray.remote` to run planner replicas as Ray actors.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: grpc.aio.Server | None = None
        self._backend: PlannerBackend | None = None
        self._address: str | None = None
        self._requests: dict[str, int] = {}

    def start(
        self, backend_name: str = HEURISTIC_BACKEND_NAME, host: str = DEFAULT_HOST, port: int = 0,
        backend_options: dict | None = None, *, token_file: str | None = None,
        tls_cert: str | None = None, tls_key: str | None = None,
    ) -> str:
        """Starts serving with the backend called backend_name (built with backend_options,
        e.g. {"model": ..., "tensor_parallel_size": ...} for vllm); returns "host:port".
        Token and TLS: the files given, else the PLANNER_* environment variables of this process
        (`llm_server.security`); ValueError when they cannot be read."""
        security = ServerSecurity.from_env(token_file=token_file, tls_cert=tls_cert, tls_key=tls_key)
        return self._start(lambda: make_backend(backend_name, **(backend_options or {})), host, port, security)

    def start_with_backend(
        self, backend: PlannerBackend, host: str = DEFAULT_HOST, port: int = 0,
        security: ServerSecurity | None = None,
    ) -> str:
        """Starts serving with a backend built by the caller, which the actor then owns;
        `security` defaults to the PLANNER_* environment variables, as `start`.

        Returns "host:port" once the server accepts calls. Raises RuntimeError when already
        serving and OSError when the address cannot be bound.
        """
        return self._start(lambda: backend, host, port, security or ServerSecurity.from_env())

    def _start(self, build, host: str, port: int, security: ServerSecurity) -> str:
        if self._address is not None:
            raise RuntimeError(f"the planner service is already serving on {self._address}")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="planner-server", daemon=True)
        thread.start()
        backend = None
        requests = dict.fromkeys(RPC_NAMES, 0)

        async def build_and_serve():
            # Built on the server's own loop: an LLM engine binds its output handler to the loop
            # it is first used from.
            nonlocal backend
            backend = build()
            return await start_server(backend, host, port, requests, security)

        try:
            server, bound_port = asyncio.run_coroutine_threadsafe(build_and_serve(), loop).result(
                BACKEND_START_TIMEOUT_S)
        except BaseException:
            self._stop_loop(loop, thread)
            if backend is not None:
                backend.close()
            raise
        self._loop, self._thread, self._server, self._backend = loop, thread, server, backend
        self._requests = requests
        self._address = format_address(host, bound_port)
        return self._address

    def serving(self) -> bool:
        """Whether this actor serves; False before start, after stop, and in a process Ray
        restarted after a crash."""
        return self._address is not None

    def stats(self) -> dict[str, int | float]:
        """{} when not serving; else `rpcs` (validated requests since this start), `rpcs_<rpc>`
        per RPC, and the backend's own counters."""
        if self._backend is None:
            return {}
        requests = dict(self._requests)
        return {**self._backend.stats(), "rpcs": sum(requests.values()),
                **{f"rpcs_{name.lower()}": count for name, count in requests.items()}}

    def address(self) -> str:
        """The "host:port" being served; RuntimeError when not started."""
        if self._address is None:
            raise RuntimeError("the planner service is not started")
        return self._address

    def stop(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Stops serving (in-flight calls get grace_s seconds) and closes the backend.

        Does nothing when not serving; the actor can be started again afterwards.
        """
        if self._address is None:
            return
        loop, thread, server, backend = self._loop, self._thread, self._server, self._backend
        self._loop = self._thread = self._server = self._backend = self._address = None
        try:
            asyncio.run_coroutine_threadsafe(server.stop(grace_s), loop).result(
                grace_s + THREAD_TIMEOUT_S
            )
        finally:
            try:
                backend.close()  # while its loop still runs: an engine cleans up on that loop
            finally:
                self._stop_loop(loop, thread)

    @staticmethod
    def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        """Stops the server thread's event loop and closes it once the thread has ended."""
        loop.call_soon_threadsafe(loop.stop)
        thread.join(THREAD_TIMEOUT_S)
        if not thread.is_alive():
            loop.close()
