"""learner.evaluation.summarise: every evaluation row carries the whole protocol of rollout.metrics,
computed from what was shown to whom and how they responded."""
from __future__ import annotations

import numpy as np
import pytest

from learner.evaluation import evaluate_reference, evaluation_table, evaluation_users, summarise, with_convergence
from rollout.episodes import EpisodeRun
from rollout.world import World, WorldConfig

CFG = WorldConfig(dataset="synthetic", num_items=120, num_categories=6, num_users=40, latent_dim=8, history_len=6)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(CFG, log=lambda line: None)


def test_a_reference_row_carries_every_metric_of_the_protocol(world):
    users = evaluation_users(world, 8, 1)
    row = evaluate_reference(world, CFG, "greedy", users, seed=1)
    for key in ("Tint", "Rcum", "Rsin", "coverage", "diversity", "category_entropy", "novelty", "div_ratio",
                "popularity_bias", "serendipity", "serendipity_popularity", "MGU", "DGU", "head_share"):
        assert np.isfinite(row[key]), key
    assert 0 < row["div_ratio"] <= 1 and 0 <= row["popularity_bias"] <= 1 and row["DGU"] >= row["MGU"] >= 0
    assert row["user_fairness"] == {}                 # the generated world has no user groups
    table = evaluation_table({"greedy": row})
    assert "beyond accuracy" in table and "DivRatio" in table and "gender-gap" not in table


def test_summarise_by_hand_on_a_made_up_run(world, monkeypatch):
    """Two users, two slates each: DivRatio, serendipity and the user groups' gaps as computed by hand."""
    world.data.user_features["gender"] = np.array(["F" if u % 2 else "M" for u in range(world.num_users)], object)
    try:
        slates = np.array([[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 6], [7, 8, 9, 10, 11, 12], [13, 14, 15, 16, 17, 18]])
        clicks = np.zeros(slates.shape, np.float32)
        clicks[0, 0] = clicks[2, :2] = 1.0
        run = EpisodeRun(lengths=np.array([2, 2], np.int32), returns=np.array([1.0, 3.0]), slates=slates,
                         clicks=clicks, slate_users=np.array([2, 2, 3, 3]), user_ids=np.array([2, 3]))
        import learner.evaluation as evaluation

        monkeypatch.setattr(evaluation, "MIN_GROUP_USERS", 1)   # two users: one per group
        row = summarise(world, run)
        assert row["div_ratio"] == pytest.approx(19 / 24)
        categories = set(world.item_category[world.start_items[[2, 3]][world.start_items[[2, 3]] >= 0]].tolist())
        assert 0 <= row["serendipity"] <= 3 / 24 and categories   # at most the 3 clicked entries
        assert row["user_fairness"]["gender"]["Rcum"] == {"F": 3.0, "M": 1.0}
        assert row["gender_Rcum_gap"] == pytest.approx(2.0) and row["gender_Tint_gap"] == pytest.approx(0.0)
    finally:
        del world.data.user_features["gender"]


def test_the_trained_rows_convergence_speed_comes_from_the_runs_curve():
    results = {"trained": {"Rcum": 1.0}, "random": {"Rcum": 0.1}}
    curve = [(100, 0.0), (200, 0.2), (300, 1.0), (400, 1.0), (500, 1.0), (600, 1.0), (700, 1.0)]
    # Trailing means over 5 points: ..., 0.64 at 500, 0.84 at 600, 1.0 at 700; the line is 0.9.
    assert with_convergence(results, curve)["trained"]["convergence_env_steps"] == 700.0
    assert "convergence_env_steps" not in results["random"]
    assert "convergence_env_steps" not in with_convergence({"trained": {}}, curve[:1])["trained"]


def test_reflections_reach_the_plan_requests_at_evaluation(world, monkeypatch):
    """As in training: the rows with a planner plan with the reflections they are given."""
    from learner.evaluation import evaluate_worker
    from policy.networks import PolicyConfig
    from rollout.actor import RolloutConfig
    from rollout.session_planner import SessionPlanner

    seen = []
    start = SessionPlanner.start

    def recording(self, batch_size, reflections, *rest):
        seen.append(list(reflections))
        return start(self, batch_size, reflections, *rest)

    monkeypatch.setattr(SessionPlanner, "start", recording)
    users = evaluation_users(world, 4, 1)
    rollout = RolloutConfig(users_per_actor=4, plan_categories=3, use_planner=True)
    evaluate_worker(world, CFG, PolicyConfig(), rollout, "in-process", None, "random", users, 1,
                    reflections=("Favour Comedy.",))
    assert seen == [["Favour Comedy."]]


def test_the_evaluation_draw_of_reflections_is_seeded_and_leaves_training_draws_alone():
    from learner.algorithms.lerl.reflection_pool import ReflectionPool

    pool = ReflectionPool(seed=3)
    for k in range(10):
        pool.add(f"lesson {k}", float(k))
    state = pool.rng.bit_generator.state
    first = pool.sample(3, seed=2024)
    assert pool.sample(3, seed=2024) == first and len(set(first)) == 3
    assert pool.rng.bit_generator.state == state          # the training generator did not move
