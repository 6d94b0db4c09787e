"""A cost model of the training loop: env-steps/s and policy lag for N rollout actors, K planner
replicas and M data-parallel learners, from per-component costs measured on this machine.

    python -m lab.cost_model --grid runs/scaling          # calibrate on the grid, check every cell,
                                                           # project clusters of 8, 64 and 512 GPUs
    python -m lab.cost_model --grid runs/scaling --llm-run runs/default   # the LLM planner's cost too

The loop (learner/rollout_pool.py, learner/algorithms/lerl): every actor has one collect in flight;
the driver takes N batches, the learner updates on them and publishes, and meanwhile the actors
collect the next ones (each is resubmitted as soon as its batch is taken). So an iteration lasts

    T = max(t_collect, t_learn, D / P)

- t_collect = S x (a + w): an actor's batch of S env steps, a = its own work per env step
  (simulate, policy forward, building the batch, loading weights) and w = its wait for plans per
  env step, w = max(0, s / (1 - rho) - h) with s the planner's service time per env step,
  rho = (N / K - 1) S s / T the share of time a replica is busy with the other actors' plans (one
  actor alone never queues; solved by fixed point), and h the part of s the actor's own work
  covers (it encodes the histories while the service plans: rollout.actor; 0 in runs made
  before, whose actors waited for every plan);
- t_learn = c R / M + o log2(M) + p + x R: R = N S rows, c the learner's compute per row, o the
  data-parallel overhead per update (all-reduce, the ranks' sync), p the weights' publish, x the
  batches' transfer per row;
- D / P: on a machine of P cores shared by everything, the CPU work of an iteration
  (N S (a + s) + c R + M o + p + x R) over the cores; on a cluster every component has its own
  core or GPU and this term is absent.

Env-steps/s = N S / T. Policy lag: a batch acts with the weights published before it was
submitted and is learned from one update later, so its lag is in_flight / batches_per_iteration
(1 for the defaults, 0 for the first batches).

Costs are calibrated from runs' metrics.jsonl (the per-iteration seconds and shares each run logs,
learner.metrics_row): a, s, c, p, x from the 1-actor, 1-replica, 1-learner cell, o from the
1-actor, 1-replica, 2-learner cell; every cell of the grid is then predicted and compared. The
cluster projection scales the measured costs of the components that move to a GPU by assumed
speed-ups (flags; written beside the table): nothing here has run on a GPU.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ComponentCosts:
    """Seconds per unit of work of each component, on the machine that measured them."""

    actor_s_per_step: float
    """A rollout actor's own work per env step (simulate, policy forward, batch building, weights)."""
    plan_s_per_step: float
    """A planner replica's service time per env step (its plans for that step's users)."""
    learner_s_per_row: float
    """One learner's update compute per transition row."""
    learner_dp_s: float
    """Extra seconds per update per doubling of data-parallel learners (all-reduce, the ranks' sync)."""
    publish_s: float
    """Publishing one version of the weights (one ray.put)."""
    transfer_s_per_row: float
    """Moving a row of the batches into the learner, with the update call's own overhead."""
    steps_per_batch: float
    """Env steps in one actor's batch at the calibration's users per actor."""
    users_per_actor: int
    """Users per actor at calibration (a batch's env steps scale with it)."""
    plan_hidden_s_per_step: float = 0.0
    """Of the planner's service time per env step, what an actor's own work covers (it encodes the
    histories while the plan is made); 0 where actors wait for every plan."""


def read_rows(metrics: Path, warmup: int) -> list[dict]:
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if len(rows) <= warmup:
        raise ValueError(f"{metrics}: {len(rows)} iterations, need more than the warm-up of {warmup}")
    return rows[warmup:]


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def _seconds_waiting_for_the_planner(rows: list[dict]) -> float:
    """The rollout actors' seconds waiting for plans and reflections, over these iterations."""
    return sum(r["rollout_seconds"] * (r["rollout_plan_wait_share"] + r["rollout_reflect_share"]) for r in rows)


def _seconds_of_plan_calls(rows: list[dict]) -> float:
    """The plan calls' own seconds and the reflections' wait, over these iterations: the calls'
    time where the rows have it (an actor encodes while its plan is made, so its wait is less),
    else the wait (runs made before the rows carried it, whose actors waited for every plan)."""
    if not all("planner_call_seconds" in r for r in rows):
        return _seconds_waiting_for_the_planner(rows)
    return sum(r["planner_call_seconds"] + r["rollout_seconds"] * r["rollout_reflect_share"] for r in rows)


def per_step_costs(rows: list[dict]) -> dict:
    """An actor's work and plan wait per env step, and the learner's parts per row, from one run."""
    steps = sum(r["env_steps"] for r in rows)
    rollout = sum(r["rollout_seconds"] for r in rows)
    plan = _seconds_waiting_for_the_planner(rows)
    service = max(_seconds_of_plan_calls(rows), plan)
    compute = sum(r["update_compute_seconds"] for r in rows)
    publish = sum(r["publish_seconds"] for r in rows)
    transfer = sum(max(0.0, r["update_seconds"] - r["update_compute_seconds"] - r["publish_seconds"]) for r in rows)
    return {"actor_s_per_step": (rollout - plan) / steps, "plan_s_per_step": service / steps,
            "plan_hidden_s_per_step": (service - plan) / steps,
            "learner_s_per_row": compute / steps, "publish_s": publish / len(rows),
            "transfer_s_per_row": transfer / steps, "steps_per_batch": steps / sum(len(r["batch_ids"]) for r in rows),
            "update_s": compute / len(rows)}


def calibrate(single: list[dict], data_parallel: list[dict] | None, users_per_actor: int) -> ComponentCosts:
    """Costs from the 1-actor, 1-replica, 1-learner cell (and the 2-learner one for the
    data-parallel overhead: its update time less half the single learner's compute)."""
    base = per_step_costs(single)
    dp = 0.0
    if data_parallel:
        two = per_step_costs(data_parallel)
        rows = two["steps_per_batch"] * len(data_parallel[0]["batch_ids"])
        dp = max(0.0, two["update_s"] - base["learner_s_per_row"] * rows / 2)
    return ComponentCosts(base["actor_s_per_step"], base["plan_s_per_step"], base["learner_s_per_row"], dp,
                          base["publish_s"], base["transfer_s_per_row"], base["steps_per_batch"], users_per_actor,
                          base["plan_hidden_s_per_step"])


@dataclass
class Prediction:
    env_steps_per_s: float
    policy_lag: float
    iteration_s: float
    bound: str  # what sets the iteration's length: collect, learn or cpu


def predict(costs: ComponentCosts, actors: int, replicas: int, learners: int, users_per_actor: int | None = None,
            cores: float | None = None, batches_per_iteration: int | None = None) -> Prediction:
    """The loop's steady state; `cores` = a shared machine of that many cores, None = a cluster."""
    users = users_per_actor or costs.users_per_actor
    steps = costs.steps_per_batch * users / costs.users_per_actor
    per_iteration = batches_per_iteration or actors
    rows = per_iteration * steps
    dp = costs.learner_dp_s * math.log2(learners)  # per doubling of the ranks; 0 for one learner
    t_learn = costs.learner_s_per_row * rows / learners + dp + costs.publish_s + costs.transfer_s_per_row * rows
    cpu = (actors * steps * (costs.actor_s_per_step + costs.plan_s_per_step) + costs.learner_s_per_row * rows
           + learners * dp + costs.publish_s + costs.transfer_s_per_row * rows)
    t_cpu = cpu / cores if cores else 0.0
    hidden = min(costs.plan_hidden_s_per_step, costs.plan_s_per_step)
    iteration = max(t_learn, t_cpu, steps * (costs.actor_s_per_step + costs.plan_s_per_step - hidden))
    for _ in range(100):  # the planners' queue: an actor waits behind the other actors' plans
        rho = min(max(actors / replicas - 1.0, 0.0) * steps * costs.plan_s_per_step / iteration, 0.95)
        wait = max(0.0, costs.plan_s_per_step / (1.0 - rho) - hidden)
        t_collect = steps * (costs.actor_s_per_step + wait) * per_iteration / actors
        new = max(t_collect, t_learn, t_cpu)
        if abs(new - iteration) < 1e-9 * max(new, 1.0):
            break
        iteration = new
    bound = max((("collect", t_collect), ("learn", t_learn), ("cpu", t_cpu)), key=lambda kv: kv[1])[0]
    return Prediction(rows / iteration, actors / per_iteration if actors >= per_iteration else 1.0, iteration, bound)


def check_grid(grid: Path, warmup: int, cores: float) -> tuple[ComponentCosts, list[dict]]:
    """Calibrate on the grid's 1-1-1 (and 1-1-2) cells and predict every cell."""
    runs = grid / "runs"
    cells = sorted(p for p in runs.iterdir() if (p / "metrics.jsonl").is_file()) if runs.is_dir() else []
    if not cells:
        raise ValueError(f"no cells with a metrics.jsonl under {runs}: run `python -m learner.scaling --out {grid}` first")

    def parse(name: str) -> dict:
        parts = dict((p[0], int(p[1:])) for p in name.split("-"))
        return {"actors": parts["a"], "users": parts["u"], "replicas": parts["r"], "learners": parts["l"]}

    keyed = {tuple(parse(p.name).values()): p for p in cells}
    users = min(k[1] for k in keyed)
    single = keyed.get((1, users, 1, 1))
    if single is None:
        raise ValueError(f"the grid under {runs} has no 1-actor, 1-replica, 1-learner cell to calibrate on")
    two = keyed.get((1, users, 1, 2))
    costs = calibrate(read_rows(single / "metrics.jsonl", warmup),
                      read_rows(two / "metrics.jsonl", warmup) if two else None, users)
    out = []
    for key, path in sorted(keyed.items()):
        rows = read_rows(path / "metrics.jsonl", warmup)
        measured = sum(r["env_steps"] for r in rows) / sum(r["seconds"] for r in rows)
        pred = predict(costs, key[0], key[2], key[3], key[1], cores=cores)
        out.append({**parse(path.name), "measured_env_steps_per_s": measured, "predicted_env_steps_per_s": pred.env_steps_per_s,
                    "error": pred.env_steps_per_s / measured - 1.0, "measured_policy_lag": _mean(rows, "policy_lag_mean"),
                    "predicted_policy_lag": pred.policy_lag, "bound": pred.bound,
                    "calibration": key in ((1, users, 1, 1), (1, users, 1, 2))})
    return costs, out


def _assumed(value, doc: str):
    return field(default=value, metadata={"doc": doc})


@dataclass
class GpuAssumptions:
    """What a GPU changes, assumed (no GPU ran here): the components that move to a GPU run this
    many times faster than on one core of this machine; the rest is as measured."""

    planner_speedup: float = _assumed(50.0, "a planner replica on a GPU (vLLM) against the engine on one core "
                                      "here: a small model's plan prompts are prefill-bound, and a GPU prefills a "
                                      "135M model at tens of thousands of tokens a second")
    learner_speedup: float = _assumed(10.0, "a learner's update on a GPU against one core here: the network is "
                                      "small (d 32, 31 tokens), so its kernels are launch-bound, far below peak")
    allreduce_s: float = _assumed(0.002, "seconds of NCCL all-reduce per update per doubling of the learners "
                                  "(tens of kB of gradients: latency-bound)")
    actors_per_gpu: int = _assumed(16, "rollout actors (one CPU core each) per GPU (cluster.yaml: 16-core CPU nodes)")
    users_per_actor: int = _assumed(64, "users each rollout actor steps together")


def cluster_costs(cpu: ComponentCosts, llm_plan_s_per_step: float, gpu: GpuAssumptions) -> ComponentCosts:
    """Per-component costs on a cluster: actors on CPU cores as measured here; the LLM planner and
    the learner on GPUs, scaled by the assumed speed-ups."""
    plan = llm_plan_s_per_step / gpu.planner_speedup
    return ComponentCosts(cpu.actor_s_per_step, plan, cpu.learner_s_per_row / gpu.learner_speedup, gpu.allreduce_s,
                          cpu.publish_s, cpu.transfer_s_per_row, cpu.steps_per_batch, cpu.users_per_actor,
                          min(cpu.plan_hidden_s_per_step, plan))


def best_split(costs: ComponentCosts, gpus: int, gpu: GpuAssumptions) -> dict:
    """The split of `gpus` between planner replicas and learners with the most env-steps/s."""
    actors = gpu.actors_per_gpu * gpus
    best = None
    for replicas in range(1, gpus):
        learners = gpus - replicas
        pred = predict(costs, actors, replicas, learners, gpu.users_per_actor)
        if best is None or pred.env_steps_per_s > best["env_steps_per_s"]:
            best = {"gpus": gpus, "actors": actors, "replicas": replicas, "learners": learners, **asdict(pred)}
    return best


def llm_plan_cost(metrics: Path, warmup: int) -> float:
    """The LLM engine's service time per env step, from a run whose actors waited for the planner
    most of their time (the engine bound the loop, so its busy time is the run's time)."""
    rows = read_rows(metrics, warmup)
    wait = _seconds_waiting_for_the_planner(rows)
    rollout = sum(r["rollout_seconds"] for r in rows)
    if wait < 0.5 * rollout:
        raise ValueError(f"{metrics}: the actors waited for the planner {100 * wait / rollout:.0f}% of their time; "
                         "the engine's cost per step is read only from a run it bound (> 50%)")
    return sum(r["seconds"] for r in rows) / sum(r["env_steps"] for r in rows)


def write_report(out: Path, costs: ComponentCosts, cells: list[dict], projection: list[dict],
                 gpu: GpuAssumptions, llm_s: float | None, cores: float) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    checked = [c for c in cells if not c["calibration"]]
    worst = max((abs(c["error"]) for c in checked), default=float("nan"))
    lines = ["# Cost model", "", "`python -m lab.cost_model` (lab/cost_model.py: the model and its terms).", "",
             "## Measured per-component costs", "", "| cost | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3g} |" for k, v in asdict(costs).items()]
    if llm_s is not None:
        lines.append(f"| LLM planner, engine seconds per env step (one core) | {llm_s:.3g} |")
    lines += ["", f"## Checked against the CPU scaling grid ({cores:g} cores, heuristic planner)", "",
              "| actors | users | replicas | learners | measured env-steps/s | predicted | error | lag measured / predicted | bound |",
              "|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        mark = " (calibration)" if c["calibration"] else ""
        lines.append(f"| {c['actors']} | {c['users']} | {c['replicas']} | {c['learners']}{mark} | "
                     f"{c['measured_env_steps_per_s']:,.0f} | {c['predicted_env_steps_per_s']:,.0f} | "
                     f"{100 * c['error']:+.0f}% | {c['measured_policy_lag']:.2f} / {c['predicted_policy_lag']:.2f} | {c['bound']} |")
    lines += ["", f"Largest error on the cells not used for calibration: {100 * worst:.0f}% (goal: within 25%).", ""]
    if projection:
        lines += ["## Projected clusters (LLM planner on GPUs)", "",
                  "| GPUs | rollout actors | planner replicas | learners | env-steps/s | policy lag | bound |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {p['gpus']} | {p['actors']} | {p['replicas']} | {p['learners']} | {p['env_steps_per_s']:,.0f} | "
                  f"{p['policy_lag']:.2f} | {p['bound']} |" for p in projection]
        lines += ["", f"Every learner rank receives the whole batch (learner.distributed: each rank computes its shard of "
                  f"every minibatch of the same batch), so whatever the number of learners the loop is capped at "
                  f"1 / transfer_s_per_row = {1 / max(costs.transfer_s_per_row, 1e-12):,.0f} rows a second: sharding the "
                  "batches across the ranks is what would lift the cap.", "",
                  "Assumptions (none of this ran on a GPU):"]
        lines += [f"- {name} = {value}: {GpuAssumptions.__dataclass_fields__[name].metadata.get('doc', '')}".rstrip(": ")
                  for name, value in asdict(gpu).items()]
        lines += ["- rollout actors, publishing and batch transfer cost what they cost on this machine's cores; "
                  "network transfer between nodes is not modelled.", ""]
    md = out / "cost_model.md"
    md.write_text("\n".join(lines))
    js = out / "cost_model.json"
    js.write_text(json.dumps({"costs": asdict(costs), "llm_plan_s_per_step": llm_s, "cores": cores, "cells": cells,
                              "largest_error": worst, "projection": projection, "assumptions": asdict(gpu)}, indent=2))
    return [md, js]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.cost_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default="runs/scaling", help="a `python -m learner.scaling` output directory")
    parser.add_argument("--llm-run", default="", help="a run directory of learner.main with the vLLM planner "
                        "(for the LLM's cost per env step in the cluster projection)")
    parser.add_argument("--warmup", type=int, default=2, help="first iterations of each run not counted (default: 2)")
    parser.add_argument("--cores", type=float, default=0, help="cores of the machine the grid ran on (default: this one's)")
    parser.add_argument("--gpus", default="8,64,512", help="cluster sizes to project (default: 8,64,512)")
    defaults = GpuAssumptions()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value,
                            help=f"assumed (default: {value})")
    parser.add_argument("--out", default="benchmarks/results", help="where cost_model.md and .json go")
    args = parser.parse_args(argv)
    cores = args.cores or float(os.cpu_count() or 1)
    try:
        costs, cells = check_grid(Path(args.grid), args.warmup, cores)
        llm_s = llm_plan_cost(Path(args.llm_run) / "metrics.jsonl", args.warmup) if args.llm_run else None
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gpu = GpuAssumptions(**{name: getattr(args, name) for name in asdict(defaults)})
    projection = []
    if llm_s is not None:
        on_cluster = cluster_costs(costs, llm_s, gpu)
        projection = [best_split(on_cluster, int(g), gpu) for g in args.gpus.split(",") if int(g) >= 2]
    for path in write_report(Path(args.out), costs, cells, projection, gpu, llm_s, cores):
        print(f"wrote {path}")
    print((Path(args.out) / "cost_model.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
