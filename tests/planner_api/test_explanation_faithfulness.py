"""The faithfulness rule every scorer of explanations shares, and the heuristic judge built on it:
an explanation that names an item outside the slate and the history is unfaithful."""
from __future__ import annotations

from planner_api.contract import check_judge_response, validate_judge_request
from planner_api.explanations import faithfulness, rule_score
from planner_api.heuristics import heuristic_judge
from planner_api.history import make_history
from protos import planner_pb2

NAMES = ["Action", "Comedy", "Drama", "Sci-Fi", "unknown"]
CATALOG = ["Star Wars (1977)", "Toy Story (1995)", "Fargo (1996)", "Ran (1985)", "Terminator, The (1984)"]


def check(text: str, slate=(0, 1), history=(2,), slate_titles=("Star Wars (1977)",), history_titles=()):
    return faithfulness(text, slate, history, NAMES, slate_titles, history_titles, CATALOG)


def test_naming_the_slate_and_the_history_is_faithful():
    got = check("More Action like Star Wars, since you enjoyed Drama.")
    assert got.faithful and got.names_slate and got.names_history
    assert sorted(got.grounded) == ["Action", "Drama", "star wars"]
    assert rule_score(got, 9) == 5.0 and rule_score(got, 41) == 4.0


def test_an_explanation_naming_an_item_outside_the_slate_is_unfaithful():
    got = check("Because you will love Toy Story and some Action.")
    assert not got.faithful and got.ungrounded == ["toy story"] and rule_score(got, 9) == 2.0
    other_category = check("Lots of Sci-Fi for you.")
    assert not other_category.faithful and other_category.ungrounded == ["Sci-Fi"]
    assert rule_score(other_category, 5) == 1.0            # nothing grounded at all


def test_a_made_up_year_or_a_catalog_title_with_its_article_moved_is_unfaithful():
    assert check("Like Star Wars (1977), more Action.").faithful           # the slate title's own year
    made_up = check("Like Star Wars and Jurassic World (1993), more Action.")
    assert not made_up.faithful and made_up.ungrounded == ["(1993)"]
    assert check("Just like The Terminator, Action.").ungrounded == ["the terminator"]


def test_matching_is_by_whole_words_and_short_titles_are_not_searched():
    assert not check("Dramatic choices.").grounded        # "Drama" inside a word is not a mention
    assert check("We ran out of ideas; Comedy.").ungrounded == []     # "Ran" is too short to search
    assert check("A vague sentence.").grounded == [] and rule_score(check("A vague sentence."), 3) == 1.0
    only_slate = check("Comedy tonight.")
    assert only_slate.faithful and rule_score(only_slate, 2) == 3.0


def test_the_heuristic_judge_rates_each_case_by_the_rule():
    req = planner_pb2.JudgeRequest(category_names=NAMES)
    slate = [planner_pb2.CandidateItem(item_id=1, category_id=0, title="Star Wars (1977)")]
    history = make_history([(7, 2, 1.0, 0, "")])
    for text in ("Action like Star Wars, after the Drama you liked.", "Comedy for you.", "Nice picks."):
        req.cases.add(history=history, slate=slate, explanation=text)
    validate_judge_request(req)
    answer = heuristic_judge(req)
    check_judge_response(req, answer)
    assert list(answer.scores) == [5.0, 1.0, 1.0] and answer.backend == "heuristic"
