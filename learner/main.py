"""Train a recommendation policy with the actor-learner loop: `python -m learner.main --help`.

Starts (or joins) Ray, starts the planner service, the rollout actors and the learner, trains,
logs a progress line per iteration plus TensorBoard and JSONL metrics, writes checkpoints, and
ends with an evaluation of the trained policy against the random reference on fixed users.
`--resume RUN_DIR` continues a stopped (or killed) run from its newest checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from learner.chaos import DriverChaos
from learner.checkpoint import (check_compatible, resume_checkpoint, resumed_config, save_checkpoint, trim_metrics,
                                work_lost)
from learner.config import SECTIONS, TrainConfig, build_parser, config_from_args, save_config
from learner.evaluate import evaluate_against_references, evaluation_table, evaluation_users
from learner.metrics_row import iteration_metrics, progress_line
from learner.reflection_pool import ReflectionPool

log = logging.getLogger("learner.main")
# plan_every=0 (auto) with an LLM planner: once per session, at its start (RolloutConfig.plan_every).


class UsageError(Exception):
    """A problem the user can fix (bad option, unreachable cluster): printed as one line, exit 2."""


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
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


def init_ray(cfg: TrainConfig):
    """Start a local Ray (loopback only) or join the cluster at --address."""
    import ray

    address = cfg.run.address
    _check_reachable(address)
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


def start_planner(ray, cfg: TrainConfig):
    """The planner replicas as Ray actors (or the external/in-process service); returns
    (replicas or None, the address rollout actors connect to)."""
    if not cfg.rollout.use_planner:
        return None, None
    if cfg.run.planner_address:
        return None, cfg.run.planner_address
    from llm_server.backends import vllm_available
    from llm_server.replicas import PlannerReplicas

    backend, options, gpus = cfg.run.planner_backend, {}, 0.0
    if backend == "auto":
        backend = "vllm" if vllm_available() else "heuristic"
        if backend == "heuristic":
            print("note: vLLM is not installed, so the planner uses its heuristic backend (no LLM); "
                  "`bash scripts/setup.sh` installs vLLM and the embedded model", flush=True)
    if backend == "vllm":
        options = {"model": cfg.run.planner_model, "tensor_parallel_size": cfg.run.planner_tensor_parallel}
        gpus = cfg.run.planner_gpus_per_replica
        if gpus < 0:
            needed = cfg.run.planner_replicas * cfg.run.planner_tensor_parallel
            gpus = cfg.run.planner_tensor_parallel if ray.cluster_resources().get("GPU", 0) >= needed else 0.0
        print(f"planner: starting vLLM with {cfg.run.planner_model} on {cfg.run.planner_replicas} replica(s) (the "
              "first start converts the embedded model once)", flush=True)
    try:
        replicas = PlannerReplicas(cfg.run.planner_replicas, backend, options, cfg.run.planner_host,
                                   resources={"num_gpus": gpus} if gpus else None, chaos=planner_chaos(cfg))
    except Exception as exc:  # noqa: BLE001 - any start failure ends the run with its reason
        raise UsageError(f"the {backend} planner could not start: {exc}") from None
    cfg.run.planner_backend = backend
    if cfg.rollout.plan_every == 0:
        cfg.rollout.plan_every = cfg.world.max_steps if backend == "vllm" else 1
    alive_nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    if alive_nodes > 1 and cfg.run.planner_host in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: the planner binds {cfg.run.planner_host} on a {alive_nodes}-node cluster: rollout actors on "
              "other nodes cannot reach it and will use the heuristic fallback; pass --planner-host node-ip",
              file=sys.stderr, flush=True)
    return replicas, replicas.target()


def planner_chaos(cfg: TrainConfig):
    """FAULT INJECTION asked for with --chaos-planner-hang-every (None when off): hold one Plan
    request in N for --chaos-planner-hang-s seconds (0: one second past --planner-timeout-s)."""
    if not cfg.run.chaos_planner_hang_every:
        return None
    from llm_server.chaos import PlannerChaos

    return PlannerChaos(cfg.run.chaos_planner_hang_every,
                        cfg.run.chaos_planner_hang_s or cfg.rollout.planner_timeout_s + 1.0)


def wait_for_planner(address: str | None, timeout_s: float) -> None:
    if address is None:
        return
    from planner_api.client import connect_planner

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


def make_run_dir(cfg: TrainConfig) -> Path:
    run_dir = Path(cfg.run.run_dir or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    return run_dir


def _learner_gpus(ray, cfg: TrainConfig) -> float:
    """GPUs per learner rank: as asked, else one each when the cluster has one for every rank."""
    if cfg.run.learner_num_gpus >= 0:
        return cfg.run.learner_num_gpus
    if cfg.run.learner_device == "cpu":
        return 0.0
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= cfg.run.num_learners else 0.0


def train(cfg: TrainConfig, resume_state: dict | None = None) -> dict:
    """The driver loop (continuing `resume_state`, a checkpoint, when given). Returns the final
    evaluation table."""
    if cfg.run.algorithm == "laac":
        from learner.laac import train_laac

        return train_laac(cfg)
    if cfg.run.algorithm == "ilrec":
        from learner.ilrec import train_ilrec

        return train_ilrec(cfg)
    from torch.utils.tensorboard import SummaryWriter

    from learner.distributed import LearnerGroup
    from learner.rollout_pool import RolloutPool, rollout_seed, start_rollout_actors
    from rollout.world import World

    if cfg.run.resume and resume_state is None:
        resume_state = load_resume(cfg.run.resume)[1]
    resumed = resume_state or {}
    driver = resumed.get("driver", {})
    start = int(resumed.get("iteration", 0)) + 1
    if start > cfg.run.iterations:
        raise UsageError(f"the run is at iteration {start - 1} already; pass --iterations > {start - 1} to go on")
    # Everything below is checked before Ray starts: a bad checkpoint, data file or setting ends
    # the run with one line, having started nothing.
    try:
        if resumed:
            check_compatible(resumed, cfg)
        # Built here first so a user model is trained (and cached) once, before any actor needs it.
        world = World.build(cfg.world)
        cfg.validate_world(world)
    except ValueError as exc:  # DataError included: missing or malformed data, or settings it cannot meet
        raise UsageError(str(exc)) from None
    print(f"world: {cfg.world.dataset}, {world.num_items:,} items in {world.num_categories} categories, "
          f"{world.num_users:,} users, quit rule {cfg.world.quit_rule}", flush=True)
    ray = init_ray(cfg)
    run_dir = make_run_dir(cfg)
    if world.user_model.report:
        (run_dir / "user_model.json").write_text(json.dumps(world.user_model.report, indent=2))
    save_config(cfg, run_dir / "config.json")
    print(f"run directory: {run_dir}", flush=True)
    planner_replicas, planner_address = start_planner(ray, cfg)
    wait_for_planner(planner_address, cfg.run.planner_ready_timeout_s)
    if planner_address:
        print(f"planner: {cfg.run.planner_backend if not cfg.run.planner_address else 'external'} "
              f"at {planner_address}", flush=True)
        save_config(cfg, run_dir / "config.json")  # with the backend "auto" resolved to

    num_gpus = _learner_gpus(ray, cfg)
    try:
        learner = LearnerGroup(cfg.world, cfg.policy, cfg.ppo, cfg.run.seed, num_learners=cfg.run.num_learners,
                               device=cfg.run.learner_device, num_cpus=cfg.run.learner_num_cpus, num_gpus=num_gpus,
                               torch_threads=cfg.run.learner_torch_threads, timeout_s=cfg.run.learner_timeout_s)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    reflections = ReflectionPool(cfg.run.reflection_pool_size, cfg.run.reflection_temperature, cfg.run.seed)
    # What resumes cost (carried from resume to resume): see learner.checkpoint.work_lost.
    lost = {"resumes": 0, "resume_iterations_redone": 0, "resume_seconds_lost": 0.0, **driver.get("resume", {})}
    if resumed:
        learner.load_state(resumed["learner"])
        if "reflection_pool" in resumed:
            reflections.load_state(resumed["reflection_pool"])
        redone, seconds_lost = work_lost(run_dir / "metrics.jsonl", start - 1, float(driver.get("wall_seconds", 0.0)))
        dropped = trim_metrics(run_dir / "metrics.jsonl", start - 1)
        lost = {"resumes": lost["resumes"] + 1, "resume_iterations_redone": lost["resume_iterations_redone"] + redone,
                "resume_seconds_lost": lost["resume_seconds_lost"] + seconds_lost}
        print(f"resumed from iteration {start - 1} (policy v{resumed['learner']['version']}); "
              f"{dropped} metrics rows after it dropped ({redone} iterations to redo, {seconds_lost:.1f} s of "
              f"training lost)", flush=True)
    actors = start_rollout_actors(cfg, planner_address, rollout_seed(cfg.run.seed, start))
    weights_ref, version = learner.publish()
    per_iteration = cfg.run.batches_per_iteration or len(actors)
    # Actors collect asynchronously with the newest weights at submission; the learner takes
    # whichever batches finish first (so its lag is measured, not assumed zero).
    pool = RolloutPool(actors, weights_ref, version, max_in_flight=cfg.run.max_batches_in_flight,
                       max_policy_lag=cfg.run.max_policy_lag,
                       reflections=lambda: reflections.sample(cfg.run.reflections_per_plan))
    for key, value in driver.get("rollout", {}).items():
        setattr(pool.counters, key, value)
    chaos = DriverChaos(ray, cfg.run, actors, planner_replicas, driver.get("chaos"))

    writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start if resumed else None)
    metrics_file = open(run_dir / "metrics.jsonl", "a")
    totals = {**driver.get("totals", {}), "env_steps": int(driver.get("env_steps_total", 0))}
    wall_before = float(driver.get("wall_seconds", 0.0))
    t_start = time.perf_counter()

    def checkpoint(iteration: int, name: str) -> Path:
        state = {"learner": learner.state(), "config": cfg.to_dict(), "iteration": iteration,
                 "reflection_pool": reflections.state(),
                 "driver": {"iteration": iteration, "env_steps_total": totals["env_steps"],
                            "wall_seconds": wall_before + time.perf_counter() - t_start,
                            "rollout": pool.counters.to_dict(), "totals": dict(totals), "resume": dict(lost),
                            "chaos": dict(chaos.counts)}}
        return save_checkpoint(run_dir / "checkpoints" / name, state,
                               previous="previous.pt" if name == "latest.pt" else None)

    try:
        chaos.start()
        for iteration in range(start, cfg.run.iterations + 1):
            chaos.before_iteration(iteration)  # before collecting: a kill hits collects in flight
            t_iter = time.perf_counter()
            collected, dropped_before = [], len(pool.dropped_batch_ids)
            while len(collected) < per_iteration:
                collected.append(pool.next())
                for critique, session_return in collected[-1].stats.critiques:
                    reflections.add(critique, session_return)
            # In actor order, not arrival order: the update (minibatch shuffles) and the row's
            # means then depend on the seed alone, not on which actor finished first.
            collected.sort(key=lambda c: c.actor_index)
            t_update = time.perf_counter()
            update, (weights_ref, version) = learner.update_and_publish(
                chaos.corrupt(iteration, [c.batch_ref for c in collected]))
            update["update_seconds"] = time.perf_counter() - t_update
            pool.set_weights(weights_ref, version)
            elapsed = time.perf_counter() - t_iter
            row = iteration_metrics(iteration, [c.stats for c in collected], update, elapsed, totals,
                                    wall_before + time.perf_counter() - t_start)
            row.update(pool.counters.to_dict(), **chaos.row(), **lost,
                       dropped_batch_ids=pool.dropped_batch_ids[dropped_before:],
                       batches_in_flight=pool.in_flight, reflection_pool_size=len(reflections))
            if planner_replicas is not None:
                planner_replicas.ensure_serving()  # brings back replicas Ray restarted
                row.update({f"planner_{k}": v for k, v in planner_replicas.stats().items()})
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "iteration":
                    writer.add_scalar(key, value, iteration)
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
            print(progress_line(row, cfg.run.iterations), flush=True)
            if cfg.run.checkpoint_every and iteration % cfg.run.checkpoint_every == 0:
                checkpoint(iteration, "latest.pt")
            if cfg.run.time_budget_s and time.perf_counter() - t_start > cfg.run.time_budget_s:
                print(f"time budget of {cfg.run.time_budget_s:g} s reached after {iteration} iterations", flush=True)
                break
        chaos.stop()
        final = checkpoint(iteration, "final.pt")
        print(f"checkpoint: {final}", flush=True)
        results = {}
        if cfg.run.eval_users:
            weights = ray.get(weights_ref)
            users = evaluation_users(world, cfg.run.eval_users, cfg.run.eval_seed)
            results = evaluate_against_references(world, cfg.world, cfg.policy, cfg.rollout, planner_address,
                                                  weights, users, cfg.run.eval_seed)
            (run_dir / "eval.json").write_text(json.dumps(results, indent=2))
            print(evaluation_table(results), flush=True)
        return results
    finally:
        chaos.stop()
        writer.close()
        metrics_file.close()
        shut_down(ray, learner.shutdown, planner_replicas.stop if planner_replicas is not None else None)


def load_resume(run_dir: str) -> tuple[Path, dict]:
    """The checkpoint `--resume RUN_DIR` continues from."""
    try:
        return resume_checkpoint(run_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--resume {run_dir}: {exc}") from None


def given_flags(argv: list[str] | None) -> set[str]:
    """The config options ("section.field") given on this command line, whatever their values."""
    probe, unset = build_parser(), object()  # the same flags, defaulting to a marker
    probe.set_defaults(**{f"{section}.{f.name}": unset for section in SECTIONS
                          for f in dataclasses.fields(getattr(TrainConfig(), section))})
    return {dest for dest, value in vars(probe.parse_args(argv)).items() if value is not unset and "." in dest}


def run_experiments(target: str, preset: str, cfg: TrainConfig, argv: list[str] | None) -> None:
    """`--config FILE|DIR` (learner.experiments.run_table) with this command line's flags on top."""
    from learner.experiments import ExperimentError, run_table

    try:
        run_table(target, preset, cfg, given_flags(argv), train)
    except ExperimentError as exc:
        raise UsageError(str(exc)) from None


def resume_options(cfg: TrainConfig, argv: list[str] | None) -> tuple[TrainConfig, dict]:
    """The config and checkpoint of `--resume`: the run's saved config with the options given
    on this command line on top (refused when they change the world, the policy or PPO)."""
    path, state = load_resume(cfg.run.resume)
    given = given_flags(argv)
    if cfg.run.run_dir and Path(cfg.run.run_dir).resolve() != Path(cfg.run.resume).resolve():
        raise UsageError(f"--run-dir {cfg.run.run_dir} and --resume {cfg.run.resume} name different runs")
    try:
        resumed = resumed_config(state["config"], cfg, given)
    except ValueError as exc:
        raise UsageError(f"--resume {cfg.run.resume}: {exc}") from None
    resumed.run.run_dir = resumed.run.resume = cfg.run.resume
    print(f"resuming {cfg.run.resume} from {path.name} (iteration {state.get('iteration', 0)})", flush=True)
    return resumed, state


def cli(argv: list[str] | None = None) -> int:
    parser = build_parser(description=__doc__)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.config:
            run_experiments(args.config, args.preset, cfg, argv)
            return 0
        if args.preset:
            parser.error("--preset needs --config")
        resume_state = None
        if cfg.run.resume:
            cfg, resume_state = resume_options(cfg, argv)
        try:
            cfg.validate()
        except ValueError as exc:  # one line naming the option (not argparse's 50-line usage)
            print(f"{parser.prog}: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        train(cfg, resume_state)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    # Under `python -m` this file is __main__, a second copy of the module: the algorithm modules
    # import learner.main (UsageError, the start-up helpers), and their UsageError must be the one
    # cli catches, so run the imported copy's cli.
    from learner.main import cli as imported_cli

    sys.exit(imported_cli())
