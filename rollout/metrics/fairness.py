"""Fairness: item-side exposure between popularity groups, and user-side gaps between user groups.

Pure numpy. Item side (the survey's MGU and DGU, as the issue that asked for them defines them):
items are split into `groups` popularity groups of (nearly) equal size, most popular first; a
group's exposure share is its share of every recommended item (repeats counted); its gap is the
absolute difference between that share and its share of the catalog. MGU is the mean gap over
groups, DGU the largest. 0 = every group exposed in proportion to its size.

User side: a per-user outcome (return, session length) is averaged within each user group (by the
data set's user features: gender, age band), and the gap is the largest group mean less the
smallest, over groups with at least one user.
"""
from __future__ import annotations

import numpy as np

from rollout.metrics.core import _ids

AGE_BANDS = (18, 25, 35, 45, 56)
"""Lower edges of MovieLens' age bands after the youngest: under 18, 18-24, 25-34, 35-44, 45-55, 56+
(the bands MovieLens-1M publishes; MovieLens-100K gives the age itself)."""


def popularity_groups(item_popularity, groups: int = 5) -> np.ndarray:
    """[N] each item's popularity group, 0 = the most popular: the catalog sorted by count (ties:
    lower id first) and cut into `groups` runs of nearly equal length (sizes differ by at most 1)."""
    counts = np.asarray(item_popularity, np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"item_popularity must be a non-empty [N], got shape {counts.shape}")
    if not 1 <= groups <= counts.size:
        raise ValueError(f"groups must be in [1, N={counts.size}], got {groups}")
    order = np.argsort(-counts, kind="stable")
    group = np.empty(counts.size, np.int64)
    group[order] = np.arange(counts.size) * groups // counts.size
    return group


def exposure_fairness(slates, item_group, groups: int | None = None) -> dict[str, float]:
    """MGU and DGU of the exposure in `slates` (int [..., K], -1 padding ignored, repeats counted)
    between the item groups `item_group` ([N] ints in [0, G)).

        share_g   = |recommended entries in g| / |recommended entries|
        catalog_g = |items in g| / N
        MGU = mean_g |share_g - catalog_g|,   DGU = max_g |share_g - catalog_g|

    Also `head_share`: share_0, the exposure of group 0 (the most popular, with `popularity_groups`).
    A group with no items has catalog_g = 0 and counts like any other. Empty input: nan."""
    group = np.asarray(item_group, np.int64)
    g = int(groups if groups is not None else group.max(initial=-1) + 1)
    if group.ndim != 1 or (group.size and (group.min() < 0 or group.max() >= g)):
        raise ValueError(f"item_group must be [N] with values in [0, {g})")
    ids = _ids(slates, "slates", group.size).ravel()
    ids = ids[ids >= 0]
    if ids.size == 0 or g == 0:
        return {"MGU": float("nan"), "DGU": float("nan"), "head_share": float("nan")}
    share = np.bincount(group[ids], minlength=g) / ids.size
    catalog = np.bincount(group, minlength=g) / group.size
    gap = np.abs(share - catalog)
    return {"MGU": float(gap.mean()), "DGU": float(gap.max()), "head_share": float(share[0])}


def user_group_gap(values, user_group, min_size: int = 1) -> dict:
    """The gap in a per-user outcome between user groups.

    `values`: float [U], one outcome per evaluated user (e.g. return); `user_group`: [U] group labels
    (any hashable numpy values; None or "" = unknown, left out). Returns {"means": {group: mean},
    "sizes": {group: users}, "gap": max mean - min mean} where the gap is over the groups with at
    least `min_size` users (a mean over a handful of users is noise); with fewer than two such
    groups the gap is nan (there is nothing to compare)."""
    v = np.asarray(values, np.float64)
    labels = np.asarray(user_group, object)
    if v.shape != labels.shape or v.ndim != 1:
        raise ValueError(f"values {v.shape} and user_group {labels.shape} must both be [U]")
    known = np.array([label is not None and label == label and str(label) != "" for label in labels], bool)
    means, sizes = {}, {}
    for label in sorted({str(x) for x in labels[known]}):
        members = known & (labels.astype(str) == label)
        means[label], sizes[label] = float(v[members].mean()), int(members.sum())
    counted = [means[g] for g in means if sizes[g] >= min_size]
    gap = max(counted) - min(counted) if len(counted) >= 2 else float("nan")
    return {"means": means, "sizes": sizes, "gap": float(gap)}


def age_band(age) -> np.ndarray:
    """[U] MovieLens age bands ("<18", "18-24", ..., "56+") of ages in years (nan = unknown: None)."""
    a = np.asarray(age, np.float64)
    names = ["<18"] + [f"{lo}-{hi - 1}" for lo, hi in zip(AGE_BANDS, AGE_BANDS[1:])] + [f"{AGE_BANDS[-1]}+"]
    band = np.searchsorted(np.asarray(AGE_BANDS, np.float64), a, side="right")
    return np.array([names[b] if np.isfinite(x) else None for b, x in zip(band, a)], object)


def user_groupings(user_features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The user groupings a data set supports, each [num_users] labels: gender and age band where
    the features have them (MovieLens), else none (the synthetic world, KuaiRand: their features are
    activity levels, not demographic groups; `user_active_degree` is used where present)."""
    out = {}
    if "gender" in user_features:
        out["gender"] = np.asarray(user_features["gender"], object)
    if "age" in user_features:
        out["age"] = age_band(user_features["age"])
    if "user_active_degree" in user_features:
        out["activity"] = np.asarray(user_features["user_active_degree"], object)
    return out


def user_fairness(user_ids, lengths, returns, groupings: dict[str, np.ndarray], min_size: int = 1) -> dict[str, dict]:
    """Per grouping (e.g. gender, age): the gap in return (`Rcum_gap`) and in length (`Tint_gap`)
    between its groups of at least `min_size` users, with every group's means and sizes, over the
    evaluated users `user_ids` ([U])."""
    users = np.asarray(user_ids, np.int64)
    out = {}
    for name, labels in groupings.items():
        of_user = np.asarray(labels, object)[users]
        rcum, tint = user_group_gap(returns, of_user, min_size), user_group_gap(lengths, of_user, min_size)
        out[name] = {"Rcum_gap": rcum["gap"], "Tint_gap": tint["gap"], "Rcum": rcum["means"], "Tint": tint["means"],
                     "users": rcum["sizes"]}
    return out
