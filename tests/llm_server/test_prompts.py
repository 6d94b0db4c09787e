"""What a plan prompt says about the user: the logged past before the session, then the session."""
from __future__ import annotations

from llm_server import prompts
from planner_api.history import make_history
from protos import planner_pb2

NAMES = ["Action", "Comedy", "Drama"]


def plan_user(past) -> planner_pb2.UserContext:
    user = planner_pb2.UserContext(user_id=1, step=0, candidate_categories=[0, 1, 2], num_categories=1)
    user.past.CopyFrom(make_history(past))
    return user


def body(user) -> str:
    return prompts.plan_prompt(user, NAMES, [0, 1, 2], template=lambda system, text: text)


def test_the_past_names_the_latest_liked_titles_and_the_most_seen_categories() -> None:
    past = [(10 + k, k % 2, float(k % 2), 0, f"Film {k}") for k in range(12)] + [(40, 2, 0.0, 0, "Dull")]
    text = body(plan_user(past))
    assert "Before this session (latest first):" in text
    liked = text.split("Liked before: ")[1].split("\n")[0]
    # The latest 8 liked (odd k, all Comedy), newest first; a disliked title is never named.
    assert liked.startswith("«Film 11» (Comedy), «Film 9» (Comedy)") and liked.count("«") == 6
    assert "Dull" not in text
    assert "Most seen: Action 0 liked of 6, Comedy 6 liked of 6, Drama 0 liked of 1" in text
    # It comes before the session (a prefix that holds for the whole session).
    assert text.index("Before this session") < text.index("This session, step by step")


def test_without_a_past_the_prompt_says_nothing_of_it_and_users_differ_only_by_it() -> None:
    assert "Before this session" not in body(plan_user([]))
    one = body(plan_user([(1, 0, 1.0, 0, "")]))
    other = body(plan_user([(2, 2, 1.0, 0, "")]))
    assert one != other and "Liked before: Action" in one and "Liked before: Drama" in other
