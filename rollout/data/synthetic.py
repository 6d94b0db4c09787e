"""The synthetic world: a seeded catalog whose categories are clusters in a latent space, users
who lean towards a few categories, and logs sampled from that ground truth (zero downloads)."""
from __future__ import annotations

import numpy as np

from rollout.data.dataset import Dataset, Interactions

CATEGORY_WORDS = [
    "Action", "Comedy", "Drama", "Documentary", "Music", "Sports", "Cooking", "Travel", "Science",
    "Gaming", "Fashion", "News", "Animals", "Comics", "Horror", "Romance", "History", "Tech",
    "Fitness", "Kids", "Art", "Finance", "Nature", "Cars",
]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-8)


def synthetic_dataset(num_items: int = 1000, num_categories: int = 20, num_users: int = 5000,
                      latent_dim: int = 16, favourite_categories: int = 3, seed: int = 0,
                      logs_per_user: int = 20, click_scale: float = 4.0, click_bias: float = -1.0) -> Dataset:
    """Build the seeded synthetic data set.

    Ground truth (in `extra`): unit item vectors around their category's centre, unit user vectors
    mixing their favourite categories' centres, an item popularity bias; a user clicks item i with
    probability sigmoid(click_scale * <u, v_i> + click_bias + item_bias_i). Logs: `logs_per_user`
    uniformly random items per user, with clicks drawn from that probability.
    """
    for name, value in (("num_items", num_items), ("num_categories", num_categories), ("num_users", num_users),
                        ("latent_dim", latent_dim), ("favourite_categories", favourite_categories)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if num_categories > num_items:
        raise ValueError(f"num_categories={num_categories} exceeds num_items={num_items}")
    if favourite_categories > num_categories:
        raise ValueError(f"favourite_categories={favourite_categories} exceeds num_categories={num_categories}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xCA7A]))
    d, n, c = latent_dim, num_items, num_categories
    centers = _unit(rng.standard_normal((c, d)))
    item_category = rng.permutation(np.arange(n) % c).astype(np.int32)  # every category gets items
    item_latent = _unit(centers[item_category] + 1.2 * rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)
    item_bias = (0.5 * rng.standard_normal(n)).astype(np.float32)
    favourites = np.argsort(rng.random((num_users, c)), axis=1)[:, :favourite_categories]
    weights = rng.dirichlet(np.ones(favourite_categories), size=num_users)
    user_latent = _unit(np.einsum("uf,ufd->ud", weights, centers[favourites])
                        + 0.3 * rng.standard_normal((num_users, d)) / np.sqrt(d)).astype(np.float32)
    names = [CATEGORY_WORDS[i] if i < len(CATEGORY_WORDS) else f"Topic {i}" for i in range(c)]

    log_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1065]))
    users = np.repeat(np.arange(num_users, dtype=np.int32), logs_per_user)
    items = log_rng.integers(0, n, len(users)).astype(np.int32)
    logits = click_scale * np.einsum("md,md->m", user_latent[users], item_latent[items]) + click_bias + item_bias[items]
    clicks = (log_rng.random(len(users)) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    timestamps = np.tile(np.arange(logs_per_user, dtype=np.int64), num_users)

    matrix = np.zeros((n, c), bool)
    matrix[np.arange(n), item_category] = True
    return Dataset(
        name="synthetic", source="generated", category_names=names, item_category=item_category, item_category_matrix=matrix,
        item_titles=[f"{names[cat]} video #{i}" for i, cat in enumerate(item_category)],
        item_raw_ids=np.arange(n), user_raw_ids=np.arange(num_users),
        interactions=Interactions(users, items, clicks, timestamps), feedback="click",
        extra={"item_latent": item_latent, "user_latent": user_latent, "item_bias": item_bias,
               "click_scale": click_scale, "click_bias": click_bias},
    ).validate()
