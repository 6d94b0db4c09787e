"""Faults during training (issue 5's check): a rollout actor and a planner replica are killed
mid-run (--chaos-kill-*, on 127.0.0.1 in a loopback-only namespace); the run finishes, the
restarts and fallbacks are in the metrics, and no batch reaches the learner twice or half-written."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from netns import loopback_only, netns_available

REPO = Path(__file__).resolve().parents[2]
ITERATIONS = 8


@pytest.mark.ray
@pytest.mark.slow
def test_run_survives_killed_rollout_actors_and_planner_replicas(tmp_path: Path) -> None:
    if not netns_available():
        pytest.skip("cannot create a loopback-only network namespace here (needs root or user namespaces)")
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "learner.main", "--iterations", str(ITERATIONS), "--num-rollout-actors", "2",
           "--users-per-actor", "8", "--planner-backend", "heuristic", "--planner-replicas", "2",
           "--planner-timeout-s", "2", "--eval-users", "0", "--checkpoint-every", "0", "--time-budget-s", "0",
           "--chaos-kill-rollout-every", "2", "--chaos-kill-planner-every", "3", "--run-dir", str(run_dir)]
    proc = subprocess.run(loopback_only(cmd), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(1, ITERATIONS + 1))
    last = rows[-1]
    assert last["chaos_rollout_kills"] == ITERATIONS // 2 and last["chaos_planner_kills"] == ITERATIONS // 3
    # Every kill of an actor with a collect in flight is a restart whose batch was asked for again.
    assert last["rollout_restarts"] >= 1 and last["resubmitted_batches"] >= 1
    assert last["planner_restarts"] >= 1
    assert all(0.0 <= r["planner_fallback_rate"] <= 1.0 for r in rows)  # fallbacks counted, bounded
    # Nothing lost or doubled: every batch the learner got was distinct, one update per iteration.
    used = [b for r in rows for b in r["batch_ids"]]
    dropped = [b for r in rows for b in r["dropped_batch_ids"]]
    assert len(used) == len(set(used)) == 2 * ITERATIONS
    assert not set(used) & set(dropped)
    assert sum(r["duplicate_batches"] for r in rows) == 0
    assert last["policy_version"] == ITERATIONS
