"""LAAC's options (`--laac-*`): the paper's settings are the defaults where it gives them."""
from __future__ import annotations

import re
from dataclasses import dataclass

VARIANTS = ("laac", "supervised")


@dataclass
class LAACConfig:
    """LAAC's options (field names start with laac_: flags are flat across sections)."""

    laac_variant: str = "laac"
    """What to train: laac (the adversarial actor-critic; --laac-llm-weight 0 is its no-LLM variant)
    or supervised (a next-item classifier on the same network: the supervised baseline)."""
    laac_iterations: int = 10000
    """Gradient updates (LAAC: 10,000; about 4 minutes on one CPU core). --time-budget-s, counted
    from the first update (the reference policy's answers, cached, come before it), may stop it
    earlier; --iterations is PPO's."""
    laac_batch_size: int = 256
    """Transitions per update."""
    laac_alpha: float = 1.0
    """Weight of the grounding loss in the critics' objective: it anchors the critics' values of the
    LLM's items to the value of the logged item (LAAC: 1.0; 0 = no grounding)."""
    laac_grounding: str = "upper"
    """Form of the grounding loss: upper penalises the critics' value of the LLM's items only above
    the logged item's value (an over-estimate: the paper's concern), both on either side."""
    laac_beta: float = 1.0
    """Weight of the TD loss in the critics' objective (LAAC: 1.0)."""
    laac_gamma: float = 0.99
    """Discount of the TD targets (LAAC: 0.99)."""
    laac_critic_lr: float = 0.01
    """Adam learning rate of the twin critics (LAAC: 0.01)."""
    laac_actor_lr: float = 0.001
    """Adam learning rate of the actor, and of the supervised baseline (LAAC: 0.001)."""
    laac_llm_weight: float = 0.3
    """Share of the critics' reference that is the LLM's answer on states that have one (the rest is
    the logged item); 1 = the paper's pure LLM reference, 0 = the no-LLM variant (ATAC-style: LLM
    answers ignored, no grounding). 0.3: on ml-100k it kept R@10 within 1 % of the no-LLM variant
    where 1 lost 30-40 % of it (README, LAAC)."""
    laac_entropy_coef: float = 0.01
    """Entropy bonus of the actor's softmax (keeps the ranking below the top item informative)."""
    laac_target_tau: float = 0.005
    """Polyak rate of the critics' target networks."""
    laac_embedding_dim: int = 32
    """Width of the item embeddings and state encoder of every network."""
    laac_history_len: int = 10
    """Items in a state (the offline MDP's window; the prompt shows the last laac_recent_items)."""
    laac_train_users: str = "all"
    """Which training users' transitions LAAC learns from: all, or FEATURE=VALUE of the data set's
    user features (gender=M on ml-100k): the paper's robustness experiment trains on such a skewed
    subset and evaluates on every held-out user. The held-out users are always the world's
    (--eval-user-share, drawn by --world-seed)."""
    laac_reference_states: int = 100
    """Training transitions that get an LLM answer (a seeded sample; 0 = all ~79k on ml-100k, for GPU
    clusters: the vLLM backend on a 2-core CPU needs about 5 s per 100-candidate prompt). The LLM
    terms apply to these only."""
    laac_llm_batch_share: float = 0.1
    """Share of every minibatch drawn from the transitions that have an LLM answer (so a small sample
    still shapes every update); the rest is drawn from all training transitions. With 100 answered
    states, 0.5 made the critics diverge on ml-100k; 0.1 did not."""
    laac_eval_llm_states: int = 50
    """Held-out transitions the reference policy alone is evaluated on (100 candidates, the true next item
    among them: its hit@5); 0 = skip. Cached like the training answers."""
    laac_eval_states: int = 0
    """Held-out transitions of the full-catalog offline evaluation (a seeded sample; 0 = all)."""
    laac_recent_items: int = 5
    """Last items of the state shown in the LLM's prompt (LAAC: 5)."""
    laac_candidates: int = 100
    """Random candidate items in the LLM's prompt (LAAC: 100)."""
    laac_proposals: int = 10
    """Items the LLM answers with, best first (LAAC: 10)."""
    laac_candidate_seed: int = 0
    """Seed of the candidate lists and of the states sampled for LLM answers (part of the cache key)."""
    laac_propose_batch: int = 64
    """Queries per Propose RPC (the service batches them into the engine)."""
    laac_propose_timeout_s: float = 900.0
    """Deadline of one Propose RPC; past it that batch gets the heuristic's answers (not cached)."""
    laac_log_every: int = 100
    """Write a metrics row (and print a progress line) every this many updates."""
    laac_checkpoint_every: int = 2000
    """Write checkpoints/latest.pt every this many updates (0 = only final.pt)."""

    def validate(self) -> None:
        """Raise ValueError naming the option when a value cannot work."""
        if self.laac_grounding not in ("upper", "both"):
            raise ValueError(f"laac_grounding must be upper or both, got {self.laac_grounding!r}")
        if self.laac_variant not in VARIANTS:
            raise ValueError(f"laac_variant must be one of {', '.join(VARIANTS)}, got {self.laac_variant!r}")
        for name in ("laac_alpha", "laac_beta", "laac_entropy_coef", "laac_reference_states", "laac_eval_llm_states",
                     "laac_eval_states", "laac_candidate_seed", "laac_checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("laac_iterations", "laac_batch_size", "laac_embedding_dim", "laac_history_len", "laac_recent_items",
                     "laac_candidates", "laac_proposals", "laac_propose_batch", "laac_log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("laac_gamma", "laac_llm_weight", "laac_llm_batch_share", "laac_target_tau"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.laac_critic_lr <= 0 or self.laac_actor_lr <= 0 or self.laac_propose_timeout_s <= 0:
            raise ValueError("laac_critic_lr, laac_actor_lr and laac_propose_timeout_s must be > 0")
        if self.laac_train_users != "all" and not re.fullmatch(r"[^=\s]+=[^=]+", self.laac_train_users):
            raise ValueError(f"laac_train_users must be all or FEATURE=VALUE (for example gender=M), "
                             f"got {self.laac_train_users!r}")
        if self.laac_recent_items > 16 or self.laac_candidates > 256 or self.laac_proposals > min(20, self.laac_candidates):
            raise ValueError("the Propose contract allows laac_recent_items <= 16, laac_candidates <= 256 and "
                             "laac_proposals <= min(20, laac_candidates)")

    def uses_llm(self) -> bool:
        """Whether training needs the LLM's answers (the evaluation may still ask for some)."""
        return self.laac_variant == "laac" and self.laac_llm_weight > 0
