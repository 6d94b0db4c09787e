"""The real entry point, `python -m learner.main`, run as a user would (smoke tests, CLI errors)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learner.config import TrainConfig
from learner.evaluation import evaluate_reference, evaluate_worker, evaluation_users
from netns import loopback_only, netns_available
from learner.evaluation import PLANNER_CONTROLS
from rollout.reference_policies import REFERENCE_POLICIES
from rollout.world import World

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], timeout: float, isolate: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "learner.main", *args]
    if isolate:
        if not netns_available():
            pytest.skip("cannot create a loopback-only network namespace here (needs root or user namespaces)")
        cmd = loopback_only(cmd)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.ray
def test_smoke_tiny_budget_writes_metrics_checkpoint_and_eval(tmp_path):
    run_dir = tmp_path / "run"
    proc = _run(["--iterations", "3", "--num-rollout-actors", "2", "--users-per-actor", "8", "--planner-backend", "heuristic",
                 "--eval-users", "16", "--checkpoint-every", "2", "--run-dir", str(run_dir)],
                timeout=300, isolate=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    progress = [line for line in proc.stdout.splitlines() if line.startswith("iter ")]
    assert len(progress) == 3 and all("env-steps/s" in line and "lag" in line for line in progress)

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    for row in rows:
        # A step's reward is a mean click over the slate, in [0, 1]: a return is at most its length.
        assert 1 <= row["Tint"] <= 20 and 0 < row["Rcum"] <= row["Tint"] and 0 < row["Rsin"] <= 1
        assert row["env_steps"] > 0
        assert len(row["policy_lags"]) == 2 and all(lag >= 0 for lag in row["policy_lags"])
        assert row["planner_fallback_rate"] == 0.0
        # Where the time goes (issue 18): the rollout actors' time and the driver's, in shares.
        rollout = [row[f"rollout_{part}_share"] for part in ("load_weights", "simulate", "policy_forward", "plan_wait",
                                                             "reflect", "other")]
        assert all(0 <= share <= 1 for share in rollout) and sum(rollout) == pytest.approx(1.0)
        assert row["rollout_simulate_share"] > 0 and row["rollout_policy_forward_share"] > 0
        driver = [row[f"{part}_share"] for part in ("update", "publish", "batch_transfer", "collect_wait")]
        assert all(0 <= share <= 1 for share in driver) and sum(driver) == pytest.approx(1.0)
        assert row["update_share"] > 0 and row["publish_share"] > 0
    assert rows[-1]["policy_version"] == 3
    # Every batch the learner saw was distinct.
    batch_ids = [b for r in rows for b in r["batch_ids"]]
    assert len(batch_ids) == len(set(batch_ids)) == 6

    final = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=False)
    assert final["iteration"] == 3 and final["learner"]["version"] == 3
    assert (run_dir / "checkpoints" / "latest.pt").exists()
    assert json.loads((run_dir / "config.json").read_text())["run"]["iterations"] == 3
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tensorboard").iterdir())
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert set(evaluation) == {*REFERENCE_POLICIES, *PLANNER_CONTROLS, "trained"}
    assert all(m["episodes"] == 16 for m in evaluation.values())
    # The rows are what they say: the final checkpoint's policy and the random reference, evaluated
    # again here on the same users and dice (the heuristic planner in-process, the same rule as the
    # run's planner service), give the same figures.
    cfg = TrainConfig.from_dict(final["config"])
    world = World.build(cfg.world)
    users = evaluation_users(world, cfg.run.eval_users, cfg.run.eval_seed)
    trained = evaluate_worker(world, cfg.world, cfg.policy, cfg.rollout, "in-process", final["learner"]["model"],
                              "mean", users, cfg.run.eval_seed)
    random = evaluate_reference(world, cfg.world, "random", users, cfg.run.eval_seed)
    for name, again in (("trained", trained), ("random", random)):
        for metric in ("Tint", "Rcum", "Rsin"):
            assert again[metric] == pytest.approx(evaluation[name][metric]), (name, metric)


def test_unreachable_cluster_fails_fast_with_one_line():
    # The message comes from the reachability check that runs before ray.init: it is the event that
    # shows ray.init (which retries for minutes) never ran. The timeout is only a hang guard.
    proc = _run(["--iterations", "1", "--address", "127.0.0.1:1"], timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "cannot reach a Ray cluster at 127.0.0.1:1" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_option_value_is_one_line_usage_error():
    proc = _run(["--users-per-actor", "0"], timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "users_per_actor must be >= 1" in proc.stderr
    proc = _run(["--slate-size", "5000"], timeout=60)
    assert proc.returncode == 2 and "slate_size=5000 exceeds the ml-100k catalog's 1682 items" in proc.stderr
    proc = _run(["--no-such-option"], timeout=60)
    assert proc.returncode == 2 and "unrecognized arguments: --no-such-option" in proc.stderr


def test_help_explains_every_option():
    proc = _run(["--help"], timeout=60)
    assert proc.returncode == 0
    for flag in ("--iterations", "--address", "--num-rollout-actors", "--users-per-actor", "--planner-backend",
                 "--slate-size", "--rho", "--lr", "--gamma", "--learner-device"):
        assert flag in proc.stdout
