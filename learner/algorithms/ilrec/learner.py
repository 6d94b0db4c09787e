"""IL-Rec's learner: the actor-critic (policy.networks.ActorCritic, Transformer state tracker),
the AIRL-structured reward model (learner.algorithms.ilrec.reward) and the two ways to train them.

Offline (the default, the paper's order):
1. `extract_reward`: the reward model is learned first, by inverse RL: demonstration transitions
   against the logged environment transitions (a uniformly random logging policy), with the
   logging policy's density in AIRL's discriminator; then frozen.
2. `offline_update`: an offline actor-critic on the replay that mixes the logged environment rows
   and the demonstration rows (`ilrec_demo_ratio` of each minibatch), every row's reward
   r = r_env + ilrec_reward_weight x g (the learned reward of its slate). The critic (the model's
   value head) learns by TD(0) against a slowly moving target copy; the actor by
   advantage-weighted regression (AWR, Peng et al. 2019): the cross-entropy of each row's slate
   items under a softmax over the policy's item scores, weighted by min(exp(A / beta), 20),
   A = r + gamma V(s') - V(s). No environment step is taken while training.

Online (the option, `--ilrec-mode online`): each update, on the rollout batches that arrived,
`ilrec_disc_steps` AIRL steps (demonstrations against the policy's own pairs, pi the policy's item
distribution), then PPO (learner.ppo) on r = r_env + ilrec_reward_weight x g, then the AWR step
on `ilrec_demo_ratio` demonstration rows. Before the first rollout, `ilrec_pretrain_steps`
unweighted cloning steps warm-start the actor.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pyarrow.parquet as pq
import torch

from learner.algorithms.ilrec.demonstrations import demo_batch
from learner.algorithms.ilrec.reward import AIRLReward, discriminator_step, next_rows, transitions
from learner.learner_actor import Learner
from learner.ppo import PPOConfig, gae, observation, ppo_update
from policy.networks import PolicyConfig, PolicySpec
from rollout.batch_schema import OBSERVATION_COLUMNS, BatchDims, column, validate_batch

MAX_AWR_WEIGHT = 20.0
TARGET_RATE = 0.01   # Polyak rate of the critic's target copy (offline)
_REPLAY_COLUMNS = (*OBSERVATION_COLUMNS, "slate", "reward", "done", "episode_id")
_COLUMNS = (*OBSERVATION_COLUMNS, "action", "behaviour_logp", "value", "reward", "done", "episode_id", "slate")


def _read_replay(path: str, dims: BatchDims, device: torch.device) -> tuple[dict, torch.Tensor]:
    """A transition Parquet file (demonstrations or logs) as tensors, with each row's next row and
    each slate item's click (`slate_clicks`)."""
    batch = demo_batch(pq.read_table(path, memory_map=True))
    validate_batch(batch, dims)
    cols = {name: column(batch, name) for name in _REPLAY_COLUMNS}
    nxt = next_rows(cols["episode_id"], cols["done"])
    cols["slate_clicks"] = slate_clicks(cols["history_feedback"], cols["reward"], nxt, dims.slate_size)
    return ({k: torch.from_numpy(np.array(v)).to(device) for k, v in cols.items()},   # writable copies
            torch.from_numpy(nxt).to(device))


def slate_clicks(history_feedback: np.ndarray, reward: np.ndarray, nxt: np.ndarray, k: int) -> np.ndarray:
    """[N, K] each slate item's click, as the transitions hold it: the next row's history ends with
    this slate and its feedback (newest last, rollout.users); where the session ended there, a
    slate without reward had no click, and one with reward r (a mean click) counts r for each item
    (which of its items were taken is not recorded)."""
    clicks = np.repeat(reward[:, None], k, axis=1).astype(np.float32)
    following = nxt >= 0
    clicks[following] = history_feedback[nxt[following], -k:]
    return clicks


class ILRecLearner(Learner):
    """`Learner` (weights, publish, versions, checkpoints) with IL-Rec's reward model and updates."""

    def __init__(self, spec: PolicySpec, dims: BatchDims, policy: PolicyConfig, ppo: PPOConfig, seed: int, ilrec,
                 demo_path: str, embeddings_path: str, device: str = "auto", torch_threads: int = 1,
                 logs_path: str | None = None):
        super().__init__(spec, dims, policy, ppo, seed, device, torch_threads)
        self.ilrec = ilrec
        self.demo, self.demo_next = _read_replay(demo_path, dims, self.device)
        self.logs, self.logs_next = (_read_replay(logs_path, dims, self.device) if logs_path else (None, None))
        embeddings = np.load(embeddings_path)
        if embeddings.shape[0] != self.model.num_items:
            raise ValueError(f"{embeddings_path} holds {embeddings.shape[0]} item embeddings, the world has "
                             f"{self.model.num_items} items")
        # log pi(i | s) of the uniformly random logging policy: each of K slate items of N, K / N.
        self.logging_log_pi = math.log(dims.slate_size / self.model.num_items)
        torch.manual_seed(seed + 2)
        self.reward_model = AIRLReward(embeddings, ilrec.ilrec_disc_hidden, ppo.gamma,
                                       g_bias=self.logging_log_pi).to(self.device)
        self.reward_model.eval()
        self.disc_optimizer = torch.optim.Adam(self.reward_model.parameters(), lr=ilrec.ilrec_disc_lr)
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0x11EC]))
        # The actor's cross-entropy reads the item scores at a learned temperature: the softmax that
        # matches a click distribution is flat, and without its own temperature the actor would
        # flatten it by shrinking the action, which leaves the ranking to the session terms.
        self.log_temperature = torch.nn.Parameter(torch.zeros((), device=self.device))
        self.optimizer.add_param_group({"params": [self.log_temperature]})
        self.target = None          # the critic's target copy (offline), made on the first offline step
        self.replay_reward = None   # offline: each replay row's reward, once the reward model is frozen

    # --- sampling ------------------------------------------------------------------------------
    def _rows(self, n: int, count: int) -> torch.Tensor:
        return torch.from_numpy(self.rng.choice(n, size=count, replace=count > n)).to(self.device)

    def _demo_rows(self, count: int) -> torch.Tensor:
        return self._rows(len(self.demo["reward"]), count)

    def _uniform_log_pi(self, count: int) -> torch.Tensor:
        """[count] the logging policy's log pi(i | s) (`logging_log_pi`)."""
        return torch.full((count,), self.logging_log_pi, device=self.device)

    @torch.no_grad()
    def _policy_log_pi(self, columns: dict, idx: torch.Tensor) -> torch.Tensor:
        """[B, K] log pi(i | s) of each slate item under the policy's item softmax at its mean action."""
        obs = observation(columns, idx)
        dist, _ = self.model(*obs)
        logp = torch.log_softmax(self.model.item_scores(dist.mean, obs[0], obs[3]), dim=-1)
        return logp.gather(1, columns["slate"][idx].long())

    # --- behaviour cloning (AWR's actor loss) ------------------------------------------------------
    def _slate_ce(self, dist, obs, slates: torch.Tensor) -> torch.Tensor:
        """[B] cross-entropy of each row's slate items (their mean) under the policy's item softmax."""
        return self._item_ce(dist, obs, slates).mean(-1)

    def _item_ce(self, dist, obs, slates: torch.Tensor) -> torch.Tensor:
        """[B, K] cross-entropy of each slate item under a softmax over the policy's item scores."""
        scores = self.model.item_scores(dist.mean, obs[0], obs[3]) * self.log_temperature.exp()
        return -torch.log_softmax(scores, dim=-1).gather(1, slates.long())

    def _bc_steps(self, idx: torch.Tensor, weights: torch.Tensor, coef: float) -> float:
        losses = []
        self.model.train()
        for start in range(0, len(idx), self.ppo.minibatch_size):
            part = idx[start:start + self.ppo.minibatch_size]
            obs = observation(self.demo, part)
            dist, _ = self.model(*obs)
            loss = coef * (weights[start:start + len(part)] * self._slate_ce(dist, obs, self.demo["slate"][part])).mean()
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
        return {"pretrain_bc_loss": self._bc_steps(idx, torch.ones(len(idx), device=self.device), 1.0)}

    # --- offline: reward extraction, then the actor-critic on the mixed replay ---------------------
    def extract_reward(self, steps: int) -> dict:
        """`steps` AIRL steps: demonstration transitions (1) against logged ones (0), pi the logging
        policy's; then every replay row's reward r_env + w x g is fixed."""
        if self.logs is None:
            raise ValueError("extract_reward needs the logged environment transitions (offline mode)")
        size, stats = self.ilrec.ilrec_disc_batch, {}
        n_logs = len(self.logs["reward"])
        for _ in range(steps):
            dem, neg = self._demo_rows(size), self._rows(n_logs, size)
            stats = discriminator_step(self.reward_model, self.disc_optimizer,
                                       transitions(self.demo, self.demo_next, dem, self._uniform_log_pi(size)),
                                       transitions(self.logs, self.logs_next, neg, self._uniform_log_pi(size)))
        clip, w = self.ilrec.ilrec_reward_clip, self.ilrec.ilrec_reward_weight
        center = self.reward_model.set_center(self.logs["history_items"], self.logs["history_feedback"],
                                              self.logs["slate"])
        g_items = {name: self.reward_model.item_rewards(cols["history_items"], cols["history_feedback"], cols["slate"],
                                                        clip) for name, cols in (("demo", self.demo), ("logs", self.logs))}
        g = {name: value.mean(-1) for name, value in g_items.items()}
        spread = g_items["logs"].std().item()
        # Each slate item's reward: its click plus the learned reward; a slate's is their mean (as r_env is).
        self.replay_reward = {name: (cols["slate_clicks"] + w * g_items[name]).float()
                              for name, cols in (("demo", self.demo), ("logs", self.logs))}
        return {**{f"ilrec_{k}": v for k, v in stats.items()}, "ilrec_reward_center": center,
                "ilrec_learned_reward_demo": g["demo"].mean().item(), "ilrec_learned_reward_item_std": spread,
                "ilrec_click_rate_demo": self.demo["slate_clicks"].mean().item(),
                "ilrec_click_rate_logs": self.logs["slate_clicks"].mean().item(),
                "ilrec_learned_reward_logs": g["logs"].mean().item(),
                # How well g alone ranks a demonstration slate above a logged one (0.5 = not at all).
                "ilrec_reward_auc": _auc(g["demo"], g["logs"])}

    def _offline_batch(self, size: int) -> dict[str, torch.Tensor]:
        """One minibatch of the mixed replay: `ilrec_demo_ratio` demonstration rows, the rest logged."""
        n_demo = int(round(self.ilrec.ilrec_demo_ratio * size))
        parts = []
        for name, cols, nxt, count in (("demo", self.demo, self.demo_next, n_demo),
                                       ("logs", self.logs, self.logs_next, size - n_demo)):
            if count == 0:
                continue
            idx = self._rows(len(cols["reward"]), count)
            following = nxt[idx]
            safe = torch.where(following < 0, idx, following)
            parts.append({**{k: cols[k][idx] for k in (*OBSERVATION_COLUMNS, "slate")},
                          "reward": self.replay_reward[name][idx], "terminal": following < 0,
                          **{f"next_{k}": cols[k][safe] for k in OBSERVATION_COLUMNS}})
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def offline_update(self, steps: int) -> dict:
        """`steps` offline actor-critic steps (TD(0) critic, AWR actor) on the mixed replay."""
        if self.replay_reward is None:
            raise ValueError("offline_update needs the reward model: call extract_reward first")
        if self.target is None:
            self.target = copy.deepcopy(self.model).eval()
            for p in self.target.parameters():
                p.requires_grad_(False)
        sums = {"value_loss": 0.0, "actor_loss": 0.0, "awr_weight_max": 0.0, "advantage_mean": 0.0}
        self.model.train()
        for _ in range(steps):
            b = self._offline_batch(self.ppo.minibatch_size)
            obs = [b[k] for k in OBSERVATION_COLUMNS]
            dist, value = self.model(*obs)
            with torch.no_grad():
                _, next_value = self.target(*[b[f"next_{k}"] for k in OBSERVATION_COLUMNS])
                future = self.ppo.gamma * next_value * (~b["terminal"]).float() - value
                target = b["reward"].mean(-1) + future + value
                # Each item's advantage: its own reward (click + learned) in the slate's place, plus
                # the slate's effect on the future: the actor learns which items, not only which slates.
                adv = b["reward"] + future.unsqueeze(-1)
                # AWR's target is pi_b(i | s) exp(A / beta), and the logging policy is uniform: the
                # weights are exp(A / beta), normalised over the minibatch (mean 1) instead of
                # capped, so that a clicked item keeps its exp(1 / beta) edge over the many items
                # nobody took (a cap would hand those the actor's mass).
                weights = torch.softmax((adv / self.ilrec.ilrec_awr_beta).flatten(), 0).view_as(adv) * adv.numel()
            value_loss = 0.5 * (value - target).pow(2).mean()
            actor_loss = (weights * self._item_ce(dist, obs, b["slate"])).mean()
            loss = self.ilrec.ilrec_bc_coef * actor_loss + self.ppo.value_coef * value_loss
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.ppo.max_grad_norm)
            self.optimizer.step()
            with torch.no_grad():
                for p, q in zip(self.target.parameters(), self.model.parameters()):
                    p.lerp_(q, TARGET_RATE)
            for k, v in (("value_loss", value_loss), ("actor_loss", actor_loss), ("awr_weight_max", weights.max()),
                         ("advantage_mean", adv.mean())):
                sums[k] += v.item()
        self.model.eval()
        self.version += 1
        return {"rows": steps * self.ppo.minibatch_size, "version": self.version, "policy_lags": [],
                **{f"ilrec_{k}": v / max(steps, 1) for k, v in sums.items()}}

    def offline_update_and_publish(self, steps: int) -> tuple[dict, list]:
        metrics = self.offline_update(steps)
        return metrics, self.publish()

    # --- online: AIRL against the policy's rollouts, PPO, AWR on demonstrations ---------------------
    def _awr_weights(self, idx: torch.Tensor, learned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d, nxt = self.demo, self.demo_next[idx]
        with torch.no_grad():
            _, value = self.model(*observation(d, idx))
            has_next = nxt >= 0
            _, next_value = self.model(*observation(d, torch.where(has_next, nxt, idx)))
            reward = d["reward"][idx] + self.ilrec.ilrec_reward_weight * learned
            adv = reward + self.ppo.gamma * next_value * has_next.float() - value
            weights = torch.exp(adv / self.ilrec.ilrec_awr_beta).clamp(max=MAX_AWR_WEIGHT)
        return weights, adv

    def _collect(self, batches) -> tuple[list[dict], list[int], int]:
        parts, lags, duplicates = [], [], 0
        for batch in batches:
            validate_batch(batch, self.dims)
        for batch in batches:
            batch_id = batch.column("batch_id")[0].as_py() if batch.num_rows else ""
            if batch_id in self.seen_batch_ids:
                duplicates += 1
                continue
            self.seen_batch_ids.add(batch_id)
            lags.append(self.version - int(column(batch, "policy_version")[0]))
            parts.append({name: column(batch, name) for name in _COLUMNS})
        return parts, lags, duplicates

    def update(self, *batches) -> dict:
        if not batches:
            raise ValueError("update needs at least one batch")
        parts, lags, duplicates = self._collect(batches)
        if not parts:
            return {"rows": 0, "duplicates": duplicates, "policy_lags": [], "version": self.version}
        t = lambda name: torch.from_numpy(np.concatenate([p[name] for p in parts])).to(self.device)  # noqa: E731
        env = {name: t(name) for name in (*OBSERVATION_COLUMNS, "slate")}
        offsets = np.cumsum([0] + [len(p["reward"]) for p in parts])
        env_next = torch.from_numpy(np.concatenate([np.where(nr >= 0, nr + off, -1) for nr, off in zip(
            (next_rows(p["episode_id"], p["done"]) for p in parts), offsets)])).to(self.device)
        n_env, cfg, stats = env["slate"].shape[0], self.ilrec, {}
        for _ in range(cfg.ilrec_disc_steps):
            size = min(cfg.ilrec_disc_batch, n_env)
            pol = torch.from_numpy(self.rng.choice(n_env, size=size, replace=False)).to(self.device)
            dem = self._demo_rows(size)
            stats = discriminator_step(
                self.reward_model, self.disc_optimizer,
                transitions(self.demo, self.demo_next, dem, self._policy_log_pi(self.demo, dem)),
                transitions(env, env_next, pol, self._policy_log_pi(env, pol)))
        self.reward_model.set_center(env["history_items"], env["history_feedback"], env["slate"])
        learned = self.reward_model.slate_reward(env["history_items"], env["history_feedback"], env["slate"],
                                                 cfg.ilrec_reward_clip).cpu().numpy()
        for p, off in zip(parts, offsets):  # GAE per batch: episode ids are unique within a batch
            reward = p["reward"] + cfg.ilrec_reward_weight * learned[off:off + len(p["reward"])]
            p["advantages"], p["returns"] = gae(reward.astype(np.float32), p["value"], p["done"], p["episode_id"],
                                                self.ppo.gamma, self.ppo.gae_lambda)
        data = {name: t(name) for name in (*OBSERVATION_COLUMNS, "action", "behaviour_logp", "advantages", "returns")}
        losses = ppo_update(self.model, self.optimizer, self.ppo, data, self.generator, None)
        demo_stats = {"bc_loss": 0.0, "awr_weight_mean": 0.0, "demo_advantage_mean": 0.0, "demo_rows": 0}
        if cfg.ilrec_demo_ratio > 0 and cfg.ilrec_bc_coef > 0:
            idx = self._demo_rows(max(int(round(cfg.ilrec_demo_ratio / (1.0 - cfg.ilrec_demo_ratio) * n_env)), 1))
            g = self.reward_model.slate_reward(self.demo["history_items"][idx], self.demo["history_feedback"][idx],
                                               self.demo["slate"][idx], cfg.ilrec_reward_clip)
            weights, adv = self._awr_weights(idx, g)
            demo_stats = {"bc_loss": self._bc_steps(idx, weights, cfg.ilrec_bc_coef),
                          "awr_weight_mean": weights.mean().item(), "demo_advantage_mean": adv.mean().item(),
                          "demo_rows": len(idx)}
        self.version += 1
        return {"rows": n_env, "duplicates": duplicates, "policy_lags": lags, "version": self.version, **losses,
                **{f"ilrec_{k}": v for k, v in {**stats, **demo_stats}.items()},
                "ilrec_learned_reward_mean": float(learned.mean()),
                "ilrec_env_reward_mean": float(np.concatenate([p["reward"] for p in parts]).mean())}

    def state(self) -> dict:
        state = super().state()
        state.update(reward_model={k: v.detach().cpu().numpy().copy() for k, v in self.reward_model.state_dict().items()},
                     reward_optimizer=copy.deepcopy(self.disc_optimizer.state_dict()))
        return state


def _auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(a random positive scores above a random negative), ties half (Mann-Whitney)."""
    scores = torch.cat([positive, negative]).double()
    ranks = torch.empty_like(scores)
    order = torch.argsort(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64, device=scores.device)
    # Average ranks over ties, so tied scores count half.
    uniq, inverse = torch.unique(scores, return_inverse=True)
    ranks = torch.zeros(len(uniq), dtype=torch.float64, device=scores.device).index_add_(0, inverse, ranks) \
        / torch.bincount(inverse, minlength=len(uniq)).double()
    ranks = ranks[inverse]
    n_pos, n_neg = len(positive), len(negative)
    if not n_pos or not n_neg:
        return 0.5
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def make_ilrec_learner_class(num_cpus: float, num_gpus: float):
    """The Ray actor class of IL-Rec's learner."""
    import ray

    return ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(ILRecLearner)
