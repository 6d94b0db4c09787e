"""Planner throughput with the real LLM (SmolLM2-135M on vLLM), measured in one run:

1. users planned per second at batch sizes 1, 16, 64 and 256 users per request, against one
   request per user sent one after another;
2. the reference design measured in the same run (VLLM_CPU.md's): a JSON list of category names
   under a JSON-schema constraint, at batch 64; our design answers one letter and ranks by
   log-probabilities;
3. a training-like session (users planned every `--plan-every` steps as their history grows):
   the prefix-cache hit rate, the prompt tokens the engine actually computed per plan, and the
   answer length in tokens;
4. optionally (`--train-iterations N`, 0 to skip) a short `python -m learner.main` run with the
   vllm planner: the share of rollout time spent waiting for plans and the age of the plans used.

    python benchmarks/planner.py [--model smollm2] [--batches 1,16,64,256] [--train-iterations 3]

Goals (issue 4): batching >= 10x the one-at-a-time rate; >= 75% of prompt tokens from the prefix
cache in training-like planning; answers <= 8 tokens; >= 4x the reference's users/s at batch 64;
plan waiting <= 50% of rollout time. Writes benchmarks/results/planner.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import write_result  # noqa: E402

REFERENCE_USERS_PER_S = 3.5  # VLLM_CPU.md, batch 64, 333-token prompt, JSON answers


def session_requests(num_users: int, steps: int, plan_every: int, seed: int, titles: bool = False):
    """Plan requests for `num_users` synthetic-world users at steps 0, plan_every, ... of one
    session (random slates), built exactly as rollout actors build them."""
    from rollout.reference_policies import ReferencePolicy
    from rollout.session_planner import SessionPlanner
    from rollout.world import World, WorldConfig
    from rollout.users import UserBatchEnv

    cfg = WorldConfig(dataset="synthetic")
    world = World.build(cfg, log=lambda line: None)
    env = UserBatchEnv(world, cfg, num_users, seed)
    env.reset()
    planner = SessionPlanner(world, None, 4, plan_every, 0, 1.0, seed, titles, cfg.slate_size)
    planner.start(num_users, ["Favour the categories the user clicked; rotate the rest.",
                              "Users left early when the same category came back at once."])
    policy = ReferencePolicy("random", seed)
    requests = []
    for step in range(steps):
        active = np.ones(num_users, bool)  # every user stays: the benchmark wants full sessions
        if step % plan_every == 0:
            requests.append(planner._request(np.arange(num_users), env.user_ids, step))
        slates = policy.act(env)
        result = env.step(slates)
        env.active[:] = True
        planner.record(slates, result.clicks, active)
    return requests


def sub_request(req, users):
    from protos import planner_pb2

    out = planner_pb2.PlanRequest(category_names=req.category_names, seed=req.seed)
    out.users.extend(req.users[i] for i in users)
    return out


async def reference_plan(backend, req) -> int:
    """VLLM_CPU.md's design: a JSON list of category names; returns output tokens spent."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from llm_server import prompts

    template = await backend._chat_template()
    names = list(req.category_names)
    spent = 0

    async def one(user):
        nonlocal spent
        n = user.num_categories
        schema = {"type": "array", "items": {"type": "string", "enum": names}, "minItems": n, "maxItems": n}
        prompt = prompts.plan_prompt(user, names, list(user.candidate_categories), template).replace(
            prompts.PLAN_QUESTION, f"Answer with a JSON list of the {n} best category names.")
        params = SamplingParams(max_tokens=40, temperature=0.0,
                                structured_outputs=StructuredOutputsParams(json=schema, disable_any_whitespace=True))
        out = await backend._generate(prompt, params)
        spent += len(out.token_ids)

    await asyncio.gather(*(one(u) for u in req.users))
    return spent


async def measure(args) -> dict:
    from llm_server.vllm_backend import EngineOptions, VLLMBackend

    backend = VLLMBackend(EngineOptions(model=args.model, block_size=args.block_size))
    results: dict = {}
    try:
        batches = [int(b) for b in args.batches.split(",")]
        fresh = session_requests(16 + sum(batches) + 1, 6, 5, seed=1)[-1]  # users 5 steps into a session
        await backend.plan(sub_request(fresh, [16 + sum(batches)]))  # warm-up, on a user used nowhere else
        # 1. one request per user, one after another (users unseen by the cache beyond the header)
        users = list(range(16))  # users 0..15; the batches below take the next ones
        t0 = time.perf_counter()
        for u in users:
            await backend.plan(sub_request(fresh, [u]))
        one_at_a_time = len(users) / (time.perf_counter() - t0)
        results["one_at_a_time_users_per_s"] = one_at_a_time
        offset = 16
        rows = []
        for b in batches:  # every batch on users the cache has not seen beyond the shared header
            req = sub_request(fresh, range(offset, offset + b))
            offset += b
            t0 = time.perf_counter()
            await backend.plan(req)
            rate = b / (time.perf_counter() - t0)
            rows.append({"batch": b, "users_per_s": rate, "over_one_at_a_time": rate / one_at_a_time})
            print(f"  batch {b:>4}: {rate:8.1f} users/s ({rate / one_at_a_time:5.1f}x one at a time)", flush=True)
        results["batches"] = rows
        # 2. the reference design at batch 64, on users the cache has not seen
        ref_req = sub_request(session_requests(64, 6, 5, seed=2)[-1], range(64))
        ours_req = sub_request(session_requests(64, 6, 5, seed=3)[-1], range(64))
        t0 = time.perf_counter()
        ref_tokens = await reference_plan(backend, ref_req)
        ref_rate = 64 / (time.perf_counter() - t0)
        before = backend.stats()
        t0 = time.perf_counter()
        await backend.plan(ours_req)
        ours_rate = 64 / (time.perf_counter() - t0)
        after = backend.stats()
        results["reference_batch64_users_per_s"] = ref_rate
        results["reference_answer_tokens"] = ref_tokens / 64
        results["ours_batch64_users_per_s"] = ours_rate
        results["ours_answer_tokens"] = ((after["output_tokens"] - before["output_tokens"])
                                         / max(after["requests"] - before["requests"], 1))
        # 3. a training-like session: 64 users planned every plan_every steps as history grows
        session = session_requests(64, 20, args.plan_every, seed=4)
        before = backend.stats()
        t0 = time.perf_counter()
        for req in session:
            await backend.plan(req)
        seconds = time.perf_counter() - t0
        after = backend.stats()
        prompt = after["prompt_tokens"] - before["prompt_tokens"]
        cached = after["cached_prompt_tokens"] - before["cached_prompt_tokens"]
        plans = 64 * len(session)
        results["session"] = {"plan_every": args.plan_every, "plans": plans, "users_per_s": plans / seconds,
                              "prefix_cache_hit_rate": cached / max(prompt, 1),
                              "computed_prompt_tokens_per_plan": (prompt - cached) / plans,
                              "prompt_tokens_per_plan": prompt / plans,
                              # users whose prompt another user of the batch shared cost nothing:
                              "tokens_not_computed_share": 1 - (prompt - cached) / max(
                                  after["plan_user_prompt_tokens"] - before["plan_user_prompt_tokens"], 1),
                              "invalid_answers": after["invalid_answers"] - before["invalid_answers"]}
    finally:
        backend.close()
    return results


def training_run(args) -> dict:
    """A short real training run with the vllm planner; plan wait share and plan age from its metrics."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "learner.main", "--planner-backend", "vllm", "--planner-model", args.model,
               "--iterations", str(args.train_iterations), "--eval-users", "0", "--run-dir", tmp]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            return {"error": proc.stderr[-2000:]}
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    keys = ("planner_wait_share", "plan_age_mean", "planner_latency_ms", "env_steps_per_s",
            "planner_prefix_cache_hit_rate", "planner_plan_prefix_cache_hit_rate", "planner_fallback_rate")
    out = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys if any(k in r for r in rows)}
    last = rows[-1]  # the replicas' counters are running totals: derive per-user costs from the last row
    users = last.get("planner_plan_users", 0)
    if users:
        computed = last["planner_plan_prompt_tokens"] - last["planner_plan_cached_prompt_tokens"]
        out["planner_plan_computed_tokens_per_user"] = computed / users
        out["planner_plan_tokens_not_computed_share"] = 1 - computed / max(last["planner_plan_user_prompt_tokens"], 1)
    return out | {"iterations": len(rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="model for the vllm backend (default: smollm2)")
    parser.add_argument("--batches", default="1,16,64,256", help="users per request to measure")
    parser.add_argument("--plan-every", type=int, default=5, help="steps between plans in the session part")
    parser.add_argument("--block-size", type=int, default=None, help="KV-cache block size (default: the backend's)")
    parser.add_argument("--train-iterations", type=int, default=3, help="short training run (0 = skip)")
    args = parser.parse_args(argv)
    print(f"planner throughput, {args.model} on vLLM")
    results = asyncio.run(measure(args))
    if args.train_iterations:
        print("short training run with the vllm planner ...", flush=True)
        results["training"] = training_run(args)
    batch64 = next((r for r in results["batches"] if r["batch"] == 64), None)
    session, training = results["session"], results.get("training", {})
    goals = {
        "batching_over_one_at_a_time": (max(r["over_one_at_a_time"] for r in results["batches"]), 10.0),
        "prefix_cache_hit_rate": (session["prefix_cache_hit_rate"], 0.75),
        "answer_tokens": (results["ours_answer_tokens"], 8.0),
        "batch64_over_reference_same_run": (results["ours_batch64_users_per_s"] / results["reference_batch64_users_per_s"], 4.0),
        "batch64_over_vllm_cpu_md_reference": ((batch64 or {}).get("users_per_s", float("nan")) / REFERENCE_USERS_PER_S, 4.0),
        "plan_wait_share": (training.get("planner_wait_share", float("nan")), 0.5),
    }
    print(f"\n{'measure':<36}{'value':>10}{'goal':>10}")
    for name, (value, goal) in goals.items():
        direction = "<=" if name in ("answer_tokens", "plan_wait_share") else ">="
        print(f"{name:<36}{value:>10.2f}{direction:>4}{goal:>6}")
    print(f"reference (JSON names) batch 64: {results['reference_batch64_users_per_s']:.1f} users/s, "
          f"{results['reference_answer_tokens']:.1f} answer tokens; ours: {results['ours_batch64_users_per_s']:.1f} users/s")
    print(f"session (plan every {session['plan_every']}): {session['users_per_s']:.1f} users/s, "
          f"{session['computed_prompt_tokens_per_plan']:.0f} prompt tokens computed per plan; prefix cache "
          f"{session['prefix_cache_hit_rate']:.2f} of engine prompt tokens, "
          f"{session['tokens_not_computed_share']:.2f} of users' prompt tokens not computed")
    if training:
        print(f"training: plan wait share {training.get('planner_wait_share', float('nan')):.2f}, "
              f"plan age {training.get('plan_age_mean', float('nan')):.2f} steps, prefix cache: plans "
              f"{training.get('planner_plan_prefix_cache_hit_rate', float('nan')):.2f}, all roles "
              f"{training.get('planner_prefix_cache_hit_rate', float('nan')):.2f}; prompt tokens computed per user "
              f"planned {training.get('planner_plan_computed_tokens_per_user', float('nan')):.1f} "
              f"(share not computed: {training.get('planner_plan_tokens_not_computed_share', float('nan')):.2f})")
    path = write_result("planner", {"model": args.model, **results,
                                    "goals": {k: {"value": v, "goal": g} for k, (v, g) in goals.items()}})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
