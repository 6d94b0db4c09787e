"""IL-Rec's options (`--ilrec-*`) and the Propose settings its demonstrator uses."""
from __future__ import annotations

from dataclasses import dataclass

from planner_api.contract import MAX_QUERIES, MAX_RECENT
from rollout.reference_policies import REFERENCE_POLICIES


@dataclass(frozen=True)
class ProposeSettings:
    """How the LLM is asked for slates (see ILRecConfig for each one's meaning)."""

    candidates: int = 50
    recent: int = 5
    group_size: int = 64
    timeout_s: float = 120.0

    def validate(self) -> None:
        if not 1 <= self.recent <= MAX_RECENT:
            raise ValueError(f"ilrec_demo_recent must be in [1, {MAX_RECENT}] (the Propose contract), got {self.recent}")
        if not 1 <= self.group_size <= MAX_QUERIES:
            raise ValueError(f"ilrec_demo_group_size must be in [1, {MAX_QUERIES}] (queries per Propose call), "
                             f"got {self.group_size}")
        if not 1 <= self.candidates <= 256:
            raise ValueError(f"ilrec_demo_candidates must be in [1, 256] (the Propose contract), got {self.candidates}")
        if self.timeout_s <= 0:
            raise ValueError(f"ilrec_propose_timeout_s must be > 0, got {self.timeout_s}")


@dataclass
class ILRecConfig:
    """IL-Rec's options (field names start with ilrec_: flags are flat across sections)."""

    ilrec_mode: str = "offline"
    """offline (the paper's): the reward model is extracted by AIRL from the demonstrations against
    random logs, then frozen, then an offline actor-critic (TD critic, AWR actor) learns on the
    mixed replay of logs and demonstrations, taking no environment step; online: AIRL alternates
    with PPO on the policy's own rollouts (the demonstrations also cloned, advantage-weighted)."""
    ilrec_demonstrator: str = "planner"
    """Who demonstrates: planner = the planner service's Propose (the LLM with --planner-backend vllm,
    the rule with heuristic); or a reference policy of rollout.reference_policies, such as greedy (an
    oracle that reads the true user model: the control for what a demonstrator that knows the user
    gives IL-Rec; no planner service is then started)."""
    ilrec_demo_seed: int = 0
    """Seed of the demonstrations and the random logs: one data set shared by every training seed (the
    LLM's sessions are the costly part; the training seeds vary the networks and the sampling)."""
    ilrec_log_sessions: int = 32768
    """Sessions of uniformly random slates logged in the world (offline mode's environment replay, and
    the random side of the demonstrator's comparison; at least --ilrec-demo-sessions are made)."""
    ilrec_reward_steps: int = 1000
    """AIRL steps (each --ilrec-disc-batch demonstration transitions against as many logged ones) that
    extract the reward model before the offline actor-critic starts."""
    ilrec_offline_steps: int = 50
    """Offline actor-critic steps (minibatches of --minibatch-size replay rows) per iteration."""
    ilrec_curve_users: int = 64
    """Training users the deterministic policy is run on after each offline iteration: the learning
    curve of metrics.jsonl (held-out users are met only by the final evaluation)."""
    ilrec_demo_sessions: int = 32
    """LLM demonstration sessions generated in the simulated world (through Propose; cached per world, planner
    backend and model, seed and count). Each step of a session is one Propose prompt of
    --ilrec-demo-candidates titled candidates: with SmolLM2 on 2 CPU cores about 3 s each."""
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
    """Weight of the learned reward (AIRL's g, centred and clipped; per item offline, the slate's mean online)
    added to the environment's reward (the item's click offline); 0 = environment reward only."""
    ilrec_reward_clip: float = 5.0
    """The learned reward g (less its centre) is clipped to [-this, this] before it becomes a reward."""
    ilrec_demo_ratio: float = 0.25
    """Share of demonstration rows in each update's replay (the rest: the environment rows, logged offline,
    the rollouts' online); 0 = no demonstration rows in the actor-critic (then only the learned reward
    carries the LLM's knowledge)."""
    ilrec_bc_coef: float = 1.0
    """Weight of the advantage-weighted behaviour-cloning loss on demonstration rows."""
    ilrec_awr_beta: float = 0.1
    """Temperature of the advantage weights exp(A / beta), A a replay item's one-step advantage under
    the critic (in clicks: a taken item's is about 1 more than a passed one's). Offline the weights are
    normalised over each minibatch; online (demonstration steps) capped at 20. Small = imitate only
    the items much better than the rest."""
    ilrec_pretrain_steps: int = 200
    """Online mode: plain behaviour-cloning steps (minibatches of --minibatch-size demonstration rows) before the
    first rollout."""
    ilrec_disc_hidden: int = 128
    """Hidden width of the reward model's MLPs (g and h, AIRL's discriminator)."""
    ilrec_disc_lr: float = 1e-3
    """Adam learning rate of the reward model (the discriminator)."""
    ilrec_disc_steps: int = 5
    """Online mode: discriminator steps per update (each: --ilrec-disc-batch demonstration rows against as many of
    the policy's rows); offline, --ilrec-reward-steps before training."""
    ilrec_disc_batch: int = 256
    """Transitions per side in one discriminator step (every slate item of a row is a pair)."""
    ilrec_llm_eval_users: int = 16
    """Evaluation users the demonstrator alone (the llm-propose row of eval.json) is evaluated on: the first N of
    the fixed evaluation users, 0 = all of them (each session costs a Propose prompt per step: about 2.4 s each
    with SmolLM2 on 2 CPU cores)."""

    def validate(self) -> None:
        if self.ilrec_demonstrator not in ("planner", *REFERENCE_POLICIES):
            raise ValueError(f"ilrec_demonstrator must be planner or a reference policy "
                             f"({', '.join(REFERENCE_POLICIES)}), got {self.ilrec_demonstrator!r}")
        if self.ilrec_mode not in ("offline", "online"):
            raise ValueError(f"ilrec_mode must be offline or online, got {self.ilrec_mode!r}")
        for name in ("ilrec_log_sessions", "ilrec_offline_steps", "ilrec_curve_users"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.ilrec_reward_steps < 0:
            raise ValueError(f"ilrec_reward_steps must be >= 0, got {self.ilrec_reward_steps}")
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

    def propose_settings(self) -> ProposeSettings:
        """The Propose query settings of the demonstrator."""
        return ProposeSettings(candidates=self.ilrec_demo_candidates, recent=self.ilrec_demo_recent,
                               group_size=self.ilrec_demo_group_size, timeout_s=self.ilrec_propose_timeout_s)
