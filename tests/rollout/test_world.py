"""Tests of rollout.world: the synthetic catalog and the batched user environment (LERL rules)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rollout.world import LERL_USERS, World, WorldConfig
from rollout.users import UserBatchEnv

SMALL = WorldConfig(dataset="synthetic", num_items=120, num_categories=8, num_users=50, latent_dim=8, history_len=10,
                    slate_size=6, world_seed=3, **LERL_USERS)  # the patience rule's mechanics


@pytest.fixture(scope="module")
def catalog() -> World:
    return World.build(SMALL)


def make_env(catalog: World, batch_size: int = 1, seed: int = 0, **changes) -> UserBatchEnv:
    cfg = dataclasses.replace(SMALL, **changes)
    if {"click_scale", "click_bias"} & set(changes):
        catalog = World.build(cfg)  # the click model lives in the world, not in the env
    env = UserBatchEnv(catalog, cfg, batch_size, seed)
    env.reset(np.arange(batch_size))
    return env


def items_of(catalog: World, category: int) -> np.ndarray:
    return np.flatnonzero(catalog.item_category == category)


def slate_of_categories(catalog: World, categories: list[int]) -> np.ndarray:
    """One item per position, position p from categories[p] (the first item of that category)."""
    return np.array([items_of(catalog, c)[0] for c in categories], np.int64)


def rotating_slate(catalog: World, t: int) -> np.ndarray:
    """Position p shows category (p + t) % 8: no position ever repeats its previous category."""
    return slate_of_categories(catalog, [(p + t) % 8 for p in range(6)])


# --- patience -----------------------------------------------------------------------------------


def test_no_repeats_lose_one_per_step_and_leave_at_max_steps(catalog):
    env = make_env(catalog, max_steps=15)
    for t in range(1, 16):
        result = env.step(rotating_slate(catalog, t)[None])
        assert env.patience[0] == pytest.approx(20.0 - t)
        assert env.steps[0] == t
        assert bool(result.done[0]) == (t == 15), t
    assert not env.active[0]
    assert env.patience[0] == pytest.approx(5.0)  # left at the cap, not for lack of patience


def test_no_repeats_with_a_long_cap_leave_when_patience_drops_below_one(catalog):
    env = make_env(catalog, max_steps=100)
    done_at = None
    for t in range(1, 30):
        result = env.step(rotating_slate(catalog, t)[None])
        if result.done[0]:
            done_at = t
            break
    # 20 -> 19 -> ... -> 1 (still in: 1 is not below 1) -> 0 at step 20.
    assert done_at == 20
    assert env.patience[0] == pytest.approx(0.0)


def test_same_categories_every_step_lose_two_per_step_after_the_first(catalog):
    env = make_env(catalog)
    slate = slate_of_categories(catalog, [0, 1, 2, 3, 4, 5])[None]
    trajectory, done_at = [], None
    for t in range(1, 21):
        result = env.step(slate)
        trajectory.append(float(env.patience[0]))
        if result.done[0]:
            done_at = t
            break
    # The first slate has no previous slate to repeat: -1. Every later step repeats: -2.
    # 20 -> 19 -> 17 -> ... -> 3 -> 1 (step 10, still in) -> -1 (step 11, leaves).
    assert trajectory == [19.0, 17.0, 15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0, 1.0, -1.0]
    assert done_at == 11
    assert env.steps[0] == 11
    assert not env.active[0]


def test_one_repeated_position_costs_exactly_one_extra(catalog):
    env = make_env(catalog, batch_size=2)
    for t in range(1, 6):
        # Row 0: category 0 stays at position 0; positions 1..5 rotate through categories 1..7.
        pinned = [0] + [1 + (p + t) % 7 for p in range(5)]
        # Row 1: category 0 moves between positions 0 and 1; the rest rotate, so nothing repeats.
        moving = [0, 1 + t % 7] if t % 2 else [1 + t % 7, 0]
        moving += [1 + (p + t + 3) % 7 for p in range(4)]
        slates = np.stack([slate_of_categories(catalog, pinned), slate_of_categories(catalog, moving)])
        before = env.last_slate_categories.copy()
        env.step(slates)
        assert (catalog.item_category[slates[1]] != before[1]).all()
    assert env.patience[0] == pytest.approx(20.0 - 5 - 4)  # extra 1 on steps 2..5
    assert env.patience[1] == pytest.approx(20.0 - 5)


def test_a_user_who_left_is_not_stepped(catalog):
    env = make_env(catalog, batch_size=2, click_bias=4.0)  # clicks likely: zeros must come from leaving
    same = slate_of_categories(catalog, [0, 1, 2, 3, 4, 5])
    for t in range(1, 12):  # row 0 repeats its slate and leaves after step 11; row 1 rotates
        result = env.step(np.stack([same, rotating_slate(catalog, t)]))
    assert result.done.tolist() == [True, False]
    assert env.active.tolist() == [False, True]
    frozen = {name: getattr(env, name)[0].copy() for name in (
        "patience", "steps", "history_items", "history_feedback", "last_slate_categories")}
    for t in range(12, 15):
        # Out-of-range ids on the inactive row are ignored, not rejected.
        result = env.step(np.stack([np.full(6, -7), rotating_slate(catalog, t)]))
        assert result.reward[0] == 0.0
        assert (result.clicks[0] == 0.0).all()
        assert not result.done[0]  # done is reported once, at the step the user leaves
        assert not env.active[0]
        for name, value in frozen.items():
            np.testing.assert_array_equal(getattr(env, name)[0], value, err_msg=name)
    assert env.steps.tolist() == [11, 14]
    assert env.patience[1] == pytest.approx(20.0 - 14)


# --- clicks and reward --------------------------------------------------------------------------


def test_reward_is_the_mean_click_over_the_slate(catalog):
    env = make_env(catalog, batch_size=8, seed=1, click_bias=1.0)
    rng = np.random.default_rng(0)
    seen_fractions = set()
    for _ in range(5):
        slates = np.stack([rng.choice(catalog.num_items, 6, replace=False) for _ in range(8)])
        result = env.step(slates)
        np.testing.assert_array_equal(result.reward, result.clicks.mean(axis=1))
        assert set(np.unique(result.clicks)) <= {0.0, 1.0}
        seen_fractions |= set(np.round(result.reward * 6).astype(int).tolist())
    assert len(seen_fractions) > 2  # rewards take several k/6 values, not just 0 and 1


def expected_probability(catalog: World, cfg: WorldConfig, user: int, slate: np.ndarray) -> np.ndarray:
    """The click model written out item by item."""
    u = catalog.data.extra["user_latent"][user].astype(np.float64)
    v = catalog.data.extra["item_latent"][slate].astype(np.float64)
    p = 1 / (1 + np.exp(-(cfg.click_scale * v @ u + cfg.click_bias + catalog.data.extra["item_bias"][slate])))
    k = len(slate)
    for i in range(k):
        others = [float(v[i] @ v[j]) for j in range(k) if j != i]
        p[i] -= cfg.rho * max(0.0, sum(others) / (k - 1))
    return np.clip(p, 0, 1)


def test_similar_slates_lose_click_probability_diverse_ones_barely(catalog):
    user = 4
    same_category = items_of(catalog, 2)
    sims = catalog.data.extra["item_latent"][same_category] @ catalog.data.extra["item_latent"][same_category[0]]
    similar = same_category[np.argsort(-sims)[:6]]            # item 0 of category 2 and its 5 nearest
    diverse = slate_of_categories(catalog, [0, 1, 2, 3, 4, 5])
    identical = np.full(6, same_category[0])

    env0 = make_env(catalog, rho=0.0, click_bias=2.0)
    env2 = make_env(catalog, rho=0.2, click_bias=2.0)
    env0.reset([user])
    env2.reset([user])
    drop = {}
    for name, slate in (("similar", similar), ("diverse", diverse), ("identical", identical)):
        p0 = env0.click_probability(slate[None])[0]
        p2 = env2.click_probability(slate[None])[0]
        np.testing.assert_allclose(p0, expected_probability(catalog, env0.cfg, user, slate), atol=1e-5)
        np.testing.assert_allclose(p2, expected_probability(catalog, env2.cfg, user, slate), atol=1e-5)
        assert (p2 <= p0 + 1e-7).all()
        drop[name] = float((p0 - p2).mean())
    # Identical items have similarity 1 with each other: the full rho comes off (p0 is high enough
    # that nothing clips at 0).
    assert drop["identical"] == pytest.approx(0.2, abs=1e-5)
    assert drop["similar"] > 0.1
    assert drop["diverse"] < 0.5 * drop["similar"]


def test_probabilities_are_clipped_to_zero_and_one(catalog):
    slates = np.stack([rotating_slate(catalog, t) for t in range(4)])
    high = make_env(catalog, batch_size=4, rho=0.0, click_bias=60.0)
    p = high.click_probability(slates)
    assert p.max() == 1.0 and p.min() == 1.0
    assert (high.step(slates).reward == 1.0).all()
    low = make_env(catalog, batch_size=4, rho=1.0, click_bias=-3.0, click_scale=0.0)
    identical = np.full((4, 6), items_of(catalog, 0)[0])
    p = low.click_probability(identical)      # sigmoid(-3 + bias) - 1.0 < 0 before clipping
    assert p.min() == 0.0 and p.max() == 0.0
    same_category = np.tile(items_of(catalog, 0)[:6], (4, 1))   # distinct items, one category
    lowest = make_env(catalog, batch_size=4, rho=1.0, click_bias=-30.0, click_scale=0.0)
    assert (lowest.click_probability(same_category) == 0.0).all()
    assert (lowest.step(same_category).clicks == 0.0).all()


# --- history ------------------------------------------------------------------------------------


def test_history_keeps_the_last_items_newest_last_with_feedback(catalog):
    env = make_env(catalog, batch_size=1, click_bias=0.5)
    assert (env.history_items == -1).all()
    shown, feedback = [], []
    for t in range(3):
        slate = rotating_slate(catalog, t) if t != 1 else slate_of_categories(catalog, [7, 6, 5, 4, 3, 2])
        result = env.step(slate[None])
        shown += slate.tolist()
        feedback += result.clicks[0].tolist()
        h = min(len(shown), 10)
        expected_items = [-1] * (10 - h) + shown[-h:]
        expected_fb = [0.0] * (10 - h) + feedback[-h:]
        assert env.history_items[0].tolist() == expected_items, t
        assert env.history_feedback[0].tolist() == expected_fb, t
    assert env.history_items[0, -1] == slate_of_categories(catalog, [2, 3, 4, 5, 6, 7])[-1]


def test_history_shorter_than_the_slate_keeps_the_slates_tail(catalog):
    env = make_env(catalog, history_len=4)
    slate = rotating_slate(catalog, 0)
    env.step(slate[None])
    assert env.history_items[0].tolist() == slate[-4:].tolist()


# --- determinism --------------------------------------------------------------------------------


def run_episode(catalog: World, seed: int, batch_size: int = 12) -> dict[str, np.ndarray]:
    env = UserBatchEnv(catalog, dataclasses.replace(SMALL, click_bias=0.0), batch_size, seed)
    env.reset()  # users drawn by the env's own RNG
    out = {"users": env.user_ids.copy(), "clicks": [], "reward": [], "done": []}
    for t in range(SMALL.max_steps):
        # A fixed policy: rotation for even rows, the same slate for odd rows (they leave early).
        slates = np.stack([rotating_slate(catalog, t if row % 2 == 0 else 0) for row in range(batch_size)])
        result = env.step(slates)
        for name in ("clicks", "reward", "done"):
            out[name].append(getattr(result, name))
    return {k: np.asarray(v) for k, v in out.items()}


def test_same_seed_same_episode_bit_for_bit(catalog):
    a, b = run_episode(catalog, seed=11), run_episode(catalog, seed=11)
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
    assert a["done"].any(axis=0).all()  # every user's episode ended


def test_different_seeds_differ(catalog):
    a, b = run_episode(catalog, seed=11), run_episode(catalog, seed=12)
    assert not np.array_equal(a["users"], b["users"])
    assert not np.array_equal(a["clicks"], b["clicks"])


def test_catalog_is_deterministic_under_world_seed():
    a, b = World.build(SMALL), World.build(SMALL)
    other = World.build(dataclasses.replace(SMALL, world_seed=SMALL.world_seed + 1))
    def arrays(world):
        truth = world.data.extra
        return {"item_category": world.item_category, "item_features": world.item_features,
                **{k: truth[k] for k in ("item_latent", "item_bias", "user_latent")}}

    for name, value in arrays(a).items():
        assert value.tobytes() == arrays(b)[name].tobytes(), name
        assert not np.array_equal(value, arrays(other)[name]), name
    assert a.item_titles == b.item_titles and a.category_names == b.category_names


@pytest.mark.parametrize("items,categories", [(120, 8), (25, 24), (30, 30), (101, 7)])
def test_every_category_has_items(items, categories):
    cat = World.build(dataclasses.replace(SMALL, num_items=items, num_categories=categories,
                                                favourite_categories=1))
    counts = np.bincount(cat.item_category, minlength=categories)
    assert len(counts) == categories and counts.min() >= 1
    assert counts.max() - counts.min() <= 1  # round-robin assignment
    assert cat.num_items == items and cat.num_categories == categories
    assert len(set(cat.category_names)) == categories
    np.testing.assert_allclose(np.linalg.norm(cat.data.extra["item_latent"], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(cat.data.extra["user_latent"], axis=1), 1.0, atol=1e-5)


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("changes,field", [
    ({"num_users": 0}, "num_users"),
    ({"num_items": 0}, "num_items"),
    ({"slate_size": 0}, "slate_size"),
    ({"history_len": 0}, "history_len"),
    ({"max_steps": 0}, "max_steps"),
    ({"slate_size": 121}, "slate_size"),
    ({"num_categories": 121}, "num_categories"),
    ({"favourite_categories": 9}, "favourite_categories"),
    ({"rho": 1.5}, "rho"),
    ({"rho": -0.1}, "rho"),
    ({"initial_patience": 0.5}, "initial_patience"),
])
def test_world_config_validate_names_the_field(changes, field):
    cfg = dataclasses.replace(SMALL, **changes)
    with pytest.raises(ValueError, match=field):
        cfg.validate()
    with pytest.raises(ValueError, match=field):
        World.build(cfg)


def test_default_config_is_valid():
    WorldConfig().validate()
    SMALL.validate()


def test_env_rejects_bad_inputs(catalog):
    with pytest.raises(ValueError, match="batch_size"):
        UserBatchEnv(catalog, SMALL, 0, seed=0)
    env = make_env(catalog, batch_size=2)
    good = np.stack([rotating_slate(catalog, 0)] * 2)
    with pytest.raises(ValueError, match="shape"):
        env.step(good[:, :5])
    with pytest.raises(ValueError, match="shape"):
        env.step(good[:1])
    with pytest.raises(ValueError, match="item ids"):
        env.step(np.where(np.arange(6) == 3, catalog.num_items, good))
    with pytest.raises(ValueError, match="item ids"):
        env.step(np.where(np.arange(6) == 0, -1, good))
    with pytest.raises(ValueError, match="user ids"):
        env.reset(np.arange(3))
    with pytest.raises(ValueError, match="user ids"):
        env.reset(np.array([0, SMALL.num_users]))
    with pytest.raises(ValueError, match="user ids"):
        env.reset(np.array([-1, 0]))
    # None of the rejected calls stepped anyone.
    assert env.steps.tolist() == [0, 0]
    assert env.patience.tolist() == [20.0, 20.0]


def test_the_data_card_of_a_generated_world_says_what_it_is():
    from rollout.world import data_card, data_card_line

    cfg = WorldConfig(dataset="synthetic", num_items=120, num_categories=6, num_users=50)
    card = data_card(World.build(cfg))
    assert (card["dataset"], card["source"], card["items"], card["categories"], card["users"]) == (
        "synthetic", "generated", 120, 6, 50)
    assert card["interactions"] > 0 and 0.0 < card["positive_rate"] < 1.0
    assert card["user_model"] == "the generator's ground truth" and card["user_features"] == []
    assert card["fingerprint"] == World.build(cfg).data.fingerprint()
    assert card["held_out_users"] == 10                               # eval_user_share 0.2 of 50
    assert card["held_out_period_from"] is None                       # no time split by default
    assert data_card(World.build(dataclasses.replace(cfg, eval_period_share=0.5)))["held_out_period_from"] > 0
    # The generator's logs have distinct times; its users favour few categories, so they repeat
    # one more often than their mix predicts would be > 1 for loyalty: whatever it is, it is measured.
    assert card["logs"]["same_timestamp_share"] == 0.0 and card["logs"]["category_repeat_ratio"] > 0
    line = data_card_line(card)
    assert line.startswith("data: synthetic (generated, fingerprint ") and "user model: the generator's" in line
