"""Tests of planner_api.history: a History's columns read and built, titles kept empty or one per entry."""
from __future__ import annotations

import numpy as np
import pytest

from planner_api.contract import validate_explain_request, validate_plan_request
from planner_api.heuristics import heuristic_plan
from planner_api.history import (
    Entry,
    concat_column,
    extend_history,
    history_arrays,
    history_entries,
    history_from_columns,
    history_length,
    make_history,
    read_columns_once,
    slice_history,
)
from protos import planner_pb2


def test_entries_round_trip_and_titles_are_one_per_entry_or_none() -> None:
    history = make_history([(1, 2, 1.0, 0, "a title"), (3, 4, 0.0, 1)])
    assert list(history.titles) == ["a title", ""]
    assert history_entries(history) == [Entry(1, 2, 1.0, 0, "a title"), Entry(3, 4, 0.0, 1, "")]
    untitled = make_history([(1, 2, 1.0, 0), (3, 4, 0.0, 1, "")])
    assert len(untitled.titles) == 0 and history_length(untitled) == 2
    assert make_history([]) == planner_pb2.History()


def test_extending_keeps_the_titles_column_aligned() -> None:
    history = make_history([(1, 2, 1.0, 0)])
    extend_history(history, [(5, 6, 0.5, 2, "late title")])
    assert list(history.titles) == ["", "late title"]
    extend_history(history, [(7, 0, 0.0, 3)])
    assert list(history.titles) == ["", "late title", ""]
    validate_explain_request(planner_pb2.ExplainRequest(
        history=history, category_names=[f"c{k}" for k in range(7)],
        slate=[planner_pb2.CandidateItem(item_id=1, category_id=0)]))


def test_arrays_slices_and_columns() -> None:
    history = history_from_columns(np.array([4, 5, 6]), np.array([0, 1, 2]), np.array([1.0, 0.0, 0.5]),
                                   range(3), ["x", "y", "z"])
    arrays = history_arrays(history)
    assert arrays.item_ids.tolist() == [4, 5, 6] and arrays.feedback.tolist() == [1.0, 0.0, 0.5]
    assert arrays.steps.dtype == np.int64 and arrays.category_ids.tolist() == [0, 1, 2]
    assert history_entries(slice_history(history, -2)) == [Entry(5, 1, 0.0, 1, "y"), Entry(6, 2, 0.5, 2, "z")]
    assert len(history_from_columns([1], [0], [1.0], [0], [""]).titles) == 0


def _request(users: int = 3) -> planner_pb2.PlanRequest:
    req = planner_pb2.PlanRequest(category_names=["a", "b", "c"])
    for u in range(users):
        user = req.users.add(user_id=u, step=1, num_categories=1, candidate_categories=[0, 1, 2])
        user.history.CopyFrom(history_from_columns([u, u + 1], [u % 3, 1], [1.0, 0.0], [0, 0]))
    return req


def test_inside_read_columns_once_a_column_is_read_once_and_cannot_be_written():
    req = _request()
    with read_columns_once():
        first = concat_column([u.history for u in req.users], "item_ids", np.int64, 6)
        again = concat_column([u.history for u in req.users], "item_ids", np.int64, 6)
        other = concat_column([u.history for u in req.users], "feedback", np.float64, 6)
        assert again is first and first.tolist() == [0, 1, 1, 2, 2, 3] and other.tolist() == [1, 0] * 3
        with pytest.raises(ValueError, match="read-only"):
            first[0] = 7
    outside = concat_column([u.history for u in req.users], "item_ids", np.int64, 6)
    assert outside is not first and outside.flags.writeable   # outside the scope nothing is kept


def test_read_columns_once_keeps_requests_apart():
    one, two = _request(), _request()
    two.users[0].history.item_ids[0] = 9
    with read_columns_once():
        a = concat_column([u.history for u in one.users], "item_ids", np.int64, 6)
        b = concat_column([u.history for u in two.users], "item_ids", np.int64, 6)
    assert a.tolist()[0] == 0 and b.tolist()[0] == 9


def test_a_plan_validated_and_made_in_one_scope_is_the_plain_one():
    req = _request(5)
    plain = heuristic_plan(req)
    with read_columns_once():
        validate_plan_request(req)
        shared = heuristic_plan(req)
    assert shared == plain
