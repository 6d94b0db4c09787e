"""LAAC's evaluations: offline ranking metrics on held-out users, and the simulated world.

Offline, on every held-out transition (state s, logged next item a, reward r = rating / 5, or the
click), a policy ranks the catalog less the items the user rated before s (as the field's
full-ranking protocols do: a seen item is never the next one) and we read its top 10. Every metric
is defined once, in `rollout.metrics`:

- R@10 (reward at 10, LAAC's accuracy metric): r if a is in the top 10, else 0; mean over the
  held-out transitions (`recall_at_k` with one held-out item per state, weighted by its reward).
- HR@10 (`hit_rate_at_k`): the same without the weight; NDCG@10 (`ndcg_at_k`): the next item's
  discounted rank, 1 / log2(rank + 2) in the top 10, else 0.
- NCV@10 (LAAC's novelty metric): the share of the top 10 that is novel for the user, i.e. neither
  among the items the user rated before s nor among the 10 % most-rated items of the training
  users (the long tail); mean over the held-out transitions (`ncv_at_k` with every item counted
  relevant). The paper names the metric without a formula we could obtain; this is SMORL's
  novelty notion (long-tail items the user has not seen) read per list. It counts novelty
  whatever the user thinks of it: a list of random long-tail items scores high.
- NCV-liked@10: the share of the top 10 that is novel and liked, i.e. the held-out user rated it
  at or above the data set's positive threshold (4 of 5 stars) later in their log (`ncv_at_k`
  with relevant = the user's liked items): novelty that is also relevant.
- CV@10: catalog coverage, the share of items in at least one top 10 (`catalog_coverage`).

The LLM reference policy cannot rank a whole catalog: it is asked about a seeded sample of held-out
states with 99 random candidates plus the true next item (`include_target`), and scores hit@5 (the
true item among its first 5), R@10 and NCV@10 of its answer. The trained policy is scored on the
same candidate lists (its top 10 among the 100) beside it, like for like ("@100 candidates").

In the simulated world (built from the same data set, so item ids match) the policy's slate is the
top slate_size available items by its scores given the user's last items in the episode; the
reference policies meet the same users and dice as in `learner.evaluate`.
"""
from __future__ import annotations

import numpy as np
import torch

from learner.evaluation import evaluate_episodes
from rollout.metrics import catalog_coverage, hit_rate_at_k, ncv_at_k, ndcg_at_k, recall_at_k
from rollout.slates import top_k
from rollout.users import UserBatchEnv

K = 10


class UserLogs:
    """What the offline metrics read of each user's log: the items in time order, rebuilt from the
    transitions (position 0 is the last item of the step-1 state, position t >= 1 the action at
    step t), and the items the user liked (rated at or above the data set's positive threshold)."""

    def __init__(self, arrays, data):
        self.arrays, self.num_items = arrays, data.num_items
        self.sequences: dict[int, np.ndarray] = {}
        order = np.lexsort((arrays.step, arrays.user))
        users, starts = np.unique(arrays.user[order], return_index=True)
        for user, begin, end in zip(users, starts, np.r_[starts[1:], len(order)]):
            rows = order[begin:end]
            self.sequences[int(user)] = np.r_[arrays.items[rows[0], -1], arrays.action[rows]]
        # Per user, not a [users, items] matrix (KuaiRand's would be 200 MB): rows are made per chunk.
        inter, positive = data.interactions, data.positive()
        users, items = inter.user[positive], inter.item[positive]
        order = np.argsort(users, kind="stable")
        bounds = np.searchsorted(users[order], np.arange(data.num_users + 1))
        self.liked = [items[order[bounds[u]:bounds[u + 1]]] for u in range(data.num_users)]

    def seen_before(self, rows: np.ndarray) -> np.ndarray:
        """[R, N] bool: the items each row's user rated before the row's step."""
        seen = np.zeros((len(rows), self.num_items), bool)
        for i, row in enumerate(rows):
            seen[i, self.sequences[int(self.arrays.user[row])][: self.arrays.step[row]]] = True
        return seen

    def liked_by(self, rows: np.ndarray) -> np.ndarray:
        """[R, N] bool: the items each row's user liked anywhere in their log."""
        liked = np.zeros((len(rows), self.num_items), bool)
        for i, row in enumerate(rows):
            liked[i, self.liked[int(self.arrays.user[row])]] = True
        return liked


def list_metrics(top: np.ndarray, arrays, rows: np.ndarray, logs: UserLogs, popularity: np.ndarray,
                 seen: np.ndarray | None = None) -> dict[str, float]:
    """R@10, HR@10, NDCG@10, NCV@10 and NCV-liked@10 (module doc) of ranked lists `top` [R, <=10] for
    `rows` (`seen`: `logs.seen_before(rows)` when the caller has it)."""
    target = arrays.action[rows]
    seen = logs.seen_before(rows) if seen is None else seen
    return {"R@10": recall_at_k(top, target, K, weights=arrays.reward[rows]), "HR@10": hit_rate_at_k(top, target, K),
            "NDCG@10": ndcg_at_k(top, target, K), "NCV@10": ncv_at_k(top, np.ones_like(seen), seen, popularity, K),
            "NCV-liked@10": ncv_at_k(top, logs.liked_by(rows), seen, popularity, K)}


def offline_metrics(score_fn, arrays, rows: np.ndarray, logs: UserLogs, popularity: np.ndarray,
                    chunk: int = 512) -> dict:
    """Full-catalog metrics (module doc) of a policy (`score_fn(items, feedback)` -> [R, N] numpy
    scores) on the transitions `rows`: its top 10 of the items each user has not rated yet."""
    parts, tops = [], []
    for begin in range(0, len(rows), chunk):
        part = rows[begin:begin + chunk]
        scores = np.array(score_fn(arrays.items[part], arrays.feedback[part]), np.float64)
        seen = logs.seen_before(part)
        scores[seen] = -np.inf
        top = top_k(scores, None, K)
        parts.append((len(part), list_metrics(top, arrays, part, logs, popularity, seen)))
        tops.append(top)
    total = sum(n for n, _ in parts)
    out = {key: sum(n * m[key] for n, m in parts) / total for key in parts[0][1]}
    out["CV@10"] = catalog_coverage(np.concatenate(tops), len(popularity))
    out["states"] = int(total)
    return out


def candidate_metrics(top: np.ndarray, arrays, rows: np.ndarray, logs: UserLogs, popularity: np.ndarray) -> dict:
    """Metrics of top-10 lists drawn from the 100-candidate lists (the LLM's protocol), plus hit@5."""
    out = list_metrics(top, arrays, rows, logs, popularity)
    out["HR@5"] = hit_rate_at_k(top, arrays.action[rows], 5)
    out["states"] = int(len(rows))
    return out


def top_among(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """[R, 10] the best 10 of each row's candidates by `scores` [R, N]."""
    picked = np.take_along_axis(scores, candidates, 1)
    return np.take_along_axis(candidates, top_k(picked, None, K), 1)


def torch_scorer(agent, device: torch.device):
    """`score_fn` of an agent: numpy state in, numpy [R, N] scores out."""
    def score(items: np.ndarray, feedback: np.ndarray) -> np.ndarray:
        return agent.scores(torch.as_tensor(items, device=device),
                            torch.as_tensor(feedback, device=device)).cpu().numpy()
    return score


def evaluate_in_world(world, world_cfg, score_fn, history_len: int, users: np.ndarray, seed: int) -> dict:
    """Episode and slate metrics of a scoring policy in the simulated world, with the reference
    policies' users and dice (`learner.evaluation.evaluate_reference`). The state is the episode's
    last `history_len` shown items with their feedback (clicks; the policy learned on ratings
    scaled to [0, 1], where a click reads as a liked item)."""
    def make_act(env: UserBatchEnv):
        def act(step: int, active: np.ndarray) -> tuple[np.ndarray, dict]:
            items = env.history_items[:, -history_len:].astype(np.int64)
            feedback = np.where(items >= 0, env.history_feedback[:, -history_len:], 0.0).astype(np.float32)
            if items.shape[1] < history_len:  # a world history shorter than the policy's state: empty slots first
                pad = history_len - items.shape[1]
                items = np.pad(items, ((0, 0), (pad, 0)), constant_values=-1)
                feedback = np.pad(feedback, ((0, 0), (pad, 0)))
            scores = score_fn(items, feedback).astype(np.float64)
            return top_k(scores, env.available_items(), world_cfg.slate_size), {}
        return act

    return evaluate_episodes(world, world_cfg, users, seed, make_act)


OFFLINE_COLUMNS = ("R@10", "HR@10", "NDCG@10", "NCV@10", "NCV-liked@10", "CV@10")


def offline_table(results: dict) -> str:
    """The offline evaluation as a fixed-width table (full catalog, then the 100-candidate protocol)."""
    lines = [f"offline evaluation on {results['full']['trained']['states']:,} held-out transitions (full catalog):",
             f"  {'policy':<22}" + "".join(f"{c:>13}" for c in OFFLINE_COLUMNS)]
    for name, m in results["full"].items():
        lines.append(f"  {name:<22}" + "".join(f"{m[c]:13.4f}" for c in OFFLINE_COLUMNS))
    if results.get("candidates"):
        cols = ("HR@5", "R@10", "HR@10", "NDCG@10", "NCV@10", "NCV-liked@10")
        first = next(iter(results["candidates"].values()))
        lines += [f"on {first['states']:,} held-out states with 100 candidates (99 random + the true next item):",
                  f"  {'policy':<22}" + "".join(f"{c:>13}" for c in cols)]
        for name, m in results["candidates"].items():
            lines.append(f"  {name:<22}" + "".join(f"{m[c]:13.4f}" for c in cols))
    return "\n".join(lines)
