"""IL-Rec's learned reward: an AIRL-structured discriminator over text embeddings.

A pair is (the user's state, one recommended item); a transition adds the next state. Features,
from the catalog's text embeddings E (`learner.algorithms.ilrec.text_embeddings`, unit vectors):
    state s:      [ mean E of the clicked history items,  mean E of all shown history items ]
    pair (s, i):  [ state,  E of the item,  E of the item * mean E of the clicked items ]
The two state means say what the user was shown and what they took to; the elementwise product
hands the network the item's similarity to the user's taste directly (a bilinear term an MLP of
this size would otherwise need many samples to learn).

AIRL's structure (Fu et al., 2018, "Learning Robust Rewards with Adversarial Inverse RL"):
    f(s, i, s') = g(s, i) + gamma * h(s') - h(s)        (h(s') = 0 when the session ended)
    D(s, i, s') = exp(f) / (exp(f) + pi(i | s)),  i.e.  logit D = f - log pi(i | s)
g is the reward (a function of the state and the item), h a shaping term that absorbs what is
only a matter of the state's value, so that g does not have to; pi is the density of the policy
whose samples are the negatives. Trained by logistic loss: demonstration transitions 1, the
negatives' 0. The reward the policy learns from is g, the mean over a slate's items, less a
constant (`set_center`: the negatives' mean, so that a random slate's learned reward is 0), clipped.

Which pi, by IL-Rec's mode (`learner.algorithms.ilrec`):
- offline (the paper's order: the reward model is extracted first, then the policy is trained on
  it): the negatives are the logged environment transitions, pi the logging policy's density
  (uniformly random slates: pi(i | s) = K / N for each of the slate's K items, N the catalog);
  the discriminator does not alternate with a generator, which is the departure from AIRL.
- online (the option): the negatives are the policy's own rollouts and pi its item distribution
  (a softmax over its item scores at the mean action: a tractable stand-in for the density of a
  top-K slate), the discriminator and the policy alternate as in AIRL.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class AIRLReward(nn.Module):
    """g(s, i) and h(s) over fixed item embeddings; `logits` is AIRL's discriminator logit."""

    def __init__(self, item_embeddings: np.ndarray, hidden: int = 128, gamma: float = 0.99, g_bias: float = 0.0):
        """`g_bias`: g's initial constant, log pi of the negatives' policy where that is known, so
        that the logit f - log pi starts near 0 instead of spending the first steps on a constant."""
        super().__init__()
        if item_embeddings.ndim != 2 or not np.isfinite(item_embeddings).all():
            raise ValueError(f"item embeddings must be a finite [items, dim] array, got shape {item_embeddings.shape}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        n, d = item_embeddings.shape
        self.num_items, self.gamma = n, gamma
        padded = np.concatenate([item_embeddings, np.zeros((1, d), np.float32)]).astype(np.float32)
        self.register_buffer("embeddings", torch.from_numpy(padded), persistent=False)  # row n: empty slot
        self.g = nn.Sequential(nn.Linear(4 * d, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                               nn.Linear(hidden, 1))
        self.h = nn.Sequential(nn.Linear(2 * d, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        with torch.no_grad():
            self.g[-1].bias.fill_(g_bias)
        # g is identified only up to a constant (and AIRL's optimum puts it near log pi, a large
        # negative number): a constant per step would reward short or long sessions for nothing.
        # `center` is subtracted from g wherever it becomes a reward (`set_center`).
        self.register_buffer("center", torch.zeros(()))

    def state_features(self, history_items: torch.Tensor, history_feedback: torch.Tensor) -> torch.Tensor:
        """[B, H] ids (-1 = empty), [B, H] feedback -> [B, 2, d]: mean E of clicked, of shown items."""
        empty = history_items < 0
        e = self.embeddings[history_items.masked_fill(empty, self.num_items).long()]     # [B, H, d]
        shown = (~empty).float().unsqueeze(-1)
        liked = history_feedback.unsqueeze(-1).clamp(0.0, 1.0) * shown
        return torch.stack([(e * liked).sum(1) / liked.sum(1).clamp(min=1.0),
                            (e * shown).sum(1) / shown.sum(1).clamp(min=1.0)], dim=1)

    def reward(self, history_items: torch.Tensor, history_feedback: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """g: [B, K] item ids -> [B, K] rewards of (state, item)."""
        state = self.state_features(history_items, history_feedback)                     # [B, 2, d]
        item = self.embeddings[items.long()]                                              # [B, K, d]
        liked = state[:, :1].expand_as(item)
        feats = torch.cat([liked, state[:, 1:].expand_as(item), item, item * liked], dim=-1)
        return self.g(feats).squeeze(-1)

    def shaping(self, history_items: torch.Tensor, history_feedback: torch.Tensor) -> torch.Tensor:
        """h: [B] the state's shaping potential."""
        return self.h(self.state_features(history_items, history_feedback).flatten(1)).squeeze(-1)

    def logits(self, pairs: "Transitions") -> torch.Tensor:
        """[B, K] AIRL's logit f - log pi for every slate item of every transition."""
        g = self.reward(pairs.history_items, pairs.history_feedback, pairs.slates)
        h_now = self.shaping(pairs.history_items, pairs.history_feedback)
        h_next = self.shaping(pairs.next_items, pairs.next_feedback) * (~pairs.terminal).float()
        f = g + (self.gamma * h_next - h_now).unsqueeze(-1)
        return f - pairs.log_pi

    @torch.no_grad()
    def item_rewards(self, history_items: torch.Tensor, history_feedback: torch.Tensor, slates: torch.Tensor,
                     clip: float, chunk: int = 4096) -> torch.Tensor:
        """[B, K] learned reward of each slate item: g - center, clipped to [-clip, clip]."""
        out = [(self.reward(history_items[i:i + chunk], history_feedback[i:i + chunk], slates[i:i + chunk])
                - self.center).clamp(-clip, clip) for i in range(0, slates.shape[0], chunk)]
        return torch.cat(out) if out else torch.zeros(slates.shape, device=slates.device)

    def slate_reward(self, history_items: torch.Tensor, history_feedback: torch.Tensor, slates: torch.Tensor,
                     clip: float) -> torch.Tensor:
        """[B] learned reward of each row's slate: the mean of `item_rewards` over its items."""
        return self.item_rewards(history_items, history_feedback, slates, clip).mean(-1)

    @torch.no_grad()
    def set_center(self, history_items: torch.Tensor, history_feedback: torch.Tensor, slates: torch.Tensor,
                   chunk: int = 4096) -> float:
        """Make g's mean over these (reference) slates the zero of the reward; returns it."""
        total = sum(self.reward(history_items[i:i + chunk], history_feedback[i:i + chunk], slates[i:i + chunk])
                    .sum().item() for i in range(0, slates.shape[0], chunk))
        self.center.fill_(total / max(slates.numel(), 1))
        return float(self.center)


class Transitions:
    """A batch of (s, slate, s') for the discriminator: the state's and the next state's history,
    whether the session ended, and log pi(i | s) of each slate item under the negatives' policy."""

    def __init__(self, history_items, history_feedback, slates, next_items, next_feedback, terminal, log_pi):
        self.history_items, self.history_feedback, self.slates = history_items, history_feedback, slates
        self.next_items, self.next_feedback, self.terminal = next_items, next_feedback, terminal
        self.log_pi = log_pi if log_pi.dim() == 2 else log_pi.unsqueeze(-1).expand(slates.shape).contiguous()


def transitions(columns: dict[str, torch.Tensor], next_row: torch.Tensor, idx: torch.Tensor,
                log_pi: torch.Tensor) -> Transitions:
    """Rows `idx` of a replay's `columns` (history_items, history_feedback, slate) as Transitions;
    `next_row[i]` is the row that follows row i in its session, -1 when the session ended."""
    nxt = next_row[idx]
    terminal = nxt < 0
    safe = torch.where(terminal, idx, nxt)
    return Transitions(columns["history_items"][idx], columns["history_feedback"][idx], columns["slate"][idx],
                       columns["history_items"][safe], columns["history_feedback"][safe], terminal, log_pi)


def discriminator_step(reward: AIRLReward, optimizer: torch.optim.Optimizer, demo: Transitions,
                       negative: Transitions) -> dict[str, float]:
    """One logistic-loss step: `demo` pairs labelled 1, `negative` pairs 0, every slate item a
    pair. Returns the loss and each side's accuracy."""
    reward.train()
    demo_logits, negative_logits = reward.logits(demo), reward.logits(negative)
    bce = nn.functional.binary_cross_entropy_with_logits
    loss = 0.5 * (bce(demo_logits, torch.ones_like(demo_logits))
                  + bce(negative_logits, torch.zeros_like(negative_logits)))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(reward.parameters(), 1.0)
    optimizer.step()
    reward.eval()
    return {"disc_loss": loss.item(), "disc_acc_demo": (demo_logits > 0).float().mean().item(),
            "disc_acc_policy": (negative_logits < 0).float().mean().item()}


def next_rows(episode_id: np.ndarray, done: np.ndarray) -> np.ndarray:
    """[N] the index of the row that follows each row in its session (rows sorted by episode and
    step, as `rollout.episodes` records them), -1 where the session ended there."""
    n = len(episode_id)
    following = np.r_[episode_id[1:] == episode_id[:-1], False] & ~done
    return np.where(following, np.arange(n) + 1, -1)
