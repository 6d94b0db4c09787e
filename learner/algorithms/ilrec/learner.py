"""IL-Rec's learner: the actor-critic (policy.networks.ActorCritic, Transformer state tracker)
trained on the environment's reward plus the discriminator's learned reward, with a replay that
mixes environment and demonstration transitions.

Each update, on the rollout batches that arrived (the environment rows):
1. discriminator: `ilrec_disc_steps` logistic-loss steps, demonstration pairs against the pairs
   of the environment rows (learner.algorithms.ilrec.reward);
2. reward: r = r_env + ilrec_reward_weight x learned reward (the slate's mean clipped logit);
3. PPO (learner.ppo: GAE, clipped ratio against the behaviour log-probabilities) on the
   environment rows with that reward; the critic learns its values;
4. demonstration rows, ilrec_demo_ratio of the update's rows (sampled from the demonstration
   set): advantage-weighted behaviour cloning. A demonstration slate's advantage is the one-step
   A = r + gamma V(s') - V(s) under the current critic (same combined reward), its weight
   min(exp(A / ilrec_awr_beta), 20); the loss is the weighted cross-entropy of the slate's items
   under a softmax over the policy's item scores (its mean action dotted with every item's
   features). Early on (V near 0) this is plain imitation; once the policy's own values beat the
   demonstrator's step (A < 0) the weights fade, so the LLM guides without capping the policy.
Before the first rollout `ilrec_pretrain_steps` unweighted cloning steps warm-start the actor.
"""
from __future__ import annotations

import copy

import numpy as np
import pyarrow.parquet as pq
import torch

from learner.algorithms.ilrec.demonstrations import demo_batch
from learner.algorithms.ilrec.reward import SlateDiscriminator, discriminator_step
from learner.learner_actor import Learner
from learner.ppo import PPOConfig, gae, observation, ppo_update
from policy.networks import PolicyConfig, PolicySpec
from rollout.batch_schema import OBSERVATION_COLUMNS, BatchDims, column, validate_batch

MAX_AWR_WEIGHT = 20.0
_COLUMNS = (*OBSERVATION_COLUMNS, "action", "behaviour_logp", "value", "reward", "done", "episode_id", "slate")


class ILRecLearner(Learner):
    """`Learner` (weights, publish, versions, checkpoints) with IL-Rec's update."""

    def __init__(self, spec: PolicySpec, dims: BatchDims, policy: PolicyConfig, ppo: PPOConfig, seed: int, ilrec,
                 demo_path: str, embeddings_path: str, device: str = "auto", torch_threads: int = 1):
        super().__init__(spec, dims, policy, ppo, seed, device, torch_threads)
        self.ilrec = ilrec
        batch = demo_batch(pq.read_table(demo_path, memory_map=True))
        validate_batch(batch, self.dims)
        demo = {name: column(batch, name) for name in
                (*OBSERVATION_COLUMNS, "slate", "reward", "done", "episode_id")}
        n = len(demo["reward"])
        # The row after each demonstration row, when it continues the same session (else -1).
        following = np.r_[demo["episode_id"][1:] == demo["episode_id"][:-1], False] & ~demo["done"]
        self.demo_next = np.where(following, np.arange(n) + 1, -1)
        self.demo = {k: torch.from_numpy(np.array(v)).to(self.device) for k, v in demo.items()}  # writable copies
        embeddings = np.load(embeddings_path)
        if embeddings.shape[0] != self.model.num_items:
            raise ValueError(f"{embeddings_path} holds {embeddings.shape[0]} item embeddings, the world has "
                             f"{self.model.num_items} items")
        torch.manual_seed(seed + 2)
        self.disc = SlateDiscriminator(embeddings, ilrec.ilrec_disc_hidden).to(self.device)
        self.disc.eval()
        self.disc_optimizer = torch.optim.Adam(self.disc.parameters(), lr=ilrec.ilrec_disc_lr)
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0x11EC]))

    # --- demonstration rows ------------------------------------------------------------------
    def _demo_rows(self, count: int) -> torch.Tensor:
        n = len(self.demo["reward"])
        return torch.from_numpy(self.rng.choice(n, size=count, replace=count > n)).to(self.device)

    def _bc_loss(self, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weighted cross-entropy of the demonstration slates' items under the policy's item scores."""
        obs = observation(self.demo, idx)
        dist, _ = self.model(*obs)
        logp = torch.log_softmax(self.model.item_scores(dist.mean, obs[0], obs[3]), dim=-1)
        ce = -logp.gather(1, self.demo["slate"][idx].long()).mean(-1)
        return (weights * ce).mean()

    def _bc_steps(self, idx: torch.Tensor, weights: torch.Tensor, coef: float) -> float:
        losses = []
        self.model.train()
        for start in range(0, len(idx), self.ppo.minibatch_size):
            part = slice(start, start + self.ppo.minibatch_size)
            loss = coef * self._bc_loss(idx[part], weights[part])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.ppo.max_grad_norm)
            self.optimizer.step()
            losses.append(loss.item())
        self.model.eval()
        return float(np.mean(losses)) if losses else 0.0

    def pretrain(self) -> dict:
        """`ilrec_pretrain_steps` steps of plain behaviour cloning on the demonstrations."""
        steps, size = self.ilrec.ilrec_pretrain_steps, self.ppo.minibatch_size
        if steps == 0:
            return {"pretrain_bc_loss": 0.0}
        idx = self._demo_rows(steps * size)
        loss = self._bc_steps(idx, torch.ones(len(idx), device=self.device), 1.0)
        return {"pretrain_bc_loss": loss}

    def _demo_reward(self, idx: torch.Tensor) -> torch.Tensor:
        d = self.demo
        learned = self.disc.slate_reward(d["history_items"][idx], d["history_feedback"][idx], d["slate"][idx],
                                         self.ilrec.ilrec_reward_clip)
        return d["reward"][idx] + self.ilrec.ilrec_reward_weight * learned

    def _awr_weights(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d, nxt = self.demo, torch.from_numpy(self.demo_next).to(self.device)[idx]
        with torch.no_grad():
            _, value = self.model(*observation(d, idx))
            has_next = nxt >= 0
            safe = torch.where(has_next, nxt, idx)
            _, next_value = self.model(*observation(d, safe))
            adv = self._demo_reward(idx) + self.ppo.gamma * next_value * has_next.float() - value
            weights = torch.exp(adv / self.ilrec.ilrec_awr_beta).clamp(max=MAX_AWR_WEIGHT)
        return weights, adv

    # --- the update ----------------------------------------------------------------------------
    def update(self, *batches) -> dict:
        if not batches:
            raise ValueError("update needs at least one batch")
        for batch in batches:
            validate_batch(batch, self.dims)
        parts, lags, duplicates = [], [], 0
        for batch in batches:
            batch_id = batch.column("batch_id")[0].as_py() if batch.num_rows else ""
            if batch_id in self.seen_batch_ids:
                duplicates += 1
                continue
            self.seen_batch_ids.add(batch_id)
            lags.append(self.version - int(column(batch, "policy_version")[0]))
            parts.append({name: column(batch, name) for name in _COLUMNS})
        if not parts:
            return {"rows": 0, "duplicates": duplicates, "policy_lags": [], "version": self.version}
        t = lambda name: torch.from_numpy(np.concatenate([p[name] for p in parts])).to(self.device)  # noqa: E731
        env = {name: t(name) for name in ("history_items", "history_feedback", "slate")}
        n_env = env["slate"].shape[0]
        cfg = self.ilrec
        stats: dict[str, float] = {}
        for _ in range(cfg.ilrec_disc_steps):
            size = min(cfg.ilrec_disc_batch, n_env)
            pol = torch.from_numpy(self.rng.choice(n_env, size=size, replace=False)).to(self.device)
            dem = self._demo_rows(size)
            stats = discriminator_step(
                self.disc, self.disc_optimizer,
                (self.demo["history_items"][dem], self.demo["history_feedback"][dem], self.demo["slate"][dem]),
                (env["history_items"][pol], env["history_feedback"][pol], env["slate"][pol]))
        learned = self.disc.slate_reward(env["history_items"], env["history_feedback"], env["slate"],
                                         cfg.ilrec_reward_clip).cpu().numpy()
        offset = 0
        for p in parts:  # GAE per batch: episode ids are unique within a batch
            rows = len(p["reward"])
            reward = p["reward"] + cfg.ilrec_reward_weight * learned[offset:offset + rows]
            offset += rows
            p["advantages"], p["returns"] = gae(reward.astype(np.float32), p["value"], p["done"], p["episode_id"],
                                                self.ppo.gamma, self.ppo.gae_lambda)
        data = {name: t(name) for name in (*OBSERVATION_COLUMNS, "action", "behaviour_logp", "advantages", "returns")}
        losses = ppo_update(self.model, self.optimizer, self.ppo, data, self.generator, None)
        demo_stats = {"bc_loss": 0.0, "awr_weight_mean": 0.0, "demo_advantage_mean": 0.0, "demo_rows": 0}
        if cfg.ilrec_demo_ratio > 0 and cfg.ilrec_bc_coef > 0:
            count = int(round(cfg.ilrec_demo_ratio / (1.0 - cfg.ilrec_demo_ratio) * n_env))
            idx = self._demo_rows(max(count, 1))
            weights, adv = self._awr_weights(idx)
            demo_stats = {"bc_loss": self._bc_steps(idx, weights, cfg.ilrec_bc_coef), "awr_weight_mean": weights.mean().item(),
                          "demo_advantage_mean": adv.mean().item(), "demo_rows": len(idx)}
        self.version += 1
        return {"rows": n_env, "duplicates": duplicates, "policy_lags": lags, "version": self.version, **losses,
                **{f"ilrec_{k}": v for k, v in stats.items()},
                **{f"ilrec_{k}": v for k, v in demo_stats.items()},
                "ilrec_learned_reward_mean": float(learned.mean()),
                "ilrec_env_reward_mean": float(np.concatenate([p["reward"] for p in parts]).mean())}

    def state(self) -> dict:
        state = super().state()
        state.update(discriminator={k: v.detach().cpu().numpy().copy() for k, v in self.disc.state_dict().items()},
                     discriminator_optimizer=copy.deepcopy(self.disc_optimizer.state_dict()))
        return state


def make_ilrec_learner_class(num_cpus: float, num_gpus: float):
    """The Ray actor class of IL-Rec's learner."""
    import ray

    return ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(ILRecLearner)
