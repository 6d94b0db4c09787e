"""The learner: owns the trainable actor-critic, turns arriving Arrow batches into PPO updates and
publishes versioned weights (a dict of numpy arrays, one `ray.put` per version; DESIGN.md).

`Learner` is a plain class (serial mode and tests use it directly); `make_learner_actor_class`
wraps it as a Ray actor that reserves a GPU when asked to.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import pyarrow as pa
import torch

from learner.ppo import DataParallel, PPOConfig, gae, ppo_update
from policy.networks import ActorCritic, PolicyConfig, PolicySpec, load_numpy_weights, weights_to_numpy
from rollout.batch_schema import OBSERVATION_COLUMNS, BatchDims, IncompatibleBatchError, column, validate_batch


def pick_device(requested: str) -> torch.device:
    """'auto' -> CUDA when torch sees a GPU, else CPU; 'cuda' without a GPU is a configuration error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("learner_device=cuda but torch sees no GPU here; use learner_device=auto or cpu")
    if requested not in ("cpu", "cuda"):
        raise ValueError(f"learner_device must be auto, cpu or cuda, got {requested!r}")
    return torch.device(requested)


class Learner:
    """PPO on batches of transitions; `version` counts the updates (0 = the initial weights)."""

    def __init__(self, spec: PolicySpec, dims: BatchDims, policy: PolicyConfig, ppo: PPOConfig, seed: int,
                 device: str = "auto", torch_threads: int = 1):
        """`spec`: what the network needs of the world (rollout.world.policy_spec); `dims`: the
        widths the batches it learns from must have (rollout.batch_schema.batch_dims)."""
        torch.set_num_threads(torch_threads)
        self.ppo = ppo
        self.device = pick_device(device)
        self.dims = dims
        torch.manual_seed(seed)  # the initial weights; acting seeds live in the rollout workers
        self.model = ActorCritic.from_spec(spec, policy).to(self.device)
        self.model.eval()
        # Fused: one kernel over all parameters per step instead of a dozen small ops per tensor
        # (the same update; the state dict is the unfused one's).
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=ppo.lr, eps=1e-5, fused=True)
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.version = 0
        self.seen_batch_ids: set[str] = set()
        self.data_parallel: DataParallel | None = None  # set by learner.distributed's workers

    def weights(self) -> tuple[dict[str, np.ndarray], int]:
        return weights_to_numpy(self.model), self.version

    def update(self, *batches: pa.RecordBatch) -> dict:
        """One PPO update on these batches; returns metrics, including the policy lag of every
        batch learned from (learner version - version that acted).

        Each batch is checked against the schema first. One that fails (a corrupted batch:
        wrong column types, non-finite values, several ids) is rejected: not learned from, its id
        not recorded, and counted (`rejected`, `rejected_batch_ids`, `rejected_reasons`; keys
        present only when something was rejected). A batch of another schema version or world
        (IncompatibleBatchError) means the run's processes disagree, so that raises, before
        anything is recorded. A batch whose id was seen before is skipped (`duplicates`)."""
        if not batches:
            raise ValueError("update needs at least one batch")
        valid, rejected_ids, reasons = [], [], []
        for batch in batches:  # all of them before any id is recorded: a bad one must not spoil the rest
            try:
                validate_batch(batch, self.dims)
            except IncompatibleBatchError:
                raise
            except ValueError as exc:
                rejected_ids.append(_batch_id(batch))
                reasons.append(str(exc)[:300])
                continue
            valid.append(batch)
        parts, lags, duplicates = [], [], 0
        for batch in valid:
            batch_id = batch.column("batch_id")[0].as_py() if batch.num_rows else ""
            if batch_id in self.seen_batch_ids:
                duplicates += 1  # a retried actor call delivered a batch twice: learn from it once
                continue
            self.seen_batch_ids.add(batch_id)
            lags.append(self.version - int(column(batch, "policy_version")[0]))
            cols = {name: column(batch, name) for name in (
                *OBSERVATION_COLUMNS, "action", "behaviour_logp", "value", "reward", "done", "episode_id")}
            adv, ret = gae(cols["reward"], cols["value"], cols["done"], cols["episode_id"],
                           self.ppo.gamma, self.ppo.gae_lambda)
            cols["advantages"], cols["returns"] = adv, ret
            parts.append(cols)
        rejected = ({"rejected": len(rejected_ids), "rejected_batch_ids": rejected_ids, "rejected_reasons": reasons}
                    if rejected_ids else {})
        if not parts:
            return {"rows": 0, "duplicates": duplicates, "policy_lags": [], "version": self.version, **rejected}
        data = {}
        for name in (*OBSERVATION_COLUMNS, "action", "behaviour_logp", "advantages", "returns"):
            data[name] = torch.from_numpy(np.concatenate([p[name] for p in parts])).to(self.device)
        losses = ppo_update(self.model, self.optimizer, self.ppo, data, self.generator, self.data_parallel)
        self.version += 1
        return {"rows": int(data["action"].shape[0]), "duplicates": duplicates, "policy_lags": lags,
                "version": self.version, **losses, **rejected}

    def update_and_publish(self, *batches: pa.RecordBatch) -> tuple[dict, list]:
        """`update`, then one `ray.put` of the new weights; the ref comes back inside a list so Ray
        does not resolve it on the way (every rollout actor then fetches the same object)."""
        import ray

        t0 = time.perf_counter()
        metrics = self.update(*batches)
        t1 = time.perf_counter()
        weights, version = self.weights()
        ref = ray.put(weights)
        metrics.update(compute_seconds=t1 - t0, publish_seconds=time.perf_counter() - t1)
        return metrics, [ref, version]

    def publish(self) -> list:
        import ray

        weights, version = self.weights()
        return [ray.put(weights), version]

    def state(self) -> dict:
        """Everything a checkpoint needs to resume this learner."""
        # Deep copies: state_dict() hands out the live Adam moment tensors, and a learner loading
        # them in the same process would otherwise share (and keep moving) them.
        return {"model": weights_to_numpy(self.model), "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "version": self.version, "generator": self.generator.get_state(),
                "seen_batch_ids": sorted(self.seen_batch_ids)}

    def load_state(self, state: dict) -> None:
        load_numpy_weights(self.model, state["model"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.version = int(state["version"])
        self.generator.set_state(state["generator"])
        self.seen_batch_ids = set(state["seen_batch_ids"])


def _batch_id(batch) -> str:
    """The id of a batch that failed validation, when it can still be read ("" otherwise)."""
    try:
        return str(batch.column("batch_id")[0].as_py()) if batch.num_rows else ""
    except Exception:  # noqa: BLE001 - a corrupted batch may not even be a RecordBatch
        return ""


def make_learner_actor_class(num_cpus: float, num_gpus: float):
    """The Ray actor class for the learner (num_gpus=1 puts it on a GPU node)."""
    import ray

    return ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(Learner)
