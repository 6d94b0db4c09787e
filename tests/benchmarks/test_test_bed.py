"""benchmarks/test_bed.py on a small world: the lookahead oracle is the ceiling, planning pays
beyond every myopic rule, and the rules that game the papers' quit rules come nowhere near it.
(The default MovieLens world's figures are the benchmark's: benchmarks/results/test_bed.json.)"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.test_bed import measure_test_bed  # noqa: E402
from learner.evaluation import evaluation_users  # noqa: E402
from rollout.lookahead import LookaheadOracle  # noqa: E402
from rollout.reference_policies import MYOPIC_ORACLES, ReferencePolicy  # noqa: E402
from rollout.users import UserBatchEnv  # noqa: E402
from rollout.world import World, WorldConfig  # noqa: E402

SMALL = WorldConfig(dataset="synthetic", num_items=150, num_categories=6, num_users=60, latent_dim=8)


@pytest.fixture(scope="module")
def small():
    world = World.build(SMALL, log=lambda line: None)
    return world, measure_test_bed(world, SMALL, users=40, seed=2024, log=lambda line: None)


def test_planning_ahead_beats_every_myopic_oracle_and_every_rule(small):
    _, result = small
    refs = result["references"]
    best_myopic = result["best_myopic_oracle"]
    assert best_myopic in MYOPIC_ORACLES and result["lookahead_oracle"] == "lookahead"
    assert refs["lookahead"]["Rcum"] >= 1.1 * refs[best_myopic]["Rcum"], result["table"]
    # The rules that game LERL's position rule (no repeat at a position) or rotate categories
    # are far from the ceiling here.
    for name in ("greedy-no-repeat", "greedy-rotation", "round-robin", "popular", "random"):
        assert refs[name]["Rcum"] < 0.8 * refs["lookahead"]["Rcum"], result["table"]


def test_the_result_names_oracles_and_the_gap_closed(small):
    _, result = small
    refs = result["references"]
    assert {n for n, m in refs.items() if m["oracle"]} == {"greedy", "greedy-no-repeat", "greedy-rotation",
                                                          "greedy-exposure", "lookahead"}
    assert all({"oracle", "Rcum", "Tint", "Rsin"} <= set(m) for m in refs.values())
    assert refs["random"]["gap_closed"] == 0.0 and refs["lookahead"]["gap_closed"] == 1.0
    json.dumps(result)  # what the benchmark writes


def test_the_lookahead_is_never_worse_than_its_base_rule_in_the_expected_model(small):
    """Bertsekas' rollout property, checked where it holds exactly: users stepping in expectation."""
    world, _ = small
    users = evaluation_users(world, 24, 5)
    returns = {}
    for name in ("greedy-exposure", "lookahead"):
        env = UserBatchEnv(world, SMALL, len(users), seed=0)
        env.reset(users)
        env.expected = True
        policy, total = ReferencePolicy(name), np.zeros(len(users))
        while env.active.any():
            total += env.step(policy.act(env)).reward
        returns[name] = total
    assert LookaheadOracle().base_price == ReferencePolicy("lookahead")._planner.base_price
    assert (returns["lookahead"] >= returns["greedy-exposure"] - 1e-4).all()
    assert returns["lookahead"].mean() > returns["greedy-exposure"].mean()


def test_the_readme_shows_the_test_bed_result_in_the_repository():
    """README's test-bed table and ratios are benchmarks/results/test_bed.json's, as measured."""
    result = json.loads((REPO_ROOT / "benchmarks" / "results" / "test_bed.json").read_text())
    readme = (REPO_ROOT / "README.md").read_text()
    table = result["table"].splitlines()
    for line in table[1:-1]:                      # the header and every policy's row
        assert line in readme, line
    assert result["goals_met"] and result["best_myopic_oracle"] == "greedy-exposure"
    assert f"by {100 * (result['lookahead_over_best_myopic'] - 1):.1f} % in return" in readme
    assert f"at {100 * result['runner_up_share_of_lookahead']:.1f} %" in readme
