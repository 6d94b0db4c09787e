"""The conventions every metric shares (see the package docstring), as validated array helpers."""
from __future__ import annotations

import numpy as np

def _ids(x, name: str, num_items: int | None = None) -> np.ndarray:
    """``x`` as an int64 array of item ids (``-1`` = padding), validated."""
    a = np.asarray(x)
    if a.size == 0:
        return a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must hold integer item ids, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if (a < -1).any():
        raise ValueError(f"{name} has negative ids other than the -1 padding")
    if num_items is not None and (a >= num_items).any():
        raise ValueError(f"{name} has ids >= num_items={num_items}")
    return a


def _check_k(k: int) -> int:
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def _ranked_topk(ranked, k: int, num_items: int | None = None) -> np.ndarray:
    """The first ``min(k, L)`` columns of a ``[U, L]`` ranked-id array."""
    k = _check_k(k)
    r = _ids(ranked, "ranked", num_items)
    if r.ndim != 2:
        raise ValueError(f"ranked must be [U, L], got shape {r.shape}")
    return r[:, :k]


def _first_valid(topk: np.ndarray) -> np.ndarray:
    """[U, k] bool: entry is a real id (not -1) and not a repeat of an earlier entry in its row."""
    k = topk.shape[1]
    earlier = np.tril(np.ones((k, k), bool), -1)          # [i, j]: j comes before i
    repeat = ((topk[:, :, None] == topk[:, None, :]) & earlier).any(axis=2)
    return (topk >= 0) & ~repeat


def _user_matrix(x, name: str, users: int) -> np.ndarray:
    m = np.asarray(x)
    if m.ndim != 2 or m.shape[0] != users:
        raise ValueError(f"{name} must be [U={users}, N], got shape {m.shape}")
    return m


def _gather(matrix: np.ndarray, topk: np.ndarray) -> np.ndarray:
    """``matrix[u, topk[u, j]]`` for every (u, j); padding positions read column 0 (mask them)."""
    if topk.size and topk.max() >= matrix.shape[1]:
        raise ValueError(f"ranked has ids >= N={matrix.shape[1]}")
    return matrix[np.arange(topk.shape[0])[:, None], np.maximum(topk, 0)]


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")
