"""The one ProposeQuery builder (planner_api.queries): a valid query carrying what it was given,
titles cut to the contract's limit, feedback clipped to [0, 1]."""
from __future__ import annotations

import numpy as np

from planner_api.contract import MAX_TITLE_BYTES, validate_propose_request
from planner_api.history import column_array, history_entries, history_length
from planner_api.queries import propose_query
from protos import planner_pb2


def test_query_is_valid_and_holds_its_fields() -> None:
    query = propose_query(np.int64(7), np.array([4, 9]), np.array([1, 0], np.int32), np.array([1.0, 0.0], np.float32),
                          [0, 1], ["Four", ""], np.array([2, 5, 8]), [2, 2, 1], ["two", "", "eight"], 2)
    validate_propose_request(planner_pb2.ProposeRequest(queries=[query], category_names=["a", "b", "c"], seed=1))
    assert (query.user_id, query.num_items) == (7, 2)
    assert [tuple(e) for e in history_entries(query.recent)] == [(4, 1, 1.0, 0, "Four"), (9, 0, 0.0, 1, "")]
    candidates = [(c.item_id, c.category_id, c.title) for c in query.candidates]
    assert candidates == [(2, 2, "two"), (5, 2, ""), (8, 1, "eight")]


def test_titles_are_cut_and_feedback_clipped_and_untitled_histories_send_no_titles() -> None:
    long_title = "é" * 150  # 300 bytes
    query = propose_query(1, [3], [0], [1.5], [0], [long_title], [4, 6], [0, 0], [long_title, None], 1)
    validate_propose_request(planner_pb2.ProposeRequest(queries=[query], category_names=["a"]))
    assert query.recent.titles[0] == "é" * (MAX_TITLE_BYTES // 2)
    assert query.candidates[0].title == "é" * (MAX_TITLE_BYTES // 2) and query.candidates[1].title == ""
    assert column_array(query.recent, "feedback").tolist() == [1.0]
    empty = propose_query(1, [], [], [], [], [], [4], [0], [""], 1)
    assert history_length(empty.recent) == 0 and len(empty.recent.titles) == 0
    validate_propose_request(planner_pb2.ProposeRequest(queries=[empty], category_names=["a"]))
