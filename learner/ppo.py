"""PPO for the slate policy, read top to bottom: config, advantages (GAE), the clipped update.

The behaviour log-probability in each batch is the one the acting policy computed, so the ratio
corrects for policy lag: a batch acted by version v and learned on by version v+2 still gets the
right importance ratio (clipped, as PPO does).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from policy.networks import ActorCritic, log_prob
from rollout.batch_schema import OBSERVATION_COLUMNS


@dataclass
class PPOConfig:
    """PPO hyper-parameters (CleanRL's defaults where they fit)."""

    lr: float = 1e-3
    """Adam learning rate."""
    gamma: float = 0.5
    """Discount factor. Short by default (a short horizon cuts the return's variance); the LERL
    table on the default world uses 0.9 with lr 3e-4 and 256 users per actor
    (experiments/lerl-movielens), where a quit several steps away must count."""
    gae_lambda: float = 0.9
    """GAE lambda."""
    clip_coef: float = 0.2
    """PPO ratio clip."""
    value_coef: float = 0.5
    """Weight of the value loss."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (the Gaussian's entropy only depends on log_std)."""
    epochs: int = 4
    """Passes over each iteration's batch."""
    minibatch_size: int = 256
    """Transitions per gradient step."""
    max_grad_norm: float = 0.5
    """Gradient clipping by global norm."""
    normalize_advantages: bool = True
    """Standardise advantages per minibatch."""

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.clip_coef <= 0 or self.epochs < 1 or self.minibatch_size < 1 or self.max_grad_norm <= 0:
            raise ValueError("clip_coef and max_grad_norm must be > 0; epochs and minibatch_size >= 1")


def gae(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, episode_ids: np.ndarray,
        gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns for rows ordered by (episode, step) with every episode complete.

    An episode's last row is terminal (the user left or hit the cap): no bootstrap past it. Rows of
    one episode are contiguous, so the recursion runs backwards over the whole array once.
    """
    n = len(rewards)
    adv = np.zeros(n, np.float32)
    same_episode_next = np.zeros(n, bool)
    same_episode_next[:-1] = episode_ids[1:] == episode_ids[:-1]
    continues = same_episode_next & ~dones
    next_values = np.zeros(n, np.float32)
    next_values[:-1] = values[1:]
    next_values *= continues
    deltas = rewards + gamma * next_values - values
    running = 0.0
    for i in range(n - 1, -1, -1):
        running = deltas[i] + (gamma * lam * running if continues[i] else 0.0)
        adv[i] = running
    return adv, adv + values


@dataclass(frozen=True)
class DataParallel:
    """This process's place among `world_size` data-parallel learners that hold the same model,
    optimizer, generator and batch (learner.distributed). Each rank computes the gradient on its
    share of every minibatch; `all_reduce_sum` adds a tensor across all ranks, in place."""

    rank: int
    world_size: int
    all_reduce_sum: Callable[[torch.Tensor], None]

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of n minibatch positions (sizes differ by at most one;
        a rank may get none when n < world_size)."""
        return slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)


def _all_reduce_grads(params: list[torch.nn.Parameter], data_parallel: DataParallel) -> None:
    # One flat collective per step instead of one per tensor. A rank with no rows (or a parameter
    # outside the graph) contributes zeros; Adam then moves such a parameter by 0, as the single
    # learner does by skipping it, so the weights agree.
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    data_parallel.all_reduce_sum(flat)
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()


def observation(columns: dict, idx: torch.Tensor | slice) -> list[torch.Tensor]:
    """The policy's inputs of rows `idx` (indices or a slice) of `columns` (rollout.batch_schema.OBSERVATION_COLUMNS,
    in `ActorCritic.forward`'s order)."""
    return [columns[name][idx] for name in OBSERVATION_COLUMNS]


def ppo_update(model: ActorCritic, optimizer: torch.optim.Optimizer, cfg: PPOConfig,
               data: dict[str, torch.Tensor], generator: torch.Generator,
               data_parallel: DataParallel | None = None) -> dict[str, float]:
    """Clipped-ratio PPO epochs over `data` (the OBSERVATION_COLUMNS, action,
    behaviour_logp, advantages, returns, all on the model's device). Returns mean losses.

    With `data_parallel`, every rank passes the whole batch and the same generator state: the
    permutation and each minibatch's advantage statistics are then the same on every rank, each
    rank back-propagates only its shard's rows, weighted by shard size over minibatch size, and
    the summed gradients equal the whole minibatch's (so clipping and the Adam step agree too)."""
    n = data["action"].shape[0]
    names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac")
    terms: list[torch.Tensor] = []   # each step's weighted loss terms, in `names` order
    steps = 0
    params = [p for p in model.parameters() if p.requires_grad]
    # What the state takes from each row's history without parameters (the pooled features, the
    # recent slates' categories, the preference estimate) is made once for the batch, not in
    # every minibatch of every epoch (the model's reference path makes it every time).
    fixed = (None if model.reference_path
             else model.fixed_features(data["history_items"], data["history_feedback"]))
    model.train()
    columns = (*OBSERVATION_COLUMNS, "action", "behaviour_logp", "advantages", "returns")
    device = data["action"].device
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=generator).to(device)
        # The epoch's rows in its order, gathered once: each minibatch is then a slice (a view).
        epoch = {name: data[name][perm] for name in columns}
        if fixed is not None:
            epoch["fixed"] = fixed[perm]
        for start in range(0, n, cfg.minibatch_size):
            rows = slice(start, min(start + cfg.minibatch_size, n))
            count = rows.stop - rows.start
            adv = epoch["advantages"][rows]
            if cfg.normalize_advantages and count > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            weight = 1.0
            if data_parallel is not None:
                part = data_parallel.shard(count)
                weight = (part.stop - part.start) / count
                adv = adv[part]
                rows, count = slice(rows.start + part.start, rows.start + part.stop), part.stop - part.start
            optimizer.zero_grad(set_to_none=True)
            if count:
                dist, value = model(*observation(epoch, rows), fixed=None if fixed is None else epoch["fixed"][rows])
                new_logp = log_prob(dist, epoch["action"][rows])
                log_ratio = new_logp - epoch["behaviour_logp"][rows]
                ratio = log_ratio.exp()
                policy_loss = torch.max(-adv * ratio,
                                        -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
                value_loss = 0.5 * (value - epoch["returns"][rows]).pow(2).mean()
                entropy = dist.entropy().sum(-1).mean()
                loss = policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
                (loss if data_parallel is None else loss * weight).backward()
                with torch.no_grad():   # kept as tensors: one read at the end, not five per step
                    terms.append(weight * torch.stack([
                        policy_loss, value_loss, entropy, ((ratio - 1) - log_ratio).mean(),
                        ((ratio - 1).abs() > cfg.clip_coef).float().mean()]).detach())
            if data_parallel is not None:
                _all_reduce_grads(params, data_parallel)
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm, foreach=True)   # one fused norm
            optimizer.step()
            steps += 1
    model.eval()
    totals = (torch.stack(terms).double().sum(0) if terms
              else torch.zeros(len(names), dtype=torch.float64, device=device))
    if data_parallel is not None:
        # Each rank summed its shards' weighted means; across ranks they add up to minibatch means.
        data_parallel.all_reduce_sum(totals)
    sums = dict(zip(names, totals.tolist()))
    return {k: v / max(steps, 1) for k, v in sums.items()}
