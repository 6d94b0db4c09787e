"""Reference policies: valid slates, each one's defining property, and on MovieLens-100K the two
effects they exist to show under LERL's users (greedy is accurate; greedy's filter bubble ends
sessions early under LERL's patience rule, round-robin's rotation does not). The interest world's
references and the lookahead oracle: tests/rollout/test_lookahead.py."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from learner.evaluation import evaluate_reference, evaluation_users
from rollout.reference_policies import CHEAP_REFERENCES, REFERENCE_POLICIES, ReferencePolicy
from rollout.world import LERL_USERS, World, WorldConfig
from rollout.users import UserBatchEnv

SHARED_ML100K = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ml-100k"

SMALL = WorldConfig(dataset="synthetic", num_items=120, num_categories=8, num_users=40, latent_dim=8, slate_size=4,
                    history_len=8, favourite_categories=2, world_seed=4, **{**LERL_USERS, "max_steps": 10})


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(SMALL)


def make_env(world: World, batch_size: int = 6, seed: int = 0, **changes) -> UserBatchEnv:
    env = UserBatchEnv(world, dataclasses.replace(SMALL, **changes), batch_size, seed)
    env.reset(np.arange(batch_size) * 3)
    return env


def run(env: UserBatchEnv, policy: ReferencePolicy, check) -> list[np.ndarray]:
    """Step until every user left; `check(env, slates)` sees each step's slates before the step."""
    shown = []
    while env.active.any():
        slates = policy.act(env)
        check(env, slates)
        env.step(slates)
        shown.append(slates)
    return shown


def assert_valid(env: UserBatchEnv, slates: np.ndarray) -> None:
    b, k, n = env.batch_size, env.cfg.slate_size, env.world.num_items
    assert slates.shape == (b, k)
    assert np.issubdtype(slates.dtype, np.integer)
    assert slates.min() >= 0 and slates.max() < n
    assert (np.sort(slates, axis=1)[:, 1:] != np.sort(slates, axis=1)[:, :-1]).all(), "an item twice in a slate"
    available = env.available_items()
    if available is not None:
        assert np.take_along_axis(available, slates, 1).all(), "a slate shows an item already shown"


@pytest.mark.parametrize("remove", [False, True])
@pytest.mark.parametrize("name", REFERENCE_POLICIES)
def test_every_policy_gives_valid_slates(world, name, remove):
    env = make_env(world, remove_recommended=remove)
    steps = run(env, ReferencePolicy(name, seed=1), assert_valid)
    assert len(steps) >= 2
    if remove:
        # Over the whole episode no user saw an item twice.
        items = np.concatenate(steps, axis=1)           # [B, T*K] (rows of users who left included)
        for row in range(env.batch_size):
            mine = items[row, :env.steps[row] * SMALL.slate_size]
            assert len(np.unique(mine)) == len(mine), row


def test_policies_respect_available_items_when_few_are_left(world):
    """remove_recommended with slate_size x max_steps = num_items: the last step has exactly the
    K unseen items left, and every policy must find them."""
    cfg_changes = dict(remove_recommended=True, slate_size=12, max_steps=10, initial_patience=100.0)
    for name in REFERENCE_POLICIES:
        env = make_env(world, batch_size=3, **cfg_changes)
        steps = run(env, ReferencePolicy(name, seed=2), assert_valid)
        assert len(steps) == 10, name
        assert not env.available_items().any(), name   # every item shown exactly once


def test_unknown_policy_names_the_known_ones():
    with pytest.raises(ValueError) as err:
        ReferencePolicy("oracle")
    message = str(err.value)
    assert "'oracle'" in message
    for name in REFERENCE_POLICIES:
        assert name in message


def test_random_is_seeded(world):
    def first_slates(seed):
        return ReferencePolicy("random", seed=seed).act(make_env(world))

    assert np.array_equal(first_slates(5), first_slates(5))
    assert not np.array_equal(first_slates(5), first_slates(6))
    slates = first_slates(5)
    assert not np.array_equal(slates[0], slates[1])   # every user gets their own draw


def expected_popular(world: World, k: int, exclude=()) -> list[int]:
    ids = np.arange(world.num_items)
    order = np.lexsort((ids, -world.item_popularity))   # most popular first, ties to lower ids
    return [int(i) for i in order if i not in set(exclude)][:k]


def test_popular_is_the_same_for_everyone_and_follows_the_logs(world):
    env = make_env(world)
    policy = ReferencePolicy("popular")
    slates = policy.act(env)
    assert (slates == slates[0]).all()
    assert slates[0].tolist() == expected_popular(world, 4)
    assert world.item_popularity[slates[0]].tolist() == sorted(world.item_popularity[slates[0]].tolist(), reverse=True)
    env.step(slates)
    assert np.array_equal(policy.act(env), slates)      # no memory without remove_recommended
    env = make_env(world, remove_recommended=True)
    env.step(policy.act(env))
    second = policy.act(env)
    assert (second == second[0]).all()
    assert second[0].tolist() == expected_popular(world, 4, exclude=slates[0].tolist())


def test_greedy_is_the_argsort_of_the_user_models_scores(world):
    env = make_env(world, remove_recommended=True)
    policy = ReferencePolicy("greedy")
    for _ in range(3):
        scores = world.user_model.click.all_scores(env.user_ids)
        expected = np.argsort(-np.where(env.available_items(), scores, -np.inf), axis=1, kind="stable")[:, :4]
        slates = policy.act(env)
        np.testing.assert_array_equal(slates, expected)
        env.step(slates)
    # Different users, different slates (it is personal, unlike popular).
    assert len({tuple(row) for row in slates.tolist()}) > 1


def test_round_robin_starts_with_the_most_popular_categories_and_their_top_items(world):
    env = make_env(world)
    slates = ReferencePolicy("round-robin").act(env)
    category_pop = np.bincount(world.item_category, weights=world.item_popularity, minlength=8)
    order = np.argsort(-category_pop, kind="stable")
    assert world.item_category[slates[0]].tolist() == order[:4].tolist()
    for pos in range(4):
        in_category = np.flatnonzero(world.item_category == order[pos])
        best = in_category[np.lexsort((in_category, -world.item_popularity[in_category]))[0]]
        assert slates[0, pos] == best, pos


def rotation_check(world: World):
    previous = {}

    def check(env: UserBatchEnv, slates: np.ndarray) -> None:
        assert_valid(env, slates)
        categories = world.item_category[slates]
        for row in np.flatnonzero(env.active):
            if row in previous:
                assert (categories[row] != previous[row]).all(), (row, previous[row], categories[row])
            previous[row] = categories[row]

    return check


@pytest.mark.parametrize("categories,slate", [(8, 4), (7, 6), (9, 6), (12, 6), (20, 6), (5, 2)])
def test_round_robin_never_repeats_a_positions_category_and_lasts_to_the_cap(categories, slate):
    cfg = dataclasses.replace(SMALL, num_categories=categories, slate_size=slate, max_steps=20,
                              quit_rule="patience", initial_patience=20.0)
    world = World.build(cfg)
    env = UserBatchEnv(world, cfg, 5, seed=0)
    env.reset(np.arange(5))
    run(env, ReferencePolicy("round-robin"), rotation_check(world))
    assert env.steps.tolist() == [20] * 5
    # Patience fell by exactly one a step: no repeat penalty ever.
    assert env.patience.tolist() == [0.0] * 5


def test_round_robin_rotates_when_categories_equal_the_slate_size():
    cfg = dataclasses.replace(SMALL, num_categories=6, slate_size=6, max_steps=20, favourite_categories=2)
    world = World.build(cfg)
    env = UserBatchEnv(world, cfg, 3, seed=0)
    env.reset(np.arange(3))
    run(env, ReferencePolicy("round-robin"), rotation_check(world))
    assert env.steps.tolist() == [20] * 3


def test_greedy_rotation_never_shows_a_category_of_the_last_slate(world):
    """8 categories, 4 slots: there are always enough fresh categories, so no category repeats
    from one step to the next; among the allowed items it is greedy's argsort."""
    env = make_env(world)
    policy = ReferencePolicy("greedy-rotation")
    assert policy.oracle
    first = policy.act(env)
    np.testing.assert_array_equal(first, ReferencePolicy("greedy").act(env))   # no last slate yet
    for _ in range(4):
        slates = policy.act(env)
        last = env.last_slate_categories
        now = world.item_category[slates]
        assert not (now[:, :, None] == last[:, None, :]).any()
        scores = np.where(np.isin(world.item_category[None, :], last[0]), -np.inf,
                          world.user_model.click.all_scores(env.user_ids[:1]))
        assert set(slates[0].tolist()) == set(np.argsort(-scores[0], kind="stable")[:4].tolist())
        env.step(slates)


def test_greedy_repeats_categories_and_leaves_early_on_the_synthetic_world(world):
    """The contrast on the small world: greedy's slate never changes, so every position repeats."""
    cfg = dataclasses.replace(SMALL, max_steps=20)
    envs = {name: UserBatchEnv(world, cfg, 6, seed=0) for name in ("greedy", "round-robin")}
    for name, env in envs.items():
        env.reset(np.arange(6))
        run(env, ReferencePolicy(name), assert_valid)
    assert envs["greedy"].steps.tolist() == [11] * 6       # 20 -> 19 -> 17 -> ... -> -1 at step 11
    assert envs["round-robin"].steps.tolist() == [20] * 6


# --- MovieLens-100K ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    if not (SHARED_ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens-100K test files not found at {SHARED_ML100K}")
    cfg = WorldConfig(dataset="ml-100k", data_dir=str(SHARED_ML100K), user_model_epochs=5, **LERL_USERS)  # K=6
    cache = tmp_path_factory.getbasetemp() / "ml100k-user-models"   # shared by this session's ML-100K tests
    cache.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMREC_CACHE_DIR", str(cache))
        world = World.build(cfg, log=lambda *_: None)
    users = evaluation_users(world, 300, seed=7)
    results = {name: evaluate_reference(world, cfg, name, users, seed=7) for name in CHEAP_REFERENCES}
    return world, cfg, results


def table(results: dict) -> str:
    return "; ".join(f"{name}: Tint {m['Tint']:.2f} Rcum {m['Rcum']:.3f}" for name, m in results.items())


def test_ml100k_greedy_beats_random_in_cumulative_reward(ml100k):
    _, _, results = ml100k
    assert results["greedy"]["episodes"] == 300 and results["random"]["episodes"] == 300
    assert results["greedy"]["Rcum"] > 2 * results["random"]["Rcum"], table(results)
    assert results["greedy"]["Rsin"] > results["random"]["Rsin"], table(results)


def test_ml100k_round_robin_outlasts_greedy_under_patience(ml100k):
    _, cfg, results = ml100k
    assert results["round-robin"]["Tint"] > results["greedy"]["Tint"] + 2, table(results)
    assert results["round-robin"]["Tint"] == cfg.max_steps, table(results)    # 19 genres, 6 slots: no repeat
    assert results["greedy"]["Tint"] < cfg.max_steps, table(results)
    # And it is the more diverse of the two.
    assert results["round-robin"]["category_entropy"] > results["greedy"]["category_entropy"], table(results)


def test_ml100k_popular_is_one_slate_for_everyone(ml100k):
    world, cfg, _ = ml100k
    env = UserBatchEnv(world, cfg, 5, seed=0)
    env.reset(np.arange(5) * 100)
    slates = ReferencePolicy("popular").act(env)
    assert (slates == slates[0]).all()
    assert slates[0].tolist() == expected_popular(world, cfg.slate_size)


def test_the_history_rules_read_only_what_the_policy_observes(world: World) -> None:
    """history-ridge ranks by the fit of the history's feedback (a user who liked one category's
    items is shown that category); ridge-exposure prices the categories of the last two slates."""
    from rollout.reference_policies import history_ridge_scores, recent_category_share

    env = make_env(world, batch_size=2)
    liked_category = 3
    items = np.flatnonzero(world.item_category == liked_category)[:4]
    others = np.flatnonzero(world.item_category != liked_category)[:4]
    env.history_items[:] = np.r_[items, others].astype(np.int32)
    env.history_feedback[:] = np.r_[np.ones(4), np.zeros(4)].astype(np.float32)
    scores = history_ridge_scores(env)
    top = np.argsort(-scores[0])[:10]
    assert (world.item_category[top] == liked_category).mean() > 0.5
    share = recent_category_share(env)
    assert share.shape == (2, world.num_categories) and np.allclose(share.sum(1), 1.0)
    assert share[0, liked_category] == 0.5          # the last 2 slates (8 items): 4 of that category
    penalised = ReferencePolicy("ridge-exposure").act(env)
    plain = ReferencePolicy("history-ridge").act(env)
    assert (world.item_category[penalised[0]] == liked_category).sum() <= (world.item_category[plain[0]]
                                                                          == liked_category).sum()


def test_ridge_exposure_fresh_never_shows_again_what_the_history_shows_was_shown_this_session(world: World) -> None:
    """The strongest non-oracle rule: ridge-exposure, less every item the observed history shows
    was shown earlier this session (without item removal, history-ridge shows them again)."""
    env = make_env(world, batch_size=4, remove_recommended=False)
    fresh, plain = ReferencePolicy("ridge-exposure-fresh"), ReferencePolicy("history-ridge")
    repeats = {"fresh": 0, "plain": 0}
    while env.active.any():
        window = min(int(env.steps.max()) * env.cfg.slate_size, env.cfg.history_len)
        for name, policy in (("fresh", fresh), ("plain", plain)):
            slates = policy.act(env)
            for row in np.flatnonzero(env.active):
                seen = env.history_items[row, env.cfg.history_len - min(int(env.steps[row]) * env.cfg.slate_size,
                                                                        window):]
                repeats[name] += len(set(slates[row].tolist()) & set(seen[seen >= 0].tolist()))
        env.step(fresh.act(env))
    assert repeats["fresh"] == 0
    assert repeats["plain"] > 0
