"""LAAC's offline arrays and the LLM reference policy's answers, cached with the data set.

`OfflineArrays` turns the memory-mapped transitions of `learner.algorithms.laac.offline_data` into the numpy arrays
a minibatch is drawn from: feedback in a state = (rating - 1) / 4 (so 3 stars and up read as
"liked" in prompts), reward = rating / 5 (a hit on a 1-star item still earns a little); clicks as
they are.

`reference_answers` asks the planner service's `Propose` call (LAAC's reference policy: the last
`laac_recent_items` items of the state, `laac_candidates` random candidates, up to
`laac_proposals` items back) for the given transitions, in batched RPCs, and caches the answers
as Parquet beside the offline data. The cache is keyed by the offline table's file (itself keyed
by the data set's fingerprint and the split settings), the planner (backend and model), the
candidate seed, the prompt sizes and the exact transitions asked about; it is written atomically
(a temporary name, then os.replace). A batch the service could not answer (the client fell back
to the heuristic) is used for this run but not cached, so the next run asks again.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from planner_api.contract import MAX_QUERIES
from planner_api.queries import propose_query
from protos import planner_pb2

REFERENCE_CACHE_VERSION = 1


@dataclass
class OfflineArrays:
    """The offline transitions as arrays (one row per transition, table order)."""

    items: np.ndarray      # [T, H] int64 state item ids, -1 = empty, oldest first
    feedback: np.ndarray   # [T, H] float32 state labels scaled to [0, 1]
    action: np.ndarray     # [T] int64 the logged next item
    reward: np.ndarray     # [T] float32 its reward: the rating / the scale's top (or the click), in [0, 1]
    action_feedback: np.ndarray  # [T] float32 its label scaled like `feedback` (its slot in s')
    done: np.ndarray       # [T] bool
    user: np.ndarray       # [T] int64
    step: np.ndarray       # [T] int64 position of the action in the user's sequence
    train: np.ndarray      # [T] bool: the row belongs to a training user

    @classmethod
    def from_table(cls, table: pa.Table, rating_scale: tuple[float, float] | None) -> "OfflineArrays":
        """`rating_scale` (low, high) for rating data (label -> (label - low) / (high - low)); None for clicks."""
        history = int(table.schema.metadata[b"history_len"])

        def flat(name: str, dtype) -> np.ndarray:
            return table.column(name).combine_chunks().flatten().to_numpy().astype(dtype).reshape(-1, history)

        low, span = (rating_scale[0], rating_scale[1] - rating_scale[0]) if rating_scale else (0.0, 1.0)
        items = flat("state_items", np.int64)
        feedback = np.where(items >= 0, (flat("state_labels", np.float32) - low) / span, 0.0).astype(np.float32)
        col = lambda name: table.column(name).to_numpy()  # noqa: E731
        split = np.asarray(table.column("split").to_numpy(zero_copy_only=False))
        label = col("reward").astype(np.float32)
        top = rating_scale[1] if rating_scale else 1.0
        return cls(items=items, feedback=feedback, action=col("action").astype(np.int64),
                   reward=(label / top).astype(np.float32), action_feedback=((label - low) / span).astype(np.float32),
                   done=col("done").astype(bool),
                   user=col("user_id").astype(np.int64), step=col("step").astype(np.int64), train=split == "train")

    def __len__(self) -> int:
        return len(self.action)


def choose_rows(candidates: np.ndarray, count: int, seed: int, salt: int) -> np.ndarray:
    """A seeded subsample of `count` of the row ids `candidates` (all of them when count is 0 or
    larger), sorted."""
    if count <= 0 or count >= len(candidates):
        return np.sort(candidates)
    rng = np.random.default_rng(np.random.SeedSequence([seed, salt]))
    return np.sort(rng.choice(candidates, size=count, replace=False))


def candidate_lists(arrays: OfflineArrays, rows: np.ndarray, num_items: int, count: int, seed: int,
                    include_target: bool) -> np.ndarray:
    """[R, count] candidate item ids per row: random items outside the state (a function of (seed,
    row) only, so every subsample sees the same candidates for a row). With `include_target`, the
    logged next item replaces one of them at a random position (the held-out protocol: hit@k)."""
    if count > num_items - arrays.items.shape[1] - 1:
        raise ValueError(f"laac_candidates={count} leaves too few items outside a state of "
                         f"{arrays.items.shape[1]} in a catalog of {num_items}")
    out = np.empty((len(rows), count), np.int64)
    for i, row in enumerate(rows):
        rng = np.random.default_rng(np.random.SeedSequence([seed, int(row), 0xCA7D]))
        drawn = rng.choice(num_items, size=count + arrays.items.shape[1] + 1, replace=False)
        banned = np.r_[arrays.items[row], arrays.action[row]]
        picked = drawn[~np.isin(drawn, banned)][:count]
        if include_target:
            picked[rng.integers(count)] = arrays.action[row]
        out[i] = picked
    return out


def propose_queries(arrays: OfflineArrays, rows: np.ndarray, candidates: np.ndarray, dataset, recent: int,
                    proposals: int) -> list[planner_pb2.ProposeQuery]:
    """One ProposeQuery per row: the state's last `recent` items (title, genre, liked or not) and
    the candidates."""
    titles, categories = dataset.item_titles, dataset.item_category
    queries = []
    for i, row in enumerate(rows):
        state = arrays.items[row]
        kept = np.flatnonzero(state >= 0)[-recent:]
        items = state[kept].astype(np.int64)
        queries.append(propose_query(arrays.user[row], items, categories[items], arrays.feedback[row, kept],
                                     range(len(kept)), [titles[item] for item in items.tolist()],
                                     candidates[i], categories[candidates[i]],
                                     [titles[item] for item in candidates[i].tolist()], proposals))
    return queries


def reference_cache_path(offline_path: Path, planner_key: str, seed: int, rows: np.ndarray, recent: int,
                         count: int, proposals: int, include_target: bool) -> Path:
    key = json.dumps([REFERENCE_CACHE_VERSION, offline_path.name, planner_key, seed, recent, count, proposals,
                      include_target, hashlib.sha256(np.ascontiguousarray(rows, np.int64).tobytes()).hexdigest()])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return offline_path.with_name(f"{offline_path.stem}.laac-reference-{digest}.parquet")


def reference_answers(arrays: OfflineArrays, rows: np.ndarray, dataset, client, *, offline_path: Path,
                      planner_key: str, seed: int, recent: int, count: int, proposals: int, include_target: bool,
                      batch_size: int, timeout_s: float, log=print) -> tuple[np.ndarray, np.ndarray, dict]:
    """([R, proposals] proposed items, -1 padded, [R, count] candidates, stats) for `rows`, from the
    cache when it has them, else from `client` (a PlannerClient: batched Propose RPCs)."""
    candidates = candidate_lists(arrays, rows, dataset.num_items, count, seed, include_target)
    path = reference_cache_path(offline_path, planner_key, seed, rows, recent, count, proposals, include_target)
    stats = {"rows": int(len(rows)), "cached": False, "fell_back": 0, "seconds": 0.0, "cache": str(path)}
    if path.is_file():
        table = pq.read_table(path, memory_map=True)
        if np.array_equal(table.column("row").to_numpy(), rows):
            stats["cached"] = True
            flat = table.column("proposals").combine_chunks().flatten().to_numpy()
            return flat.reshape(len(rows), proposals).astype(np.int64), candidates, stats
        log(f"warning: {path} does not hold the rows asked for; asking the planner again")
    answers = np.full((len(rows), proposals), -1, np.int64)
    started = last_log = time.perf_counter()
    batch_size = max(1, min(batch_size, MAX_QUERIES))
    for begin in range(0, len(rows), batch_size):
        chunk = slice(begin, begin + batch_size)
        req = planner_pb2.ProposeRequest(queries=propose_queries(arrays, rows[chunk], candidates[chunk], dataset,
                                                                 recent, proposals),
                                         category_names=dataset.category_names, seed=seed)
        response, fell_back = client.propose(req, timeout_s)
        stats["fell_back"] += len(req.queries) if fell_back else 0
        for i, proposal in enumerate(response.proposals):
            ids = list(proposal.item_ids)[:proposals]
            answers[begin + i, :len(ids)] = ids
        done, now = min(begin + batch_size, len(rows)), time.perf_counter()
        if now - last_log > 30 and done < len(rows):  # slow planners (an LLM on a CPU) say how far they are
            last_log = now
            log(f"reference policy: {done:,}/{len(rows):,} states answered ({now - started:.0f} s, "
                f"~{(now - started) / done * (len(rows) - done):.0f} s left)")
    stats["seconds"] = time.perf_counter() - started
    if stats["fell_back"]:
        log(f"warning: the planner failed on {stats['fell_back']} of {len(rows)} reference queries (the heuristic "
            "answered them); these answers are used but not cached")
        return answers, candidates, stats
    table = pa.table({"row": pa.array(rows.astype(np.int64)),
                      "proposals": pa.FixedSizeListArray.from_arrays(pa.array(answers.ravel().astype(np.int32)),
                                                                     proposals)},
                     metadata={"planner": planner_key, "seed": str(seed), "version": str(REFERENCE_CACHE_VERSION)})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # readers never see a half-written cache
    return answers, candidates, stats
