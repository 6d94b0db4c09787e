"""rollout.llm_user: personas from the logs, Respond calls in batches with a replay cache, and the
logistic fit the hybrid user is blended with. The rule user (InProcessPlanner) answers here: what
is tested is the plumbing, not an LLM's judgement (tests/llm_server covers the model)."""
from __future__ import annotations

import numpy as np
import pytest

from planner_api.client import InProcessPlanner
from planner_api.history import column_array, history_length
from protos import planner_pb2
from rollout.data.registry import load_dataset
from rollout.llm_user import LLMUser, ResponseCache, fit_logistic, slate_items, user_persona, user_traits


@pytest.fixture(scope="module")
def ml100k():
    return load_dataset("ml-100k")


def test_a_persona_is_the_users_latest_logged_items_and_traits(ml100k) -> None:
    it = ml100k.interactions
    rows = np.flatnonzero(it.user == 0)
    persona = user_persona(ml100k, 0, rows)
    assert user_traits(ml100k, 0) == ["age 24", "gender M", "occupation: technician"] == list(persona.traits)
    assert history_length(persona.past) == min(64, len(rows))
    latest = rows[-64:]
    assert column_array(persona.past, "item_ids").tolist() == it.item[latest].tolist()
    assert np.allclose(column_array(persona.past, "feedback"), (it.label[latest] - 1) / 4)
    assert list(persona.past.titles) == [ml100k.item_titles[i] for i in it.item[latest]]
    assert set(column_array(persona.past, "steps").tolist()) == {0}


class CountingPlanner(InProcessPlanner):
    """The rule user, counting Respond calls and the cases in each."""

    def __init__(self, fall_back: bool = False) -> None:
        super().__init__()
        self.sizes: list[int] = []
        self.fall_back = fall_back

    def respond(self, req, timeout_s):
        self.sizes.append(sum(len(c.slate) for c in req.cases))
        response, _ = super().respond(req, timeout_s)
        return response, self.fall_back


def cases(data, count: int, slate: int = 6) -> list[planner_pb2.RespondCase]:
    it = data.interactions
    return [planner_pb2.RespondCase(user=user_persona(data, u, np.flatnonzero(it.user == u)[:20]),
                                    slate=slate_items(data, range(10 * u, 10 * u + slate))) for u in range(count)]


def test_answers_come_in_calls_within_the_item_bound_and_replay_from_the_cache(ml100k, tmp_path) -> None:
    client = CountingPlanner()
    cache = ResponseCache(tmp_path / "answers.sqlite", "rule-user-test")
    user = LLMUser(client, ml100k.category_names, timeout_s=5.0, cache=cache, max_items_per_call=20)
    asked = cases(ml100k, 7)
    first = user.answer(asked)
    assert client.sizes == [18, 18, 6]  # 3 slates of 6 per call at most
    assert len(first) == 7 and all(len(a.likes) == 6 for a in first)
    again = user.answer(asked)
    assert again == first and client.sizes == [18, 18, 6]  # every case replayed, no call
    assert (user.stats.cases, user.stats.cache_hits, user.stats.calls) == (14, 7, 3)
    other = ResponseCache(tmp_path / "answers.sqlite", "another-model")  # another model never reads them
    assert other.get([other.key(user._names_digest, asked[0])]) == {}


def test_fallen_back_answers_are_counted_and_never_cached(ml100k, tmp_path) -> None:
    client = CountingPlanner(fall_back=True)
    user = LLMUser(client, ml100k.category_names, timeout_s=5.0,
                   cache=ResponseCache(tmp_path / "answers.sqlite", "rule-user-test"))
    user.answer(cases(ml100k, 3))
    user.answer(cases(ml100k, 3))
    assert user.stats.fallback_cases == 6 and user.stats.cache_hits == 0 and len(client.sizes) == 2


def test_bad_settings_are_refused(ml100k, tmp_path) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        LLMUser(InProcessPlanner(), ml100k.category_names, timeout_s=0)
    with pytest.raises(ValueError, match="max_items_per_call"):
        LLMUser(InProcessPlanner(), ml100k.category_names, timeout_s=1, max_items_per_call=5000)
    with pytest.raises(ValueError, match="model's tag"):
        ResponseCache(tmp_path / "a.sqlite", "")


def test_the_logistic_fit_recovers_the_weights_that_made_the_labels() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20_000, 2))
    labels = rng.random(20_000) < 1 / (1 + np.exp(-(1.5 * x[:, 0] - 0.5 * x[:, 1] + 0.3)))
    assert np.allclose(fit_logistic(x, labels), [1.5, -0.5, 0.3], atol=0.08)
