"""The heuristic planner on its own: its exposure penalty and decay swept, no training.

    python -m lab.planner_sweep [--users 189] [--seed 2024] [--categories 8] [--plan-every 1]
    python -m lab.planner_sweep --address 127.0.0.1:50051 [--plan-every 1]   # a running planner service

For each (penalty, decay) cell, the planner plans every user of the evaluation set through the
same RolloutWorker that training uses (in process), and three fixed scorers pick the slate inside
its categories: the true model now (greedy+planner, oracle: the planner quality of the LERL
table), ridge-exposure-fresh (the best rule that reads only what the policy sees: the planner's
worth to a policy that cannot read the true model) and posterior-exposure (what the observation
supports when the population's model is known: a trained row's ceiling inside these categories).
The first two without the planner are printed first,
and the random category sets' planner quality comes from the LERL table (random backend).
The chosen cell is planner_api.heuristics' EXPOSURE_PENALTY and EXPOSURE_DECAY
(results/lerl-movielens/sweep.md).

With --address, no sweep: the planner service running there (`python -m llm_server --backend
vllm`, the LLM) plans, and the same three scorers measure it (the planner quality of an LLM row,
at any --plan-every, with no training run around it).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import planner_api.heuristics as heuristics
from learner.evaluation import evaluate_reference, evaluate_worker, evaluation_users
from planner_api.client import IN_PROCESS_ADDRESS
from policy.networks import PolicyConfig
from rollout.actor import RolloutConfig
from rollout.world import World, WorldConfig

PENALTIES = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)
DECAYS = (0.6, 0.8, 0.9)


def planner_quality(world: World, cfg: WorldConfig, rollout: RolloutConfig, users, seed: int,
                    address: str) -> dict[str, float]:
    """Rcum and Tint of the oracle's, the rule's and the population posterior's slates inside the categories of the planner at
    `address`, and its fallbacks (a planner that fell back was not measured)."""
    out = {"fallbacks": 0}
    for name, mode in (("greedy+planner", "oracle"), ("ridge-exposure-fresh+planner", "rule"),
                       ("posterior-exposure+planner", "posterior")):
        m = evaluate_worker(world, cfg, PolicyConfig(), rollout, address, None, mode, users, seed)
        out[f"{name} Rcum"], out[f"{name} Tint"] = m["Rcum"], m["Tint"]
        out["fallbacks"] += m["planner_fallbacks"]
    return out


def sweep_cell(world: World, cfg: WorldConfig, rollout: RolloutConfig, users, seed: int,
               penalty: float, decay: float) -> dict[str, float]:
    """`planner_quality` of the in-process heuristic planner at this exposure penalty and decay."""
    saved = heuristics.EXPOSURE_PENALTY, heuristics.EXPOSURE_DECAY
    heuristics.EXPOSURE_PENALTY, heuristics.EXPOSURE_DECAY = penalty, decay   # read at each call
    try:
        return planner_quality(world, cfg, rollout, users, seed, IN_PROCESS_ADDRESS)
    finally:
        heuristics.EXPOSURE_PENALTY, heuristics.EXPOSURE_DECAY = saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.planner_sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=189, help="held-out evaluation users (default %(default)s)")
    parser.add_argument("--seed", type=int, default=2024, help="evaluation seed (default %(default)s)")
    parser.add_argument("--categories", type=int, default=8, help="planned categories (default %(default)s)")
    parser.add_argument("--plan-every", type=int, default=1, help="steps between plans (default %(default)s)")
    parser.add_argument("--titles", action="store_true", help="send the titles of shown items in plan requests "
                        "(RolloutConfig.send_titles; only an LLM reads them)")
    parser.add_argument("--address", default="", help="measure the planner service at this host:port instead of "
                        "sweeping the in-process heuristic (start one with python -m llm_server)")
    args = parser.parse_args(argv)
    if args.users < 1 or args.categories < 1 or args.plan_every < 1:
        parser.error("--users, --categories and --plan-every must be >= 1")
    cfg = WorldConfig()
    world = World.build(cfg)
    if args.categories > world.num_categories:
        parser.error(f"--categories must be <= the world's {world.num_categories} categories")
    users = evaluation_users(world, args.users, args.seed)
    rollout = RolloutConfig(plan_categories=args.categories, plan_pool=max(8, args.categories),
                            plan_every=args.plan_every, plan_max_age=0, plan_reuse_batches=0, prime_plans_s=0,
                            # an LLM plans every user of the set in one call: a longer deadline
                            planner_timeout_s=300.0 if args.address else 30.0, send_titles=args.titles)
    flat = replace(rollout, use_planner=False)
    print(f"{len(users)} users, {args.categories} categories, a plan every {args.plan_every} step(s)"
          + (", with titles" if args.titles else ""))
    print(f"  no planner: greedy {evaluate_reference(world, cfg, 'greedy', users, args.seed)['Rcum']:.3f}, "
          f"ridge-exposure-fresh {evaluate_worker(world, cfg, PolicyConfig(), flat, None, None, 'rule', users, args.seed)['Rcum']:.3f}")
    if args.address:
        cell = planner_quality(world, cfg, rollout, users, args.seed, args.address)
        print(f"  planner at {args.address} | greedy+planner {cell['greedy+planner Rcum']:.3f} / "
              f"{cell['greedy+planner Tint']:.2f} | ridge-exposure-fresh+planner "
              f"{cell['ridge-exposure-fresh+planner Rcum']:.3f} / {cell['ridge-exposure-fresh+planner Tint']:.2f}"
              f" | posterior-exposure+planner {cell['posterior-exposure+planner Rcum']:.3f} / "
              f"{cell['posterior-exposure+planner Tint']:.2f} | fallbacks {cell['fallbacks']}")
        return 0
    print("  penalty  decay | greedy+planner Rcum / Tint | ridge-exposure-fresh+planner Rcum / Tint"
          " | posterior-exposure+planner Rcum / Tint")
    for penalty in PENALTIES:
        for decay in (DECAYS if penalty else DECAYS[1:2]):   # no penalty: the decay does nothing
            cell = sweep_cell(world, cfg, rollout, users, args.seed, penalty, decay)
            print(f"  {penalty:7.1f} {decay:6.1f} | {cell['greedy+planner Rcum']:8.3f} / {cell['greedy+planner Tint']:5.2f}"
                  f"        | {cell['ridge-exposure-fresh+planner Rcum']:8.3f} / "
                  f"{cell['ridge-exposure-fresh+planner Tint']:5.2f} | {cell['posterior-exposure+planner Rcum']:8.3f} / "
                  f"{cell['posterior-exposure+planner Tint']:5.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
