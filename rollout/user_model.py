"""The user-response model: how likely a user is to click (and how they would rate) any item.

One form serves every world: p(click | u, i) = sigmoid(<x_u, y_i> + b_u + b_i + g). The synthetic
world fills it with its ground truth; on logged data (MovieLens, KuaiRand, KuaiRec) it is a
matrix-factorisation model trained here with torch on a time-ordered split, its held-out AUC
reported beside a popularity predictor's, and cached on disk keyed by a hash of the data and the
settings, so a run never trains the same model twice. For rating data a second factorisation
predicts the rating (RMSE reported), used by the rating-based reward.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rollout.data.dataset import Dataset


@dataclass
class DotProductModel:
    """score(u, i) = <user_vectors[u], item_vectors[i]> + user_bias[u] + item_bias[i] + global_bias."""

    user_vectors: np.ndarray   # [U, d] float32
    item_vectors: np.ndarray   # [N, d] float32
    user_bias: np.ndarray      # [U] float32
    item_bias: np.ndarray      # [N] float32
    global_bias: float = 0.0

    def scores(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """[B] users, [B, K] items -> [B, K] raw scores (logits or ratings)."""
        u = self.user_vectors[users]
        s = np.einsum("bd,bkd->bk", u, self.item_vectors[slates])
        return s + self.user_bias[users, None] + self.item_bias[slates] + self.global_bias

    def all_scores(self, users: np.ndarray) -> np.ndarray:
        """[B] users -> [B, N] scores for every item (for greedy reference policies)."""
        return (self.user_vectors[users] @ self.item_vectors.T + self.user_bias[users, None]
                + self.item_bias[None, :] + self.global_bias)

    def save(self, path: Path) -> None:
        np.savez(path, user_vectors=self.user_vectors, item_vectors=self.item_vectors,
                 user_bias=self.user_bias, item_bias=self.item_bias, global_bias=np.float32(self.global_bias))

    @classmethod
    def load(cls, path: Path) -> "DotProductModel":
        with np.load(path) as z:
            return cls(z["user_vectors"], z["item_vectors"], z["user_bias"], z["item_bias"], float(z["global_bias"]))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class UserModelConfig:
    """Training settings of the matrix-factorisation user model (ignored by the synthetic world)."""

    dim: int = 16
    epochs: int = 20
    lr: float = 0.02
    l2: float = 1e-4
    negatives: int = 4        # unobserved items sampled as negatives per observed interaction
    holdout: float = 0.1      # latest share of each user's interactions held out for evaluation
    batch_size: int = 4096
    seed: int = 0


@dataclass
class UserModel:
    """A click model, optionally a rating model, and how well they did on held-out data."""

    click: DotProductModel
    rating: DotProductModel | None = None
    report: dict | None = None

    def click_probability(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        return sigmoid(self.click.scores(users, slates)).astype(np.float32)


def time_split(data: Dataset, holdout: float, within: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, test): the latest `holdout` share of each user's interactions is test.
    `within` (a mask) splits only those rows, the same way (both masks are False elsewhere): a
    validation period carved from the end of the training rows.

    Interactions are sorted by (user, time) in every Dataset, so a user's rows are contiguous."""
    if within is not None:
        rows = np.flatnonzero(within)
        train, test = np.zeros(len(within), bool), np.zeros(len(within), bool)
        sub_train, sub_test = _latest_share(data.interactions.user[rows], holdout)
        train[rows[sub_train]], test[rows[sub_test]] = True, True
        return train, test
    return _latest_share(data.interactions.user, holdout)


def _latest_share(user: np.ndarray, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """(earlier, latest) masks over rows grouped by user in time order: each user's latest
    floor(holdout x count) rows are the latest."""
    m = len(user)
    starts = np.r_[0, np.flatnonzero(np.diff(user)) + 1]
    counts = np.diff(np.r_[starts, m])
    rank = np.arange(m) - np.repeat(starts, counts)
    n_test = np.floor(counts * holdout).astype(np.int64)
    test = rank >= np.repeat(counts - n_test, counts)
    return ~test, test


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula (ties get average ranks)."""
    labels = labels.astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    boundaries = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1, len(scores)]
    avg = (boundaries[:-1] + boundaries[1:] - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, np.diff(boundaries))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _train_mf(users, items, targets, n_users, n_items, cfg: UserModelConfig, loss: str, log) -> DotProductModel:
    import torch

    gen = torch.Generator().manual_seed(cfg.seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(cfg.seed)
    p = {
        "user_vectors": torch.nn.Parameter(0.1 * torch.randn(n_users, cfg.dim)),
        "item_vectors": torch.nn.Parameter(0.1 * torch.randn(n_items, cfg.dim)),
        "user_bias": torch.nn.Parameter(torch.zeros(n_users)),
        "item_bias": torch.nn.Parameter(torch.zeros(n_items)),
        "global_bias": torch.nn.Parameter(torch.tensor(float(targets.mean()) if loss == "mse" else 0.0)),
    }
    torch.random.set_rng_state(torch_state)
    opt = torch.optim.Adam(p.values(), lr=cfg.lr)
    u_t, i_t = torch.from_numpy(users.astype(np.int64)), torch.from_numpy(items.astype(np.int64))
    y_t = torch.from_numpy(targets.astype(np.float32))
    n = len(y_t)
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            u, i = u_t[idx], i_t[idx]
            uv, iv = p["user_vectors"][u], p["item_vectors"][i]
            s = (uv * iv).sum(-1) + p["user_bias"][u] + p["item_bias"][i] + p["global_bias"]
            if loss == "bce":
                err = torch.nn.functional.binary_cross_entropy_with_logits(s, y_t[idx])
            else:
                err = torch.nn.functional.mse_loss(s, y_t[idx])
            reg = cfg.l2 * (uv.pow(2).sum(-1) + iv.pow(2).sum(-1)).mean()
            opt.zero_grad()
            (err + reg).backward()
            opt.step()
            total += err.item() * len(idx)
        log(f"  {loss} epoch {epoch + 1}/{cfg.epochs}: loss {total / n:.4f}")
    return DotProductModel(*(p[k].detach().numpy().astype(np.float32) for k in
                             ("user_vectors", "item_vectors", "user_bias", "item_bias")),
                           float(p["global_bias"].item()))


def _sample_negatives(data: Dataset, rows: np.ndarray, per_row: int, rng: np.random.Generator):
    """Unobserved items as negatives: `per_row` random items per given interaction row."""
    users = np.repeat(data.interactions.user[rows], per_row)
    items = rng.integers(0, data.num_items, len(users)).astype(np.int32)
    n = np.int64(data.num_items)
    seen = data.interactions.user.astype(np.int64) * n + data.interactions.item
    keep = ~np.isin(users.astype(np.int64) * n + items, seen)
    return users[keep], items[keep]


def train_user_model(data: Dataset, cfg: UserModelConfig, log=print,
                     split: tuple[np.ndarray, np.ndarray] | None = None) -> UserModel:
    """Fit the click model (and the rating model for rating data); evaluate on the time split
    (`split`: the (train, test) masks to use instead of cfg.holdout's)."""
    rng = np.random.default_rng(cfg.seed)
    train, test = split if split is not None else time_split(data, cfg.holdout)
    positive = data.positive().astype(np.float32)
    it = data.interactions
    tr = np.flatnonzero(train)
    neg_u, neg_i = _sample_negatives(data, tr, cfg.negatives, rng)
    users = np.r_[it.user[tr], neg_u]
    items = np.r_[it.item[tr], neg_i]
    labels = np.r_[positive[tr], np.zeros(len(neg_u), np.float32)]
    t0 = time.perf_counter()
    log(f"training the {data.name} click model on {len(users):,} examples")
    click = _train_mf(users, items, labels, data.num_users, data.num_items, cfg, "bce", log)

    te = np.flatnonzero(test)
    tneg_u, tneg_i = _sample_negatives(data, te, 1, rng)
    t_users, t_items = np.r_[it.user[te], tneg_u], np.r_[it.item[te], tneg_i]
    t_labels = np.r_[positive[te], np.zeros(len(tneg_u), np.float32)]
    popularity = np.bincount(it.item[tr][positive[tr] > 0], minlength=data.num_items).astype(np.float64)
    model_scores = click.scores(t_users, t_items[:, None])[:, 0]
    report = {"dataset": data.name, "train_examples": int(len(users)), "test_examples": int(len(t_users)),
              "auc": auc(model_scores, t_labels), "popularity_auc": auc(popularity[t_items], t_labels),
              "seconds": 0.0}
    rating = None
    if data.feedback == "rating":
        rating = _train_mf(it.user[tr], it.item[tr], it.label[tr], data.num_users, data.num_items, cfg, "mse", log)
        pred = np.clip(rating.scores(it.user[te], it.item[te][:, None])[:, 0], *data.rating_scale)
        mean_pred = np.full(len(te), it.label[tr].mean())
        report["rmse"] = float(np.sqrt(np.mean((pred - it.label[te]) ** 2)))
        report["mean_rating_rmse"] = float(np.sqrt(np.mean((mean_pred - it.label[te]) ** 2)))
    report["seconds"] = time.perf_counter() - t0
    log("user model: held-out AUC {auc:.4f} (popularity {popularity_auc:.4f})".format(**report)
        + (" | rating RMSE {rmse:.4f} (global mean {mean_rating_rmse:.4f})".format(**report) if rating else ""))
    return UserModel(click=click, rating=rating, report=report)


def cache_dir() -> Path:
    return Path(os.environ.get("LLMREC_CACHE_DIR", Path.home() / ".cache" / "llmrec-rl")) / "user_models"


def load_or_train(data: Dataset, cfg: UserModelConfig, log=print) -> UserModel:
    """The cached model for (data, settings), training it once if absent. A file lock keeps
    processes that start together (rollout actors, the learner) from training it twice."""
    key = hashlib.sha256((data.fingerprint() + json.dumps(asdict(cfg), sort_keys=True)).encode()).hexdigest()[:20]
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / f"{data.name}-{key}"
    with open(f"{base}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if Path(f"{base}.json").exists():
                report = json.loads(Path(f"{base}.json").read_text())
                click = DotProductModel.load(Path(f"{base}.click.npz"))
                rating_path = Path(f"{base}.rating.npz")
                rating = DotProductModel.load(rating_path) if rating_path.exists() else None
                return UserModel(click=click, rating=rating, report=report)
            model = train_user_model(data, cfg, log)
            tmp = f"{base}.tmp-{os.getpid()}"
            model.click.save(Path(f"{tmp}.click.npz"))
            os.replace(f"{tmp}.click.npz", f"{base}.click.npz")
            if model.rating is not None:
                model.rating.save(Path(f"{tmp}.rating.npz"))
                os.replace(f"{tmp}.rating.npz", f"{base}.rating.npz")
            Path(f"{tmp}.json").write_text(json.dumps(model.report, indent=2))
            os.replace(f"{tmp}.json", f"{base}.json")  # written last: its presence means complete
            return model
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def calibration_bins(probability: np.ndarray, labels: np.ndarray, bins: int = 10) -> tuple[list[dict], float]:
    """Reliability of predicted probabilities: per equal-width bin, (mean predicted, observed rate,
    count), and the expected calibration error (the count-weighted mean gap)."""
    probability, labels = np.asarray(probability, np.float64), np.asarray(labels, np.float64)
    index = np.minimum((probability * bins).astype(np.int64), bins - 1)
    table, error = [], 0.0
    for b in range(bins):
        inside = index == b
        if not inside.any():
            continue
        predicted, observed, count = float(probability[inside].mean()), float(labels[inside].mean()), int(inside.sum())
        table.append({"predicted": predicted, "observed": observed, "count": count})
        error += count * abs(predicted - observed)
    return table, error / max(len(labels), 1)
