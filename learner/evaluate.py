"""Evaluate reference policies (and a trained checkpoint) on a fixed, seeded set of users:

    python -m learner.evaluate --dataset ml-100k --data-dir ../shared/data/ml-100k \\
        --policies random,popular,greedy,round-robin [--checkpoint runs/X/checkpoints/final.pt]

Every policy meets the same users and the same dice (learner.evaluation)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from learner.checkpoint import load_checkpoint
from learner.config import TrainConfig, add_config_flags, config_from_args
from learner.evaluation import (
    evaluate_reference,
    evaluate_worker,
    evaluation_table,
    evaluation_users,
    with_gap_closed,
)
from rollout.reference_policies import REFERENCE_POLICIES
from rollout.world import World


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m learner.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default=",".join(REFERENCE_POLICIES),
                        help=f"comma-separated reference policies among {', '.join(REFERENCE_POLICIES)} (default: all)")
    parser.add_argument("--checkpoint", default="", help="also evaluate this trained checkpoint (its world settings "
                        "are used; planning runs in-process with the heuristic rule unless --planner-address is set)")
    parser.add_argument("--users", type=int, default=256, help="evaluation users (default 256)")
    parser.add_argument("--eval-seed", type=int, default=2024, help="picks the users and seeds their dice (default 2024)")
    parser.add_argument("--out", default="", help="also write the results as JSON to this file")
    add_config_flags(parser, ("world",))
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    names = [n for n in args.policies.split(",") if n]
    unknown = sorted(set(names) - set(REFERENCE_POLICIES))
    if unknown:
        parser.error(f"unknown policies {unknown}; known: {', '.join(REFERENCE_POLICIES)}")
    if args.users < 1:
        parser.error("--users must be >= 1")
    trained = None
    if args.checkpoint:
        try:
            state = load_checkpoint(args.checkpoint)
        except (FileNotFoundError, ValueError) as exc:
            parser.error(str(exc))
        trained = TrainConfig.from_dict(state["config"])
        cfg.world = trained.world
    try:
        cfg.world.validate()
        world = World.build(cfg.world)
    except ValueError as exc:
        parser.error(str(exc))
    users = evaluation_users(world, args.users, args.eval_seed)
    results = {}
    for name in tqdm(names, desc="evaluating", unit="policy", disable=not sys.stderr.isatty()):
        results[name] = evaluate_reference(world, cfg.world, name, users, args.eval_seed)
    if trained is not None:
        planner = trained.run.planner_address if trained.run.planner_address not in ("",) else "in-process"
        results["trained"] = evaluate_worker(world, trained.world, trained.policy, trained.rollout,
                                             planner if args.checkpoint else None, state["learner"]["model"],
                                             "mean", users, args.eval_seed)
    results = with_gap_closed(results)
    print(evaluation_table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
