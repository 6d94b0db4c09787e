"""Evaluation on a fixed, seeded set of users: every policy meets the same users and the same
dice (the environment's random stream is seeded identically), so differences come from the
policies alone. Metrics: Tint, Rcum, Rsin, coverage, diversity, category entropy, novelty; each
row says whether it is an oracle (reads the true user model), and with the lookahead oracle
evaluated, every row's share of the gap from random to it closed in return:
(Rcum - random's) / (lookahead's - random's). The command line is learner.evaluate."""
from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
from tqdm import tqdm

from policy.networks import PolicyConfig
from rollout.actor import RolloutConfig, RolloutWorker, worker_seeds
from rollout.batch_schema import column
from rollout.episodes import run_episodes
from rollout.metrics import episode_metrics, slate_metrics
from rollout.reference_policies import ORACLES, REFERENCE_POLICIES, ReferencePolicy
from rollout.world import World, WorldConfig
from rollout.users import UserBatchEnv

EVAL_WORKER_INDEX = 10_000  # the seed stream evaluation uses, apart from every training worker's


def evaluation_users(world: World, count: int, seed: int) -> np.ndarray:
    """The evaluation user ids: `count` of the world's held-out evaluation users, drawn by `seed`
    (fixed per world and seed; with replacement only when asked for more than there are)."""
    pool = world.eval_users
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE7A1]))
    return pool[rng.choice(len(pool), size=count, replace=count > len(pool))]


def summarise(world: World, lengths: np.ndarray, returns: np.ndarray, slates: np.ndarray) -> dict:
    metrics = episode_metrics(lengths, returns)
    metrics.update(slate_metrics(slates, world.item_category, world.num_categories, world.similarity_vectors,
                                 world.item_popularity, world.num_items))
    metrics["users_held_out"] = world.users_held_out  # evaluation users never met in training
    metrics["period_held_out"] = world.split_timestamp is not None  # and their later logs unseen too
    return metrics


def evaluate_episodes(world: World, cfg: WorldConfig, users: np.ndarray, seed: int, make_act) -> dict:
    """Episode and slate metrics of one episode per user in `users`, the slates chosen by
    `make_act(env)` (the `act` of `rollout.episodes.run_episodes` for that env), on the
    evaluation's env: every policy evaluated this way meets the same dice."""
    env = UserBatchEnv(world, cfg, len(users), worker_seeds(seed, EVAL_WORKER_INDEX)[0])
    env.reset(users)
    run = run_episodes(env, make_act(env), cfg.max_steps)
    return summarise(world, run.lengths, run.returns, run.slates)


def evaluate_reference(world: World, cfg: WorldConfig, name: str, users: np.ndarray, seed: int) -> dict:
    """Episode and slate metrics of a reference policy on `users` (one episode each)."""
    policy = ReferencePolicy(name, seed)

    def make_act(env: UserBatchEnv):
        return lambda step, active: (policy.act(env), {})

    return evaluate_episodes(world, cfg, users, seed, make_act)


def evaluate_worker(world: World, cfg: WorldConfig, policy: PolicyConfig, rollout: RolloutConfig,
                    planner_address: str | None, weights: dict | None, act: str, users: np.ndarray,
                    seed: int) -> dict:
    """Metrics of the learned policy (act="mean": deterministic) or of random ranking inside the
    planner's categories (act="random"), through the same RolloutWorker that training uses."""
    rollout = replace(rollout, users_per_actor=len(users))
    worker = RolloutWorker(cfg, policy, rollout, planner_address if rollout.use_planner else None,
                           worker_index=EVAL_WORKER_INDEX, seed=seed)
    try:
        batch, stats = worker.collect(weights, 0 if weights is not None else None, user_ids=users, act=act)
    finally:
        worker.close()
    metrics = summarise(world, stats.episode_lengths, stats.episode_returns, column(batch, "slate"))
    metrics["planner_fallbacks"] = stats.planner_fallbacks
    return metrics


def evaluate_against_references(world: World, cfg: WorldConfig, policy: PolicyConfig, rollout: RolloutConfig,
                                planner_address: str | None, weights: dict, users: np.ndarray,
                                seed: int) -> dict[str, dict]:
    """The trained policy against every reference policy and random recommendations inside the
    planner's categories, all on the same users and dice."""
    jobs = [(name, lambda name=name: evaluate_reference(world, cfg, name, users, seed)) for name in REFERENCE_POLICIES]
    if rollout.use_planner:
        for name, mode in (("random+planner", "random"), ("greedy+planner", "oracle")):
            jobs.append((name, lambda mode=mode: evaluate_worker(world, cfg, policy, rollout, planner_address, None,
                                                                 mode, users, seed)))
    jobs.append(("trained", lambda: evaluate_worker(world, cfg, policy, rollout, planner_address, weights, "mean",
                                                    users, seed)))
    rows = {}
    for name, job in tqdm(jobs, desc="evaluating", unit="policy", disable=not sys.stderr.isatty()):
        rows[name] = job()
    return rows


def with_gap_closed(rows: dict[str, dict]) -> dict[str, dict]:
    """Each row marked oracle or not, and, where random and the lookahead oracle are both rows,
    given its share of the gap between them closed in return (`gap_closed`; 1 = the ceiling)."""
    for name, metrics in rows.items():
        metrics["oracle"] = name in ORACLES
    if "random" in rows and "lookahead" in rows:
        low, high = rows["random"]["Rcum"], rows["lookahead"]["Rcum"]
        for metrics in rows.values():
            metrics["gap_closed"] = (metrics["Rcum"] - low) / (high - low) if high > low else float("nan")
    return rows


# (metric, header, format)
COLUMNS = (("Tint", "Tint", "8.2f"), ("Rcum", "Rcum", "9.3f"), ("Rsin", "Rsin", "8.3f"),
           ("coverage", "coverage", "10.3f"), ("diversity", "diversity", "10.3f"),
           ("category_entropy", "cat-entropy", "12.3f"), ("novelty", "novelty", "9.2f"))


def evaluation_table(results: dict[str, dict]) -> str:
    """A fixed-width table, one row per policy; oracles marked *; the gap closed where known."""
    gap = any("gap_closed" in m for m in results.values())
    head = f"  {'policy':<20}" + "".join(f"{header:>{fmt.split('.')[0]}}" for _, header, fmt in COLUMNS)
    lines = [f"evaluation on {next(iter(results.values()))['episodes']} fixed users:", head + ("  gap closed" if gap else "")]
    for policy_name, m in results.items():
        label = policy_name + (" *" if m.get("oracle", policy_name in ORACLES) else "")
        row = f"  {label:<20}" + "".join(f"{m[name]:{fmt}}" for name, _, fmt in COLUMNS)
        lines.append(row + (f"{100 * m['gap_closed']:11.1f}%" if "gap_closed" in m else ""))
    lines.append("  * oracle: reads the true user model and the user's state"
                 + ("; gap closed = (Rcum - random) / (lookahead - random)" if gap else ""))
    if "trained" in results and "random" in results and results["random"]["Rcum"] > 0:
        gain = results["trained"]["Rcum"] / results["random"]["Rcum"] - 1
        lines.append(f"  trained vs random: Rcum {100 * gain:+.1f}%")
    return "\n".join(lines)
