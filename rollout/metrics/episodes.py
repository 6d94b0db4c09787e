"""Process metrics: what finished episodes and learning curves measure."""
from __future__ import annotations

import numpy as np

def episode_metrics(lengths: np.ndarray, returns: np.ndarray) -> dict[str, float]:
    """Summarise finished episodes.

    - ``Tint``: interaction length, the mean number of steps before the user left.
    - ``Rcum``: cumulative reward, the mean sum of per-step rewards over an episode.
    - ``Rsin``: single-step reward, Rcum / Tint per episode, averaged over episodes.
    - ``episodes``: how many episodes these means are over.
    """
    lengths = np.asarray(lengths, np.float64)
    returns = np.asarray(returns, np.float64)
    if lengths.shape != returns.shape:
        raise ValueError(f"lengths {lengths.shape} and returns {returns.shape} differ in shape")
    if lengths.size == 0:
        return {"Tint": float("nan"), "Rcum": float("nan"), "Rsin": float("nan"), "episodes": 0}
    return {
        "Tint": float(lengths.mean()),
        "Rcum": float(returns.mean()),
        "Rsin": float((returns / np.maximum(lengths, 1)).mean()),
        "episodes": int(lengths.size),
    }

def convergence_steps(env_steps, returns, share: float = 0.9, smooth: int = 5) -> float:
    """Convergence speed: the environment steps at which a learning curve first reaches ``share``
    (90 %) of its final return.

    ``env_steps``: [T] increasing env-step counts of the curve's points; ``returns``: [T] the
    return (Rcum) at each. The curve is smoothed by a trailing mean over ``smooth`` points (noise
    would otherwise cross the line early), ``final`` is the mean of the last ``smooth`` raw points,
    and the answer is the first ``env_steps[t]`` whose smoothed return is >= share x final. A curve
    whose final return is not positive (the share of it means nothing), or with fewer than 2
    points: nan."""
    steps = np.asarray(env_steps, np.float64)
    r = np.asarray(returns, np.float64)
    if steps.shape != r.shape or r.ndim != 1:
        raise ValueError(f"env_steps {steps.shape} and returns {r.shape} must both be [T]")
    if not 0.0 < share <= 1.0 or smooth < 1:
        raise ValueError(f"share must be in (0, 1] and smooth >= 1, got {share}, {smooth}")
    if r.size < 2:
        return float("nan")
    final = r[-smooth:].mean()
    if not final > 0:
        return float("nan")
    cum = np.concatenate([[0.0], np.cumsum(r)])
    end = np.arange(1, r.size + 1)                       # point t's trailing window is cum[end - width:end]
    width = np.minimum(end, smooth)
    smoothed = (cum[end] - cum[end - width]) / width
    reached = np.flatnonzero(smoothed >= share * final)
    return float(steps[reached[0]]) if reached.size else float("nan")


def late_rise(returns, last: float = 0.1, earlier: tuple[float, float] = (0.5, 0.7), min_points: int = 10) -> float:
    """How much a learning curve still rose at its end: the mean return over its ``last`` share of
    points (10 %) over the mean over the ``earlier`` span of them (50-70 %), minus 1. About 0: a
    plateau; 0.07: the end is 7 % above the middle (a longer budget would still pay). The spans are
    of points (updates), not env steps. ``returns``: [T] the return (Rcum) at each point; nan with
    fewer than ``min_points`` points or a non-positive earlier mean (a share of it means nothing)."""
    r = np.asarray(returns, np.float64)
    if r.ndim != 1:
        raise ValueError(f"returns must be [T], got shape {r.shape}")
    if not 0.0 < last < 1.0 or not 0.0 <= earlier[0] < earlier[1] <= 1.0 - last:
        raise ValueError(f"need 0 < last < 1 and 0 <= earlier[0] < earlier[1] <= 1 - last, got {last}, {earlier}")
    if r.size < max(min_points, 2):
        return float("nan")
    n = r.size
    tail = r[n - max(1, int(round(last * n))):]
    middle = r[int(earlier[0] * n):max(int(earlier[0] * n) + 1, int(earlier[1] * n))]
    base = middle.mean()
    return float(tail.mean() / base - 1.0) if base > 0 else float("nan")
