"""IL-Rec's demonstrations: whole sessions in the simulated world in which the LLM picks the items.

Each step, every active user of a group is one `ProposeQuery` of one batched `Propose` RPC (one
call carries the whole group; DESIGN.md): the user's last `recent` items with their feedback and
`candidates` items drawn at random from the catalog (those the user may still be shown); the
LLM's answers, best first, form the slate (topped up from the candidates, in their random order,
when it names fewer than a slate). The same loop evaluates the LLM policy alone (`llm-propose`).

A demonstration set is an Arrow table in the transition schema of `rollout/batch_schema.py` (the
one contract for trajectories, one batch per set: `batch_id` "demo/seed-<seed>", `policy_version` 0, `action` the
slate's centroid in item-feature space, `behaviour_logp` and `value` 0, every category allowed),
written as Parquet atomically and cached, keyed by the world's fingerprint and settings, the
planner backend and model, the seed, the count and the query settings.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from learner.algorithms.ilrec.config import ProposeSettings
from planner_api.contract import MAX_PROPOSED_ITEMS, MAX_TITLE_BYTES, truncate_utf8
from planner_api.queries import propose_query
from protos import planner_pb2
from rollout.batch_schema import batch_dims, build_batch, transition_schema, validate_batch
from rollout.episodes import EpisodeRun, run_episodes
from rollout.reference_policies import ReferencePolicy
from rollout.world import World, WorldConfig
from rollout.users import UserBatchEnv

DEMO_FORMAT = 1


@dataclass
class SessionRun:
    """What one group of LLM-driven sessions produced."""

    columns: dict[str, np.ndarray]
    lengths: np.ndarray
    returns: np.ndarray
    calls: int = 0
    fallbacks: int = 0
    backends: tuple[str, ...] = ()
    episodes: EpisodeRun | None = None   # the episodes themselves (what the evaluation's metrics read)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def run_propose_sessions(world: World, cfg: WorldConfig, client, env: UserBatchEnv, user_ids: np.ndarray | None,
                         settings: ProposeSettings, seed: int) -> SessionRun:
    """One session per slot of `env` (reset to `user_ids`, or users its RNG draws), the slates
    picked by `client.propose` (PlannerClient or InProcessPlanner), to the end of every session."""
    if settings.candidates < cfg.slate_size:
        raise ValueError(f"ilrec_demo_candidates={settings.candidates} must be >= slate_size={cfg.slate_size}")
    env.reset(user_ids)
    proposer = _Proposer(world, cfg, client, env, settings, seed)
    run = run_episodes(env, proposer, cfg.max_steps, record=True)
    return SessionRun(run.columns, run.lengths, run.returns, proposer.calls, proposer.fallbacks,
                      tuple(sorted(proposer.backends)), run)


def slate_columns(world: World, slates: np.ndarray, action_dim: int) -> dict[str, np.ndarray]:
    """The recorded columns of slates a policy without a network picked: `action` the slate's
    centroid in the fixed item features (0, no lean, on the session features), every category
    allowed, `behaviour_logp` and `value` 0."""
    b = slates.shape[0]
    action = np.zeros((b, action_dim), np.float32)
    action[:, :world.item_features.shape[1]] = world.item_features[slates].mean(axis=1)
    return {"category_mask": np.ones((b, world.num_categories), bool), "action": action,
            "behaviour_logp": np.zeros(b, np.float32), "value": np.zeros(b, np.float32)}


class _Proposer:
    """The `act` of `run_episodes` for LLM-driven sessions: each step, one Propose call per group
    of `settings.group_size` active users; the recorded action is the slate's centroid."""

    def __init__(self, world: World, cfg: WorldConfig, client, env: UserBatchEnv, settings: ProposeSettings,
                 seed: int):
        self.world, self.cfg, self.client, self.env, self.settings, self.seed = world, cfg, client, env, settings, seed
        self.rng = np.random.default_rng(_seed(seed, 0xD3E0))
        self.names = [truncate_utf8(n, MAX_TITLE_BYTES) for n in world.category_names]
        self.num_items = min(cfg.slate_size, settings.candidates, MAX_PROPOSED_ITEMS)
        self.action_dim = batch_dims(cfg, world).action_dim
        self.calls = self.fallbacks = 0
        self.backends: set[str] = set()

    def __call__(self, step: int, active: np.ndarray) -> tuple[np.ndarray, dict]:
        world, env, k, group = self.world, self.env, self.cfg.slate_size, self.settings.group_size
        idx = np.flatnonzero(active)
        available = env.available_items()
        slates = np.zeros((env.batch_size, k), np.int32)
        for start in range(0, idx.size, group):
            part = idx[start:start + group]
            req = planner_pb2.ProposeRequest(category_names=self.names, seed=_seed(self.seed, step, start))
            cands = []
            for row in part:
                pool = np.arange(world.num_items) if available is None else np.flatnonzero(available[row])
                cands.append(self.rng.choice(pool, size=min(self.settings.candidates, pool.size), replace=False))
                req.queries.append(self._query(row, step, cands[-1]))
            response, fell_back = self.client.propose(req, self.settings.timeout_s)
            self.calls += 1
            self.fallbacks += int(fell_back)
            self.backends.add(response.backend)
            for row, chosen, proposal in zip(part, cands, response.proposals):
                picked = [int(i) for i in proposal.item_ids][:k]
                if len(picked) < k:  # top up from the candidates, in their (random) order
                    taken = set(picked)
                    picked += [int(i) for i in chosen if int(i) not in taken][: k - len(picked)]
                slates[row] = picked
        return slates, slate_columns(world, slates, self.action_dim)

    def _query(self, row: int, step: int, candidates: np.ndarray) -> planner_pb2.ProposeQuery:
        """Row `row`'s query: its last `recent` history slots that hold an item, and `candidates`."""
        world, env, h, k = self.world, self.env, self.cfg.history_len, self.cfg.slate_size
        items, feedback = env.history_items[row], env.history_feedback[row]
        js = np.arange(h - self.settings.recent, h)
        js = js[items[js] >= 0]
        shown = items[js].astype(np.int64)
        return propose_query(env.user_ids[row], shown, world.item_category[shown], feedback[js],
                             np.maximum(step - 1 - (h - 1 - js) // k, 0),  # the step each slot was shown at
                             [world.item_titles[item] for item in shown.tolist()],
                             candidates, world.item_category[candidates],
                             [world.item_titles[item] for item in candidates.tolist()], self.num_items)


def demo_key(world: World, cfg: WorldConfig, backend: str, model: str, seed: int, sessions: int,
             settings: ProposeSettings) -> dict:
    """Everything a demonstration set depends on (the cache key)."""
    world_settings = {k: v for k, v in asdict(cfg).items() if k != "data_dir"}
    return {"format": DEMO_FORMAT, "dataset": world.data.name, "fingerprint": world.data.fingerprint(),
            "world": world_settings, "backend": backend, "model": model if backend == "vllm" else "",
            "seed": int(seed), "sessions": int(sessions), "candidates": settings.candidates,
            "recent": settings.recent, "group_size": settings.group_size}


def demo_path(key: dict, cache: Path, prefix: str = "demos") -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache / "ilrec" / f"{prefix}-{key['dataset']}-{digest}.parquet"


def generate_demonstrations(world: World, cfg: WorldConfig, client, sessions: int, seed: int,
                            settings: ProposeSettings, key: dict | None = None, log=print) -> pa.Table:
    """`sessions` LLM-driven sessions, `settings.group_size` users stepped together (one Propose
    call per step per group); the users are drawn from the pool by the seed."""
    settings.validate()

    def run_group(env: UserBatchEnv, group: int) -> SessionRun:
        return run_propose_sessions(world, cfg, client, env, None, settings, _seed(seed, group))

    return _generate(world, cfg, sessions, seed, settings.group_size, run_group, "demonstrations", key, log)


def generate_reference_sessions(world: World, cfg: WorldConfig, name: str, sessions: int, seed: int,
                                group_size: int, key: dict | None = None, log=print) -> pa.Table:
    """`sessions` sessions whose slates the reference policy `name` picks (rollout.reference_policies).
    "random" (each slate K distinct items drawn uniformly from those the user may be shown) makes
    the logged environment transitions of offline IL-Rec; an oracle such as "greedy" makes the
    demonstrations of a demonstrator that knows the user (a control). With one seed and group size,
    the first sessions of any two such sets meet the same users."""
    action_dim = batch_dims(cfg, world).action_dim

    def run_group(env: UserBatchEnv, group: int) -> SessionRun:
        policy = ReferencePolicy(name, _seed(seed, group, 0x10C5))
        env.reset(None)
        run = run_episodes(env, lambda step, active: (slates := policy.act(env), slate_columns(world, slates, action_dim)),
                           cfg.max_steps, record=True)
        return SessionRun(run.columns, run.lengths, run.returns, backends=(name,), episodes=run)

    return _generate(world, cfg, sessions, seed, group_size, run_group,
                     "random logs" if name == "random" else f"{name} sessions", key, log)


def _generate(world: World, cfg: WorldConfig, sessions: int, seed: int, group_size: int, run_group, what: str,
              key: dict | None, log) -> pa.Table:
    """`sessions` sessions in groups of `group_size` users (group g's users drawn by the env seed
    (seed, g)), each group run by `run_group(env, g)`, as one transition table with its facts."""
    if sessions < 1:
        raise ValueError(f"the number of {what} sessions must be >= 1, got {sessions}")
    dims = batch_dims(cfg, world)
    batches, lengths, returns = [], [], []
    calls = fallbacks = 0
    backends: set[str] = set()
    t0 = time.perf_counter()
    for group, start in enumerate(range(0, sessions, group_size)):
        size = min(group_size, sessions - start)
        env = UserBatchEnv(world, cfg, size, _seed(seed, group, 0xE11))
        run = run_group(env, group)
        columns = dict(run.columns)
        columns["episode_id"] = columns["episode_id"] + start  # unique across groups
        columns["batch_id"] = np.array([f"demo/seed-{seed}"] * len(columns["step"]), dtype=object)
        columns["policy_version"] = np.zeros(len(columns["step"]), np.int64)
        batches.append(build_batch(dims, columns))
        lengths.append(run.lengths)
        returns.append(run.returns)
        calls, fallbacks = calls + run.calls, fallbacks + run.fallbacks
        backends.update(run.backends)
        if start + size == sessions or group % max(1, sessions // group_size // 8) == 0:  # about 8 lines
            log(f"ilrec: {what} {start + size}/{sessions} sessions ({time.perf_counter() - t0:.0f} s, "
                f"{calls} Propose calls, {fallbacks} fallbacks)")
    lengths_all, returns_all = np.concatenate(lengths), np.concatenate(returns)
    info = {"key": key or {}, "answered_by": sorted(backends), "propose_calls": calls, "fallbacks": fallbacks,
            "seconds": time.perf_counter() - t0, "Tint": float(lengths_all.mean()), "Rcum": float(returns_all.mean()),
            "steps": int(lengths_all.sum())}
    schema = transition_schema(dims)
    meta = {**(schema.metadata or {}), b"ilrec_demo": json.dumps(info, sort_keys=True).encode()}
    table = pa.Table.from_batches(batches, schema=schema).combine_chunks()
    validate_batch(demo_batch(table), dims)
    return table.replace_schema_metadata(meta)


def demo_info(table: pa.Table) -> dict:
    """The generation facts stored with a demonstration table (key, backends, calls, fallbacks)."""
    return json.loads((table.schema.metadata or {}).get(b"ilrec_demo", b"{}"))


def write_atomically(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # readers never see a half-written file


def read_demonstrations(path: Path, world: World, cfg: WorldConfig) -> pa.Table:
    """A demonstration Parquet file, checked against this world's transition schema."""
    table = pq.read_table(path, memory_map=True)
    if demo_info(table).get("key", {}).get("format") != DEMO_FORMAT:
        raise ValueError(f"{path} is not a demonstration set of format {DEMO_FORMAT}; delete it to regenerate")
    validate_batch(demo_batch(table), batch_dims(cfg, world))
    return table


def demo_batch(table: pa.Table) -> pa.RecordBatch:
    """A demonstration table as the one RecordBatch of transitions it is."""
    batches = table.combine_chunks().to_batches()
    if len(batches) != 1:
        raise ValueError(f"a demonstration set must hold transitions, got {table.num_rows} rows")
    return batches[0]


def load_or_generate(world: World, cfg: WorldConfig, client, backend: str, model: str, sessions: int, seed: int,
                     settings: ProposeSettings, cache: Path, log=print) -> tuple[pa.Table, Path, bool]:
    """The cached demonstration set for these settings, generated and written the first time.
    Returns (table, its Parquet path, whether it came from the cache)."""
    key = demo_key(world, cfg, backend, model, seed, sessions, settings)
    path = demo_path(key, cache)
    if path.is_file():
        return read_demonstrations(path, world, cfg), path, True
    table = generate_demonstrations(world, cfg, client, sessions, seed, settings, key, log)
    write_atomically(table, path)
    return read_demonstrations(path, world, cfg), path, False


def load_or_log(world: World, cfg: WorldConfig, sessions: int, seed: int, group_size: int, cache: Path,
                log=print, policy: str = "random") -> tuple[pa.Table, Path, bool]:
    """The cached sessions of reference policy `policy` (`generate_reference_sessions`; by default
    the random logs) for these settings, made the first time. Returns (table, its Parquet path,
    whether it came from the cache)."""
    backend = "random-logs" if policy == "random" else f"reference:{policy}"
    key = {**demo_key(world, cfg, backend, "", seed, sessions, ProposeSettings(group_size=group_size)),
           "candidates": 0, "recent": 0}
    path = demo_path(key, cache, "logs" if policy == "random" else "demos")
    if path.is_file():
        return read_demonstrations(path, world, cfg), path, True
    table = generate_reference_sessions(world, cfg, policy, sessions, seed, group_size, key, log)
    write_atomically(table, path)
    return read_demonstrations(path, world, cfg), path, False


def session_returns(table: pa.Table) -> np.ndarray:
    """[S] each session's return, in session order (episode ids are the sessions' order)."""
    episode = table.column("episode_id").to_numpy()
    reward = table.column("reward").to_numpy().astype(np.float64)
    ids, inverse = np.unique(episode, return_inverse=True)
    return np.bincount(inverse, weights=reward, minlength=len(ids))


def demonstrator_quality(demos: pa.Table, logs: pa.Table) -> dict:
    """The demonstrations' sessions against the random logs' first sessions, which met the same
    users (same seed and group size): mean return of each, and whether the demonstrator beats
    random beyond the paired difference's standard error (2 SE)."""
    demo_r, random_r = session_returns(demos), session_returns(logs)
    n = min(len(demo_r), len(random_r))
    random_r = random_r[:n]
    diff = demo_r[:n] - random_r
    se = float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    return {"sessions": int(n), "demonstrator_Rcum": float(demo_r[:n].mean()), "random_Rcum": float(random_r.mean()),
            "difference": float(diff.mean()), "difference_se": se,
            "beats_random": bool(diff.mean() > 2 * se)}
