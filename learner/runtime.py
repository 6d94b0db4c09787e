"""What every run does around its algorithm: start or join Ray, start the planner service and wait
for it, make the run directory, and shut everything down however the run ends. `UsageError` is
the one error a user can fix (printed as one line by the CLI, exit 2)."""
from __future__ import annotations

import logging
import os
import socket
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import ray

from llm_server.backends import vllm_available
from llm_server.chaos import PlannerChaos
from llm_server.replicas import LocalPlannerService, PlannerReplicas
from planner_api.client import connect_planner

class UsageError(Exception):
    """A problem the user can fix (bad option, unreachable cluster): printed as one line, exit 2."""


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on HOST:PORT with nothing listening (ray.init would retry for a long time)."""
    if address in ("", "auto") or address.startswith(("ray://", "http://", "https://")):
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--address {address!r} is not HOST:PORT, 'auto' or empty (local Ray)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise UsageError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with "
                         "`ray start --head`, or leave out --address to run on a local Ray") from None


def init_ray(cfg):
    """Start a local Ray (loopback only) or join the cluster at --address (`cfg`: the run's
    learner.config.TrainConfig, as everywhere in the core)."""

    address = cfg.run.address
    check_reachable(address)
    quiet = dict(logging_level=logging.WARNING, log_to_driver=True)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            # A local Ray reserves what the loop asks for even on a 2-core laptop: actors mostly
            # wait on each other, and torch threads are capped per actor.
            needed = (cfg.rollout.num_rollout_actors * cfg.rollout.rollout_num_cpus
                      + cfg.run.num_learners * cfg.run.learner_num_cpus)
            ray.init(num_cpus=max(os.cpu_count() or 1, int(np.ceil(needed))), include_dashboard=False,
                     _node_ip_address="127.0.0.1", **quiet)
    except ConnectionError as exc:
        raise UsageError(f"cannot join the Ray cluster at {address or 'local'}: {exc}") from None
    return ray


def start_planner(ray, cfg):
    """The planner service of this run: replicas as Ray actors, one service in this process when
    `ray` is None (serial mode), or none when --planner-address names one already running.
    Returns (what to stop, or None; the address rollout workers connect to)."""
    if cfg.run.planner_address:
        return None, cfg.run.planner_address
    backend, options, gpus = cfg.run.planner_backend, {}, 0.0
    if backend == "auto":
        backend = "vllm" if vllm_available() else "heuristic"
        if backend == "heuristic":
            print("note: vLLM is not installed, so the planner uses its heuristic backend (no LLM); "
                  "`bash scripts/setup.sh` installs vLLM and the embedded model", flush=True)
    if backend == "vllm":
        options = {"model": cfg.run.planner_model, "tensor_parallel_size": cfg.run.planner_tensor_parallel,
                   "kv_cache_gib": cfg.run.planner_kv_cache_gib or None}
        gpus = cfg.run.planner_gpus_per_replica
        if gpus < 0:
            needed = cfg.run.planner_replicas * cfg.run.planner_tensor_parallel
            gpus = (cfg.run.planner_tensor_parallel
                    if ray is not None and ray.cluster_resources().get("GPU", 0) >= needed else 0.0)
        print(f"planner: starting vLLM with {cfg.run.planner_model} on {cfg.run.planner_replicas} replica(s) (the "
              "first start converts the embedded model once)", flush=True)
    try:
        if ray is None:
            replicas = LocalPlannerService(backend, options, cfg.run.planner_host)
        else:
            replicas = PlannerReplicas(cfg.run.planner_replicas, backend, options, cfg.run.planner_host,
                                       resources={"num_gpus": gpus} if gpus else None, chaos=planner_chaos(cfg))
    except Exception as exc:  # noqa: BLE001 - any start failure ends the run with its reason
        raise UsageError(f"the {backend} planner could not start: {exc}") from None
    cfg.run.planner_backend = backend
    if cfg.rollout.plan_every == 0:
        cfg.rollout.plan_every = min(5, cfg.world.max_steps) if backend == "vllm" else 1
    if cfg.rollout.plan_max_age == -1:
        cfg.rollout.plan_max_age = 2 * cfg.rollout.plan_every if backend == "vllm" else 0
    if cfg.rollout.plan_reuse_batches == -1:
        cfg.rollout.plan_reuse_batches = 100 if backend == "vllm" else 0
    if cfg.rollout.reflect_async == -1:
        cfg.rollout.reflect_async = 1 if backend == "vllm" else 0
    if cfg.rollout.prime_plans_s == -1:
        cfg.rollout.prime_plans_s = 120.0 if backend == "vllm" and cfg.rollout.plan_reuse_batches > 0 else 0.0
    alive_nodes = sum(1 for node in ray.nodes() if node.get("Alive")) if ray is not None else 1
    if alive_nodes > 1 and cfg.run.planner_host in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: the planner binds {cfg.run.planner_host} on a {alive_nodes}-node cluster: rollout actors on "
              "other nodes cannot reach it and will use the heuristic fallback; pass --planner-host node-ip",
              file=sys.stderr, flush=True)
    return replicas, replicas.target()


def planner_chaos(cfg):
    """FAULT INJECTION asked for with --chaos-planner-hang-every (None when off): hold one Plan
    request in N for --chaos-planner-hang-s seconds (0: one second past --planner-timeout-s)."""
    if not cfg.run.chaos_planner_hang_every:
        return None
    return PlannerChaos(cfg.run.chaos_planner_hang_every,
                        cfg.run.chaos_planner_hang_s or cfg.rollout.planner_timeout_s + 1.0)


def wait_for_planner(address: str | None, timeout_s: float) -> None:
    if address is None:
        return
    client = connect_planner(address)
    try:
        client.wait_ready(timeout_s)
    finally:
        client.close()


def shut_down(ray, *stops) -> None:
    """The end of a run, however it ends: each stop (None = nothing to stop) called in turn, one
    that fails ignored, then Ray shut down (the actors die with it)."""
    for stop in stops:
        try:
            if stop is not None:
                stop()
        except Exception:  # noqa: BLE001 - the run is over either way
            pass
    if ray is not None:
        ray.shutdown()


def make_run_dir(cfg) -> Path:
    run_dir = Path(cfg.run.run_dir or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    return run_dir


def learner_gpus(ray, cfg) -> float:
    """GPUs per learner rank: as asked, else one each when the cluster has one for every rank."""
    if cfg.run.learner_num_gpus >= 0:
        return cfg.run.learner_num_gpus
    if cfg.run.learner_device == "cpu":
        return 0.0
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= cfg.run.num_learners else 0.0
