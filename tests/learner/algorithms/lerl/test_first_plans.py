"""LERL's first plans (--prime-plans-s): each actor's training users are planned before the
time budget starts, so the first batches reuse them instead of waiting for the planner."""
from __future__ import annotations

import json
import re

from learner.main import cli

SMALL = ["--planner-backend", "heuristic", "--seed", "1", "--iterations", "2", "--num-rollout-actors", "2",
         "--users-per-actor", "8", "--dataset", "synthetic", "--num-items", "200", "--num-users", "120",
         "--eval-users", "8", "--checkpoint-every", "0", "--serial", "true"]


def test_first_plans_are_made_before_training_and_reused_by_the_first_batches(tmp_path, capsys):
    assert cli([*SMALL, "--prime-plans-s", "60", "--plan-reuse-batches", "50", "--plan-chunk-users", "16",
                "--run-dir", str(tmp_path / "primed")]) == 0
    out = capsys.readouterr().out
    # 120 users, 15% held out for evaluation: every training user planned, split between the two actors.
    planned = re.search(r"planner: (\d+) users planned", out)
    assert planned is not None and int(planned.group(1)) > 80, out
    rows = [json.loads(line) for line in (tmp_path / "primed" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["plans_reused"] == 16 and rows[0]["first_plans_seconds"] > 0  # 2 batches x 8 users
    # Without priming the first batch asks for every user.
    assert cli([*SMALL, "--plan-reuse-batches", "50", "--run-dir", str(tmp_path / "plain")]) == 0
    plain = json.loads((tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()[0])
    assert plain["plans_reused"] < 16 and plain["first_plans_seconds"] == 0


def test_priming_without_plan_reuse_is_a_usage_error(tmp_path, capsys):
    assert cli([*SMALL, "--prime-plans-s", "60", "--run-dir", str(tmp_path / "run")]) == 2
    assert "needs plan reuse" in capsys.readouterr().err
