"""The LLM as the user (the survey's simulator role): personas from each user's own logs, slates
answered through the LLM service's batched Respond call, and a replay cache.

- `user_persona`: who the user is, for the prompt: their traits (age, gender, occupation where
  the data set has them) and their latest logged items before a point in time, with the feedback
  each got (a rating mapped to [0, 1], or a click).
- `LLMUser.answer`: answers a list of cases (persona, session so far, slate) in calls of at most
  `max_items_per_call` slate items, through any planner client (gRPC, replicas, in-process), so it
  has the client's deadline and its counted fallback to the rule user
  (`planner_api.heuristics.heuristic_respond`). A fallen-back answer is counted and never cached.
- `ResponseCache`: answers kept on disk (SQLite) under the model's tag and the case's exact
  bytes, so that an evaluation asked again replays the same answers without the engine, and a
  run with another model or prompt never reads them.
"""
from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner_api.contract import (MAX_PAST, MAX_RESPOND_CASES, MAX_RESPOND_ITEMS, MAX_TITLE_BYTES, MAX_TRAIT_BYTES,
                                   truncate_utf8)
from planner_api.history import history_from_columns
from protos import planner_pb2
from rollout.data.dataset import Dataset
from rollout.user_model import cache_dir

PERSONA_TRAITS = ("age", "gender", "occupation")
"""The user features a persona names, where the data set has them (MovieLens does)."""


def user_traits(data: Dataset, user: int) -> list[str]:
    """The user's features as short text, e.g. ["age 24", "gender M", "occupation: technician"]."""
    traits = []
    for key in PERSONA_TRAITS:
        column = data.user_features.get(key)
        if column is None:
            continue
        value = column[user]
        text = f"{int(value)}" if isinstance(value, (float, np.floating)) and float(value).is_integer() else str(value)
        traits.append(truncate_utf8(f"{key}: {text}" if key == "occupation" else f"{key} {text}", MAX_TRAIT_BYTES))
    return traits


def normalised_feedback(data: Dataset, labels: np.ndarray) -> np.ndarray:
    """Logged labels as the contract's feedback: a rating mapped to [0, 1], a click as it is."""
    if data.feedback != "rating":
        return np.clip(labels, 0.0, 1.0).astype(np.float32)
    low, high = data.rating_scale
    return np.clip((labels - low) / (high - low), 0.0, 1.0).astype(np.float32)


def item_title(data: Dataset, item: int) -> str:
    """An item's text as the contract carries it: "" where it has none, cut to MAX_TITLE_BYTES."""
    return truncate_utf8(str(data.item_titles[item] or ""), MAX_TITLE_BYTES) if len(data.item_titles) else ""


def user_persona(data: Dataset, user: int, rows: np.ndarray) -> planner_pb2.UserPersona:
    """The persona of `user` from the logged interaction `rows` it may know (row indices of
    data.interactions, oldest first): its latest MAX_PAST items with their feedback, and its traits."""
    rows = np.asarray(rows, np.int64)[-MAX_PAST:]
    it = data.interactions
    items = it.item[rows]
    past = history_from_columns(items, data.item_category[items], normalised_feedback(data, it.label[rows]),
                                np.zeros(len(rows), np.int32),
                                [item_title(data, i) for i in items])
    return planner_pb2.UserPersona(user_id=int(user), past=past, traits=user_traits(data, user))


def slate_items(data: Dataset, items) -> list[planner_pb2.CandidateItem]:
    """Catalog items as the contract's CandidateItem (id, primary category, title)."""
    return [planner_pb2.CandidateItem(item_id=int(i), category_id=int(data.item_category[i]),
                                      title=item_title(data, int(i))) for i in items]


class ResponseCache:
    """Respond answers on disk, keyed by (model tag, category names, the case's bytes): the same
    question to the same model replays its answer. Safe across threads and processes (SQLite)."""

    def __init__(self, path: str | Path, model_tag: str) -> None:
        if not model_tag:
            raise ValueError("a response cache needs the answering model's tag (e.g. the --planner-model name)")
        self.path, self.model_tag = Path(path), model_tag
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer BLOB)")
        self._db.commit()

    def key(self, names_digest: bytes, case: planner_pb2.RespondCase) -> str:
        digest = hashlib.sha256(self.model_tag.encode() + b"\0" + names_digest)
        digest.update(case.SerializeToString(deterministic=True))
        return digest.hexdigest()

    def get(self, keys: list[str]) -> dict[str, planner_pb2.UserResponse]:
        found = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                rows = self._db.execute(f"SELECT key, answer FROM answers WHERE key IN ({','.join('?' * len(chunk))})",
                                        chunk).fetchall()
                found.update({key: planner_pb2.UserResponse.FromString(blob) for key, blob in rows})
        return found

    def put(self, answers: dict[str, planner_pb2.UserResponse]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?)",
                                 [(key, answer.SerializeToString()) for key, answer in answers.items()])
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass
class LLMUserStats:
    """What answering cost: calls made, cases asked, answered from the cache, answered by the rule
    user because a call fell back, and the seconds spent waiting on calls."""

    calls: int = 0
    cases: int = 0
    cache_hits: int = 0
    fallback_cases: int = 0
    wait_s: float = 0.0


class LLMUser:
    """Answers slates as the users would, through a planner client's Respond call."""

    def __init__(self, client, category_names: list[str], timeout_s: float, cache: ResponseCache | None = None,
                 max_items_per_call: int = 512) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if not 1 <= max_items_per_call <= MAX_RESPOND_ITEMS:
            raise ValueError(f"max_items_per_call must be in [1, {MAX_RESPOND_ITEMS}], got {max_items_per_call}")
        self.client, self.names, self.timeout_s = client, list(category_names), timeout_s
        self.cache, self.max_items = cache, max_items_per_call
        self._names_digest = hashlib.sha256("\0".join(self.names).encode()).digest()
        self.stats = LLMUserStats()

    def _calls(self, cases: list[planner_pb2.RespondCase]) -> list[list[int]]:
        """Indices of `cases` grouped into calls within the contract's limits and max_items."""
        groups, current, items = [], [], 0
        for index, case in enumerate(cases):
            if current and (items + len(case.slate) > self.max_items or len(current) == MAX_RESPOND_CASES):
                groups.append(current)
                current, items = [], 0
            current.append(index)
            items += len(case.slate)
        return groups + ([current] if current else [])

    def answer(self, cases: list[planner_pb2.RespondCase], seed: int = 0) -> list[planner_pb2.UserResponse]:
        """One UserResponse per case, in order: from the cache where it holds the answer, else from
        the service (calls of at most max_items slate items)."""
        self.stats.cases += len(cases)
        keys = [self.cache.key(self._names_digest, case) for case in cases] if self.cache else []
        known = self.cache.get(keys) if self.cache else {}
        self.stats.cache_hits += sum(key in known for key in keys)
        answers: list[planner_pb2.UserResponse | None] = [known.get(key) for key in keys] or [None] * len(cases)
        missing = [i for i, answer in enumerate(answers) if answer is None]
        fresh = {}
        for group in self._calls([cases[i] for i in missing]):
            indices = [missing[g] for g in group]
            req = planner_pb2.RespondRequest(category_names=self.names, seed=seed, cases=[cases[i] for i in indices])
            started = time.perf_counter()
            response, fell_back = self.client.respond(req, self.timeout_s)
            self.stats.wait_s += time.perf_counter() - started
            self.stats.calls += 1
            self.stats.fallback_cases += len(indices) if fell_back else 0
            for i, answer in zip(indices, response.responses):
                answers[i] = answer
                if self.cache and not fell_back:
                    fresh[keys[i]] = answer
        if fresh:
            self.cache.put(fresh)
        return answers


def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float = 1e-3, iterations: int = 50) -> np.ndarray:
    """Weights w (the last one the intercept) of P(label) = sigmoid(features @ w[:-1] + w[-1]), fitted
    by Newton's method with a small ridge: how the hybrid user blends the learned model's logit and
    the LLM's on held-out rows."""
    x = np.c_[np.asarray(features, np.float64), np.ones(len(features))]
    y = np.asarray(labels, np.float64)
    w = np.zeros(x.shape[1])
    ridge = l2 * np.eye(x.shape[1])
    ridge[-1, -1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        step = np.linalg.solve(x.T @ (x * (p * (1 - p))[:, None]) + ridge, x.T @ (p - y) + ridge @ w)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def logit(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    return np.log(p / (1 - p))


def answers_path() -> Path:
    """Where LLM users' answers are kept (LLMREC_CACHE_DIR or ~/.cache/llmrec-rl, then llm_user/)."""
    return cache_dir().parent / "llm_user" / "answers.sqlite"
