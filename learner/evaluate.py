"""Evaluate reference policies (and a trained checkpoint) on a fixed, seeded set of users:

    python -m learner.evaluate --dataset ml-100k --data-dir ../shared/data/ml-100k \\
        --policies random,popular,greedy,round-robin [--checkpoint runs/X/checkpoints/final.pt]

Every policy meets the same users and the same dice (learner.evaluation)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from learner.checkpoint import load_checkpoint
from learner.config import TrainConfig, add_config_flags, config_from_args
from learner.evaluation import (
    evaluate_reference,
    evaluate_worker,
    evaluation_table,
    evaluation_users,
    llm_user_tag,
    with_gap_closed,
)
from planner_api.client import PlannerClient
from rollout.llm_world import ensure_calibration
from rollout.reference_policies import ORACLES, REFERENCE_POLICIES
from rollout.world import World


def llm_user_world(world_cfg, world: World, args):
    """In an llm or hybrid world: the client of --llm-user-address, with world_cfg's calibration made
    (or found) and set; None in the mf world."""
    if world_cfg.user_model == "mf":
        return None
    if not args.llm_user_address:
        raise ValueError(f"user model {world_cfg.user_model} needs --llm-user-address HOST:PORT of the LLM service "
                         "(start one: python -m llm_server --backend vllm)")
    client = PlannerClient(args.llm_user_address)
    client.wait_ready(120.0)
    world_cfg.llm_user_calibration = ensure_calibration(world, world_cfg, client, llm_user_tag("vllm", args.llm_user_model))
    return client


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
    parser.add_argument("--eval-user-model", default="", choices=["", "mf", "llm", "hybrid"],
                        help="who answers the users in this evaluation, whatever the checkpoint was trained with: "
                             "mf (the learned model), llm or hybrid (the LLM user; needs --llm-user-address); "
                             "'' = the world's --user-model (with --checkpoint: the checkpoint's). Oracle references "
                             "read every item's response and are left out of llm and hybrid worlds")
    parser.add_argument("--llm-user-address", default="", metavar="HOST:PORT",
                        help="the LLM service answering the users (start one: python -m llm_server --backend vllm)")
    parser.add_argument("--llm-user-model", default="smollm2",
                        help="the model that service serves: names its calibration and its replay cache")
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
    if args.eval_user_model:
        cfg.world = replace(cfg.world, user_model=args.eval_user_model)
    try:
        cfg.world.validate()
        world = World.build(cfg.world)
        llm_client = llm_user_world(cfg.world, world, args)
    except ValueError as exc:
        parser.error(str(exc))
    if llm_client is not None and (left := [n for n in names if n in ORACLES]):
        print(f"left out in the {cfg.world.user_model} world (oracles read every item's response): {', '.join(left)}")
        names = [n for n in names if n not in ORACLES]
    users = evaluation_users(world, args.users, args.eval_seed)
    results = {}
    try:
        for name in tqdm(names, desc="evaluating", unit="policy", disable=not sys.stderr.isatty()):
            results[name] = evaluate_reference(world, cfg.world, name, users, args.eval_seed, llm_client=llm_client)
        if trained is not None:
            planner = trained.run.planner_address if trained.run.planner_address not in ("",) else "in-process"
            results["trained"] = evaluate_worker(world, replace(trained.world, user_model=cfg.world.user_model,
                                                                llm_user_calibration=cfg.world.llm_user_calibration),
                                                 trained.policy, trained.rollout, planner if args.checkpoint else None,
                                                 state["learner"]["model"], "mean", users, args.eval_seed,
                                                 llm_user_address=args.llm_user_address or None)
    finally:
        if llm_client is not None:
            llm_client.close()
    results = with_gap_closed(results)
    print(evaluation_table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
