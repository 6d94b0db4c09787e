"""rollout.llm_world: the calibration that puts the LLM user's answers on the world's scale, and a
world whose users are answered through the Respond call. The rule user (InProcessPlanner) stands
in for the LLM: the plumbing is what is tested here."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from planner_api.client import InProcessPlanner
from planner_api.history import column_array
from rollout.llm_user import LLMUser
from rollout.llm_world import Calibration, WorldResponder, attach_llm_user, calibrate
from rollout.users import UserBatchEnv
from rollout.world import World, WorldConfig


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(WorldConfig(), log=lambda line: None)


@pytest.fixture(scope="module")
def calibration(world, tmp_path_factory) -> tuple[Calibration, str]:
    llm_user = LLMUser(InProcessPlanner(), world.category_names, timeout_s=5.0)
    made = calibrate(world, llm_user, "rule-user-test", num_users=24, seed=0, log=lambda line: None)
    return made, str(made.save(tmp_path_factory.mktemp("cal") / "calibration.json"))


def test_the_calibration_is_fitted_on_logs_the_learned_model_never_saw(calibration) -> None:
    made, path = calibration
    assert made.users == 24 and made.items >= 2 * 24
    assert 0.65 < made.auc_mf < 0.95          # the learned model on its own held-out period
    assert 0.4 < made.auc_llm < 0.8           # the rule user: a category record
    assert np.isfinite([made.scale, made.bias, made.weight, made.center]).all()
    assert Calibration.load(path) == made
    with pytest.raises(ValueError, match="does not exist"):
        Calibration.load(path + ".missing")


def env_with(world, cfg: WorldConfig, calibration_path: str | None, users: np.ndarray, cache=None) -> UserBatchEnv:
    env = UserBatchEnv(world, cfg, len(users), seed=3)
    if calibration_path:
        attach_llm_user(env, world, dataclasses.replace(cfg, llm_user_calibration=calibration_path), InProcessPlanner(),
                        cache)
    env.reset(users)
    return env


@pytest.mark.parametrize("mode", ["llm", "hybrid"])
def test_an_llm_world_asks_the_service_for_every_active_users_slate(world, calibration, mode, tmp_path) -> None:
    _, path = calibration
    users = world.eval_users[:16]
    learned = env_with(world, WorldConfig(), None, users)
    answered = env_with(world, WorldConfig(user_model=mode), path, users, tmp_path / "answers.sqlite")
    slates = np.stack([np.arange(6) + 6 * k for k in range(16)])
    p_learned, p_answered = learned.click_probability(slates), answered.click_probability(slates)
    assert p_answered.shape == (16, 6) and ((0 <= p_answered) & (p_answered <= 1)).all()
    assert not np.allclose(p_learned, p_answered)
    assert answered.responder.llm_user.stats.cases == 16
    answered.step(slates)   # the same cases again: replayed from the cache
    stats = answered.responder.llm_user.stats
    assert (stats.cases, stats.cache_hits, stats.calls) == (32, 16, 1)
    answered.active[:4] = False
    answered.click_probability(slates)
    assert stats.cases == 32 + 12 and stats.calls == 2   # only the users still there are asked
    # The session so far travels with each case: one step of 6 items, numbered step 0.
    session = answered.responder._session(answered, 5)
    assert column_array(session, "item_ids").tolist() == list(slates[5]) and set(column_array(session, "steps").tolist()) == {0}


def test_oracles_cannot_read_an_llm_world(world, calibration) -> None:
    env = env_with(world, WorldConfig(user_model="hybrid"), calibration[1], world.eval_users[:4], ":memory:")
    with pytest.raises(ValueError, match="Oracle references"):
        env.item_logits()
    with pytest.raises(ValueError, match="Oracle references"):
        env.expected_copy()


def test_an_llm_world_needs_its_calibration_and_logged_data(world, calibration) -> None:
    env = UserBatchEnv(world, WorldConfig(user_model="llm"), 2, seed=0)
    with pytest.raises(ValueError, match="needs an LLM user calibration"):
        attach_llm_user(env, world, WorldConfig(user_model="llm"), InProcessPlanner())
    other = dataclasses.replace(calibration[0], fingerprint="0" * 16)
    with pytest.raises(ValueError, match="made on other data"):
        WorldResponder(world, WorldConfig(user_model="llm"), other, LLMUser(InProcessPlanner(), [], 1.0))
    with pytest.raises(ValueError, match="synthetic world's items mean nothing"):
        WorldConfig(dataset="synthetic", user_model="llm").validate()
    with pytest.raises(ValueError, match="user_model must be one of"):
        WorldConfig(user_model="gpt").validate()
