"""What the planner contract costs per rollout step, against the step it rides on.

A rollout actor asks the planner for a plan every step (heuristic planner) for its whole batch of
users, each carrying the session so far. Measured here, per step of `--users` users with
`--history` entries each (a late step of a 20-step session of slates of 6 is ~120):

- the client's side: `SessionPlanner.record` and building the request, serialising it;
- the server's side: parsing it, `validate_plan_request`, `heuristic_plan`;
- the reference, in the same run: the simulator plus the policy's forward pass for the same
  users (one `RolloutWorker` step with no planner), the work the plan is overhead on.

    python benchmarks/contract.py [--users 64] [--history 60]

Reported: milliseconds per step for each part and their sum over the reference step (the share
the planner path adds on top of the simulator and policy; below 1 means planning costs less than
the step itself). Writes benchmarks/results/contract.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import write_result  # noqa: E402


def best_ms(fn, n: int = 50, reps: int = 5) -> float:
    """The best of `reps` means over `n` calls, in milliseconds (the least disturbed reading)."""
    fn()
    means = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        means.append((time.perf_counter() - t0) / n * 1000)
    return min(means)


def planner_parts(users: int, history: int, seed: int) -> dict:
    from protos import planner_pb2
    from planner_api.contract import validate_plan_request
    from planner_api.heuristics import heuristic_plan
    from planner_api.history import history_length
    from rollout.session_planner import SessionPlanner
    from rollout.world import World, WorldConfig

    cfg = WorldConfig(dataset="synthetic")
    world = World.build(cfg, log=lambda line: None)
    rng = np.random.default_rng(seed)
    planner = SessionPlanner(world, None, 4, 1, 0, 1.0, seed, False, cfg.slate_size, pool_size=8)
    planner.start(users, ["a critique of an earlier session"])
    active = np.ones(users, bool)
    steps = max(1, history // cfg.slate_size)
    slates = rng.integers(world.num_items, size=(steps, users, cfg.slate_size))
    clicks = (rng.random((steps, users, cfg.slate_size)) < 0.3).astype(np.float32)
    t0 = time.perf_counter()
    for s in range(steps):
        planner.record(slates[s], clicks[s], active)
    record_ms = (time.perf_counter() - t0) / steps * 1000
    rows, user_ids = np.arange(users), np.arange(users)
    request = planner._request(rows, user_ids, steps)
    data = request.SerializeToString()

    def path() -> None:  # the parts below, end to end: what one planned step costs both sides
        built = planner._request(rows, user_ids, steps)
        parsed = planner_pb2.PlanRequest.FromString(built.SerializeToString())
        validate_plan_request(parsed)
        heuristic_plan(parsed)

    return {
        "record_ms": record_ms,
        "build_ms": best_ms(lambda: planner._request(rows, user_ids, steps)),
        "serialize_ms": best_ms(request.SerializeToString),
        "parse_ms": best_ms(lambda: planner_pb2.PlanRequest.FromString(data)),
        "validate_ms": best_ms(lambda: validate_plan_request(request)),
        "heuristic_ms": best_ms(lambda: heuristic_plan(request)),
        "path_ms": best_ms(path),
        "request_bytes": len(data),
        "entries_per_user": history_length(request.users[0].history),
    }


def reference_step_ms(users: int, seed: int) -> float:
    """Milliseconds per step of the simulator and the policy's forward pass (no planner)."""
    import torch

    from policy.networks import PolicyConfig
    from rollout.actor import RolloutConfig, RolloutWorker
    from rollout.world import WorldConfig

    torch.set_num_threads(1)
    worker = RolloutWorker(WorldConfig(dataset="synthetic"), PolicyConfig(), RolloutConfig(users_per_actor=users, use_planner=False),
                           None, 0, seed)
    worker.collect()
    best = float("inf")
    for _ in range(5):
        _, stats = worker.collect()
        steps = int(stats.episode_lengths.max())
        best = min(best, stats.seconds_total / max(steps, 1) * 1000)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=64, help="users per request = per rollout actor (default: 64)")
    parser.add_argument("--history", type=int, default=60, help="history entries per user (default: 60)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.users < 1 or args.history < 1:
        parser.error("--users and --history must be >= 1")
    parts = planner_parts(args.users, args.history, args.seed)
    reference = reference_step_ms(args.users, args.seed)
    client = parts["record_ms"] + parts["build_ms"] + parts["serialize_ms"]
    server = parts["parse_ms"] + parts["validate_ms"] + parts["heuristic_ms"]
    print(f"{args.users} users, {parts['entries_per_user']} history entries each, "
          f"{parts['request_bytes']:,} bytes per request")
    for name in ("record", "build", "serialize", "parse", "validate", "heuristic"):
        print(f"  {name:<10}{parts[name + '_ms']:>8.3f} ms")
    print(f"  client {client:.3f} ms + server {server:.3f} ms per step; simulator + policy step {reference:.3f} ms")
    ratio = (client + server) / reference
    print(f"planner path / step: {ratio:.2f}")
    path = write_result("contract", {"users": args.users, "history": args.history, **parts,
                                     "client_ms": client, "server_ms": server, "reference_step_ms": reference,
                                     "ratios": {"planner_path_over_step": {"value": ratio, "goal": None}}})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
