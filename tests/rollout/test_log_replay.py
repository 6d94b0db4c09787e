"""rollout.log_replay: logged sessions shown again, slate by slate, to a world's simulated users."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from planner_api.client import InProcessPlanner
from planner_api.contract import validate_respond_request
from planner_api.history import history_length
from protos import planner_pb2
from rollout.llm_user import LLMUser
from rollout.llm_world import attach_llm_user, calibrate
from rollout.log_replay import SESSION_GAP_S, leave_cases, logged_sessions, replay
from rollout.user_model import time_split
from rollout.world import World, WorldConfig


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(WorldConfig(), log=lambda line: None)


def test_a_logged_session_is_the_first_held_out_run_of_ratings_cut_to_whole_slates(world) -> None:
    sessions = logged_sessions(world, world.eval_users[:40], slate_size=6, max_slates=5)
    assert len(sessions) > 10   # many users rate fewer than 6 at a sitting
    it = world.data.interactions
    _, test = time_split(world.data, world.user_model_holdout)
    for user, rows in sessions.items():
        assert len(rows) % 6 == 0 and 6 <= len(rows) <= 30
        assert (it.user[rows] == user).all() and test[rows[0]]      # it starts in the held-out period
        assert (np.diff(it.timestamp[rows]) < SESSION_GAP_S).all()    # one session: no hour-long gap


def test_replaying_in_the_learned_models_world_gives_bounded_figures(world) -> None:
    sessions = dict(list(logged_sessions(world, world.eval_users[:40], 6, 5).items())[:12])
    figures = replay(world, WorldConfig(), sessions, seed=0)
    assert figures["users"] == 12 and figures["shown_items"] >= 12 * 6
    assert 0 < figures["click_rate"] < 1 and 0 <= figures["logged_like_share"] <= 1
    assert 1 <= figures["slates_stayed"] <= figures["logged_slates"] <= 5
    assert 0 <= figures["stayed_to_the_end"] <= 1 and 0 <= figures["category_js"] <= 1
    assert replay(world, WorldConfig(), sessions, seed=0) == figures   # in expectation: no dice


def test_replaying_where_the_llm_user_answers(world, tmp_path) -> None:
    llm_user = LLMUser(InProcessPlanner(), world.category_names, timeout_s=5.0)
    path = calibrate(world, llm_user, "rule-user-test", num_users=16, log=lambda line: None).save(tmp_path / "c.json")
    cfg = WorldConfig(user_model="hybrid", llm_user_calibration=str(path))
    sessions = dict(list(logged_sessions(world, world.eval_users[:40], 6, 3).items())[:6])
    responders = []
    figures = replay(world, cfg, sessions, attach=lambda env: responders.append(
        attach_llm_user(env, world, cfg, InProcessPlanner(), tmp_path / "answers.sqlite")))
    assert responders[0].llm_user.stats.cases >= 6 and 0 < figures["click_rate"] < 1
    assert figures != replay(world, dataclasses.replace(cfg, user_model="mf"), sessions)


def test_leave_cases_ask_after_each_slate_and_know_where_the_log_ended(world) -> None:
    sessions = logged_sessions(world, world.eval_users[:40], 6, max_slates=4)   # one past the bound of 3
    cases, ended, index = leave_cases(world, sessions, 6, max_slates=3)
    assert len(cases) == len(ended) == len(index) == sum(min(len(rows) // 6, 3) for rows in sessions.values())
    assert all(case.ask_leave and len(case.slate) == 6 for case in cases)
    assert all(history_length(case.session) == 6 * t for case, t in zip(cases, index))   # the slates before it
    for user, rows in sessions.items():   # a session of 4 slates went on past the 3 asked about
        mine = [i for i, case in enumerate(cases) if case.user.user_id == user]
        assert ended[mine].tolist() == [t == len(rows) // 6 - 1 for t in index[mine]]
    assert ended.any() and not ended.all()
    validate_respond_request(planner_pb2.RespondRequest(category_names=world.category_names, cases=cases[:64]))


def test_the_leave_benchmark_runs_on_the_rule_user(tmp_path, monkeypatch) -> None:
    import benchmarks._common as common
    from benchmarks.leave_fidelity import main

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    result = main(["--backend", "heuristic", "--users", "60", "--max-slates", "3"])
    assert result["slates"] >= 10 and result["fallback_cases"] == 0
    assert result["auc"]["llm"] == pytest.approx(result["auc"]["rule"])   # the service's rule user is the rule
    assert (tmp_path / "leave_fidelity.json").exists()
