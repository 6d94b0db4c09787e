"""Offline data for LAAC: logged interactions as a sequential MDP, written once as Parquet.

Per user, interactions in time order; at position t (t >= 1):
- state: the user's previous `history_len` items (ids, -1 padded, oldest first) and their labels;
- action: the item at position t;
- reward: its label (the rating on rating data, the click on click data);
- done: t is the user's last interaction.
Users are split into train and held-out sets: the held-out ones are the world's evaluation users
(`rollout.world.draw_eval_users`, the world seed), so LAAC's offline metrics and its simulated
evaluation meet the same users, none of whom it trained on.

The table is built once per (data set fingerprint, settings) and cached as Parquet; readers get a
memory-mapped Arrow table (`pq.read_table(..., memory_map=True)`), so a learner holds a pointer to
the file rather than a copy.

    python -m learner.algorithms.laac.offline_data --dataset ml-100k --data-dir ../shared/data/ml-100k
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rollout.data.dataset import DataError
from rollout.data.download import cache_root
from rollout.data.registry import DATASETS, load_dataset
from rollout.world import draw_eval_users

OFFLINE_SCHEMA_VERSION = 1


def offline_schema(history_len: int) -> pa.Schema:
    return pa.schema([
        ("user_id", pa.int32()), ("step", pa.int32()),
        ("state_items", pa.list_(pa.int32(), history_len)),
        ("state_labels", pa.list_(pa.float32(), history_len)),
        ("action", pa.int32()), ("reward", pa.float32()), ("done", pa.bool_()), ("split", pa.string()),
    ], metadata={"offline_schema_version": str(OFFLINE_SCHEMA_VERSION), "history_len": str(history_len)})


def build_transitions(dataset, history_len: int = 10, eval_users=()) -> pa.Table:
    """The sequential MDP of `dataset`'s logged interactions (see the module doc); the users in
    `eval_users` (ids) are the held-out split."""
    if history_len < 1:
        raise ValueError(f"history_len must be >= 1, got {history_len}")
    held_out = np.zeros(dataset.num_users, bool)
    held_out[np.asarray(eval_users, np.int64)] = True
    inter = dataset.interactions
    order = np.lexsort((inter.timestamp, inter.user))  # by user, then time (stable for ties)
    user, item, label = inter.user[order], inter.item[order], inter.label[order].astype(np.float32)
    n = len(user)
    starts = np.r_[True, user[1:] != user[:-1]]
    first_row = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    position = np.arange(n) - first_row
    rows = np.flatnonzero(position >= 1)  # a transition needs at least one item before it
    # state window: the history_len rows before each transition row, within the same user
    offsets = np.arange(history_len, 0, -1)                       # oldest first
    idx = rows[:, None] - offsets[None, :]                         # [T, H]
    valid = idx >= first_row[rows][:, None]
    safe = np.where(valid, idx, 0)
    state_items = np.where(valid, item[safe], -1).astype(np.int32)
    state_labels = np.where(valid, label[safe], 0.0).astype(np.float32)
    ends = np.r_[user[1:] != user[:-1], True]
    split = np.where(held_out[user[rows]], "test", "train")
    return pa.Table.from_arrays([
        pa.array(user[rows].astype(np.int32)), pa.array(position[rows].astype(np.int32)),
        pa.FixedSizeListArray.from_arrays(pa.array(state_items.ravel()), history_len),
        pa.FixedSizeListArray.from_arrays(pa.array(state_labels.ravel()), history_len),
        pa.array(item[rows].astype(np.int32)), pa.array(label[rows]), pa.array(ends[rows]), pa.array(split),
    ], schema=offline_schema(history_len))


def offline_path(dataset, history_len: int, eval_users, cache_dir: Path | None = None) -> Path:
    """Where the table of these settings is cached (keyed by the data, the window and the split)."""
    split = hashlib.sha256(np.asarray(eval_users, np.int64).tobytes()).hexdigest()
    key = json.dumps([OFFLINE_SCHEMA_VERSION, dataset.fingerprint(), history_len, split])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return (cache_dir or cache_root() / "offline") / f"{dataset.name}-{digest}.parquet"


def load_or_build(dataset, history_len: int = 10, eval_users=(), cache_dir: Path | None = None) -> tuple[pa.Table, Path]:
    """The cached transitions (memory-mapped), built and written atomically the first time."""
    path = offline_path(dataset, history_len, eval_users, cache_dir)
    if not path.is_file():
        table = build_transitions(dataset, history_len, eval_users)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        pq.write_table(table, tmp)
        os.replace(tmp, path)  # readers never see a half-written file
    table = pq.read_table(path, memory_map=True)
    if table.schema.metadata.get(b"offline_schema_version") != str(OFFLINE_SCHEMA_VERSION).encode():
        raise ValueError(f"{path} has another offline schema version; delete it to rebuild")
    return table, path


def cli(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(prog="python -m learner.algorithms.laac.offline_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k", choices=DATASETS)
    parser.add_argument("--data-dir", default=None, help="the data set's folder (default: the download cache)")
    parser.add_argument("--history-len", type=int, default=10, help="items in a state (default: 10)")
    parser.add_argument("--eval-user-share", type=float, default=0.2,
                        help="share of users held out, as the world's --eval-user-share (default: 0.2)")
    parser.add_argument("--world-seed", type=int, default=0, help="picks the held-out users, as the world's")
    args = parser.parse_args(argv)
    try:
        if not 0.0 <= args.eval_user_share < 1.0:
            raise ValueError(f"--eval-user-share must be in [0, 1), got {args.eval_user_share}")
        dataset = load_dataset(args.dataset, args.data_dir)
        eval_users, _ = draw_eval_users(dataset.num_users, args.eval_user_share, args.world_seed)
        if args.eval_user_share <= 0:
            eval_users = eval_users[:0]
        table, path = load_or_build(dataset, args.history_len, eval_users)
    except (DataError, ValueError) as exc:
        parser.error(str(exc))
    test = int(np.sum(np.asarray(table.column("split").to_numpy(zero_copy_only=False)) == "test"))
    print(f"{table.num_rows:,} transitions ({table.num_rows - test:,} train, {test:,} held-out) of "
          f"{dataset.num_users:,} users and {dataset.num_items:,} items -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
