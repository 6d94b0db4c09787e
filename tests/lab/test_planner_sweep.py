"""lab.planner_sweep: the heuristic planner's sweep cell and the --address mode measure the same thing."""
from __future__ import annotations

import pytest

from lab import planner_sweep
from learner.evaluation import evaluation_users
from planner_api import heuristics
from planner_api.client import IN_PROCESS_ADDRESS
from rollout.actor import RolloutConfig
from rollout.world import World, WorldConfig


@pytest.fixture(scope="module")
def small():
    cfg = WorldConfig()
    world = World.build(cfg)
    users = evaluation_users(world, 12, 2024)
    rollout = RolloutConfig(plan_categories=8, plan_pool=8, plan_every=1, plan_max_age=0, plan_reuse_batches=0,
                            prime_plans_s=0)
    return world, cfg, users, rollout


def test_address_mode_measures_the_planner_it_is_given(small):
    """The in-process heuristic at its chosen constants, through --address, equals the sweep's
    cell at those constants: the mode measures whatever answers at the address."""
    world, cfg, users, rollout = small
    via_address = planner_sweep.planner_quality(world, cfg, rollout, users, 2024, IN_PROCESS_ADDRESS)
    cell = planner_sweep.sweep_cell(world, cfg, rollout, users, 2024, heuristics.EXPOSURE_PENALTY,
                                    heuristics.EXPOSURE_DECAY)
    assert via_address["fallbacks"] == 0
    for key, value in cell.items():
        assert via_address[key] == pytest.approx(value)


def test_the_exposure_price_changes_the_planner_quality(small):
    """A sweep cell reads the constants it is given (no penalty plans differently)."""
    world, cfg, users, rollout = small
    priced = planner_sweep.sweep_cell(world, cfg, rollout, users, 2024, 2.0, 0.8)
    unpriced = planner_sweep.sweep_cell(world, cfg, rollout, users, 2024, 0.0, 0.8)
    assert priced["greedy+planner Rcum"] != pytest.approx(unpriced["greedy+planner Rcum"])


def test_bad_arguments_fail_with_a_message(capsys):
    with pytest.raises(SystemExit):
        planner_sweep.main(["--users", "0"])
    assert "--users" in capsys.readouterr().err
