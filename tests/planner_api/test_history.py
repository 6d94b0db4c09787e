"""Tests of planner_api.history: a History's columns read and built, titles kept empty or one per entry."""
from __future__ import annotations

import numpy as np
import pytest

from planner_api.contract import validate_explain_request, validate_plan_request
from planner_api.history import (
    Entry,
    column_array,
    concat_column,
    encode_column,
    extend_histories,
    extend_history,
    history_arrays,
    history_entries,
    history_from_columns,
    history_length,
    make_history,
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


def test_columns_travel_as_little_endian_4_byte_values():
    history = history_from_columns([1, 258], [0, 3], [0.5, 1.0], [0, 7])
    assert history.item_ids == b"\x01\x00\x00\x00\x02\x01\x00\x00"
    assert history.feedback == np.array([0.5, 1.0], "<f4").tobytes()
    assert history.steps == np.array([0, 7], "<i4").tobytes()
    view = column_array(history, "item_ids")
    assert view.tolist() == [1, 258] and not view.flags.writeable   # a view of the message's bytes
    assert column_array(history, "steps", np.int64).dtype == np.int64


def test_a_request_s_column_is_read_as_one_array():
    req = _request()
    histories = [u.history for u in req.users]
    assert concat_column(histories, "item_ids", np.int64).tolist() == [0, 1, 1, 2, 2, 3]
    assert concat_column(histories, "feedback", np.float64).tolist() == [1.0, 0.0] * 3
    assert concat_column([], "steps", np.int64).tolist() == []


def test_building_a_column_refuses_what_int32_fields_refused():
    with pytest.raises(TypeError, match="History.item_ids takes integers"):
        encode_column("item_ids", [1.5])
    with pytest.raises(ValueError, match="int32"):
        history_from_columns([2 ** 31], [0], [1.0], [0])
    assert encode_column("feedback", [1]) == np.array([1.0], "<f4").tobytes()


@pytest.mark.parametrize("column", ["item_ids", "category_ids", "feedback", "steps"])
def test_a_column_that_is_not_whole_values_is_refused_by_name(column):
    req = _request()
    history = req.users[1].history
    setattr(history, column, getattr(history, column) + b"\x00")
    with pytest.raises(ValueError, match=rf"users\[1\]\.history\.{column} has 9 bytes; need a multiple of 4"):
        validate_plan_request(req)
    setattr(history, column, getattr(history, column)[:4])
    with pytest.raises(ValueError, match=rf"users\[1\]\.history\.{column} has 1 entries; need len\(item_ids\)=2"
                       if column != "item_ids" else r"users\[1\]\.history\.category_ids has 2 entries; need len\(item_ids\)=1"):
        validate_plan_request(req)


def test_histories_extended_together_each_get_their_own_row():
    histories = [make_history([(9, 0, 1.0, 0)]), planner_pb2.History()]
    extend_histories(histories, {"item_ids": np.array([[1, 2], [3, 4]]), "category_ids": np.array([[0, 1], [1, 0]]),
                                 "feedback": np.array([[0.0, 1.0], [0.5, 0.0]]), "steps": np.full((2, 2), 3)})
    assert history_entries(histories[0]) == [Entry(9, 0, 1.0, 0), Entry(1, 0, 0.0, 3), Entry(2, 1, 1.0, 3)]
    assert history_entries(histories[1]) == [Entry(3, 1, 0.5, 3), Entry(4, 0, 0.0, 3)]
