"""Does the LLM user's stay-or-leave answer say when real users end a session?

Held-out users' next logged sessions (rollout.log_replay.logged_sessions: ratings less than an hour
apart, in the period the learned model never saw), cut into slates of the world's size. After each
of the first `--max-slates` whole slates, the Respond call is asked to leave (rollout.log_replay.
leave_cases: the persona from the logs before the held-out period, the session so far with the
logged likes, the slate); the label is whether the log shows no further whole slate. Scored as
AUC of P(leave) against the label, beside two anchors that need no LLM: the rule user's leave
(`heuristic_respond`: a slate the user's category record dislikes) and the slate's index in the
session (later slates end sessions more often). An answer that carries the logs' signal scores
above both; one at 0.5 says nothing, and the worlds then keep their quit rule (rollout.users).

    python benchmarks/leave_fidelity.py [--users 96] [--max-slates 4] [--planner HOST:PORT]

Writes benchmarks/results/leave_fidelity.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import write_result  # noqa: E402
from benchmarks.user_fidelity import add_service_arguments, model_tag, start_service  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_service_arguments(parser)
    parser.add_argument("--users", type=int, default=96, help="held-out users drawn (those with a whole logged slate count)")
    parser.add_argument("--max-slates", type=int, default=4, help="slates of a session asked about at most")
    parser.add_argument("--seed", type=int, default=0, help="draws the users")
    args = parser.parse_args(argv)
    if args.users < 1 or args.max_slates < 1:
        parser.error("--users and --max-slates must be >= 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from learner.provenance import provenance
    from planner_api.heuristics import heuristic_respond
    from protos import planner_pb2
    from rollout.llm_user import LLMUser
    from rollout.log_replay import leave_cases, logged_sessions
    from rollout.user_model import auc
    from rollout.world import World, WorldConfig

    code = provenance(argv)  # at the start: the code that runs is the code of this commit
    cfg = WorldConfig(dataset=args.dataset)
    world = World.build(cfg, log=lambda line: None)
    rng = np.random.default_rng([args.seed, 0x1EA7E])
    # One slate past the bound, so that a session cut by it is not read as one that ended.
    sessions = logged_sessions(world, rng.permutation(world.eval_users)[:args.users], cfg.slate_size, args.max_slates + 1)
    cases, ended, index = leave_cases(world, sessions, cfg.slate_size, args.max_slates)
    if not cases or ended.all() or not ended.any():
        raise SystemExit(f"{len(sessions)} users with a logged session gave {len(cases)} slates: too few to score; "
                         "draw more --users")
    print(f"{len(sessions)} held-out users, {len(cases)} slates, {ended.mean():.2f} of them the session's last",
          flush=True)
    host, client = start_service(args)
    try:
        llm = LLMUser(client, list(world.category_names), timeout_s=600.0)
        started = time.perf_counter()
        leave = np.asarray([answer.leave for answer in llm.answer(cases)])
        seconds = time.perf_counter() - started
    finally:
        client.close()
        if host is not None:
            host.stop()
    rule = heuristic_respond(planner_pb2.RespondRequest(category_names=list(world.category_names), cases=cases))
    rule_leave = np.asarray([r.leave for r in rule.responses])
    result = {
        "command": "python benchmarks/leave_fidelity.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "provenance": {"commit": code["commit"], "dirty": code["dirty"]},
        "dataset": args.dataset, "backend": args.backend, "model_tag": model_tag(args),
        "users": len(sessions), "slates": len(cases), "ended_share": float(ended.mean()),
        "seconds": seconds, "fallback_cases": llm.stats.fallback_cases,
        "auc": {"llm": auc(leave, ended), "rule": auc(rule_leave, ended), "slate_index": auc(index.astype(float), ended)},
        "leave_mean": {"llm": float(leave.mean()), "llm_where_ended": float(leave[ended].mean()),
                       "llm_where_stayed": float(leave[~ended].mean())},
    }
    path = write_result("leave_fidelity", result)
    print(f"AUC of P(leave) against the logged session's end: LLM {result['auc']['llm']:.3f}, rule user "
          f"{result['auc']['rule']:.3f}, slate index {result['auc']['slate_index']:.3f}; mean P(leave) "
          f"{result['leave_mean']['llm_where_ended']:.3f} where it ended, {result['leave_mean']['llm_where_stayed']:.3f} "
          f"where it went on ({seconds:.0f} s, {llm.stats.fallback_cases} cases fallen back); {path}")
    return result


if __name__ == "__main__":
    main()
