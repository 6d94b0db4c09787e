"""World options beyond the default rules: remove_recommended, duplicate items in a slate,
the rating-based reward (MovieLens-100K) and seeded determinism under the window rule."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from rollout.world import LERL_USERS, World, WorldConfig
from rollout.users import UserBatchEnv

SHARED_ML100K = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ml-100k"

SMALL = WorldConfig(dataset="synthetic", num_items=60, num_categories=6, num_users=20, latent_dim=8, slate_size=3,
                    history_len=6, favourite_categories=2, world_seed=2, **{**LERL_USERS, "max_steps": 5})


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(SMALL)


def make_env(world: World, batch_size: int = 2, seed: int = 0, **changes) -> UserBatchEnv:
    env = UserBatchEnv(world, dataclasses.replace(SMALL, **changes), batch_size, seed)
    env.reset(np.arange(batch_size))
    return env


# --- remove_recommended -------------------------------------------------------------------------


def test_available_items_is_none_when_the_option_is_off(world):
    env = make_env(world)
    assert env.available_items() is None
    slate = np.array([[0, 1, 2], [0, 1, 2]])
    env.step(slate)
    env.step(slate)   # showing an item again is allowed
    assert env.steps.tolist() == [2, 2]


def test_available_items_shrink_by_exactly_the_shown_items(world):
    env = make_env(world, remove_recommended=True)
    available = env.available_items()
    assert available.shape == (2, 60) and available.all()
    shown = [set(), set()]
    slates = [np.array([[0, 1, 2], [10, 11, 12]]), np.array([[3, 4, 5], [0, 1, 2]]), np.array([[59, 30, 7], [13, 3, 58]])]
    for slate in slates:
        env.step(slate)
        for row in range(2):
            shown[row] |= set(slate[row].tolist())
            assert set(np.flatnonzero(~env.available_items()[row]).tolist()) == shown[row], row
    assert env.available_items().sum(axis=1).tolist() == [60 - 9, 60 - 9]


def test_available_items_is_a_copy(world):
    env = make_env(world, remove_recommended=True)
    available = env.available_items()
    available[:] = False
    assert env.available_items().all()


def test_repeating_a_shown_item_is_refused_and_changes_nothing(world):
    env = make_env(world, remove_recommended=True)
    env.step(np.array([[0, 1, 2], [3, 4, 5]]))
    before = {name: getattr(env, name).copy() for name in ("steps", "history_items", "shown", "patience")}
    with pytest.raises(ValueError, match="remove_recommended"):
        env.step(np.array([[6, 7, 8], [9, 10, 3]]))   # row 1 repeats item 3
    for name, value in before.items():
        np.testing.assert_array_equal(getattr(env, name), value, err_msg=name)
    # Another row's earlier item is fine: the memory is per user.
    env.step(np.array([[3, 4, 5], [0, 1, 2]]))
    assert env.steps.tolist() == [2, 2]


def test_an_inactive_row_may_repeat_anything(world):
    env = make_env(world, remove_recommended=True, max_steps=20, initial_patience=2.0)
    first = np.array([[0, 1, 2], [3, 4, 5]])
    env.step(first)
    result = env.step(np.array([[6, 7, 8], [9, 10, 11]]))   # patience 2 -> 1 -> 0: both leave
    assert result.done.all() and not env.active.any()
    env.step(first)   # inactive rows are ignored, shown items included


def test_reset_and_reset_slots_clear_the_shown_items(world):
    env = make_env(world, remove_recommended=True)
    env.step(np.array([[0, 1, 2], [0, 1, 2]]))
    env.reset_slots(np.array([False, True]), np.array([5]))
    assert env.available_items().sum(axis=1).tolist() == [57, 60]
    with pytest.raises(ValueError, match="remove_recommended"):
        env.step(np.array([[0, 1, 2], [0, 1, 2]]))
    env.reset(np.array([0, 1]))
    assert env.available_items().all()
    env.step(np.array([[0, 1, 2], [0, 1, 2]]))


def test_build_refuses_more_slots_than_items_with_remove_recommended():
    cfg = dataclasses.replace(SMALL, remove_recommended=True, slate_size=6, max_steps=11)  # 66 > 60
    with pytest.raises(ValueError, match="remove_recommended.*66.*60"):
        World.build(cfg)
    World.build(dataclasses.replace(cfg, max_steps=10))                                      # 60 = 60: fine
    World.build(dataclasses.replace(cfg, remove_recommended=False))                          # off: fine


def test_a_slate_recommending_an_item_twice_is_refused(world):
    env = make_env(world)
    with pytest.raises(ValueError, match="same item twice"):
        env.step(np.array([[0, 1, 2], [4, 7, 4]]))
    assert env.steps.tolist() == [0, 0]
    # An inactive row's duplicates are ignored.
    env = make_env(world, initial_patience=1.0)
    assert env.step(np.array([[0, 1, 2], [3, 4, 5]])).done.all()
    env.step(np.array([[0, 0, 0], [1, 1, 1]]))


# --- reward_mode ----------------------------------------------------------------------------------


def test_rating_reward_is_refused_on_click_data():
    with pytest.raises(ValueError, match="ml-100k"):
        World.build(dataclasses.replace(SMALL, reward_mode="rating"))
    with pytest.raises(ValueError, match="reward_mode"):
        dataclasses.replace(SMALL, reward_mode="stars").validate()


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    if not (SHARED_ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens-100K test files not found at {SHARED_ML100K}")
    cfg = WorldConfig(dataset="ml-100k", data_dir=str(SHARED_ML100K), user_model_epochs=5, reward_mode="rating",
                      slate_size=6, max_steps=10)
    cache = tmp_path_factory.getbasetemp() / "ml100k-user-models"   # shared by this session's ML-100K tests
    cache.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMREC_CACHE_DIR", str(cache))
        world = World.build(cfg, log=lambda *_: None)
    return world, cfg


def test_rating_reward_is_the_mean_of_click_times_normalised_predicted_rating(ml100k):
    world, cfg = ml100k
    assert world.user_model.rating is not None
    b, k = 64, cfg.slate_size
    env = UserBatchEnv(world, cfg, b, seed=3)
    env.reset(np.arange(b) * 7)
    rng = np.random.default_rng(4)
    rewards, clicks_seen = [], []
    for _ in range(3):
        active = env.active.copy()
        slates = np.stack([rng.choice(world.num_items, k, replace=False) for _ in range(b)])
        # Sure-to-be-liked items raise the click rate: half the rows get the user's top items.
        top = np.argsort(-world.user_model.click.all_scores(env.user_ids), axis=1)[:, :k]
        slates[::2] = top[::2]
        result = env.step(slates)
        rating = world.user_model.rating.scores(env.user_ids, slates).astype(np.float64)
        expected = (result.clicks * np.clip((rating - 1.0) / 4.0, 0.0, 1.0)).mean(axis=1) * active
        np.testing.assert_allclose(result.reward, expected, rtol=1e-5, atol=1e-6)
        assert ((result.reward >= 0) & (result.reward <= 1)).all()
        assert (result.reward <= result.clicks.mean(axis=1) + 1e-6).all()
        rewards.append(result.reward)
        clicks_seen.append(result.clicks)
    rewards, clicks = np.concatenate(rewards), np.concatenate(clicks_seen)
    assert clicks.sum() > 50, "too few clicks to test anything"
    # Not the click reward in disguise: the predicted ratings scale it down below 1 per click.
    assert rewards.sum() < clicks.mean(axis=1).sum() - 1.0
    assert (rewards > 0).sum() > 10


def test_rating_reward_is_deterministic_for_a_seed(ml100k):
    world, cfg = ml100k

    def episode(seed):
        env = UserBatchEnv(world, cfg, 16, seed=seed)
        env.reset(np.arange(16))
        top = np.argsort(-world.user_model.click.all_scores(env.user_ids), axis=1)
        return np.stack([env.step(top[:, t * 6:(t + 1) * 6]).reward for t in range(5)])

    a, b, c = episode(8), episode(8), episode(9)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)


# --- determinism under the window rule ---------------------------------------------------------------


def window_episode(world: World, seed: int) -> dict[str, np.ndarray]:
    cfg = dataclasses.replace(SMALL, quit_rule="window", window_size=4, window_threshold=0, slate_size=2,
                              max_steps=12, click_bias=0.5)
    env = UserBatchEnv(world, cfg, 16, seed)
    env.reset()                                   # users drawn by the env's own RNG
    policy_rng = np.random.default_rng(123)       # the same "policy" for every run
    out = {"users": env.user_ids.copy(), "clicks": [], "reward": [], "done": [], "steps": None}
    for _ in range(cfg.max_steps):
        slates = np.stack([policy_rng.choice(world.num_items, 2, replace=False) for _ in range(16)])
        result = env.step(slates)
        for name in ("clicks", "reward", "done"):
            out[name].append(getattr(result, name))
    out["steps"] = env.steps.copy()
    return {name: np.asarray(value) for name, value in out.items()}


def test_same_seed_same_window_episode_bit_for_bit(world):
    a, b = window_episode(world, 21), window_episode(world, 21)
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
    # Random slates over 6 categories: most users hit a repeat well before the cap of 12 steps.
    assert a["done"].any(axis=0).all()
    assert (a["steps"] < 12).sum() >= 8, a["steps"]


def test_different_seeds_give_different_window_episodes(world):
    a, b = window_episode(world, 21), window_episode(world, 22)
    assert not np.array_equal(a["users"], b["users"])
    assert not np.array_equal(a["clicks"], b["clicks"])
