"""Evaluation on a fixed, seeded set of users: every policy meets the same users and the same
dice (the environment's random stream is seeded identically), so differences come from the
policies alone. Metrics (`summarise`, from `rollout.metrics`): Tint, Rcum, Rsin, coverage,
diversity, category entropy, novelty, DivRatio, popularity bias, serendipity, exposure fairness
(MGU, DGU) and the user groups' gaps; each row says whether it is an oracle (reads the true user model), and with the lookahead oracle
evaluated, every row's share of the gap from random to it closed in return:
(Rcum - random's) / (lookahead's - random's). The command line is learner.evaluate."""
from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
from tqdm import tqdm

from learner.explanations import explanation_table
from llm_server.prompts import PROMPTS_VERSION
from planner_api.client import connect_planner
from policy.networks import PolicyConfig
from rollout.actor import RolloutConfig, RolloutWorker, worker_seeds
from rollout.episodes import EpisodeRun, run_episodes
from rollout.llm_world import attach_llm_user
from rollout.metrics import (
    convergence_steps,
    div_ratio,
    episode_metrics,
    exposure_fairness,
    popularity_bias,
    popularity_groups,
    serendipity,
    slate_metrics,
    unexpected_against_history,
    unexpected_against_popularity,
    user_fairness,
    user_groupings,
)
from rollout.reference_policies import ORACLES, POPULATION_MODEL, REFERENCE_POLICIES, ReferencePolicy
from rollout.world import World, WorldConfig
from rollout.users import UserBatchEnv

EVAL_WORKER_INDEX = 10_000  # the seed stream evaluation uses, apart from every training worker's
PLANNER_CONTROLS = {"random+planner": "random", "greedy+planner": "oracle", "ridge-exposure-fresh+planner": "rule",
                    "posterior-exposure+planner": "posterior"}
"""The rows an evaluation with a planner adds, each a fixed scorer inside that run's planner's
categories (the `act` mode of RolloutWorker.collect): random items, the true model's best items
(the planner quality), ridge-exposure-fresh's (the planner's worth to a non-oracle policy) and
posterior-exposure's (what the observation supports inside them: the learned row's ceiling)."""


def evaluation_users(world: World, count: int, seed: int) -> np.ndarray:
    """The evaluation user ids: `count` of the world's held-out evaluation users, drawn by `seed`
    (fixed per world and seed; with replacement only when asked for more than there are)."""
    return draw_users(world.eval_users, count, seed, 0xE7A1)


def draw_users(pool: np.ndarray, count: int, seed: int, salt: int) -> np.ndarray:
    """`count` user ids of `pool`, drawn by (`seed`, `salt`): with replacement only when asked for
    more than there are."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, salt]))
    return pool[rng.choice(len(pool), size=count, replace=count > len(pool))]


MIN_GROUP_USERS = 10
"""User groups with fewer evaluated users are reported but left out of the gaps (too noisy)."""
POPULARITY_GROUPS = 5
"""Item popularity groups of the exposure-fairness metrics (quintiles of the catalog by popularity)."""


def summarise(world: World, run: EpisodeRun) -> dict:
    """Every metric of one evaluation (`rollout.metrics`): episodes (Tint, Rcum, Rsin), slates
    (coverage, intra-list diversity, category entropy, novelty, DivRatio, popularity bias),
    serendipity against the user's starting history and against popularity, exposure fairness
    between popularity quintiles (MGU, DGU, head share), and user-side gaps in return and length
    by the data set's user groups (`user_fairness`: one entry per grouping, also flattened as
    `<grouping>_Rcum_gap` and `<grouping>_Tint_gap`)."""
    slates = run.slates
    metrics = episode_metrics(run.lengths, run.returns)
    metrics.update(slate_metrics(slates, world.item_category, world.num_categories, world.similarity_vectors,
                                 world.item_popularity, world.num_items))
    metrics["div_ratio"] = div_ratio(slates)
    metrics["popularity_bias"] = popularity_bias(slates, world.item_popularity)
    history = world.start_items if world.start_items is not None else np.full((world.num_users, 1), -1)
    metrics["serendipity"] = serendipity(slates, run.clicks, unexpected_against_history(
        slates, run.slate_users, history, world.item_category))
    metrics["serendipity_popularity"] = serendipity(slates, run.clicks, unexpected_against_popularity(
        slates, world.item_popularity))
    metrics.update(exposure_fairness(slates, popularity_groups(world.item_popularity, POPULARITY_GROUPS),
                                     POPULARITY_GROUPS))
    fairness = user_fairness(run.user_ids, run.lengths, run.returns, user_groupings(world.data.user_features),
                             MIN_GROUP_USERS)
    metrics["user_fairness"] = fairness
    for grouping, gaps in fairness.items():
        metrics[f"{grouping}_Rcum_gap"], metrics[f"{grouping}_Tint_gap"] = gaps["Rcum_gap"], gaps["Tint_gap"]
    metrics["users_held_out"] = world.users_held_out  # evaluation users never met in training
    metrics["period_held_out"] = world.split_timestamp is not None  # and their later logs unseen too
    return metrics


def llm_user_counts(env: UserBatchEnv) -> dict:
    """What the LLM user answered in an env of an llm or hybrid world ({} in the mf world): cases
    asked, answered from the replay cache, answered by the rule user because a call fell back."""
    if env.responder is None:
        return {}
    stats = env.responder.llm_user.stats
    return {"llm_user_cases": stats.cases, "llm_user_cache_hits": stats.cache_hits,
            "llm_user_fallback_cases": stats.fallback_cases}


def evaluate_episodes(world: World, cfg: WorldConfig, users: np.ndarray, seed: int, make_act,
                      runs: dict | None = None, name: str = "", llm_client=None) -> dict:
    """Episode and slate metrics of one episode per user in `users`, the slates chosen by
    `make_act(env)` (the `act` of `rollout.episodes.run_episodes` for that env), on the
    evaluation's env: every policy evaluated this way meets the same dice. `runs[name]` keeps
    the episodes themselves when `runs` is given (what the explanations read). In an llm or hybrid
    world the users' responses come from the LLM service behind `llm_client`."""
    env = UserBatchEnv(world, cfg, len(users), worker_seeds(seed, EVAL_WORKER_INDEX)[0])
    responder = attach_llm_user(env, world, cfg, llm_client)
    try:
        env.reset(users)
        run = run_episodes(env, make_act(env), cfg.max_steps)
    finally:
        if responder is not None:
            responder.close()
    if runs is not None:
        runs[name] = run
    return {**summarise(world, run), **llm_user_counts(env)}


def evaluate_reference(world: World, cfg: WorldConfig, name: str, users: np.ndarray, seed: int,
                       runs: dict | None = None, llm_client=None) -> dict:
    """Episode and slate metrics of a reference policy on `users` (one episode each)."""
    policy = ReferencePolicy(name, seed)

    def make_act(env: UserBatchEnv):
        return lambda step, active: (policy.act(env), {})

    return evaluate_episodes(world, cfg, users, seed, make_act, runs, name, llm_client)


def evaluate_worker(world: World, cfg: WorldConfig, policy: PolicyConfig, rollout: RolloutConfig,
                    planner_address: str | None, weights: dict | None, act: str, users: np.ndarray,
                    seed: int, runs: dict | None = None, name: str = "", reflections: tuple = (),
                    llm_user_address: str | None = None) -> dict:
    """Metrics of the learned policy (act="mean": deterministic) or of random ranking, the true
    model's or ridge-exposure-fresh's inside the planner's categories (act="random", "oracle" or
    "rule"), through the same RolloutWorker that training uses."""
    rollout = replace(rollout, users_per_actor=len(users))
    worker = RolloutWorker(cfg, policy, rollout, planner_address if rollout.use_planner else None,
                           worker_index=EVAL_WORKER_INDEX, seed=seed, llm_user_address=llm_user_address)
    try:
        batch, stats = worker.collect(weights, 0 if weights is not None else None, user_ids=users, act=act,
                                      reflections=reflections)
    finally:
        worker.close()
    metrics = {**summarise(world, worker.last_run), **llm_user_counts(worker.env)}
    if runs is not None:
        runs[name] = worker.last_run
    metrics["planner_fallbacks"] = stats.planner_fallbacks
    return metrics


def llm_user_tag(backend: str, model: str) -> str:
    """What answers an LLM user's world, as its calibration and replay cache are keyed: the model for
    the vllm backend (the backend otherwise) and the prompts' version."""
    return f"{model if backend == 'vllm' else backend}:{PROMPTS_VERSION}"


def evaluate_against_references(world: World, cfg: WorldConfig, policy: PolicyConfig, rollout: RolloutConfig,
                                planner_address: str | None, weights: dict, users: np.ndarray,
                                seed: int, runs: dict | None = None, reflections: tuple = ()) -> dict[str, dict]:
    """The trained policy against every reference policy, and random items, the oracle's best items
    and ridge-exposure-fresh's (the best rule that reads only what the policy sees) inside the
    planner's categories, all on the same users and dice; `runs` (when given) keeps each row's
    episodes by name; `reflections` go into every plan request of the rows with a planner, as in
    training. In an LLM user's world (cfg.user_model llm or hybrid) the service at
    `planner_address` answers the users, and the oracle rows, which read every item's response,
    are left out."""
    llm_world = cfg.user_model != "mf"
    client = connect_planner(planner_address) if llm_world else None
    jobs = [(name, lambda name=name: evaluate_reference(world, cfg, name, users, seed, runs, client))
            for name in REFERENCE_POLICIES if not (llm_world and name in ORACLES)]
    if rollout.use_planner:
        for name, mode in PLANNER_CONTROLS.items():
            if llm_world and name in ORACLES:
                continue
            jobs.append((name, lambda name=name, mode=mode: evaluate_worker(
                world, cfg, policy, rollout, planner_address, None, mode, users, seed, runs, name, reflections,
                planner_address)))
    jobs.append(("trained", lambda: evaluate_worker(world, cfg, policy, rollout, planner_address, weights, "mean",
                                                    users, seed, runs, "trained", reflections, planner_address)))
    rows = {}
    try:
        for name, job in tqdm(jobs, desc="evaluating", unit="policy", disable=not sys.stderr.isatty()):
            rows[name] = job()
    finally:
        if client is not None:
            client.close()
    return rows


def with_convergence(results: dict[str, dict], curve: list[tuple[float, float]]) -> dict[str, dict]:
    """The trained row's convergence speed (`convergence_env_steps`, `rollout.metrics.convergence_steps`)
    from the run's learning curve, [(env steps so far, Rcum)] per logged iteration."""
    if "trained" in results and len(curve) >= 2:
        steps, returns = (np.array(x, np.float64) for x in zip(*curve))
        results["trained"]["convergence_env_steps"] = convergence_steps(steps, returns)
    return results


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


BEYOND_COLUMNS = (("div_ratio", "DivRatio", "9.3f"), ("popularity_bias", "pop-bias", "9.3f"),
                  ("serendipity", "serendip", "9.3f"), ("head_share", "head", "7.3f"), ("MGU", "MGU", "7.3f"),
                  ("DGU", "DGU", "7.3f"), ("gender_Rcum_gap", "gender-gap", "11.3f"), ("age_Rcum_gap", "age-gap", "9.3f"))
"""The second table: diversity, bias, serendipity and fairness (columns a row lacks are left out)."""


def _header(columns) -> str:
    return f"  {'policy':<20}" + "".join(f"{header:>{fmt.split('.')[0]}}" for _, header, fmt in columns)


def _row(policy_name: str, m: dict, columns) -> str:
    """One policy's fixed-width cells (oracles marked *, the population model's references +)."""
    label = policy_name + (" *" if m.get("oracle", policy_name in ORACLES) else
                           " +" if policy_name in POPULATION_MODEL else "")
    return f"  {label:<20}" + "".join(f"{m[name]:{fmt}}" for name, _, fmt in columns)


def beyond_accuracy_table(results: dict[str, dict]) -> str:
    """Diversity, popularity bias, serendipity, exposure fairness and the user groups' return gaps."""
    columns = [c for c in BEYOND_COLUMNS if all(c[0] in m for m in results.values())]
    lines = ["beyond accuracy and fairness:", _header(columns)]
    lines += [_row(policy_name, m, columns) for policy_name, m in results.items()]
    lines += ["  DivRatio: distinct / recommended items; pop-bias: mean popularity percentile; serendip: liked",
              "  and outside the user's history categories; head: exposure share of the most popular fifth;",
              "  MGU / DGU: mean / largest gap between a popularity fifth's exposure and catalog shares;",
              f"  gaps: largest - smallest mean Rcum between user groups of {MIN_GROUP_USERS}+ evaluated users"]
    return "\n".join(lines)


def evaluation_table(results: dict[str, dict]) -> str:
    """A fixed-width table, one row per policy; oracles marked *; the gap closed where known; then
    the beyond-accuracy table when the rows carry its metrics."""
    gap = any("gap_closed" in m for m in results.values())
    lines = [f"evaluation on {next(iter(results.values()))['episodes']} fixed users:",
             _header(COLUMNS) + ("  gap closed" if gap else "")]
    for policy_name, m in results.items():
        lines.append(_row(policy_name, m, COLUMNS) + (f"{100 * m['gap_closed']:11.1f}%" if "gap_closed" in m else ""))
    lines.append("  * oracle: reads the true user model and the user's state"
                 + ("; + reads the training population's true model, not this user's"
                    if POPULATION_MODEL & set(results) else "")
                 + ("; gap closed = (Rcum - random) / (lookahead - random)" if gap else ""))
    if "trained" in results and "random" in results and results["random"]["Rcum"] > 0:
        gain = results["trained"]["Rcum"] / results["random"]["Rcum"] - 1
        lines.append(f"  trained vs random: Rcum {100 * gain:+.1f}%")
    if any("div_ratio" in m for m in results.values()):
        lines += ["", beyond_accuracy_table(results)]
    explained = {name: m["explanations"] for name, m in results.items() if "explanations" in m}
    if explained:
        lines += ["", explanation_table(explained)]
    return "\n".join(lines)
