"""The one builder of a `ProposeQuery`: a user's recent items and a candidate list.

Both askers of Propose build their queries here: IL-Rec's demonstrator (recent items from the
simulated session) and LAAC's reference policy (recent items from the offline state). The
contract's limits that a caller could trip over without noticing are applied here: titles are cut
to MAX_TITLE_BYTES (untrusted text; a long title would fail validation), feedback is clipped to
[0, 1]. Counts (MAX_RECENT, MAX_CANDIDATES, num_items) are the caller's settings and are left to
`planner_api.contract.validate_propose_request` to refuse.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from planner_api.contract import MAX_TITLE_BYTES, truncate_utf8
from planner_api.history import history_from_columns
from protos import planner_pb2


def _titles(titles: Sequence[str | None]) -> list[str]:
    return [truncate_utf8(title or "", MAX_TITLE_BYTES) for title in titles]


def propose_query(user_id: int, recent_items, recent_categories, recent_feedback, recent_steps,
                  recent_titles: Sequence[str | None], candidate_ids, candidate_categories,
                  candidate_titles: Sequence[str | None], num_items: int) -> planner_pb2.ProposeQuery:
    """A ProposeQuery: the recent items (oldest first; ids, categories, feedback, steps and titles,
    one per item; the titles column is sent only when some title is non-empty) and the candidates
    (ids, categories, titles, one per candidate); `num_items` answers wanted."""
    feedback = np.clip(np.asarray(recent_feedback), 0.0, 1.0)
    recent = history_from_columns(recent_items, recent_categories, feedback, recent_steps, _titles(recent_titles))
    query = planner_pb2.ProposeQuery(user_id=int(user_id), num_items=int(num_items), recent=recent)
    for item, category, title in zip(np.asarray(candidate_ids).tolist(), np.asarray(candidate_categories).tolist(),
                                     _titles(candidate_titles), strict=True):
        query.candidates.add(item_id=item, category_id=category, title=title)
    return query
