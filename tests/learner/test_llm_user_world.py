"""Training and evaluating in an LLM user's world (--user-model hybrid) through the real entry
point, in serial mode: the heuristic backend's rule user answers the users here (the plumbing is
what is tested; benchmarks/user_fidelity.py measures an LLM)."""
from __future__ import annotations

import json

from learner.main import cli
from rollout.reference_policies import ORACLES


def test_flat_ppo_trains_and_is_evaluated_where_the_service_answers_the_users(tmp_path) -> None:
    run_dir = tmp_path / "hybrid"
    args = ["--algorithm", "ppo", "--user-model", "hybrid", "--planner-backend", "heuristic", "--serial", "true",
            "--iterations", "2", "--num-rollout-actors", "1", "--users-per-actor", "8", "--eval-users", "8",
            "--checkpoint-every", "0", "--seed", "5", "--run-dir", str(run_dir)]
    assert cli(args) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["world"]["user_model"] == "hybrid" and config["world"]["llm_user_calibration"].endswith(".json")
    rows = json.loads((run_dir / "eval.json").read_text())
    assert "trained" in rows and not set(rows) & ORACLES          # oracles read every item's response: left out
    assert rows["trained"]["llm_user_cases"] > 0 and rows["random"]["llm_user_cases"] > 0
    assert rows["trained"]["llm_user_fallback_cases"] == 0
