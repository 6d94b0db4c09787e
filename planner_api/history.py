"""One user's history as the planner contract carries it: `planner_pb2.History`, packed columns.

Entry k of a History is (item_ids[k], category_ids[k], feedback[k], steps[k], titles[k]), oldest
first; titles is either empty (not sent) or one per entry (protos/planner.proto). The numeric
columns are little-endian 4-byte arrays in bytes fields (`COLUMN_DTYPES`, contract v3): a reader
takes a whole column as one array view, a writer hands over one buffer. In Python protobuf a
repeated scalar is read one value at a time (about 75 ns a value), which was most of what
validating and planning a 64-user request cost (v2); one message per entry (v1) cost far more.

This module is the one place that encodes and decodes History columns: every other module reads
them through `column_array`, `concat_column`, `history_arrays` or `history_entries` and builds
them through `history_from_columns`, `extend_history`, `extend_histories`, `make_history` or
`slice_history`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import repeat
from operator import attrgetter
from typing import NamedTuple

import numpy as np

from protos import planner_pb2

# The numeric columns every entry has, in proto field order, and each one's type on the wire
# (titles is optional, see above).
COLUMN_DTYPES = {"item_ids": np.dtype("<i4"), "category_ids": np.dtype("<i4"),
                 "feedback": np.dtype("<f4"), "steps": np.dtype("<i4")}
COLUMNS = tuple(COLUMN_DTYPES)
VALUE_BYTES = 4
"""Bytes per value of every numeric column."""


class HistoryArrays(NamedTuple):
    """The numeric columns of a History as numpy arrays (each column read once)."""

    item_ids: np.ndarray      # int64
    category_ids: np.ndarray  # int64
    feedback: np.ndarray      # float64
    steps: np.ndarray         # int64


class Entry(NamedTuple):
    """One entry of a History, for code that formats entries one by one (prompts, tests)."""

    item_id: int
    category_id: int
    feedback: float
    step: int
    title: str = ""


def history_length(history: planner_pb2.History) -> int:
    """The number of entries (the values in item_ids; a valid History has every column this long)."""
    return len(history.item_ids) // VALUE_BYTES


def history_lengths(histories) -> np.ndarray:
    """[len(histories)] int64: each History's number of entries (`history_length`)."""
    return np.fromiter((len(h.item_ids) for h in histories), np.int64, len(histories)) // VALUE_BYTES


def column_length(history: planner_pb2.History, name: str) -> tuple[int, bool]:
    """(values in numeric column `name`, whether its byte length is a whole number of values)."""
    size = len(getattr(history, name))
    return size // VALUE_BYTES, size % VALUE_BYTES == 0


def column_array(history: planner_pb2.History, name: str, dtype=None) -> np.ndarray:
    """Numeric column `name` of a History as a numpy array: a read-only view of the message's
    bytes in the wire type, or a copy in `dtype` when one is given. Expects a column whose byte
    length is a whole number of values (`column_length`; `validate_*_request` checks it)."""
    values = np.frombuffer(getattr(history, name), COLUMN_DTYPES[name])
    return values if dtype is None else values.astype(dtype)


def concat_column(histories: Iterable[planner_pb2.History], name: str, dtype) -> np.ndarray:
    """Numeric column `name` of these Histories laid end to end, as one numpy array in `dtype`: how
    a whole request's histories are read at once (one join of the buffers, one conversion)."""
    return np.frombuffer(b"".join(map(attrgetter(name), histories)), COLUMN_DTYPES[name]).astype(dtype)


def history_arrays(history: planner_pb2.History) -> HistoryArrays:
    """The numeric columns of `history` as numpy arrays (int64, int64, float64, int64)."""
    return HistoryArrays(column_array(history, "item_ids", np.int64),
                         column_array(history, "category_ids", np.int64),
                         column_array(history, "feedback", np.float64),
                         column_array(history, "steps", np.int64))


def history_entries(history: planner_pb2.History) -> list[Entry]:
    """The entries of a valid History, oldest first (titles "" when the titles column is not sent)."""
    titles = list(history.titles) if len(history.titles) else repeat("")
    return [Entry(*row) for row in zip(*(column_array(history, name).tolist() for name in COLUMNS), titles)]


def encode_column(name: str, values) -> bytes:
    """Values (a sequence or numpy array) as numeric column `name` on the wire. TypeError for
    non-integer values in an integer column, ValueError for an integer outside int32: the checks
    protobuf made on repeated int32 fields, which a bytes field no longer makes."""
    array = np.asarray(values)
    wire = COLUMN_DTYPES[name]
    if wire.kind == "i" and array.size:
        if array.dtype.kind not in "iub":
            raise TypeError(f"History.{name} takes integers, got {array.dtype} values")
        low, high = int(array.min()), int(array.max())
        if low < np.iinfo(wire).min or high > np.iinfo(wire).max:
            raise ValueError(f"History.{name} takes int32 values, got one outside [{np.iinfo(wire).min}, "
                             f"{np.iinfo(wire).max}]")
    return np.ascontiguousarray(array, wire).reshape(-1).tobytes()


def history_from_columns(item_ids, category_ids, feedback, steps, titles=()) -> planner_pb2.History:
    """A History from its columns (sequences or numpy arrays of one length). The titles column is
    sent only when some title is non-empty (then one per entry, "" where an item has none)."""
    history = planner_pb2.History(item_ids=encode_column("item_ids", item_ids),
                                  category_ids=encode_column("category_ids", category_ids),
                                  feedback=encode_column("feedback", feedback), steps=encode_column("steps", steps))
    titles = list(titles)
    if any(titles):
        history.titles.extend(titles)
    return history


def extend_histories(histories: Sequence[planner_pb2.History], columns: dict) -> None:
    """Appends row k of every numeric column to `histories[k]`: `columns` maps each of `COLUMNS` to
    a [len(histories), K] array (K entries per History). Each column is encoded once and each
    History gets one buffer per column (the titles column is the caller's)."""
    buffers = {name: encode_column(name, columns[name]) for name in COLUMNS}
    width = len(buffers["item_ids"]) // max(len(histories), 1)
    for k, history in enumerate(histories):
        part = slice(k * width, (k + 1) * width)
        for name, buffer in buffers.items():
            setattr(history, name, getattr(history, name) + buffer[part])


def extend_history(history: planner_pb2.History, entries: Iterable) -> planner_pb2.History:
    """Appends entries (`Entry` tuples or (item_id, category_id, feedback, step[, title]) tuples) to
    every column of `history`, keeping titles empty or one per entry: the titles column is started
    (with "" for the earlier entries) only once some entry has a title. Returns `history`."""
    rows = [Entry(*row) for row in entries]
    if not rows:
        return history
    titles = [row.title for row in rows]
    send_titles = len(history.titles) > 0 or any(titles)
    if send_titles and not len(history.titles):
        history.titles.extend([""] * history_length(history))
    extend_histories([history], {name: [values] for name, values in zip(COLUMNS, zip(*(row[:4] for row in rows)))})
    if send_titles:
        history.titles.extend(titles)
    return history


def make_history(entries: Iterable) -> planner_pb2.History:
    """A new History of these entries (see `extend_history`)."""
    return extend_history(planner_pb2.History(), entries)


def slice_history(history: planner_pb2.History, start: int | None = None, stop: int | None = None
                  ) -> planner_pb2.History:
    """The entries history[start:stop] (Python slice semantics) as a new History."""
    entries = range(history_length(history))[start:stop]
    first, last = entries.start * VALUE_BYTES, entries.stop * VALUE_BYTES
    part = planner_pb2.History(**{name: getattr(history, name)[first:last] for name in COLUMNS})
    if len(history.titles):
        part.titles.extend(history.titles[entries.start:entries.stop])
    return part
