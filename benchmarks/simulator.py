"""Simulator throughput: user-steps per second of `UserBatchEnv.step` at several batch sizes, on
one core, beside the floor: the bare array arithmetic one step needs (gather the user and item
vectors, score, similarity penalty, draw the clicks, average them) with nothing else.

    python benchmarks/simulator.py [--dataset synthetic|ml-100k] [--seconds 2] [--batches 1,64,1024,4096]

Goal (issue 3): at batch 4096, at least 500,000 user-steps/s and within 2x of the floor.
Writes benchmarks/results/simulator.json.
"""
from __future__ import annotations

import os

# One core: set before numpy loads its BLAS.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import write_result  # noqa: E402
from rollout.world import World, WorldConfig  # noqa: E402
from rollout.users import UserBatchEnv  # noqa: E402

GOAL_STEPS_PER_S = 500_000
GOAL_FLOOR_RATIO = 2.0


def random_slates(rng: np.random.Generator, count: int, batch: int, num_items: int, k: int) -> list[np.ndarray]:
    """Pre-drawn slates of distinct items, so the policy's cost stays out of the measurement."""
    return [np.argpartition(rng.random((batch, num_items), dtype=np.float32), k, axis=1)[:, :k]
            for _ in range(count)]


def measure_env(world: World, cfg: WorldConfig, batch: int, seconds: float) -> float:
    env = UserBatchEnv(world, cfg, batch, seed=0)
    rng = np.random.default_rng(1)
    slates = random_slates(rng, 16, batch, world.num_items, cfg.slate_size)
    env.reset()
    steps, i = 0, 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        if not env.active.any():
            env.reset()
        steps += int(env.active.sum())
        env.step(slates[i % len(slates)])
        i += 1
    return steps / elapsed


def measure_floor(world: World, cfg: WorldConfig, batch: int, seconds: float) -> float:
    """The arithmetic of one step and nothing else (every user active, no quit rule, no history)."""
    model = world.user_model.click
    sim_vectors = world.similarity_vectors
    rng = np.random.default_rng(2)
    slates = random_slates(rng, 16, batch, world.num_items, cfg.slate_size)
    users = rng.integers(0, world.num_users, batch)
    k, rho = cfg.slate_size, cfg.rho
    steps, i = 0, 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        slate = slates[i % len(slates)]
        logits = np.einsum("bd,bkd->bk", model.user_vectors[users], model.item_vectors[slate])
        logits += model.user_bias[users, None] + model.item_bias[slate] + model.global_bias
        p = 1.0 / (1.0 + np.exp(-logits))
        v = sim_vectors[slate]
        intra = (np.einsum("bkd,bjd->bkj", v, v).sum(-1) - 1.0) / (k - 1)
        p = np.clip(p - rho * np.clip(intra, 0.0, None), 0.0, 1.0)
        clicks = (rng.random(p.shape) < p).astype(np.float32)
        _ = clicks.mean(axis=1)
        steps += batch
        i += 1
    return steps / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic", help="world to step (default: synthetic)")
    parser.add_argument("--data-dir", default="", help="data folder for a real data set")
    parser.add_argument("--quit-rule", default="patience", choices=["patience", "window"])
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per cell (default 2)")
    parser.add_argument("--batches", default="1,64,1024,4096", help="comma-separated batch sizes")
    args = parser.parse_args(argv)
    cfg = replace(WorldConfig(), dataset=args.dataset, data_dir=args.data_dir, quit_rule=args.quit_rule)
    world = World.build(cfg, log=lambda line: None)
    rows = []
    print(f"simulator throughput on one core ({args.dataset}, {args.quit_rule} rule, slate {cfg.slate_size})")
    print(f"{'batch':>6} {'env user-steps/s':>18} {'floor user-steps/s':>20} {'env/floor':>10}")
    for batch in (int(b) for b in args.batches.split(",")):
        env_rate = measure_env(world, cfg, batch, args.seconds)
        floor_rate = measure_floor(world, cfg, batch, args.seconds)
        ratio = floor_rate / env_rate
        rows.append({"batch": batch, "env_steps_per_s": env_rate, "floor_steps_per_s": floor_rate,
                     "floor_over_env": ratio})
        print(f"{batch:>6} {env_rate:>18,.0f} {floor_rate:>20,.0f} {ratio:>9.2f}x")
    last = rows[-1]
    verdict = {"goal_steps_per_s": GOAL_STEPS_PER_S, "goal_floor_ratio": GOAL_FLOOR_RATIO,
               "meets_rate": last["env_steps_per_s"] >= GOAL_STEPS_PER_S,
               "meets_ratio": last["floor_over_env"] <= GOAL_FLOOR_RATIO}
    print(f"batch {last['batch']}: {last['env_steps_per_s']:,.0f} user-steps/s (goal {GOAL_STEPS_PER_S:,}), "
          f"{last['floor_over_env']:.2f}x the floor's time (goal <= {GOAL_FLOOR_RATIO}x)")
    path = write_result("simulator", {"dataset": args.dataset, "quit_rule": args.quit_rule, "rows": rows, **verdict})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
