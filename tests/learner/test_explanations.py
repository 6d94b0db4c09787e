"""learner.explanations on a small world with the in-process (heuristic) service: seeded slates of
the explained rows get explanations that see the history before the slate, and every score."""
from __future__ import annotations

import numpy as np
import pytest

from learner.evaluation import evaluate_reference, evaluation_table, evaluation_users
from learner.explanations import explain_runs, history_before, with_explanations
from planner_api.client import InProcessPlanner
from planner_api.history import column_array
from rollout.world import World, WorldConfig

CFG = WorldConfig(dataset="synthetic", num_items=120, num_categories=6, num_users=40, latent_dim=8, history_len=6)


@pytest.fixture(scope="module")
def explained():
    world = World.build(CFG, log=lambda line: None)
    users = evaluation_users(world, 6, 3)
    runs, rows = {}, {}
    for name in ("greedy", "random"):
        rows[name] = evaluate_reference(world, CFG, name, users, seed=3, runs=runs)
    runs["trained"], rows["trained"] = runs["random"], dict(rows["random"])   # a stand-in row
    client = InProcessPlanner()
    summaries = explain_runs(world, client, runs, count=5, seed=9, timeout_s=5.0, service_backend="heuristic")
    return world, runs, rows, summaries, client


def test_each_explained_row_gets_seeded_scored_explanations(explained):
    _, _, _, summaries, client = explained
    assert set(summaries) == {"greedy", "trained"}          # greedy+planner ran no episodes here
    for summary in summaries.values():
        assert summary["explanations"] == 5 and len(summary["examples"]) == 3
        # The heuristic explainer names the slate's categories and the best-liked history one only.
        assert summary["faithful"] == 1.0 and summary["valid"] == 1.0
        assert 1.0 <= summary["judge"] <= 5.0 and summary["judge_backend"] == "heuristic"
        assert all(e["text"] and e["words"] >= 3 for e in summary["examples"])
    assert client.by_method["Explain"].calls == 10 and client.by_method["Judge"].calls == 2


def test_the_explainer_sees_the_history_before_the_slate(explained):
    world, runs, _, _, _ = explained
    run = runs["greedy"]
    user = int(run.slate_users[-1])
    rows = np.flatnonzero(run.slate_users == user)
    history = history_before(world, run, int(rows[-1]))
    start = world.start_items[user][world.start_items[user] >= 0].tolist()
    earlier = run.slates[rows[:-1]].ravel().tolist()
    assert column_array(history, "item_ids").tolist() == (start + earlier)[-256:]
    assert column_array(history, "feedback").tolist()[len(start):] == run.clicks[rows[:-1]].ravel().tolist()


def test_rows_and_the_table_carry_the_explanations(explained):
    _, _, rows, summaries, _ = explained
    with_explanations(rows, summaries)
    assert rows["greedy"]["explanation_faithful"] == 1.0 and "explanation_judge" in rows["trained"]
    assert "explanations" not in rows["random"]
    table = evaluation_table(rows)
    assert "explanations (faithful" in table and "e.g. greedy:" in table


class EchoingClient(InProcessPlanner):
    """An explainer that repeats its prompt's first line (SmolLM2-135M's habit), and a judge."""

    def explain(self, req, timeout_s):
        answer, _ = super().explain(req, timeout_s)
        answer.explanation, answer.backend = "The user liked: Comedy, Drama.", "vllm"
        return answer, False


def test_an_answer_that_repeats_the_prompt_is_not_valid(explained):
    world, runs, _, _, _ = explained
    summary = explain_runs(world, EchoingClient(), {"greedy": runs["greedy"]}, count=3, seed=1, timeout_s=5.0)
    assert summary["greedy"]["valid"] == 0.0 and summary["greedy"]["explainer"] == ["vllm"]
