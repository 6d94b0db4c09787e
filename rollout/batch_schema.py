"""The one Arrow schema for a batch of transitions: the contract between rollout actors and learners.

Each row is one user's step: what the policy saw (history of items and feedback), what the planner
allowed (category mask), what the policy did (Gaussian action, the slate it implied, the behaviour
log-probability and value), what came back (reward, done) and which policy version acted.
List columns have a fixed size, so a column converts to a [rows, size] numpy array without copies.
The sizes depend on the world and are recorded in the schema metadata with the schema version.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from policy.networks import session_dims

if TYPE_CHECKING:  # for the annotations only: the schema does not need the simulator loaded
    from rollout.world import World, WorldConfig

SCHEMA_VERSION = "1"


class IncompatibleBatchError(ValueError):
    """The batch was made by other code (schema version) or for another world (dims): every batch
    of the run would fail the same way, so this is a configuration error, not one bad batch."""


@dataclass(frozen=True)
class BatchDims:
    """The world-dependent widths of the list columns."""

    history_len: int
    num_categories: int
    action_dim: int
    slate_size: int


def transition_schema(dims: BatchDims) -> pa.Schema:
    """The schema for worlds of these dimensions; the only place columns are defined."""
    fields = [
        pa.field("batch_id", pa.string(), nullable=False),        # unique per batch: "actor-<i>/<n>"
        pa.field("episode_id", pa.int64(), nullable=False),       # unique within the batch
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),             # 0-based step within the episode
        pa.field("history_items", pa.list_(pa.int32(), dims.history_len), nullable=False),   # -1 = empty
        pa.field("history_feedback", pa.list_(pa.float32(), dims.history_len), nullable=False),
        pa.field("category_mask", pa.list_(pa.bool_(), dims.num_categories), nullable=False),
        pa.field("action", pa.list_(pa.float32(), dims.action_dim), nullable=False),
        pa.field("slate", pa.list_(pa.int32(), dims.slate_size), nullable=False),
        pa.field("behaviour_logp", pa.float32(), nullable=False),
        pa.field("value", pa.float32(), nullable=False),
        pa.field("reward", pa.float32(), nullable=False),
        pa.field("done", pa.bool_(), nullable=False),
        pa.field("policy_version", pa.int64(), nullable=False),
    ]
    meta = {
        "schema_version": SCHEMA_VERSION,
        "history_len": str(dims.history_len),
        "num_categories": str(dims.num_categories),
        "action_dim": str(dims.action_dim),
        "slate_size": str(dims.slate_size),
    }
    return pa.schema(fields, metadata=meta)


def batch_dims(cfg: WorldConfig, world: World) -> BatchDims:
    """The batch dims of a world (the action lives in item-feature space, session features included:
    policy.networks.PolicySpec.action_dim)."""
    extra = session_dims(True, world.num_categories, cfg.slate_size, cfg.max_steps)  # as rollout.world.policy_spec
    return BatchDims(history_len=cfg.history_len, num_categories=world.num_categories,
                     action_dim=world.item_features.shape[1] + extra, slate_size=cfg.slate_size)


# The column names, read off the schema so that no other module spells the list out. The names
# do not depend on the dims, so any dims will do.
TRANSITION_COLUMNS: tuple[str, ...] = tuple(transition_schema(BatchDims(1, 1, 1, 1)).names)
OBSERVATION_COLUMNS = ("history_items", "history_feedback", "category_mask", "step")
"""What the policy network reads of a row, in the order `ActorCritic.forward` takes them."""
BATCH_COLUMNS = ("batch_id", "policy_version")
"""Set once per batch, by whoever labels the batch (the worker, the demonstration writer)."""
ACTOR_COLUMNS: tuple[str, ...] = tuple(name for name in TRANSITION_COLUMNS if name not in BATCH_COLUMNS)
"""Filled row by row while the episodes run (`rollout.episodes`)."""


def _fixed_list(values: np.ndarray, arrow_type: pa.DataType, width: int) -> pa.FixedSizeListArray:
    flat = np.ascontiguousarray(values).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=arrow_type), width)


def build_batch(dims: BatchDims, columns: dict[str, np.ndarray]) -> pa.RecordBatch:
    """Make a RecordBatch from numpy columns (2-D arrays for the list columns); validates it."""
    schema = transition_schema(dims)
    missing = [f.name for f in schema if f.name not in columns]
    extra = sorted(set(columns) - set(schema.names))
    if missing or extra:
        raise ValueError(f"batch columns: missing {missing}, unexpected {extra}")
    arrays = []
    for f in schema:
        col = columns[f.name]
        if pa.types.is_fixed_size_list(f.type):
            arrays.append(_fixed_list(np.asarray(col), f.type.value_type, f.type.list_size))
        else:
            arrays.append(pa.array(col, type=f.type))
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    validate_batch(batch, dims)
    return batch


def validate_batch(batch: pa.RecordBatch, dims: BatchDims | None = None) -> BatchDims:
    """Check a batch at the boundary where it arrives; returns its dims. Raises ValueError saying what differs."""
    if not isinstance(batch, pa.RecordBatch):
        raise ValueError(f"expected a pyarrow.RecordBatch, got {type(batch).__name__}")
    meta = {k.decode(): v.decode() for k, v in (batch.schema.metadata or {}).items()}
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise IncompatibleBatchError(f"batch schema_version {version!r} != expected {SCHEMA_VERSION!r}: "
                         "rollout actors and learner run different code versions")
    try:
        found = BatchDims(*(int(meta[k]) for k in ("history_len", "num_categories", "action_dim", "slate_size")))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"batch schema metadata is incomplete: {meta}") from exc
    if dims is not None and found != dims:
        raise IncompatibleBatchError(f"batch dims {found} != learner's {dims}: the world configs differ")
    expected = transition_schema(found)
    if not batch.schema.equals(expected, check_metadata=False):
        diffs = [f"{e.name}: expected {e.type}, got "
                 f"{batch.schema.field(e.name).type if e.name in batch.schema.names else 'missing'}"
                 for e in expected if e.name not in batch.schema.names or batch.schema.field(e.name) != e]
        raise ValueError(f"batch does not match the transition schema v{SCHEMA_VERSION}: {diffs}")
    for name in ("reward", "value", "behaviour_logp"):
        if not np.isfinite(column(batch, name)).all():
            raise ValueError(f"batch column {name!r} has non-finite values")
    if batch.num_rows:
        # One batch = one collect: one id (the learner's duplicate check keys on it) and one
        # policy version (the lag correction assumes it); slates index the catalog.
        ids = batch.column("batch_id").unique()
        if len(ids) != 1 or not ids[0].as_py():
            raise ValueError(f"batch column 'batch_id' must hold one non-empty id, got {ids.to_pylist()[:3]}")
        versions = column(batch, "policy_version")
        if versions.min() != versions.max():
            raise ValueError("batch column 'policy_version' must be one version for the whole batch, got "
                             f"{versions.min()} to {versions.max()}")
        if column(batch, "slate").min() < 0:
            raise ValueError("batch column 'slate' has negative item ids")
    return found


def column(batch: pa.RecordBatch, name: str) -> np.ndarray:
    """A column as numpy: [rows] for scalars, [rows, width] for the fixed-size list columns (zero-copy where Arrow allows)."""
    arr = batch.column(name)
    if pa.types.is_fixed_size_list(arr.type):
        values = arr.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(arr), arr.type.list_size)
    return arr.to_numpy(zero_copy_only=False)
