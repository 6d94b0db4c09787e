"""Data-parallel learners: M Ray actors that train one policy together with torch.distributed.

`LearnerGroup` is what the driver holds instead of a single learner actor; `num_learners` is the
one knob. With one learner it wraps today's `Learner` actor unchanged (no torch.distributed).
With M > 1 every worker is a `Learner` that holds the same model, Adam state, minibatch generator
and batch-id set; every update goes to all of them with the same batch refs, and each rank
back-propagates its share of every minibatch, gradients summed with an all-reduce (NCCL on GPUs,
gloo on CPUs; learner.ppo.DataParallel holds the arithmetic). The result equals one learner on
the whole batch up to float rounding. Only rank 0 publishes weights and reports the group's state.
"""
from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any, Sequence

import pyarrow as pa
import ray
import torch
import torch.distributed as dist

from learner.learner_actor import Learner, make_learner_actor_class
from learner.ppo import DataParallel, PPOConfig
from policy.networks import PolicyConfig, PolicySpec
from rollout.batch_schema import BatchDims


def worker_device(device: str, num_gpus: float) -> str:
    """The device a rank of M > 1 learners is built with, or a ValueError naming the fix."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"learner_device must be auto, cpu or cuda, got {device!r}")
    if num_gpus == 0:
        if device == "cuda":
            raise ValueError("learner_device=cuda with several learners needs learner_num_gpus >= 1: each rank "
                             "reserves its own GPU (NCCL); use learner_device=cpu for CPU learners (gloo)")
        # A rank that reserved no GPU may still see the node's GPUs, and every rank would then pick
        # the same one (NCCL refuses two ranks on one device): such ranks train on CPU with gloo.
        return "cpu"
    if num_gpus < 1 and device != "cpu":
        raise ValueError(f"learner_num_gpus={num_gpus:g} shares a GPU between learner ranks, which NCCL does "
                         "not allow; use 1 (or more) GPU per learner, or a single learner")
    return device


class LearnerWorker(Learner):
    """One rank of a data-parallel group: a `Learner` whose PPO step sums gradients across ranks."""

    def __init__(self, spec: PolicySpec, dims: BatchDims, policy: PolicyConfig, ppo: PPOConfig, seed: int,
                 device: str, torch_threads: int, rank: int, world_size: int, timeout_s: float):
        # Same seed on every rank: same initial weights and the same minibatch permutations.
        super().__init__(spec, dims, policy, ppo, seed, device, torch_threads)
        self.rank, self.world_size = rank, world_size
        self.timeout = timedelta(seconds=timeout_s)
        self._store: dist.TCPStore | None = None

    def open_store(self) -> tuple[str, int]:
        """Rank 0: the rendezvous store on this node's Ray address, on a port the OS picks when it
        binds (no window in which another process could take a port chosen beforehand)."""
        host = ray.util.get_node_ip_address()
        self._store = dist.TCPStore(host, 0, self.world_size, is_master=True, timeout=self.timeout,
                                    wait_for_workers=False)
        return host, self._store.port

    def join(self, host: str, port: int) -> str:
        """Join the process group (all ranks at once); returns the backend."""
        store = self._store if self.rank == 0 else dist.TCPStore(host, port, self.world_size, is_master=False,
                                                                  timeout=self.timeout)
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=store, rank=self.rank, world_size=self.world_size,
                                timeout=self.timeout)
        # The seed already makes the weights equal; copying rank 0's makes that a fact, whatever
        # the devices' init kernels do.
        with torch.no_grad():
            for tensor in self.model.state_dict().values():
                dist.broadcast(tensor, src=0)
        self.data_parallel = DataParallel(self.rank, self.world_size, _all_reduce_sum)
        return backend

    def update(self, *batches: pa.RecordBatch) -> dict:
        self._check_same_new_batches(batches)
        return super().update(*batches)

    def _check_same_new_batches(self, batches: Sequence[pa.RecordBatch]) -> None:
        # Every rank runs the same dedup on the same state; if states ever diverged (a rank
        # restored from another checkpoint) ranks would train on different rows and the
        # collectives would no longer pair up. One tiny all-reduce turns that hang into an error.
        ids = [batch.column("batch_id")[0].as_py() if "batch_id" in batch.schema.names and batch.num_rows else ""
               for batch in batches]
        key = repr((self.version, [(bid, bid in self.seen_batch_ids) for bid in ids])).encode()
        digest = int.from_bytes(hashlib.blake2b(key, digest_size=7).digest(), "little")
        extremes = torch.tensor([digest, -digest], dtype=torch.int64, device=self.device)
        dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
        if int(extremes[0]) != -int(extremes[1]):
            raise RuntimeError(f"learner rank {self.rank}: ranks disagree on the version or on which batches are "
                               "new; their states diverged (load one state into all of them)")

    def leave(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
        self._store = None


def _all_reduce_sum(tensor: torch.Tensor) -> None:
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def make_learner_worker_class(num_cpus: float, num_gpus: float):
    """The Ray actor class for one rank (num_gpus=1 puts it on a GPU of its own)."""
    return ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(LearnerWorker)


class LearnerGroup:
    """The driver's handle on `num_learners` learner actors, with the calls learner.main makes.

    Blocking calls (they return values, not refs): the driver waits for each update anyway."""

    def __init__(self, spec: PolicySpec, dims: BatchDims, policy: PolicyConfig, ppo: PPOConfig, seed: int, *,
                 num_learners: int = 1, device: str = "auto", num_cpus: float = 1.0, num_gpus: float = 0.0,
                 torch_threads: int = 1, timeout_s: float = 300.0):
        if not isinstance(num_learners, int) or num_learners < 1:
            raise ValueError(f"num_learners must be an integer >= 1, got {num_learners!r}")
        if num_cpus < 0 or num_gpus < 0:
            raise ValueError(f"learner num_cpus and num_gpus must be >= 0, got {num_cpus:g} and {num_gpus:g}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s:g}")
        self.num_learners = num_learners
        self.backend: str | None = None
        self._workers: list[Any] = []
        if num_learners == 1:
            self._workers = [make_learner_actor_class(num_cpus, num_gpus).remote(
                spec, dims, policy, ppo, seed, device, torch_threads)]
            return
        device = worker_device(device, num_gpus)
        cls = make_learner_worker_class(num_cpus, num_gpus)
        self._workers = [cls.remote(spec, dims, policy, ppo, seed, device, torch_threads, rank, num_learners,
                                     timeout_s)
                         for rank in range(num_learners)]
        try:
            # Bounded: on a cluster without room for M workers the actors would wait forever.
            host, port = ray.get(self._workers[0].open_store.remote(), timeout=timeout_s)
            backends = ray.get([w.join.remote(host, port) for w in self._workers], timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.shutdown()
            raise RuntimeError(f"{num_learners} learner workers ({num_cpus:g} CPU, {num_gpus:g} GPU each) did not "
                               f"all start and rendezvous within {timeout_s:g} s; does the cluster have room for "
                               "them?") from None
        except BaseException:
            self.shutdown()
            raise
        self.backend = backends[0]

    def publish(self) -> tuple[ray.ObjectRef, int]:
        """The current weights (one object, put by rank 0) and their version."""
        weights_ref, version = ray.get(self._lead.publish.remote())
        return weights_ref, version

    def update_and_publish(self, batch_refs: Sequence[ray.ObjectRef]) -> tuple[dict, tuple[ray.ObjectRef, int]]:
        """One PPO update on these batches on every rank, then rank 0 publishes; returns rank 0's
        metrics (rows, duplicates, policy lags, version, losses) and (weights_ref, version)."""
        lead = self._lead.update_and_publish.remote(*batch_refs)
        rest = [w.update.remote(*batch_refs) for w in self._workers[1:]]
        (metrics, (weights_ref, version)), *others = ray.get([lead, *rest])
        for rank, other in enumerate(others, start=1):
            if (other["version"], other["rows"], other["duplicates"]) != (version, metrics["rows"],
                                                                          metrics["duplicates"]):
                raise RuntimeError(f"learner rank {rank} diverged from rank 0: {other} vs {metrics}")
        return metrics, (weights_ref, version)

    def state(self) -> dict:
        """Rank 0's state (every rank holds the same); what a checkpoint stores."""
        return ray.get(self._lead.state.remote())

    def load_state(self, state: dict) -> None:
        state_ref = ray.put(state)  # one copy in the object store, read by every rank
        ray.get([w.load_state.remote(state_ref) for w in self._workers])

    def shutdown(self) -> None:
        """Leave the process group and end the actors this group started."""
        workers, self._workers = self._workers, []
        if self.num_learners > 1 and workers:
            try:
                ray.get([w.leave.remote() for w in workers], timeout=30)
            except Exception:  # noqa: BLE001 - a dead or stuck rank is killed just below either way
                pass
        for worker in workers:
            ray.kill(worker)

    def __enter__(self) -> LearnerGroup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    @property
    def _lead(self):
        if not self._workers:
            raise RuntimeError("this LearnerGroup was shut down")
        return self._workers[0]
