"""The learner's PPO update and the rollout actors' forward pass: the fast implementation against
the one before it (kept as the model's reference path), in one run, on the same batches.

Batches: real ones, collected by a `RolloutWorker` on the default MovieLens world with the
untrained policy (no planner: the category mask is then all ones, which costs the network the
same), `--rows` transitions per update as a learner gets them (2 actors x 256 users by default
gives about 2,500). Both learners start from the same weights and learn from the same batches.

- update: `Learner.update` end to end (checks, GAE, the PPO epochs), seconds per row;
  reference: `ActorCritic(reference_path=True)` (every token through the whole encoder, each
  history slot projected on its own, the preference estimate made in every minibatch) and an
  unfused Adam, as the tree had them;
- forward: the acting forward pass (no gradient) over one batch's rows in one call, the median of
  `FORWARD_CALLS` calls, seconds per row;
- agreement: the two implementations' losses and gradients on one minibatch, from the same
  weights (max absolute difference; the tests hold them to float tolerance).

Reported as ratios reference / fast, the median over `--repeats` interleaved pairs (the machine is
shared: a ratio from interleaved runs is robust where a time is not). Issue 18's goal: >= 5x for
the update, and for the forward pass.

    python benchmarks/learner_update.py [--rows 2560] [--repeats 7] [--threads 1]

Writes benchmarks/results/learner_update.json.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import write_result  # noqa: E402


def collect_batches(rows: int, users: int, seed: int):
    """Arrow batches of about `rows` transitions from the default world (untrained policy)."""
    from policy.networks import PolicyConfig
    from rollout.actor import RolloutConfig, RolloutWorker
    from rollout.world import WorldConfig

    worker = RolloutWorker(WorldConfig(), PolicyConfig(), RolloutConfig(users_per_actor=users, use_planner=False),
                           None, 0, seed)
    batches, total = [], 0
    while total < rows:
        batch, stats = worker.collect()
        batches.append(batch)
        total += batch.num_rows
    return batches


def learners(seed: int, threads: int):
    """(fast, reference) learners with the same weights and optimizer settings."""
    import torch

    from learner.learner_actor import Learner
    from learner.ppo import PPOConfig
    from policy.networks import ActorCritic, PolicyConfig
    from rollout.batch_schema import batch_dims
    from rollout.world import World, WorldConfig, policy_spec

    cfg = WorldConfig()
    world = World.build(cfg, log=lambda line: None)
    spec, dims, ppo = policy_spec(cfg, world), batch_dims(cfg, world), PPOConfig(lr=3e-4, gamma=0.9)
    fast = Learner(spec, dims, PolicyConfig(), ppo, seed, device="cpu", torch_threads=threads)
    reference = Learner(spec, dims, PolicyConfig(), ppo, seed, device="cpu", torch_threads=threads)
    reference.model = ActorCritic.from_spec(spec, PolicyConfig(), reference_path=True)
    reference.model.load_state_dict(fast.model.state_dict())
    reference.model.eval()
    reference.optimizer = torch.optim.Adam(reference.model.parameters(), lr=ppo.lr, eps=1e-5)
    return fast, reference


def relabel(batches, tag: str):
    """The same batches under fresh ids (a learner skips an id it has seen)."""
    import pyarrow as pa

    out = []
    for i, batch in enumerate(batches):
        ids = pa.array([f"{tag}-{i}"] * batch.num_rows, batch.schema.field("batch_id").type)
        index = batch.schema.get_field_index("batch_id")
        out.append(batch.set_column(index, batch.schema.field(index), ids))
    return out


def agreement(fast, reference, batch) -> dict:
    """Max |difference| of the PPO loss terms and of every gradient on one minibatch."""
    import torch

    from learner.ppo import observation
    from policy.networks import log_prob
    from rollout.batch_schema import OBSERVATION_COLUMNS, column

    model_f, model_r = copy.deepcopy(fast.model), copy.deepcopy(reference.model)
    model_r.load_state_dict(model_f.state_dict())
    # A trained-looking state: move the zero-initialised correction so the mean depends on the encoder.
    with torch.no_grad():
        for model in (model_f, model_r):
            torch.manual_seed(0)
            for p in model.mu_head.correction[-1].parameters():
                p.normal_(0, 0.1)
    cols = {n: torch.from_numpy(column(batch, n).copy()) for n in (*OBSERVATION_COLUMNS, "action")}
    idx = torch.arange(min(256, batch.num_rows))
    outs = []
    for model in (model_f, model_r):
        model.train()
        dist, value = model(*observation(cols, idx))
        loss = log_prob(dist, cols["action"][idx]).mean() + value.pow(2).mean()
        loss.backward()
        outs.append((dist.mean.detach(), value.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                           if p.grad is not None}))
    (mu_f, v_f, g_f), (mu_r, v_r, g_r) = outs
    return {"mean": float((mu_f - mu_r).abs().max()), "value": float((v_f - v_r).abs().max()),
            "gradient": max(float((g_f[n] - g_r[n]).abs().max()) for n in g_r),
            "gradient_scale": max(float(g_r[n].abs().max()) for n in g_r)}


FORWARD_CALLS = 5
"""Forward calls timed per pair (the median is kept): one 750-row call takes 10-20 ms, and a single
call per pair moved the ratio by a third from run to run."""


def forward_seconds(model, batch) -> float:
    import torch

    from learner.ppo import observation
    from rollout.batch_schema import OBSERVATION_COLUMNS, column

    cols = {n: torch.from_numpy(column(batch, n).copy()) for n in OBSERVATION_COLUMNS}
    idx = torch.arange(batch.num_rows)
    obs = observation(cols, idx)
    times = []
    with torch.no_grad():
        for _ in range(FORWARD_CALLS):
            t0 = time.perf_counter()
            model(*obs)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2560, help="transitions per update (default 2560)")
    parser.add_argument("--users", type=int, default=256, help="users per collect, as one rollout actor (default 256)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved pairs per measurement (default 7)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each learner (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    batches = collect_batches(args.rows, args.users, args.seed)
    fast, reference = learners(args.seed, args.threads)
    torch.set_num_threads(args.threads)
    rows = sum(b.num_rows for b in batches)
    print(f"{len(batches)} batches, {rows} rows per update; {args.repeats} interleaved pairs", flush=True)
    agree = agreement(fast, reference, batches[0])
    print(f"agreement: mean {agree['mean']:.2e}, value {agree['value']:.2e}, "
          f"gradient {agree['gradient']:.2e} (largest gradient {agree['gradient_scale']:.2e})", flush=True)
    update = {"fast": [], "reference": []}
    forward = {"fast": [], "reference": []}
    for rep in range(args.repeats + 1):   # the first pair warms up and is not counted
        for name, learner in (("reference", reference), ("fast", fast)):
            t0 = time.perf_counter()
            metrics = learner.update(*relabel(batches, f"{name}-{rep}"))
            seconds = time.perf_counter() - t0
            assert metrics["rows"] == rows, metrics
            fwd = forward_seconds(learner.model, batches[0])
            if rep:
                update[name].append(seconds / rows)
                forward[name].append(fwd / batches[0].num_rows)
        if rep:
            print(f"pair {rep}: update reference {update['reference'][-1] * rows:.3f} s, fast {update['fast'][-1] * rows:.3f} s; "
                  f"forward reference {forward['reference'][-1] * 1e3 * batches[0].num_rows:.1f} ms, "
                  f"fast {forward['fast'][-1] * 1e3 * batches[0].num_rows:.1f} ms", flush=True)
    ratio_update = statistics.median(r / f for r, f in zip(update["reference"], update["fast"]))
    ratio_forward = statistics.median(r / f for r, f in zip(forward["reference"], forward["fast"]))
    result = {
        "command": "python benchmarks/learner_update.py " + " ".join(sys.argv[1:]),
        "rows_per_update": rows, "forward_rows": batches[0].num_rows, "threads": args.threads, "repeats": args.repeats,
        "update_s_per_row": {k: statistics.median(v) for k, v in update.items()},
        "forward_s_per_row": {k: statistics.median(v) for k, v in forward.items()},
        "update_speedup": ratio_update, "forward_speedup": ratio_forward, "agreement": agree,
        "goal": {"update_speedup": 5.0, "forward_speedup": 5.0},
    }
    path = write_result("learner_update", result)
    print(f"update: {ratio_update:.2f}x faster per row (goal 5x); forward: {ratio_forward:.2f}x (goal 5x); {path}")


if __name__ == "__main__":
    main()
