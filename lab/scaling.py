"""Scaling experiments: one command runs `python -m learner.main` over a grid of rollout actors x
users per actor x planner replicas x learners and writes what each cell measured as a CSV, a
markdown table and a PNG plot of throughput and policy lag.

    python -m learner.scaling                                  # the CPU grid, on this machine
    python -m learner.scaling --actors 2,4,8,16 --users 64,256 --replicas 1,2,4 --learners 1,2,4 \\
        --address auto --planner-backend vllm -- --learner-num-gpus 1     # on a cluster

Every cell is a fresh training run (its own Ray session locally, or a driver on the cluster with
--address auto) of `--iterations` updates; the first `--warmup` iterations are not counted, so
start-up (actors, planner engine, the first weights) does not blur the rates. Anything after `--`
is passed to every run unchanged. A failed cell is recorded with its error and the grid goes on.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lab import plots

COLUMNS = ("actors", "users", "replicas", "learners", "env_steps_per_s", "env_steps_per_s_per_actor",
           "policy_lag_mean", "policy_lag_max", "planner_latency_ms", "planner_fallback_rate",
           "update_seconds", "iterations", "wall_s", "status")


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def cell_command(args: argparse.Namespace, actors: int, users: int, replicas: int, learners: int,
                 run_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "learner.main", "--num-rollout-actors", str(actors), "--users-per-actor", str(users),
           "--planner-replicas", str(replicas), "--num-learners", str(learners),
           "--iterations", str(args.iterations), "--time-budget-s", "0", "--eval-users", "0",
           "--checkpoint-every", "0", "--planner-backend", args.planner_backend, "--run-dir", str(run_dir),
           "--seed", str(args.seed)]
    if args.address:
        cmd += ["--address", args.address]
    if args.rollout_num_cpus is not None:  # 2 cores: actors mostly wait on each other, so they may share
        cmd += ["--rollout-num-cpus", str(args.rollout_num_cpus)]
    return cmd + list(args.extra)


def summarise(metrics_path: Path, warmup: int) -> dict:
    """The rates of one run from its metrics.jsonl, iterations after the warm-up only."""
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    counted = rows[warmup:] or rows
    steps = sum(r["env_steps"] for r in counted)
    seconds = sum(r["seconds"] for r in counted)
    return {"env_steps_per_s": steps / max(seconds, 1e-9),
            "policy_lag_mean": float(np.mean([r["policy_lag_mean"] for r in counted])),
            "policy_lag_max": int(max(r["policy_lag_max"] for r in counted)),
            "planner_latency_ms": float(np.mean([r["planner_latency_ms"] for r in counted])),
            "planner_fallback_rate": float(np.mean([r["planner_fallback_rate"] for r in counted])),
            "update_seconds": float(np.mean([r.get("update_seconds", float("nan")) for r in counted])),
            "iterations": len(rows)}


def run_grid(args: argparse.Namespace) -> list[dict]:
    out = Path(args.out)
    grid = list(itertools.product(args.actors, args.users, args.replicas, args.learners))
    results = []
    for n, (actors, users, replicas, learners) in enumerate(grid, 1):
        run_dir = out / "runs" / f"a{actors}-u{users}-r{replicas}-l{learners}"
        print(f"[{n}/{len(grid)}] actors {actors}, users/actor {users}, planner replicas {replicas}, "
              f"learners {learners} ...", flush=True)
        row = {"actors": actors, "users": users, "replicas": replicas, "learners": learners}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cell_command(args, actors, users, replicas, learners, run_dir),
                                  capture_output=True, text=True, timeout=args.cell_timeout_s)
            failed = proc.returncode != 0
            reason = (proc.stderr.strip().splitlines() or ["no output"])[-1] if failed else ""
        except subprocess.TimeoutExpired:
            failed, reason = True, f"timed out after {args.cell_timeout_s} s"
        row["wall_s"] = time.perf_counter() - t0
        metrics = run_dir / "metrics.jsonl"
        if failed or not metrics.is_file():
            row["status"] = f"failed: {reason or 'no metrics written'}"
            print(f"    {row['status']}", flush=True)
        else:
            row.update(summarise(metrics, args.warmup), status="ok")
            row["env_steps_per_s_per_actor"] = row["env_steps_per_s"] / actors
            print(f"    {row['env_steps_per_s']:,.0f} env-steps/s, policy lag {row['policy_lag_mean']:.2f}, "
                  f"plan {row['planner_latency_ms']:.1f} ms", flush=True)
        results.append(row)
    return results


def write_outputs(rows: list[dict], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, png_path = out / "scaling.csv", out / "scaling.md", out / "scaling.png"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    header = ("| rollout actors | users/actor | planner replicas | learners | env-steps/s | per actor "
              "| policy lag (mean / max) | plan ms | status |")
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        if r["status"] == "ok":
            lines.append(f"| {r['actors']} | {r['users']} | {r['replicas']} | {r['learners']} | "
                         f"{r['env_steps_per_s']:,.0f} | {r['env_steps_per_s_per_actor']:,.0f} | "
                         f"{r['policy_lag_mean']:.2f} / {r['policy_lag_max']} | {r['planner_latency_ms']:.1f} | ok |")
        else:
            lines.append(f"| {r['actors']} | {r['users']} | {r['replicas']} | {r['learners']} | | | | | {r['status']} |")
    md_path.write_text("\n".join(lines) + "\n")
    paths = [csv_path, md_path]
    ok = [r for r in rows if r["status"] == "ok"]
    if ok:
        fig, (ax_rate, ax_lag) = plots.subplots(1, 2, figsize=(11, 4))
        series = sorted({(r["users"], r["replicas"], r["learners"]) for r in ok})
        for users, replicas, learners in series:
            pts = sorted((r["actors"], r["env_steps_per_s"], r["policy_lag_mean"]) for r in ok
                         if (r["users"], r["replicas"], r["learners"]) == (users, replicas, learners))
            label = f"{users} users/actor, {replicas} planner, {learners} learner"
            ax_rate.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
            ax_lag.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=label)
        ax_rate.set(xlabel="rollout actors", ylabel="env-steps/s (end to end)", title="throughput")
        ax_lag.set(xlabel="rollout actors", ylabel="policy lag (versions)", title="policy lag")
        for ax in (ax_rate, ax_lag):
            ax.set_ylim(bottom=0)  # ratios between cells read right only from zero
            ax.set_xticks(sorted({r["actors"] for r in ok}))
        paths.append(plots.save(fig, png_path, (ax_rate, ax_lag)))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m learner.scaling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actors", type=_ints, default=[1, 2, 4], help="rollout actors (default: 1,2,4)")
    parser.add_argument("--users", type=_ints, default=[64], help="users per rollout actor (default: 64)")
    parser.add_argument("--replicas", type=_ints, default=[1, 2], help="planner replicas (default: 1,2)")
    parser.add_argument("--learners", type=_ints, default=[1, 2], help="data-parallel learners (default: 1,2)")
    parser.add_argument("--iterations", type=int, default=8, help="updates per cell (default: 8)")
    parser.add_argument("--warmup", type=int, default=2, help="first iterations not counted (default: 2)")
    parser.add_argument("--planner-backend", default="heuristic", choices=("heuristic", "vllm", "auto"),
                        help="planner backend of every cell (default: heuristic, so the grid measures the loop)")
    parser.add_argument("--address", default="", help="Ray cluster for every cell ('auto' under ray job submit)")
    parser.add_argument("--rollout-num-cpus", type=float, default=None,
                        help="Ray CPUs per rollout actor (default: learner.main's); lower it to fit more actors")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cell-timeout-s", type=float, default=600.0, help="a cell running longer fails (default: 600)")
    parser.add_argument("--out", default="runs/scaling", help="where the runs, CSV, markdown and PNG go")
    parser.add_argument("extra", nargs="*", help="after `--`: flags passed to every learner.main run")
    args = parser.parse_args(argv)
    if args.iterations <= args.warmup:
        parser.error(f"--iterations ({args.iterations}) must exceed --warmup ({args.warmup})")
    rows = run_grid(args)
    for path in write_outputs(rows, Path(args.out)):
        print(f"wrote {path}")
    print(Path(args.out, "scaling.md").read_text())
    return 0 if any(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
