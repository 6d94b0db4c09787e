"""The one catalog interface every data set is loaded into.

Items, users and logged interactions use dense ids 0..N-1 / 0..U-1 (the original ids are kept in
`item_raw_ids` / `user_raw_ids`). An item has one primary category (`item_category`, what LERL's
patience rule compares per slate position) and possibly several (`item_category_matrix`, what
DORL's window rule counts).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

FEEDBACK_KINDS = ("click", "rating")


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file and what was expected."""


@dataclass
class Interactions:
    """Logged user-item interactions, one row each, in time order within a user."""

    user: np.ndarray       # [M] int32 dense user ids
    item: np.ndarray       # [M] int32 dense item ids
    label: np.ndarray      # [M] float32: click (0/1) or rating (rating_scale)
    timestamp: np.ndarray  # [M] int64 seconds (or any monotone time unit of the source)

    def __len__(self) -> int:
        return len(self.user)


@dataclass
class Dataset:
    """A recommendation data set: catalog, users and logs."""

    name: str
    category_names: list[str]              # [C]
    item_category: np.ndarray              # [N] int32 primary category of each item
    item_category_matrix: np.ndarray       # [N, C] bool: every category of each item (primary included)
    item_titles: list[str]                 # [N] item text (titles, captions); may be empty strings
    item_raw_ids: np.ndarray               # [N] the source's item ids
    user_raw_ids: np.ndarray               # [U] the source's user ids
    interactions: Interactions
    feedback: str = "click"                # "click": label in {0, 1}; "rating": label in rating_scale
    rating_scale: tuple[float, float] = (1.0, 5.0)
    extra: dict = field(default_factory=dict)  # source-specific arrays (e.g. synthetic ground truth)
    positive_threshold: float | None = None  # a label at or above it is positive; None: see positive()
    # Typed columns per user (dense user order) where the data set has them (age, gender,
    # occupation, ...): for personas, prompts and user groups; never required.
    user_features: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""  # where the files came from ("embedded: PATH", "directory: PATH", "generated")

    @property
    def num_items(self) -> int:
        return len(self.item_category)

    @property
    def num_users(self) -> int:
        return len(self.user_raw_ids)

    @property
    def num_categories(self) -> int:
        return len(self.category_names)

    def positive(self) -> np.ndarray:
        """[M] bool: the interactions that count as positive feedback: at or above
        `positive_threshold` when set, else a click, or a rating of at least 4 of 5."""
        if self.positive_threshold is not None:
            return self.interactions.label >= self.positive_threshold
        if self.feedback == "click":
            return self.interactions.label > 0.5
        low, high = self.rating_scale
        return self.interactions.label >= low + 0.75 * (high - low)

    def fingerprint(self) -> str:
        """A hash of everything a model trained on this data set depends on (for caches)."""
        h = hashlib.sha256(self.name.encode())
        for arr in (self.item_category, self.item_category_matrix, self.interactions.user,
                    self.interactions.item, self.interactions.label, self.interactions.timestamp):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(f"{self.feedback}|{self.rating_scale}|users={self.num_users}|items={self.num_items}".encode())
        if self.positive_threshold is not None:  # only when set: fingerprints of the other data sets stay
            h.update(f"|positive>={self.positive_threshold}".encode())
        return h.hexdigest()[:16]

    def validate(self) -> "Dataset":
        """Check internal consistency; raises DataError saying what is wrong. Returns self."""
        n, c = self.num_items, self.num_categories
        if n == 0 or c == 0 or self.num_users == 0:
            raise DataError(f"data set {self.name!r} is empty: {n} items, {c} categories, {self.num_users} users")
        if self.item_category_matrix.shape != (n, c) or self.item_category_matrix.dtype != bool:
            raise DataError(f"{self.name}: item_category_matrix must be bool [{n}, {c}], got "
                            f"{self.item_category_matrix.dtype} {self.item_category_matrix.shape}")
        if self.item_category.min() < 0 or self.item_category.max() >= c:
            raise DataError(f"{self.name}: item_category ids must be in [0, {c})")
        if not self.item_category_matrix[np.arange(n), self.item_category].all():
            raise DataError(f"{self.name}: an item's primary category is missing from its category set")
        if len(self.item_titles) != n or len(self.item_raw_ids) != n:
            raise DataError(f"{self.name}: {len(self.item_titles)} titles / {len(self.item_raw_ids)} raw ids "
                            f"for {n} items")
        it = self.interactions
        m = len(it)
        if not (len(it.item) == len(it.label) == len(it.timestamp) == m):
            raise DataError(f"{self.name}: interaction columns differ in length")
        if m and (it.user.min() < 0 or it.user.max() >= self.num_users or it.item.min() < 0 or it.item.max() >= n):
            raise DataError(f"{self.name}: interaction user/item ids out of range")
        if self.feedback not in FEEDBACK_KINDS:
            raise DataError(f"{self.name}: feedback must be one of {FEEDBACK_KINDS}, got {self.feedback!r}")
        if m and not np.isfinite(it.label).all():
            raise DataError(f"{self.name}: interaction labels contain NaN or infinity")
        for key, column in self.user_features.items():
            if len(column) != self.num_users:
                raise DataError(f"{self.name}: user feature {key!r} has {len(column)} values for {self.num_users} users")
        return self
