"""This loop against RLlib's PPO, in one run on the same machine and the same world:

1. the floor: the simulator plus the policy's forward pass alone, in one process (one
   `RolloutWorker` collecting with no planner, no Ray, no learner), the same worker planning every
   step with the heuristic rule in its own process (the planner's work without the service), and
   our rollout path end to end against the floor: the rollout actors planning every step through the heuristic planner service
   over gRPC, their Arrow batches fetched through the object store, with no learner. The three
   are timed in turns, in `WINDOWS` rounds, and each ratio is the median of its rounds' ratios
   (the machine is shared, and a rate drifts within minutes);
2. ours: `python -m learner.main` with the heuristic planner (the actor-learner loop end to end:
   rollout actors, planner service, learner, weight broadcast);
3. RLlib: PPO (new API stack) on the same world through `rollout.vector_env` (gymnasium
   VectorEnv), with as many env runners as we have rollout actors, as many envs per runner as
   users per actor, the same network (our ActorCritic as an RLModule, `policy/rllib_module.py`;
   `--rllib-network mlp`: RLlib's MLP of about our parameter count instead), the same PPO
   settings, trained until it has sampled as many environment steps as ours did.

Reported: environment steps per second end to end (wall time of training, start-up excluded on
both sides), the mean episode return over the last iterations at the same number of environment
steps (training episodes on both sides), and the ratios ours/RLlib, our rollout path/floor and
(for context) our training throughput/floor.

    python benchmarks/vs_rllib.py [--actors 2] [--users 64] [--iterations 30]

Goals (issue 5): >= 2x RLlib's throughput with the heuristic planner, >= 60% of the floor, and no
worse return. Writes benchmarks/results/vs_rllib.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import write_result  # noqa: E402


def our_param_count(dataset: str) -> int:
    from policy.networks import ActorCritic, PolicyConfig
    from rollout.world import World, WorldConfig, policy_spec

    cfg = WorldConfig(dataset=dataset)
    world = World.build(cfg, log=lambda line: None)
    return sum(p.numel() for p in ActorCritic.from_spec(policy_spec(cfg, world), PolicyConfig()).parameters())


def rllib_hidden(target: int, obs_dim: int, action_dim: int) -> int:
    """Width h of RLlib's default [h, h] encoder (shared by the policy and value heads, as ours
    is) whose parameter count is closest to `target`."""
    def count(h: int) -> int:
        encoder = obs_dim * h + h + h * h + h
        return encoder + h * 2 * action_dim + 2 * action_dim + h + 1
    return min(range(4, 1024), key=lambda h: abs(count(h) - target))


WINDOWS = 3
"""Rounds of measurement: each round times the floor, the in-process planner and our rollout path
one after another, `--floor-seconds / WINDOWS` each, and a ratio is the median of its rounds' ratios.
The machine is shared: a rate drifts by tens of percent within minutes (the floor measured 7,000
to 10,800 env-steps/s in one afternoon), so parts timed minutes apart compared their moments."""


def floor_worker(dataset: str, users: int, seed: int, in_process_planner: bool = False):
    """The floor's worker, warmed up: the simulator plus the policy's forward pass, one process, no
    planner (with `in_process_planner`: planning every step with the heuristic rule in the same
    process, no gRPC, which tells the planner's own work from the service's transport)."""
    import torch

    from policy.networks import PolicyConfig
    from rollout.actor import RolloutConfig, RolloutWorker
    from rollout.world import WorldConfig

    torch.set_num_threads(1)
    rollout = RolloutConfig(users_per_actor=users, use_planner=in_process_planner, plan_every=1)
    worker = RolloutWorker(WorldConfig(dataset=dataset), PolicyConfig(), rollout,
                           "in-process" if in_process_planner else None, 0, seed)
    worker.collect()  # warm-up
    return worker


def worker_rate(worker, seconds: float) -> float:
    """Env steps/s of `worker` collecting for `seconds`."""
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, stats = worker.collect()
        steps += stats.env_steps
    return steps / (time.perf_counter() - t0)


class RolloutPath:
    """This loop's rollout path end to end, without the learner: the heuristic planner service as a
    Ray actor, `--actors` rollout actors planning over gRPC every step and acting with fixed
    weights, every batch fetched by the driver from the object store. Started once; `rate`
    measures one window, and between windows the actors are idle."""

    def __init__(self, args):
        import ray

        from learner.config import TrainConfig
        from learner.rollout_pool import start_rollout_actors
        from learner.runtime import wait_for_planner
        from llm_server.replicas import PlannerReplicas

        cfg = TrainConfig()
        cfg.world.dataset = args.dataset
        cfg.rollout.num_rollout_actors, cfg.rollout.users_per_actor, cfg.rollout.plan_every = args.actors, args.users, 1
        ray.init(num_cpus=max(2, args.actors + 1), include_dashboard=False, _node_ip_address="127.0.0.1",
                 logging_level=logging.WARNING)
        self.replicas = None
        try:
            self.replicas = PlannerReplicas(1, "heuristic", {}, "127.0.0.1")
            wait_for_planner(self.replicas.target(), 60.0)  # else the first calls fall back, skipping gRPC
            self.actors = start_rollout_actors(cfg, self.replicas.target(), args.seed)
            ray.get([a.collect.options(num_returns=2).remote()[1] for a in self.actors])  # warm-up
        except BaseException:
            self.close()
            raise
        self.batches = self.fallbacks = 0

    def rate(self, seconds: float) -> float:
        """Env steps/s over `seconds`: the batches that arrive in the window (the calls still out at
        its end are waited for and not counted)."""
        import ray

        pending = {}
        for actor in self.actors:
            batch_ref, stats_ref = actor.collect.options(num_returns=2).remote()
            pending[batch_ref] = (actor, stats_ref)
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            ready, _ = ray.wait(list(pending), num_returns=1)
            actor, stats_ref = pending.pop(ready[0])
            steps += ray.get(ready[0]).num_rows  # the batch itself, through the object store
            self.fallbacks += ray.get(stats_ref).planner_fallbacks
            self.batches += 1
            batch_ref, stats_ref = actor.collect.options(num_returns=2).remote()
            pending[batch_ref] = (actor, stats_ref)
        wall = time.perf_counter() - t0
        ray.get([stats_ref for _, stats_ref in pending.values()])
        return steps / wall

    def close(self) -> None:
        import ray

        try:
            if self.replicas is not None:
                self.replicas.stop()
        finally:
            ray.shutdown()


def measure_rates(args) -> dict:
    """The floor, the in-process planner and our rollout path, timed in turns (`WINDOWS`)."""
    path = RolloutPath(args)
    try:
        floor, planned = floor_worker(args.dataset, args.users, args.seed), \
            floor_worker(args.dataset, args.users, args.seed, in_process_planner=True)
        rounds = []
        for _ in range(WINDOWS):
            window = args.floor_seconds / WINDOWS
            rounds.append({"floor": worker_rate(floor, window), "in_process": worker_rate(planned, window),
                           "rollout": path.rate(window)})
            print("  round: " + ", ".join(f"{k} {v:,.0f}" for k, v in rounds[-1].items()) + " env-steps/s", flush=True)
    finally:
        path.close()
    if path.fallbacks:  # a plan answered in-process skips the gRPC path this measures
        raise SystemExit(f"the rollout path fell back to the local heuristic {path.fallbacks} times: not measured")

    def median(fn) -> float:
        return float(np.median([fn(r) for r in rounds]))

    return {"rounds": rounds, "floor": median(lambda r: r["floor"]), "in_process": median(lambda r: r["in_process"]),
            "rollout": {"env_steps_per_s": median(lambda r: r["rollout"]), "batches": path.batches,
                        "planner_fallbacks": path.fallbacks},
            "rollout_over_floor": median(lambda r: r["rollout"] / r["floor"]),
            "in_process_over_floor": median(lambda r: r["in_process"] / r["floor"])}


def run_ours(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "learner.main", "--planner-backend", "heuristic", "--dataset", args.dataset,
               "--num-rollout-actors", str(args.actors), "--users-per-actor", str(args.users),
               "--iterations", str(args.iterations), "--time-budget-s", "0", "--eval-users", "0",
               "--checkpoint-every", "0", "--seed", str(args.seed), "--run-dir", tmp]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"learner.main failed:\n{proc.stderr[-3000:]}")
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    last = rows[-args.tail:]
    # From the end of the first iteration on: actor start-up is not counted (RLlib's build is not either).
    steps = rows[-1]["env_steps_total"] - rows[0]["env_steps_total"]
    wall = rows[-1]["wall_seconds"] - rows[0]["wall_seconds"]
    return {"env_steps": int(rows[-1]["env_steps_total"]), "wall_s": float(wall),
            "env_steps_per_s": steps / max(wall, 1e-9),
            "update_seconds": float(np.mean([r.get("update_seconds", float("nan")) for r in rows[1:]])),
            "return_last": float(np.mean([r["Rcum"] for r in last])),
            "length_last": float(np.mean([r["Tint"] for r in last])), "iterations": len(rows),
            # Where the time goes (learner.metrics_row.time_shares), weighted by each iteration's time.
            "time_shares": {key: float(np.average([r[key] for r in rows[1:]], weights=[r["seconds"] for r in rows[1:]]))
                            for key in rows[-1] if key.endswith("_share") and key != "planner_wait_share"}}


def run_rllib(args, env_steps: int, params_target: int) -> dict:
    import gymnasium
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from learner.ppo import PPOConfig as OurPPO
    from rollout.vector_env import ENV_ID
    from rollout.world import World, WorldConfig, policy_spec

    world_cfg = WorldConfig(dataset=args.dataset)
    world = World.build(world_cfg, log=lambda line: None)
    features = world.item_features.shape[1]
    hidden = rllib_hidden(params_target, world_cfg.history_len * (features + 1), features)
    ours = OurPPO()
    env_config = {"world_config": dataclasses.asdict(world_cfg), "seed": args.seed}
    if args.rllib_network == "ours":  # the very network our learner trains, as an RLModule
        from ray.rllib.core.rl_module.rl_module import RLModuleSpec

        from policy.rllib_module import ActorCriticRLModule

        env_config["obs_mode"] = "dict"
        spec = policy_spec(world_cfg, World.build(world_cfg, log=lambda line: None))
        module = {"rl_module_spec": RLModuleSpec(module_class=ActorCriticRLModule, model_config={
            "item_features": spec.item_features, "history_len": spec.history_len,
            "num_categories": spec.num_categories, "max_steps": spec.max_steps, "slate_size": spec.slate_size,
            "item_category": spec.item_category})}
    else:  # RLlib's default MLP of about our parameter count
        module = {"model_config": DefaultModelConfig(fcnet_hiddens=[hidden, hidden], vf_share_layers=True)}
    # One of our iterations: every actor's users to the end of their episodes.
    batch = int(args.actors * args.users * world_cfg.max_steps * 0.75)
    ray.init(num_cpus=max(2, args.actors + 1), include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level=logging.WARNING)
    try:
        config = (
            PPOConfig()
            .environment(env=f"rollout.vector_env:{ENV_ID}", env_config=env_config)
            .env_runners(num_env_runners=args.actors, num_envs_per_env_runner=args.users,
                         rollout_fragment_length="auto",
                         gym_env_vectorize_mode=gymnasium.VectorizeMode.VECTOR_ENTRY_POINT)
            .training(train_batch_size_per_learner=batch, minibatch_size=ours.minibatch_size,
                      num_epochs=ours.epochs, lr=ours.lr, gamma=ours.gamma, lambda_=ours.gae_lambda,
                      clip_param=ours.clip_coef, vf_loss_coeff=ours.value_coef, entropy_coeff=ours.entropy_coef,
                      grad_clip=ours.max_grad_norm)
            .rl_module(**module)
            .debugging(seed=args.seed)
        )
        algo = config.build_algo()
        try:
            params = sum(p.numel() for p in algo.get_module().parameters())
            results, sampled, t0 = [], 0, time.perf_counter()
            while sampled < env_steps:
                results.append(algo.train())
                sampled = int(results[-1]["env_runners"]["num_env_steps_sampled_lifetime"])
            wall = time.perf_counter() - t0
        finally:
            algo.stop()
    finally:
        ray.shutdown()
    last = results[-args.tail:]
    return {"env_steps": sampled, "wall_s": wall, "env_steps_per_s": sampled / wall, "params": params,
            "network": args.rllib_network, "hidden": [hidden, hidden] if args.rllib_network == "mlp" else None,
            "train_batch": batch, "iterations": len(results),
            "return_last": float(np.mean([r["env_runners"]["episode_return_mean"] for r in last])),
            "length_last": float(np.mean([r["env_runners"]["episode_len_mean"] for r in last]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actors", type=int, default=2, help="rollout actors = RLlib env runners (default: 2)")
    parser.add_argument("--users", type=int, default=64, help="users per actor = envs per env runner (default: 64)")
    parser.add_argument("--iterations", type=int, default=30, help="our training iterations (default: 30)")
    parser.add_argument("--tail", type=int, default=3, help="iterations averaged for the return (default: 3)")
    parser.add_argument("--floor-seconds", type=float, default=15.0,
                        help="how long the floor and our rollout path are measured (default: 15)")
    parser.add_argument("--rllib-network", choices=("ours", "mlp"), default="ours",
                        help="RLlib trains our ActorCritic as an RLModule (ours: the same network, the default) or "
                             "its default MLP of about our parameter count (mlp)")
    parser.add_argument("--dataset", default="synthetic",
                        help="the world every part runs on (default synthetic, the systems world; the floor, our rollout "
                        "path, our training and RLlib's all use it)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.actors, args.users, args.tail) < 1 or args.iterations < 2:
        parser.error("--actors, --users and --tail must be >= 1, --iterations >= 2")

    print("the floor (simulator + policy forward, one process), the same planning every step in its process "
          "(the heuristic rule, no gRPC) and our rollout path (actors + planner service + object store, no "
          f"learner), in {WINDOWS} rounds ...", flush=True)
    rates = measure_rates(args)
    floor, planned, rollout = rates["floor"], rates["in_process"], rates["rollout"]
    print(f"  {rollout['env_steps_per_s']:,.0f} env-steps/s\nours (learner.main, heuristic planner) ...", flush=True)
    ours = run_ours(args)
    print(f"  {ours['env_steps_per_s']:,.0f} env-steps/s over {ours['env_steps']:,} steps; where the time goes: "
          + ", ".join(f"{key.removesuffix('_share')} {100 * share:.0f}%" for key, share in ours["time_shares"].items())
          + "\nRLlib PPO ...", flush=True)
    params = our_param_count(args.dataset)
    rllib = run_rllib(args, ours["env_steps"], params)
    print(f"  {rllib['env_steps_per_s']:,.0f} env-steps/s over {rllib['env_steps']:,} steps", flush=True)
    ratios = {"ours_over_rllib_throughput": (ours["env_steps_per_s"] / rllib["env_steps_per_s"], 2.0),
              "ours_rollout_over_floor": (rates["rollout_over_floor"], 0.8),
              "floor_planning_in_process_over_floor": (rates["in_process_over_floor"], None),
              "ours_training_over_floor": (ours["env_steps_per_s"] / floor, None),
              "ours_over_rllib_return": (ours["return_last"] / max(rllib["return_last"], 1e-9), 1.0)}
    print(f"\n{'':<12}{'env-steps/s':>12}{'return':>9}{'length':>8}{'params':>9}")
    print(f"{'ours':<12}{ours['env_steps_per_s']:>12,.0f}{ours['return_last']:>9.3f}{ours['length_last']:>8.2f}{params:>9,}")
    print(f"{'RLlib PPO':<12}{rllib['env_steps_per_s']:>12,.0f}{rllib['return_last']:>9.3f}"
          f"{rllib['length_last']:>8.2f}{rllib['params']:>9,}")
    print(f"{'floor':<12}{floor:>12,.0f}")
    print(f"{'our rollouts':<12}{rollout['env_steps_per_s']:>12,.0f}  ({args.actors} actors, no learner)")
    for name, (value, goal) in ratios.items():
        print(f"{name:<30}{value:>8.2f}" + (f"  (goal >= {goal})" if goal is not None else "  (context)"))
    path = write_result("vs_rllib", {"floor_env_steps_per_s": floor, "floor_planning_in_process_env_steps_per_s": planned,
                                     "ours_rollout": rollout, "rounds": rates["rounds"],
                                     "ours": ours | {"params": params},
                                     "rllib": rllib, "actors": args.actors, "users": args.users,
                                     "dataset": args.dataset,
                                     "ratios": {k: {"value": v, "goal": g} for k, (v, g) in ratios.items()}})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
