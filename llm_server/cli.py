"""The command line of the planner service: `python -m llm_server` and `llmrec-planner`."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from llm_server.backends import PlannerBackend, backend_names, make_backend
from llm_server.engine_options import cpu_kv_cache_gib
from llm_server.security import (
    ServerSecurity,
    add_security_arguments,
    security_from_args,
)
from llm_server.server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    SHUTDOWN_GRACE_S,
    format_address,
    start_server,
)
from planner_api.heuristics import HEURISTIC_BACKEND_NAME

logger = logging.getLogger(__name__)


async def _serve_until_signal(backend: PlannerBackend, host: str, port: int, security: ServerSecurity) -> None:
    """Serves until SIGINT or SIGTERM, then stops the server and closes the backend."""
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_requested.set)
    try:
        server, bound_port = await start_server(backend, host, port, security=security)
        try:
            print(f"planner serving on {format_address(host, bound_port)} "
                  f"(backend={backend.name})", flush=True)
            logger.info("planner service security: %s", security.describe())
            await stop_requested.wait()
            logger.info("stopping the planner service")
        finally:
            await server.stop(SHUTDOWN_GRACE_S)
    finally:
        backend.close()


def _port_number(text: str) -> int:
    """argparse type for --port: an integer in 0..65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..65535")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of `python -m llm_server`."""
    parser = argparse.ArgumentParser(
        prog="python -m llm_server",
        description="Run the planner gRPC service (Plan, Reflect, Propose, Explain, Judge, Respond and the gRPC "
        "health service).",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}). Any other address exposes the service to "
        "everyone who can reach it: require a token and TLS there (see the exposure options).",
    )
    parser.add_argument(
        "--port", type=_port_number, default=DEFAULT_PORT,
        help=f"port to bind (default {DEFAULT_PORT}; 0 picks a free one and prints it)",
    )
    parser.add_argument(
        "--backend", choices=backend_names(), default=HEURISTIC_BACKEND_NAME,
        help=f"what answers the requests of every role (default {HEURISTIC_BACKEND_NAME}); "
        "vllm runs an LLM (needs the cpu or gpu extra)",
    )
    parser.add_argument("--model", default="smollm2",
                        help="vllm backend: smollm2 (the embedded SmolLM2-135M-Instruct), a local Hugging "
                        "Face folder, or a hub id (needs a network)")
    parser.add_argument("--tensor-parallel", type=int, default=1,
                        help="vllm backend: GPUs to spread the model over (default 1)")
    parser.add_argument("--max-model-len", type=int, default=2048,
                        help="vllm backend: longest prompt + answer in tokens (default 2048)")
    parser.add_argument("--call-budget", type=int, default=1 << 20,
                        help="vllm backend: the prompt tokens one call may ask the engine for (a budget in tokens); a call over it is "
                        "refused with RESOURCE_EXHAUSTED (the caller falls back to its heuristic) and counted "
                        "(default 1048576: 256 users at 4096 tokens each)")
    parser.add_argument("--kv-cache-gib", type=int, default=None, metavar="GIB",
                        help="vllm backend on a CPU: the KV cache (and so the prefix cache) in whole GiB (default: "
                        "VLLM_CPU_KVCACHE_SPACE when set, else a sixth of this machine's memory, 1 to 8 GiB; "
                        "vLLM's own default of 1 GiB holds about 64 simulated users' prompts). Ignored on a GPU, "
                        "where the cache takes what the model leaves of the GPU's memory")
    add_security_arguments(parser)
    return parser


def cli(argv: list[str] | None = None) -> int:
    """Entry point of `python -m llm_server` and `llmrec-planner`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        security = security_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    options = ({"model": args.model, "tensor_parallel_size": args.tensor_parallel,
                "max_model_len": args.max_model_len, "call_token_budget": args.call_budget,
                "kv_cache_gib": args.kv_cache_gib}
               if args.backend == "vllm" else {})
    if args.call_budget < 1:
        parser.error(f"--call-budget must be >= 1, got {args.call_budget}")
    if args.kv_cache_gib is not None:
        try:
            cpu_kv_cache_gib(args.kv_cache_gib)
        except ValueError as error:
            parser.error(str(error).replace("kv_cache_gib", "--kv-cache-gib"))
    try:
        backend = make_backend(args.backend, **options)
    except (RuntimeError, ValueError) as error:
        parser.error(str(error))
    try:
        asyncio.run(_serve_until_signal(backend, args.host, args.port, security))
    except OSError as error:
        parser.error(str(error))
    return 0
