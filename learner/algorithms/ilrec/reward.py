"""IL-Rec's learned reward: a GAIL-style discriminator over text embeddings of state-action pairs.

A pair is (the user's state, one recommended item). Its features, from the catalog's text
embeddings E (`learner.algorithms.ilrec.text_embeddings`, unit vectors):
    [ mean E of the clicked history items,  mean E of all shown history items,
      E of the item,  E of the item * mean E of the clicked items ]
The two state means say what the user was shown and what they took to; the elementwise product
hands the network the item's similarity to the user's taste directly (a bilinear term an MLP of
this size would otherwise need many samples to learn). An MLP maps the features to a logit D:
trained with logistic loss to tell demonstration pairs (label 1) from the policy's pairs (0).
The logit log D/(1 - D) is the reward of a pair; a slate's learned reward is the mean logit over
its items, clipped to [-clip, clip].

What this is, and is not: an unconstrained classifier learned jointly and online with the policy
(GAIL with a logit reward). It is not AIRL: AIRL's discriminator has the structure
D = exp(f) / (exp(f) + pi(a|s)) with f(s, a, s') = g(s, a) + gamma h(s') - h(s), from which g is a
reward that transfers; and IL-Rec's paper extracts the reward model from the LLM's demonstrations
first, then trains the policy offline on it. Both are open work (issue 19).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class SlateDiscriminator(nn.Module):
    """Pair features from fixed item embeddings, and an MLP logit per (state, item)."""

    def __init__(self, item_embeddings: np.ndarray, hidden: int = 128):
        super().__init__()
        if item_embeddings.ndim != 2 or not np.isfinite(item_embeddings).all():
            raise ValueError(f"item embeddings must be a finite [items, dim] array, got shape {item_embeddings.shape}")
        n, d = item_embeddings.shape
        self.num_items = n
        padded = np.concatenate([item_embeddings, np.zeros((1, d), np.float32)]).astype(np.float32)
        self.register_buffer("embeddings", torch.from_numpy(padded), persistent=False)  # row n: empty slot
        self.net = nn.Sequential(nn.Linear(4 * d, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 1))

    def state_features(self, history_items: torch.Tensor, history_feedback: torch.Tensor) -> torch.Tensor:
        """[B, H] ids (-1 = empty), [B, H] feedback -> [B, 2, d]: mean E of clicked, of shown items."""
        empty = history_items < 0
        e = self.embeddings[history_items.masked_fill(empty, self.num_items).long()]     # [B, H, d]
        shown = (~empty).float().unsqueeze(-1)
        liked = history_feedback.unsqueeze(-1).clamp(0.0, 1.0) * shown
        return torch.stack([(e * liked).sum(1) / liked.sum(1).clamp(min=1.0),
                            (e * shown).sum(1) / shown.sum(1).clamp(min=1.0)], dim=1)

    def forward(self, history_items: torch.Tensor, history_feedback: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B, K] item ids -> [B, K] logits (demonstration-like pairs high)."""
        state = self.state_features(history_items, history_feedback)                     # [B, 2, d]
        item = self.embeddings[items.long()]                                              # [B, K, d]
        liked = state[:, :1].expand_as(item)
        feats = torch.cat([liked, state[:, 1:].expand_as(item), item, item * liked], dim=-1)
        return self.net(feats).squeeze(-1)

    @torch.no_grad()
    def slate_reward(self, history_items: torch.Tensor, history_feedback: torch.Tensor, slates: torch.Tensor,
                     clip: float, chunk: int = 4096) -> torch.Tensor:
        """[B] learned reward of each row's slate: its items' mean logit, clipped to [-clip, clip]."""
        out = [self(history_items[i:i + chunk], history_feedback[i:i + chunk], slates[i:i + chunk])
               .clamp(-clip, clip).mean(-1) for i in range(0, slates.shape[0], chunk)]
        return torch.cat(out) if out else torch.zeros(0, device=slates.device)


def discriminator_step(disc: SlateDiscriminator, optimizer: torch.optim.Optimizer,
                       demo: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                       policy: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """One logistic-loss step: `demo` pairs (history items, feedback, slates) labelled 1, `policy`
    pairs 0, every slate item a pair. Returns the loss and each side's accuracy."""
    disc.train()
    demo_logits, policy_logits = disc(*demo), disc(*policy)
    bce = nn.functional.binary_cross_entropy_with_logits
    loss = 0.5 * (bce(demo_logits, torch.ones_like(demo_logits)) + bce(policy_logits, torch.zeros_like(policy_logits)))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(disc.parameters(), 1.0)
    optimizer.step()
    disc.eval()
    return {"disc_loss": loss.item(), "disc_acc_demo": (demo_logits > 0).float().mean().item(),
            "disc_acc_policy": (policy_logits < 0).float().mean().item()}
