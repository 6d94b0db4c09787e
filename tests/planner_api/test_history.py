"""Tests of planner_api.history: a History's columns read and built, titles kept empty or one per entry."""
from __future__ import annotations

import numpy as np

from planner_api.contract import validate_explain_request
from planner_api.history import (
    Entry,
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
