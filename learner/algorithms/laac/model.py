"""LAAC's networks and losses (arXiv 2507.21274): an actor and twin critics over a discrete item
space, trained offline by a bilevel adversarial objective against a reference policy.

Every network scores all N items for a state (one forward pass, [B, N]):
- state: the user's last H items (ids, -1 = empty) and their feedback in [0, 1];
- encoder: item embedding + feedback embedding + position embedding per slot, the slots
  concatenated through one linear layer (order-aware, like a one-layer Caser/GRU-free encoder;
  measured 2.5x cheaper than `policy.networks`' Transformer layer here, which matters for 10,000
  updates of three networks on a laptop CPU), beside the mean embedding of the history;
- scores: summary @ output item embeddings + a per-item bias.

With pi the actor's softmax over items, Q1, Q2 the critics, D the logged (s, a, r, s') data and
L(s) the reference policy's items (the LLM's answer for s, uniform over its list), for each critic:

    adv_i   = E_s[ Q_i(s, pi) - Q_ref_i(s) ],   Q_ref_i = (1 - w) Q_i(s, a_D) + w Q_i(s, L)
    ground_i = E_{s: w > 0}[ max(0, Q_i(s, L) - sg Q_i(s, a_D))^2 ]   (laac_grounding upper; "both": no max)
    td_i    = E_D[ (Q_i(s, a_D) - (r + gamma (1 - done) E_{a'~pi(s')} min_j Qtarget_j(s', a')))^2 ]
    critic loss = sum_i  adv_i + alpha ground_i + beta td_i

where w = laac_llm_weight on rows that have an LLM answer and 0 elsewhere (w = 0 everywhere is the
no-LLM variant: ATAC's behaviour-referenced critic, LLM answers ignored). The critics are optimistic
about the reference's items (adv pushes Q(s, L) up and Q(s, pi) down), the grounding loss anchors
the LLM items' values to the well-estimated value of the logged action (the paper's regulariser
against over-estimating unreliable LLM suggestions), and TD fits the logged returns. The actor
maximises its advantage over the reference under the pessimistic critic:

    actor loss = -E_s[ E_{a~pi} min_i Q_i(s, a) - min_i Q_ref_i(s) ] - entropy_coef H(pi(.|s))

(the reference term is constant for the actor; it is logged as the advantage). Targets are Polyak
averages of the critics. The supervised baseline is the same network trained by cross-entropy on
the logged next item.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class ItemScorer(nn.Module):
    """[B, H] history ids + [B, H] feedback -> [B, N] item scores."""

    def __init__(self, num_items: int, history_len: int, dim: int = 32):
        super().__init__()
        self.num_items = num_items
        self.item_emb = nn.Embedding(num_items + 1, dim, padding_idx=num_items)  # row N: empty slot
        self.feedback_emb = nn.Linear(1, dim)
        self.pos_emb = nn.Parameter(torch.randn(history_len, dim) * 0.02)
        self.slots = nn.Linear(history_len * dim, dim)
        self.head = nn.Sequential(nn.LayerNorm(2 * dim), nn.Linear(2 * dim, dim), nn.Tanh())
        self.out_emb = nn.Parameter(torch.randn(num_items, dim) * (dim ** -0.5))
        self.out_bias = nn.Parameter(torch.zeros(num_items))

    def forward(self, items: torch.Tensor, feedback: torch.Tensor) -> torch.Tensor:
        empty = items < 0
        ids = items.masked_fill(empty, self.num_items).long()
        emb = self.item_emb(ids)
        shown = (~empty).float().unsqueeze(-1)
        tokens = (emb + self.feedback_emb(feedback.unsqueeze(-1)) + self.pos_emb) * shown
        ordered = torch.tanh(self.slots(tokens.flatten(1)))
        pooled = (emb * shown).sum(1) / shown.sum(1).clamp(min=1.0)  # the history's mean embedding
        return self.head(torch.cat([ordered, pooled], -1)) @ self.out_emb.T + self.out_bias


def next_state(items: torch.Tensor, feedback: torch.Tensor, action: torch.Tensor,
               reward_feedback: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """s' of a transition: the window shifted by one, the action (and its feedback) appended."""
    return (torch.cat([items[:, 1:], action[:, None].to(items.dtype)], 1),
            torch.cat([feedback[:, 1:], reward_feedback[:, None].to(feedback.dtype)], 1))


def reference_values(q: torch.Tensor, action: torch.Tensor, llm_items: torch.Tensor,
                     w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Q(s, a_D), Q(s, L) = mean over the valid LLM items (0 where none), Q_ref) for [B, N] q."""
    q_data = q.gather(1, action[:, None].long()).squeeze(1)
    valid = llm_items >= 0
    q_items = q.gather(1, llm_items.clamp(min=0).long())
    q_llm = (q_items * valid).sum(1) / valid.sum(1).clamp(min=1)
    return q_data, q_llm, (1 - w) * q_data + w * q_llm


def critic_losses(q: torch.Tensor, pi: torch.Tensor, action: torch.Tensor, llm_items: torch.Tensor,
                  w: torch.Tensor, target: torch.Tensor, alpha: float, beta: float,
                  grounding: str = "upper") -> dict[str, torch.Tensor]:
    """One critic's three terms (module doc): adv, ground (mean over rows with w > 0; 0 if none),
    td, and their weighted sum "loss" = adv + alpha ground + beta td (alpha = 0 drops grounding).
    grounding "both" penalises Q(s, L) on either side of sg Q(s, a_D); "upper" only above it (an
    over-estimate of the LLM's items)."""
    q_data, q_llm, q_ref = reference_values(q, action, llm_items, w)
    adv = ((pi * q).sum(1) - q_ref).mean()
    grounded = (w > 0).float()
    gap = q_llm - q_data.detach()
    if grounding == "upper":
        gap = gap.clamp(min=0)
    ground = (grounded * gap ** 2).sum() / grounded.sum().clamp(min=1)
    td = F.mse_loss(q_data, target)
    loss = adv + beta * td + (alpha * ground if alpha else 0.0)
    return {"adv": adv, "ground": ground, "td": td, "loss": loss}


class LAACAgent:
    """Actor, twin critics, their targets and optimisers; `update(batch)` is one iteration.

    batch (tensors on the agent's device): items [B, H] long, feedback [B, H], action [B], reward [B]
    (already scaled), reward_feedback [B] (the action's feedback for s'), done [B], llm [B, P] long
    (-1 padded), has_llm [B] bool.
    """

    def __init__(self, num_items: int, history_len: int, cfg, device: torch.device, seed: int):
        torch.manual_seed(seed)
        self.cfg, self.device = cfg, device
        dim = cfg.laac_embedding_dim
        self.actor = ItemScorer(num_items, history_len, dim).to(device)
        self.critics = nn.ModuleList([ItemScorer(num_items, history_len, dim) for _ in range(2)]).to(device)
        self.targets = copy.deepcopy(self.critics).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.laac_actor_lr)
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=cfg.laac_critic_lr)
        self.steps = 0

    def _weights(self, batch: dict) -> torch.Tensor:
        return self.cfg.laac_llm_weight * batch["has_llm"].float()

    def td_target(self, batch: dict) -> torch.Tensor:
        """r + gamma (1 - done) E_{a'~pi(s')} min(Q1target, Q2target)(s', a'): the twin critics' minimum."""
        with torch.no_grad():
            next_items, next_feedback = next_state(batch["items"], batch["feedback"], batch["action"],
                                                   batch["reward_feedback"])
            pi_next = F.softmax(self.actor(next_items, next_feedback), -1)
            q_next = torch.min(*(t(next_items, next_feedback) for t in self.targets))
            return batch["reward"] + self.cfg.laac_gamma * (1 - batch["done"].float()) * (pi_next * q_next).sum(1)

    def update(self, batch: dict) -> dict[str, float]:
        cfg, w = self.cfg, self._weights(batch)
        items, feedback, action = batch["items"], batch["feedback"], batch["action"]
        target = self.td_target(batch)
        logits = self.actor(items, feedback)  # the critic step does not change the actor: reused below
        log_pi = F.log_softmax(logits, -1)
        pi = log_pi.exp()
        qs = [critic(items, feedback) for critic in self.critics]
        terms = [critic_losses(q, pi.detach(), action, batch["llm"], w, target, cfg.laac_alpha, cfg.laac_beta,
                               cfg.laac_grounding) for q in qs]
        critic_loss = terms[0]["loss"] + terms[1]["loss"]
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        q_min = torch.min(qs[0], qs[1]).detach()
        entropy = -(pi * log_pi).sum(1).mean()
        q_ref = reference_values(q_min, action, batch["llm"], w)[2]
        advantage = ((pi * q_min).sum(1) - q_ref).mean()
        actor_loss = -advantage - cfg.laac_entropy_coef * entropy
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        with torch.no_grad():
            for target_net, critic in zip(self.targets, self.critics):
                for tp, p in zip(target_net.parameters(), critic.parameters()):
                    tp.lerp_(p, cfg.laac_target_tau)
        self.steps += 1
        mean = lambda key: float(sum(t[key].detach() for t in terms) / 2)  # noqa: E731
        return {"critic_loss": float(critic_loss.detach()), "actor_loss": float(actor_loss.detach()),
                "adversarial": mean("adv"), "grounding": mean("ground"), "td": mean("td"),
                "advantage": float(advantage.detach()), "entropy": float(entropy.detach()),
                "q_data": float(qs[0].detach().gather(1, action[:, None].long()).mean())}

    def scores(self, items: torch.Tensor, feedback: torch.Tensor) -> torch.Tensor:
        """The policy's item scores (its logits): the ranking the evaluation uses."""
        with torch.no_grad():
            return self.actor(items, feedback)

    def state(self) -> dict:
        return {"actor": self.actor.state_dict(), "critics": self.critics.state_dict(),
                "targets": self.targets.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                "critic_opt": self.critic_opt.state_dict(), "steps": self.steps}


class SupervisedAgent:
    """The supervised next-item baseline: the same scorer, cross-entropy on the logged action."""

    def __init__(self, num_items: int, history_len: int, cfg, device: torch.device, seed: int):
        torch.manual_seed(seed)
        self.device = device
        self.actor = ItemScorer(num_items, history_len, cfg.laac_embedding_dim).to(device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.laac_actor_lr)
        self.steps = 0

    def update(self, batch: dict) -> dict[str, float]:
        loss = F.cross_entropy(self.actor(batch["items"], batch["feedback"]), batch["action"].long())
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        self.steps += 1
        return {"actor_loss": float(loss.detach())}

    scores = LAACAgent.scores

    def state(self) -> dict:
        return {"actor": self.actor.state_dict(), "actor_opt": self.actor_opt.state_dict(), "steps": self.steps}
