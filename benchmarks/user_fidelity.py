"""The LLM as the user, measured like a learned model: fidelity on held-out logs, and cost.

For each seed of the split (the learned model's initialisation, the users drawn, the negatives):
- split: each user's latest 10 % of logged interactions is test (the world's user-model split);
  the latest 10 % of the rest is validation, where the hybrid's blend is fitted; the learned model
  (matrix factorisation, as in the world) is fitted on what remains, and every persona is built
  from that same part, so every predictor knows the same logs.
- items: for `--users` drawn users, up to `--items` of their test interactions and as many items
  they never rated (uniform over the items the learned model saw); validation likewise.
- predictors: popularity; the rule user (`heuristic_respond`: the category record); the learned
  model (mf); the LLM user (llm: the service's Respond call, one constrained digit per item read
  as a graded rating and like); hybrid (mf's logit and the LLM's like logit blended by a logistic
  fit on validation; ratings by least squares); and mf+rule (the same blend with the rule user:
  the control that tells what any category record adds, LLM or not).
- on test: AUC of liked (rating >= 4) against not (a lower rating, or never rated); RMSE of the
  rating on the rated items; ECE of the like probability; the mean like probability on items the
  user did not like beside the liked share (the over-cooperative check: a user who likes everything).
Sessions: each of `--session-users` held-out users' next logged session (ratings less than an hour
apart), replayed slate by slate in the mf, hybrid and llm worlds (rollout.log_replay): the
simulated click rate beside the logged like share of the same items, their AUC, the slates the
simulated user stayed for against the logged session's, and the divergence of clicked categories
from liked ones.
Cost: what an llm world's evaluation pays: session steps (`--cost-steps`) of 1, 16 and 64 fresh
users per Respond call, each step a slate of 6 after the steps before: user-steps/s, prompt and
computed tokens per user-step, prefix-cache share.

    python benchmarks/user_fidelity.py [--backend vllm] [--planner-model smollm2] [--users 32] [--seeds 0,1,2]
    python -m lab.fidelity_report benchmarks/results/user_fidelity.json --out results/user-fidelity

LLM answers are cached on disk ($LLMREC_CACHE_DIR/llm_user/, keyed by the model, the prompts and
the exact case): a rerun replays them (`--no-cache` asks the engine again; cost is never cached).
Goal: the hybrid's AUC above the learned model's beyond the seeds' spread. Writes
benchmarks/results/user_fidelity.json.
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

PREDICTORS = ("popularity", "rule", "mf", "llm", "hybrid", "mf+rule")


def split_parts(data, seed: int, num_users: int, test_items: int, val_items: int) -> tuple[np.ndarray, dict]:
    """(fit mask, {"val": part, "test": part}); a part holds per drawn user its rated rows (at most
    n, the earliest of the period) and as many never-rated items: users, items, ratings (nan for
    the never-rated), liked."""
    from rollout.user_model import time_split

    train, test = time_split(data, 0.1)
    fit, val = time_split(data, 0.1, within=train)
    it = data.interactions
    rng = np.random.default_rng([seed, 0xF1D])
    eligible = np.intersect1d(np.unique(it.user[test]), np.unique(it.user[val]))
    users = np.sort(rng.choice(eligible, min(num_users, len(eligible)), replace=False))
    known = np.unique(it.item[fit])
    liked = data.positive()
    parts = {}
    for name, mask, n in (("val", val, val_items), ("test", test, test_items)):
        columns = {"users": [], "items": [], "ratings": [], "liked": []}
        for u in users:
            rows = np.flatnonzero(mask & (it.user == u))[:n]
            rated = set(it.item[it.user == u].tolist())
            pool = known[~np.isin(known, list(rated))]
            negatives = rng.choice(pool, len(rows), replace=False)
            columns["users"] += [u] * (2 * len(rows))
            columns["items"] += [*it.item[rows], *negatives]
            columns["ratings"] += [*it.label[rows], *[np.nan] * len(rows)]
            columns["liked"] += [*liked[rows], *[False] * len(rows)]
        parts[name] = {key: np.asarray(value) for key, value in columns.items()}
    return fit, parts


def respond_cases(data, fit: np.ndarray, part: dict, seed: int) -> tuple[list, list[np.ndarray]]:
    """One Respond case per user of a part: the persona from the fit rows, the user's items (in a
    seeded order) as the slate; and, per case, the part's row of each slate item."""
    from protos import planner_pb2
    from rollout.llm_user import slate_items, user_persona

    rng = np.random.default_rng([seed, 0xCA5E])
    cases, rows_of = [], []
    for u in np.unique(part["users"]):
        rows = rng.permutation(np.flatnonzero(part["users"] == u))
        persona = user_persona(data, int(u), np.flatnonzero(fit & (data.interactions.user == u)))
        cases.append(planner_pb2.RespondCase(user=persona, slate=slate_items(data, part["items"][rows])))
        rows_of.append(rows)
    return cases, rows_of


def answers_to_columns(answers, rows_of, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(like probability, rating in stars) per part row, from one UserResponse per case."""
    like, stars = np.zeros(size), np.zeros(size)
    for answer, rows in zip(answers, rows_of):
        like[rows] = answer.likes
        stars[rows] = 1 + 4 * np.asarray(answer.ratings)
    return like, stars


def learned_predictions(data, fit: np.ndarray, seed: int, parts: dict) -> dict:
    """popularity and mf on every part: {predictor: {part: (score, like probability or None, stars)}}."""
    from rollout.user_model import UserModelConfig, sigmoid, train_user_model

    model = train_user_model(data, UserModelConfig(seed=seed), log=lambda line: None, split=(fit, ~fit))
    it = data.interactions
    liked_count = np.bincount(it.item[fit & data.positive()], minlength=data.num_items).astype(np.float64)
    sums = np.bincount(it.item[fit], weights=it.label[fit], minlength=data.num_items)
    counts = np.bincount(it.item[fit], minlength=data.num_items)
    mean = float(it.label[fit].mean())
    item_mean = (sums + 5 * mean) / (counts + 5)  # shrunk to the global mean
    out = {"popularity": {}, "mf": {}}
    for name, part in parts.items():
        users, items = part["users"], part["items"]
        logits = model.click.scores(users, items[:, None])[:, 0]
        stars = np.clip(model.rating.scores(users, items[:, None])[:, 0], *data.rating_scale)
        out["popularity"][name] = (liked_count[items], None, item_mean[items])
        out["mf"][name] = (logits, sigmoid(logits), stars)
    return out


def blended(base: dict, other: dict, val: dict) -> dict:
    """The hybrid of `base` (mf) and `other` (llm or rule): like = a logistic blend of mf's logit and
    the other's like logit, rating = least squares of both ratings, both fitted on validation."""
    from rollout.llm_user import fit_logistic, logit

    def features(part):
        return np.c_[base[part][0], logit(other[part][1])]

    def rating_features(part):
        return np.c_[base[part][2], other[part][2], np.ones(len(base[part][2]))]

    weights = fit_logistic(features("val"), val["liked"])
    rated = ~np.isnan(val["ratings"])
    coef, *_ = np.linalg.lstsq(rating_features("val")[rated], val["ratings"][rated], rcond=None)
    result = {}
    for part in ("val", "test"):
        z = features(part) @ weights[:-1] + weights[-1]
        result[part] = (z, 1 / (1 + np.exp(-z)), np.clip(rating_features(part) @ coef, 1, 5))
    result["weights"] = {"mf_logit": float(weights[0]), "other_logit": float(weights[1]), "intercept": float(weights[2]),
                         "rating": [float(c) for c in coef]}
    return result


def metrics(prediction: tuple, part: dict) -> dict:
    """AUC, RMSE, ECE, mean like on liked and on not-liked items of one predictor on one part."""
    from rollout.user_model import auc, calibration_bins

    score, like, stars = prediction
    liked = part["liked"].astype(bool)
    rated = ~np.isnan(part["ratings"])
    out = {"auc": auc(np.asarray(score, np.float64), liked),
           "rmse": float(np.sqrt(np.mean((stars[rated] - part["ratings"][rated]) ** 2))),
           "liked_share": float(liked.mean())}
    if like is not None:
        bins, ece = calibration_bins(like, liked)
        out.update(ece=ece, like_on_liked=float(like[liked].mean()), like_on_not_liked=float(like[~liked].mean()),
                   calibration=bins)
    return out


def run_seed(data, seed: int, args, llm_user) -> dict:
    """Every predictor's metrics on one seed's split; the LLM's seconds and items."""
    from planner_api.heuristics import heuristic_respond
    from protos import planner_pb2

    fit, parts = split_parts(data, seed, args.users, args.items, args.val_items)
    predictions = learned_predictions(data, fit, seed, parts)
    predictions["rule"], predictions["llm"] = {}, {}
    llm_seconds, llm_items = 0.0, 0
    for name, part in parts.items():
        cases, rows_of = respond_cases(data, fit, part, seed)
        rule = heuristic_respond(planner_pb2.RespondRequest(category_names=data.category_names, cases=cases))
        like, stars = answers_to_columns(rule.responses, rows_of, len(part["items"]))
        predictions["rule"][name] = (like, like, stars)
        started = time.perf_counter()
        like, stars = answers_to_columns(llm_user.answer(cases, seed=seed), rows_of, len(part["items"]))
        llm_seconds += time.perf_counter() - started
        llm_items += len(part["items"])
        predictions["llm"][name] = (like, like, stars)
    predictions["hybrid"] = blended(predictions["mf"], predictions["llm"], parts["val"])
    predictions["mf+rule"] = blended(predictions["mf"], predictions["rule"], parts["val"])
    result = {name: metrics(predictions[name]["test"], parts["test"]) for name in PREDICTORS}
    return {"metrics": result, "weights": {name: predictions[name]["weights"] for name in ("hybrid", "mf+rule")},
            "llm_seconds": llm_seconds, "llm_items": llm_items, "test_items": int(len(parts["test"]["items"])),
            "users": int(len(np.unique(parts["test"]["users"])))}


def session_cases(data, users: np.ndarray, step: int, rng: np.random.Generator, shown: dict) -> list:
    """Step `step` of a session for each user, as an llm world asks it: the persona, the session so
    far (the slates of the steps before, some clicked, in `shown`) and a new random slate of 6."""
    from planner_api.history import history_from_columns
    from protos import planner_pb2
    from rollout.llm_user import item_title, slate_items, user_persona

    it = data.interactions
    cases = []
    for u in users:
        items, clicks = shown.setdefault(int(u), ([], []))
        slate = rng.choice(np.setdiff1d(np.arange(data.num_items), items), 6, replace=False)
        session = history_from_columns(np.asarray(items, np.int64), data.item_category[np.asarray(items, np.int64)],
                                       np.asarray(clicks, np.float32), np.repeat(np.arange(step), 6).astype(np.int32),
                                       [item_title(data, i) for i in items])
        cases.append(planner_pb2.RespondCase(user=user_persona(data, int(u), np.flatnonzero(it.user == u)),
                                             session=session, slate=slate_items(data, slate)))
        items += slate.tolist()
        clicks += (rng.random(6) < 0.3).astype(float).tolist()
    return cases


def measure_cost(data, client, host, batches: list[int], seed: int, steps: int) -> list[dict]:
    """What an llm world's evaluation pays: `steps` session steps of fresh users at each batch size
    (users per Respond call), each step a slate of 6 after the steps before (no cache): user-steps/s,
    tokens per user-step, prefix-cache share."""
    from protos import planner_pb2

    rows = []
    for batch in batches:
        rng = np.random.default_rng([seed, batch, 0xC057])
        users, shown = rng.choice(data.num_users, batch, replace=False), {}
        before, seconds, fell_back = host.stats(), 0.0, False
        for step in range(steps):
            req = planner_pb2.RespondRequest(category_names=data.category_names, seed=seed,
                                             cases=session_cases(data, users, step, rng, shown))
            started = time.perf_counter()
            fell_back |= client.respond(req, 600.0)[1]
            seconds += time.perf_counter() - started
        after = host.stats()
        delta = {key: after.get(key, 0) - before.get(key, 0) for key in ("prompt_tokens", "cached_prompt_tokens",
                                                                          "output_tokens", "requests")}
        user_steps = batch * steps
        rows.append({"batch": batch, "steps": steps, "seconds": seconds, "users_per_s": user_steps / seconds,
                     "fell_back": fell_back,
                     "prompt_tokens_per_user_step": delta["prompt_tokens"] / user_steps,
                     "computed_tokens_per_user_step": (delta["prompt_tokens"] - delta["cached_prompt_tokens"]) / user_steps,
                     "answer_tokens_per_user_step": delta["output_tokens"] / user_steps,
                     "engine_requests_per_user_step": delta["requests"] / user_steps,
                     "prefix_cache_share": delta["cached_prompt_tokens"] / max(delta["prompt_tokens"], 1)})
        print(f"cost: batch {batch:>3}: {rows[-1]['users_per_s']:.2f} user-steps/s, "
              f"{rows[-1]['prompt_tokens_per_user_step']:.0f} prompt tokens per user-step "
              f"({rows[-1]['prefix_cache_share']:.0%} from the prefix cache)", flush=True)
    return rows


def replay_worlds(data_name: str, client, tag: str, num_users: int, max_slates: int, seed: int) -> dict:
    """Logged sessions replayed in the mf, hybrid and llm worlds (rollout.log_replay): {world: figures}."""
    from dataclasses import replace

    from rollout.llm_user import answers_path
    from rollout.llm_world import attach_llm_user, ensure_calibration
    from rollout.log_replay import logged_sessions, replay
    from rollout.world import World, WorldConfig

    cfg = WorldConfig(dataset=data_name)
    world = World.build(cfg, log=lambda line: None)
    rng = np.random.default_rng([seed, 0x5E55])
    sessions = logged_sessions(world, rng.permutation(world.eval_users), cfg.slate_size, max_slates)
    sessions = dict(list(sessions.items())[:num_users])
    calibrated = replace(cfg, llm_user_calibration=ensure_calibration(world, cfg, client, tag))
    out = {}
    for name in ("mf", "hybrid", "llm"):
        world_cfg = replace(calibrated, user_model=name)
        responders = []

        def attach(env):
            responders.append(attach_llm_user(env, world, world_cfg, client, answers_path()))

        started = time.perf_counter()
        out[name] = {**replay(world, world_cfg, sessions, seed, attach if name != "mf" else None),
                     "seconds": time.perf_counter() - started}
        for responder in responders:
            responder.close()
        print(f"replayed logged sessions in the {name} world: click rate {out[name]['click_rate']:.3f} "
              f"(logged like share {out[name]['logged_like_share']:.3f}), {out[name]['slates_stayed']:.2f} slates "
              f"stayed of {out[name]['logged_slates']:.2f} logged", flush=True)
    return out


def aggregate(per_seed: list[dict]) -> dict:
    """{predictor: {metric: {mean, std}}} over the seeds (population std)."""
    out = {}
    for name in PREDICTORS:
        keys = [k for k, v in per_seed[0]["metrics"][name].items() if isinstance(v, float)]
        out[name] = {k: {"mean": float(np.mean([s["metrics"][name][k] for s in per_seed])),
                         "std": float(np.std([s["metrics"][name][k] for s in per_seed]))} for k in keys}
    return out


def model_tag(args) -> str:
    """What answers and with which prompts: the tag learner.main and learner.evaluate give it too,
    so they share calibrations and answers."""
    from learner.evaluation import llm_user_tag

    return llm_user_tag(args.backend, args.planner_model)


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    """The data set and who answers: --dataset, --backend, --planner-model, --planner (what
    `start_service` and `model_tag` read)."""
    parser.add_argument("--dataset", default="ml-100k", help="data set (rating data: ml-100k or an atomic folder)")
    parser.add_argument("--backend", default="vllm", choices=["vllm", "heuristic"],
                        help="the LLM service's backend (heuristic: the rule user answers as 'llm', for a dry run)")
    parser.add_argument("--planner-model", default="smollm2", help="the model the vllm backend serves")
    parser.add_argument("--planner", default="", help="HOST:PORT of a running LLM service instead of starting one")


def start_service(args):
    """(host, client) of the LLM service on 127.0.0.1, or (None, client) of --planner."""
    from planner_api.client import PlannerClient
    from llm_server.server import PlannerServerActor

    if args.planner:
        client = PlannerClient(args.planner)
        client.wait_ready(60.0)
        return None, client
    host = PlannerServerActor()
    options = {"model": args.planner_model} if args.backend == "vllm" else {}
    address = host.start(args.backend, "127.0.0.1", 0, options)
    client = PlannerClient(address)
    client.wait_ready(60.0)
    return host, client


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_service_arguments(parser)
    parser.add_argument("--users", type=int, default=32, help="users drawn per seed")
    parser.add_argument("--items", type=int, default=8, help="test interactions per user (and as many never-rated items)")
    parser.add_argument("--val-items", type=int, default=4, help="validation interactions per user (the blend's fit)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the split, comma-separated")
    parser.add_argument("--cost-batches", default="1,16,64", help="users per Respond call in the cost part ('' skips it)")
    parser.add_argument("--cost-steps", type=int, default=1,
                        help="session steps per user in the cost part (the first pays for the persona's prefix; "
                             "later ones reuse it from the prefix cache)")
    parser.add_argument("--session-users", type=int, default=16,
                        help="held-out users whose next logged session is replayed in each world ('0' skips it)")
    parser.add_argument("--session-slates", type=int, default=8, help="slates of a replayed session at most")
    parser.add_argument("--no-cache", action="store_true", help="ask the engine again instead of replaying cached answers")
    args = parser.parse_args(argv)
    for name in ("users", "items", "val_items", "cost_steps", "session_slates"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from learner.provenance import provenance

    code = provenance(argv)  # at the start: the code that runs is the code of this commit
    from rollout.data.registry import load_dataset
    from rollout.llm_user import LLMUser, ResponseCache, answers_path

    data = load_dataset(args.dataset)
    if data.feedback != "rating":
        parser.error(f"{args.dataset} has click feedback: the fidelity benchmark compares ratings (use rating data)")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    started = time.perf_counter()
    host, client = start_service(args)
    cache = None if args.no_cache else ResponseCache(answers_path(), model_tag(args))
    llm_user = LLMUser(client, data.category_names, timeout_s=600.0, cache=cache, max_items_per_call=256)
    try:
        per_seed = []
        for seed in seeds:
            per_seed.append(run_seed(data, seed, args, llm_user))
            m = per_seed[-1]["metrics"]
            print(f"seed {seed}: AUC " + ", ".join(f"{name} {m[name]['auc']:.3f}" for name in PREDICTORS)
                  + f" | LLM {per_seed[-1]['llm_items'] / max(per_seed[-1]['llm_seconds'], 1e-9):.1f} items/s", flush=True)
        batches = [int(b) for b in args.cost_batches.split(",") if b.strip()]
        cost = measure_cost(data, client, host, batches, seeds[0], args.cost_steps) if batches and host is not None else []
        sessions = (replay_worlds(args.dataset, client, model_tag(args), args.session_users, args.session_slates, seeds[0])
                    if args.session_users else {})
    finally:
        client.close()
        if host is not None:
            host.stop()
        if cache is not None:
            cache.close()
    summary = aggregate(per_seed)
    hybrid, mf = summary["hybrid"]["auc"], summary["mf"]["auc"]
    payload = {
        "command": (f"python benchmarks/user_fidelity.py --backend {args.backend} --planner-model {args.planner_model} "
                    f"--users {args.users} --items {args.items} --val-items {args.val_items} --seeds {args.seeds} "
                    f"--cost-batches {args.cost_batches} --cost-steps {args.cost_steps} "
                    f"--session-users {args.session_users} --session-slates {args.session_slates}"
                    + (" --no-cache" if args.no_cache else "")),
        "provenance": {"commit": code["commit"], "dirty": code["dirty"]},
        "dataset": data.name, "backend": args.backend, "model": args.planner_model, "model_tag": model_tag(args),
        "seeds": seeds, "users": args.users, "items": args.items, "val_items": args.val_items,
        "summary": summary, "per_seed": per_seed, "cost": cost, "sessions": sessions, "llm_stats": vars(llm_user.stats),
        "goal": {"hybrid_auc_above_mf_beyond_spread": bool(hybrid["mean"] - mf["mean"] > hybrid["std"] + mf["std"]),
                 "hybrid_minus_mf_auc": hybrid["mean"] - mf["mean"]},
        "wall_s": time.perf_counter() - started,
    }
    path = write_result("user_fidelity", payload)
    print(f"\n{'predictor':<12}{'AUC':>16}{'RMSE':>16}{'ECE':>16}{'like on not-liked':>20}")
    for name in PREDICTORS:
        s = summary[name]
        cell = (lambda k: f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}" if k in s else "–")
        print(f"{name:<12}{cell('auc'):>16}{cell('rmse'):>16}{cell('ece'):>16}{cell('like_on_not_liked'):>20}")
    print(f"hybrid - mf AUC: {payload['goal']['hybrid_minus_mf_auc']:+.3f} "
          f"(goal: above the spread: {payload['goal']['hybrid_auc_above_mf_beyond_spread']}); wrote {path}")
    return payload


if __name__ == "__main__":
    main()
