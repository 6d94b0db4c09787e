"""The interest world's users (rollout.users): responses that depend on what they were shown, and
leaving that a slate's order cannot game. The papers' rules: test_world.py, test_quit_rules.py."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rollout.users import UserBatchEnv, user_satiation
from rollout.user_model import sigmoid
from rollout.world import World, WorldConfig

SMALL = WorldConfig(dataset="synthetic", num_items=120, num_categories=6, num_users=40, latent_dim=8, slate_size=3,
                    history_len=6, world_seed=1, rho=0.0)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(SMALL)


def env_for(world: World, batch: int = 2, **changes) -> UserBatchEnv:
    env = UserBatchEnv(world, dataclasses.replace(SMALL, **changes), batch, seed=0)
    env.reset(np.arange(batch))
    return env


def items_of(world: World, category: int, count: int) -> np.ndarray:
    return np.flatnonzero(world.item_category == category)[:count]


def test_the_interest_world_is_the_default():
    cfg = WorldConfig()
    assert (cfg.dataset, cfg.quit_rule) == ("ml-100k", "interest")
    assert cfg.satiation > 0 and cfg.item_fatigue > 0 and cfg.max_steps >= 50


def test_interest_wanes_with_exposure_and_recovers_with_time(world):
    env = env_for(world, satiation=1.0, satiation_spread=0.0, item_fatigue=0.0, boredom_cost=0.0,
                  interest_patience=100.0)
    probe = items_of(world, 0, 3)[None].repeat(2, 0)
    fresh = env.click_probability(probe)
    env.step(np.stack([items_of(world, 0, 3)] * 2))            # a whole slate of category 0
    assert env.exposure[:, 0] == pytest.approx([1.0, 1.0])
    tired = env.click_probability(probe)
    assert (tired < fresh).all()
    # Exactly the satiation times the exposure, in logits.
    assert sigmoid(world.user_model.click.scores(env.user_ids, probe) - 1.0) == pytest.approx(tired, abs=1e-6)
    other = np.stack([items_of(world, 1, 3)] * 2)
    for _ in range(10):                                        # other categories: category 0 recovers
        env.step(other)
    assert env.exposure[0, 0] == pytest.approx(0.8 ** 10)
    assert (env.click_probability(probe) > tired).all()


def test_an_item_seen_again_is_less_wanted(world):
    env = env_for(world, satiation=0.0, item_fatigue=2.0, interest_patience=100.0)
    slate = np.stack([items_of(world, 2, 3)] * 2)
    before = env.click_probability(slate)
    env.step(slate)
    after = env.click_probability(slate)
    assert after == pytest.approx(sigmoid(world.user_model.click.scores(env.user_ids, slate) - 2.0), abs=1e-6)
    assert (after < before).all()


def test_users_differ_in_satiation_fixed_by_the_world_seed():
    a, b = user_satiation(SMALL, 1000), user_satiation(SMALL, 1000)
    assert (a == b).all() and a.std() > 0.3 and a.mean() == pytest.approx(SMALL.satiation, rel=0.15)
    other = user_satiation(dataclasses.replace(SMALL, world_seed=2), 1000)
    assert not np.allclose(a, other)
    assert (user_satiation(dataclasses.replace(SMALL, satiation_spread=0.0), 5) == SMALL.satiation).all()


def test_reordering_a_slate_changes_nothing(world):
    """Boredom counts the slate's categories as a set: the position tricks of LERL's rule buy nothing."""
    slate = np.array([items_of(world, 0, 2).tolist() + items_of(world, 1, 1).tolist()])
    runs = []
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        env = env_for(world, batch=1)
        env.expected = True
        trace = []
        for step in range(4):
            result = env.step(np.roll(slate[:, order], step, axis=1))
            trace += [float(result.reward[0]), float(env.patience[0])]
        runs.append(trace)
    assert runs[0] == pytest.approx(runs[1]) and runs[0] == pytest.approx(runs[2])


def test_patience_is_refilled_by_appeal_drained_by_boredom_and_capped(world):
    env = env_for(world, batch=1, satiation=0.0, item_fatigue=0.0, interest_patience=2.0, boredom_cost=4.0,
                  satisfaction_gain=3.0, max_steps=100)
    slate = items_of(world, 0, 3)[None]
    appeal = float(env.click_probability(slate).mean())
    env.step(slate)                       # no exposure yet: no boredom
    assert env.patience[0] == pytest.approx(min(2.0, 2.0 - 1.0 + 3.0 * appeal), abs=1e-5)
    before = float(env.patience[0])
    env.step(slate)                       # the same category again: boredom = its exposure, 1.0
    expected = min(2.0, before - 1.0 - 4.0 * 1.0 + 3.0 * appeal)
    assert env.patience[0] == pytest.approx(expected, abs=1e-5)
    assert env.patience.max() <= 2.0


def test_a_user_shown_one_category_leaves_before_one_shown_many(world):
    env = env_for(world, batch=2, max_steps=100)
    env.expected = True
    categories = np.arange(world.num_categories)
    while env.active.any():
        step = int(env.steps.max())
        one = items_of(world, 0, 40)[(np.arange(3) + 3 * step) % 40]   # fresh items, always category 0
        rotating = np.array([items_of(world, int(c), 40)[step % 40] for c in np.roll(categories, -3 * step)[:3]])
        env.step(np.stack([one, rotating]))
    assert env.steps[0] < env.steps[1]


def test_expected_copy_draws_no_dice_and_shares_nothing(world):
    env = env_for(world, batch=4)
    slate = np.stack([items_of(world, 3, 3)] * 4)
    twin = env.expected_copy(np.array([1, 3]))
    state = env.rng.bit_generator.state
    result = twin.step(slate[:2])
    assert env.rng.bit_generator.state == state                     # no dice drawn, none of env's used
    assert result.clicks == pytest.approx(env.click_probability(slate)[[1, 3]])
    assert env.exposure.sum() == 0 and env.times_shown.sum() == 0 and (env.steps == 0).all()
    assert twin.batch_size == 2 and list(twin.user_ids) == [1, 3]


@pytest.mark.parametrize("changes, message", [
    ({"satiation": -1.0}, "satiation must be >= 0"),
    ({"exposure_decay": 1.0}, "exposure_decay must be in [0, 1)"),
    ({"item_fatigue": -0.5}, "item_fatigue must be >= 0"),
    ({"interest_patience": -1.0}, "interest_patience must be >= 0"),
    ({"quit_rule": "bored"}, "quit_rule must be one of"),
])
def test_bad_dynamics_settings_are_refused_by_name(changes, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        dataclasses.replace(SMALL, **changes).validate()


def test_training_episodes_never_meet_the_evaluation_users(world):
    from learner.evaluation import evaluation_users

    held, train = set(world.eval_users.tolist()), set(world.train_users.tolist())
    assert held and not held & train and held | train == set(range(world.num_users))
    assert len(held) == round(SMALL.eval_user_share * world.num_users)
    env = UserBatchEnv(world, SMALL, 64, seed=3)
    drawn = set()
    for _ in range(20):
        env.reset()
        env.reset_slots(np.arange(64) % 2 == 0)
        drawn |= set(env.user_ids.tolist())
    assert drawn <= train and len(drawn) > len(train) // 2
    assert set(evaluation_users(world, 100, 2024).tolist()) <= held
    # The same seed holds out the same users; share 0 trains and evaluates on everyone (the papers').
    assert (World.build(SMALL).eval_users == world.eval_users).all()
    everyone = World.build(dataclasses.replace(SMALL, eval_user_share=0.0))
    assert not everyone.users_held_out and len(everyone.eval_users) == world.num_users


def test_the_later_period_can_be_held_out_too():
    """eval_period_share: training users start from their logs before the split time and the
    popularity feature counts only those; evaluation users start from their logs to the end."""
    split = World.build(dataclasses.replace(SMALL, eval_period_share=0.25))
    whole = World.build(SMALL)
    it, t = split.data.interactions, split.split_timestamp
    assert t is not None and 0.7 < (it.timestamp < t).mean() <= 0.8
    for user in split.train_users[:20]:
        before = np.flatnonzero((it.user == user) & (it.timestamp < t))
        before = before[np.argsort(it.timestamp[before], kind="stable")][-SMALL.history_len:]
        shown = split.start_items[user][split.start_items[user] >= 0]
        assert shown.tolist() == it.item[before].tolist()
    assert (split.start_items[split.eval_users] == whole.start_items[split.eval_users]).all()
    early = split.data.positive() & (it.timestamp < t)
    assert split.item_popularity.tolist() == np.bincount(it.item[early], minlength=split.num_items).tolist()
    assert (split.item_popularity <= whole.item_popularity).all() and split.item_popularity.sum() < whole.item_popularity.sum()
    assert whole.split_timestamp is None
    with pytest.raises(ValueError, match="eval_user_share > 0"):
        World.build(dataclasses.replace(SMALL, eval_period_share=0.2, eval_user_share=0.0))


def test_a_session_starts_from_the_users_last_logged_items(world):
    """Step 0 is personal: the policy sees the user's own history (here the generator's logs)."""
    it = world.data.interactions
    env = env_for(world, batch=3)
    for row, user in enumerate(env.user_ids):
        mine = np.flatnonzero(it.user == user)
        mine = mine[np.argsort(it.timestamp[mine], kind="stable")][-SMALL.history_len:]
        assert env.history_items[row].tolist() == it.item[mine].tolist()
        assert env.history_feedback[row].tolist() == world.data.positive()[mine].astype(np.float32).tolist()
    # A user with fewer logged items than the window gets them at the end, padded in front.
    short = World.build(dataclasses.replace(SMALL, history_len=40))
    assert (short.start_items[:, 0] == -1).any() and (short.start_items[:, -1] >= 0).all()
    with pytest.raises(ValueError, match="history_len=6"):
        UserBatchEnv(short, SMALL, 2, seed=0)
    empty = UserBatchEnv(world, dataclasses.replace(SMALL, start_history=False), 2, seed=0)
    empty.reset(np.arange(2))
    assert (empty.history_items == -1).all()
