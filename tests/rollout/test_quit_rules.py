"""DORL's window quit rule, step by step on hand-made slates (DESIGN.md "Paper settings": leave when
any category of the new item appears more than `threshold` times among the last `window` items;
paper runs: window 4, threshold 0, cap 30, one item per step).

LERL's patience rule is covered step by step in test_world.py; here it only appears as the contrast
that it compares primary categories while the window rule counts every category of an item.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rollout.data.dataset import Dataset, Interactions
from rollout.user_model import DotProductModel, UserModel
from rollout.world import World, WorldConfig
from rollout.users import UserBatchEnv

# DORL's setting on a tiny synthetic world; click_bias 50 makes every item a sure click (slate of
# one: no similarity penalty), so a step's reward is exactly 1 and any 0 comes from leaving.
DORL = WorldConfig(dataset="synthetic", num_items=60, num_categories=6, num_users=10, latent_dim=8, quit_rule="window",
                   window_size=4, window_threshold=0, slate_size=1, max_steps=30, history_len=8,
                   favourite_categories=2, click_bias=50.0, world_seed=5)
A, B, C, D, E, F = range(6)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(DORL)


def make_env(world: World, batch_size: int = 1, seed: int = 0, **changes) -> UserBatchEnv:
    env = UserBatchEnv(world, dataclasses.replace(DORL, **changes), batch_size, seed)
    env.reset(np.arange(batch_size))
    return env


def item(world: World, category: int, nth: int = 0) -> int:
    return int(np.flatnonzero(world.item_category == category)[nth])


def play(env: UserBatchEnv, world: World, categories: list[int]) -> tuple[list[bool], list[float]]:
    """Show one item per step from these categories (row 0); the done flags and rewards per step."""
    done, reward = [], []
    for t, category in enumerate(categories):
        result = env.step(np.array([[item(world, category, t % 10)]]))
        done.append(bool(result.done[0]))
        reward.append(float(result.reward[0]))
    return done, reward


def test_the_synthetic_items_have_one_category_each(world):
    # The rule's arithmetic below assumes it: one category per item, ten items per category.
    assert (world.item_category_matrix.sum(axis=1) == 1).all()
    assert np.bincount(world.item_category).tolist() == [10] * 6


def test_five_categories_in_turn_stay_until_the_cap(world):
    env = make_env(world)
    cycle = [A, B, C, D, E] * 6  # every category comes back exactly 5 items later: outside a window of 4
    done, reward = play(env, world, cycle)
    assert done == [False] * 29 + [True]
    assert reward == [1.0] * 30
    assert env.steps[0] == 30 and not env.active[0]


def test_left_tells_the_quit_rule_from_the_cap(world):
    """StepResult.left: the user left by the rule (a subset of done); reaching max_steps is not leaving."""
    env = make_env(world, batch_size=3, max_steps=5)
    rows = [[A, B, C, D, E],     # reaches the cap: done, not left
            [A, B, A, C, D],     # leaves at step 3
            [A, B, C, D, A]]     # the repeat falls on the last step: done and left
    done, left = [], []
    for t in range(5):
        result = env.step(np.array([[item(world, row[t])] for row in rows]))
        done.append(result.done.tolist())
        left.append(result.left.tolist())
        assert not (result.left & ~result.done).any()
    assert done == [[False] * 3, [False] * 3, [False, True, False], [False] * 3, [True, False, True]]
    assert left == [[False] * 3, [False] * 3, [False, True, False], [False] * 3, [False, False, True]]


def test_four_categories_in_turn_leave_at_the_fifth_item(world):
    env = make_env(world)
    done, reward = play(env, world, [A, B, C, D, A])
    assert done == [False, False, False, False, True]
    assert reward == [1.0] * 5            # the step the user leaves at still pays
    assert env.steps[0] == 5 and not env.active[0]
    after = env.step(np.array([[item(world, F)]]))
    assert after.reward[0] == 0.0 and not after.done[0] and env.steps[0] == 5


@pytest.mark.parametrize("gap", [1, 2, 3, 4, 5, 6])
def test_a_repeat_ends_the_episode_only_inside_the_window(world, gap):
    """A, then gap-1 other categories, then A again: with window 4 the repeat counts iff gap <= 4."""
    sequence = [A] + [B, C, D, E, F][:gap - 1] + [A]
    env = make_env(world)
    done, reward = play(env, world, sequence)
    if gap <= 4:
        assert done == [False] * gap + [True], sequence
        assert not env.active[0]
    else:
        assert not any(done), sequence
        assert env.active[0]
    assert reward == [1.0] * (gap + 1)
    assert env.steps[0] == gap + 1


def test_the_window_slides(world):
    env = make_env(world)
    # B C D E F A B: the second B is 6 items after the first; every item's window is clean.
    done, _ = play(env, world, [B, C, D, E, F, A, B, C, D, E, F, A])
    assert not any(done) and env.active[0]
    # The last four were C D E F A -> window before the next item is D E F A: E is in it.
    done, _ = play(env, world, [E])
    assert done == [True]
    assert env.steps[0] == 13


def test_threshold_one_needs_the_second_repeat(world):
    env = make_env(world, window_threshold=1)
    done, reward = play(env, world, [A, B, A, C, A])   # third A: A twice among B A C + first A
    assert done == [False, False, False, False, True]
    assert reward == [1.0] * 5

    env = make_env(world, window_threshold=1)
    done, _ = play(env, world, [A, A, A])              # the same category back to back
    assert done == [False, False, True]

    env = make_env(world, window_threshold=1)
    # A B A C D A: the window before the last A is B A C D (one A): it stays.
    done, _ = play(env, world, [A, B, A, C, D, A])
    assert not any(done)
    # ... and one more A now sees A C D A: two, so it leaves.
    done, _ = play(env, world, [A])
    assert done == [True]


def test_threshold_zero_leaves_on_the_first_repeat_that_threshold_one_tolerates(world):
    for threshold, expected in ((0, [False, True]), (1, [False, False]), (2, [False, False])):
        env = make_env(world, window_threshold=threshold)
        done, _ = play(env, world, [C, C])
        assert done == expected, threshold


def test_window_size_two(world):
    env = make_env(world, window_size=2)
    done, _ = play(env, world, [A, B, C, A, B, C, A])   # each repeat is 3 items back: outside
    assert not any(done)
    done, _ = play(env, world, [C])                     # C A | C: inside the window of 2
    assert done == [True]


def test_reset_and_reset_slots_clear_the_window(world):
    env = make_env(world, batch_size=2)
    for category in (A, B, C, D):
        env.step(np.full((2, 1), item(world, category)))
    assert env.recent_categories.any()
    env.reset_slots(np.array([True, False]), np.array([3]))
    result = env.step(np.full((2, 1), item(world, A)))  # row 0 starts afresh; row 1 still has A in its window
    assert result.done.tolist() == [False, True]
    env.reset(np.array([0, 1]))
    assert not env.recent_categories.any()
    result = env.step(np.full((2, 1), item(world, A)))
    assert result.done.tolist() == [False, False]


# --- several items per step ---------------------------------------------------------------------


def test_two_items_of_one_category_in_one_slate_leave_at_once(world):
    env = make_env(world, batch_size=2, slate_size=2)
    slates = np.array([[item(world, A, 0), item(world, A, 1)],    # same category twice
                       [item(world, A, 0), item(world, B, 0)]])
    result = env.step(slates)
    assert result.done.tolist() == [True, False]
    assert result.reward.tolist() == [1.0, 1.0]
    assert env.steps.tolist() == [1, 1]


def test_slates_of_two_from_six_categories_stay_until_the_cap(world):
    env = make_env(world, slate_size=2)
    pairs = [(A, B), (C, D), (E, F)] * 10   # each category returns 6 items later
    for t, (x, y) in enumerate(pairs, start=1):
        result = env.step(np.array([[item(world, x, t % 10), item(world, y, t % 10)]]))
        assert bool(result.done[0]) == (t == 30), t
    assert env.steps[0] == 30


def test_the_rule_applies_item_by_item_in_slate_order(world):
    """Window 2, two items a step. After [A, B], a slate [C, A] puts A behind B C (no A): stays;
    [A, C] puts A right behind A B: leaves. Same items, only their order differs."""
    env = make_env(world, batch_size=2, slate_size=2, window_size=2)
    env.step(np.tile([item(world, A), item(world, B)], (2, 1)))
    result = env.step(np.array([[item(world, C), item(world, A, 1)],
                                [item(world, A, 1), item(world, C)]]))
    assert result.done.tolist() == [False, True]
    # With window 4 both orders see the first A.
    env = make_env(world, batch_size=2, slate_size=2, window_size=4)
    env.step(np.tile([item(world, A), item(world, B)], (2, 1)))
    result = env.step(np.array([[item(world, C), item(world, A, 1)],
                                [item(world, A, 1), item(world, C)]]))
    assert result.done.tolist() == [True, True]


def test_a_slate_longer_than_the_window(world):
    # Window 2, slate of 4: A B C A -> the second A's window is B C: stays; A B A C: leaves.
    env = make_env(world, batch_size=2, slate_size=4, window_size=2)
    slates = np.array([[item(world, c, n) for n, c in enumerate(row)] for row in ([A, B, C, A], [A, B, A, C])])
    assert env.step(slates).done.tolist() == [False, True]


# --- items with several categories -------------------------------------------------------------

# Items: 0 = {A, B} (primary A), 1 = {B}, 2 = {C}, 3 = {D}, 4 = {A}, 5 = {E}, 6 = {C, E} (primary C).
MULTI = [[A, B], [B], [C], [D], [A], [E], [C, E], [F]]


@pytest.fixture(scope="module")
def multi_world() -> World:
    n, c, users, d = len(MULTI), 6, 4, 3
    matrix = np.zeros((n, c), bool)
    for i, cats in enumerate(MULTI):
        matrix[i, cats] = True
    rng = np.random.default_rng(0)
    data = Dataset(
        name="hand-made", category_names=list("ABCDEF"),
        item_category=np.array([cats[0] for cats in MULTI], np.int32), item_category_matrix=matrix,
        item_titles=[f"item {i}" for i in range(n)], item_raw_ids=np.arange(n), user_raw_ids=np.arange(users),
        interactions=Interactions(np.repeat(np.arange(users, dtype=np.int32), 2),
                                  np.tile(np.array([0, 1], np.int32), users),
                                  np.ones(2 * users, np.float32), np.tile(np.arange(2, dtype=np.int64), users)),
    ).validate()
    click = DotProductModel(np.zeros((users, d), np.float32), rng.standard_normal((n, d)).astype(np.float32),
                            np.zeros(users, np.float32), np.zeros(n, np.float32), global_bias=50.0)
    features = rng.standard_normal((n, d)).astype(np.float32)
    return World(data, UserModel(click=click), features, features)


def multi_env(world: World, batch_size: int, **changes) -> UserBatchEnv:
    cfg = dataclasses.replace(DORL, num_items=len(MULTI), num_users=4, **changes)
    env = UserBatchEnv(world, cfg, batch_size, seed=0)
    env.reset(np.arange(batch_size) % 4)
    return env


def run_rows(env: UserBatchEnv, rows: list[list[int]]) -> np.ndarray:
    """Step every row through its item sequence (equal lengths); [T, B] done flags."""
    seq = np.array(rows).T
    return np.stack([env.step(step[:, None]).done for step in seq])


def test_either_category_of_a_multi_category_item_counts(multi_world):
    rows = [
        [0, 1],      # {A, B} then {B}: the earlier item's second category is repeated
        [1, 0],      # {B} then {A, B}: the new item's second category is in the window
        [4, 0],      # {A} then {A, B}: the primary category
        [6, 5],      # {C, E} then {E}
        [0, 2],      # {A, B} then {C}: nothing shared
        [6, 4],      # {C, E} then {A}: nothing shared
    ]
    done = run_rows(multi_env(multi_world, len(rows)), rows)
    assert done[0].tolist() == [False] * len(rows)
    assert done[1].tolist() == [True, True, True, True, False, False]


def test_a_multi_category_item_is_not_counted_twice(multi_world):
    # {A, B} twice: A and B each appear once in the window; threshold 1 tolerates one.
    env = multi_env(multi_world, 1, window_threshold=1)
    assert run_rows(env, [[0, 0]])[:, 0].tolist() == [False, False]
    # A third time: each now appears twice -> leave.
    assert bool(env.step(np.array([[0]])).done[0])


def test_secondary_categories_leave_the_window_like_primary_ones(multi_world):
    # {A, B}, C, D, E, then {B}: B was 4 items back, inside the window; one more item pushes it out.
    inside = run_rows(multi_env(multi_world, 1), [[0, 2, 3, 5, 1]])[:, 0]
    assert inside.tolist() == [False, False, False, False, True]
    outside = run_rows(multi_env(multi_world, 1), [[0, 2, 3, 5, 7, 1]])[:, 0]
    assert not outside.any()


def test_the_patience_rule_compares_primary_categories_only(multi_world):
    """Contrast: {A, B} then {B} at the same position is no repeat for LERL's rule (primaries A, B)."""
    env = multi_env(multi_world, 2, quit_rule="patience", initial_patience=20.0)
    run_rows(env, [[0, 1], [4, 0]])   # row 1: {A} then {A, B}: primary A repeats
    assert env.patience.tolist() == [18.0, 17.0]


# --- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes,field", [
    ({"window_threshold": -1}, "window_threshold"),
    ({"window_size": 0}, "window_size"),
    ({"quit_rule": "dorl"}, "quit_rule"),
])
def test_invalid_window_settings_name_the_field(changes, field):
    cfg = dataclasses.replace(DORL, **changes)
    with pytest.raises(ValueError, match=field):
        cfg.validate()
    with pytest.raises(ValueError, match=field):
        World.build(cfg)
