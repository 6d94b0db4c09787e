"""LERL's first plans (--prime-plans-s): each actor's training users are planned before the
time budget starts, so the first batches reuse them instead of waiting for the planner."""
from __future__ import annotations

import json
import re

import pytest

from learner.main import cli
from rollout.world import World, WorldConfig

WORLD = ["--dataset", "synthetic", "--num-items", "200", "--num-users", "120"]
SMALL = ["--planner-backend", "heuristic", "--seed", "1", "--iterations", "2", "--num-rollout-actors", "2",
         "--users-per-actor", "8", *WORLD, "--eval-users", "8", "--checkpoint-every", "0"]


def _rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("serial", ["true", pytest.param("false", marks=pytest.mark.ray)])
def test_first_plans_are_made_before_training_and_reused_by_the_first_batches(tmp_path, capsys, serial):
    train_users = len(World.build(WorldConfig(dataset="synthetic", num_items=200, num_users=120),
                                  log=lambda line: None).train_users)
    assert cli([*SMALL, "--serial", serial, "--prime-plans-s", "60", "--plan-reuse-batches", "50",
                "--plan-chunk-users", "16", "--run-dir", str(tmp_path / "primed")]) == 0
    planned = re.search(r"planner: (\d+) users planned in \d+ s \((\d+) calls, 0 fell back", capsys.readouterr().out)
    # Every training user, split between the two actors (each its own share), 16 per call.
    assert planned is not None and int(planned.group(1)) == train_users
    assert int(planned.group(2)) == sum(-(-len(share) // 16) for share in (range(0, train_users, 2),
                                                                          range(1, train_users, 2)))
    rows = _rows(tmp_path / "primed")
    assert rows[0]["plans_reused"] == 16  # 2 batches x 8 users, none asked for at the session start
    assert rows[-1]["first_plans_seconds"] == rows[0]["first_plans_seconds"] > 0
    # Without priming the first batches ask for every user they meet.
    assert cli([*SMALL, "--serial", serial, "--plan-reuse-batches", "50", "--run-dir", str(tmp_path / "plain")]) == 0
    plain = _rows(tmp_path / "plain")[0]
    # (An actor's later batch may meet a user its earlier one planned, so "fewer", not "none".)
    assert plain["plans_reused"] < rows[0]["plans_reused"] and plain["first_plans_seconds"] == 0


def test_priming_without_plan_reuse_is_a_usage_error(tmp_path, capsys):
    """The heuristic planner's plan reuse is 0 unless given: nothing would keep the plans."""
    assert cli([*SMALL, "--serial", "true", "--prime-plans-s", "60", "--run-dir", str(tmp_path / "run")]) == 2
    assert "needs plan reuse" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "-2"])
def test_a_bad_priming_budget_is_refused(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        cli([*SMALL, "--prime-plans-s", value, "--run-dir", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "prime_plans_s must be >= 0" in capsys.readouterr().err
