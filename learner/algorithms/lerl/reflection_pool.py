"""LERL's reflection pool, owned by the learner side: critiques of finished sessions with those
sessions' returns; each plan request carries a few critiques drawn with probability proportional
to exp(temperature x return), so lessons from good sessions are heard more often. Planner replicas
stay stateless (the critiques travel inside the requests), so they scale out freely."""
from __future__ import annotations

from collections import deque

import numpy as np


class ReflectionPool:
    """At most `capacity` (critique, return) pairs; the oldest leaves first (LERL: 200)."""

    def __init__(self, capacity: int = 200, temperature: float = 0.1, seed: int = 0):
        if capacity < 1:
            raise ValueError(f"reflection pool capacity must be >= 1, got {capacity}")
        self.capacity, self.temperature = capacity, temperature
        self.entries: deque[tuple[str, float]] = deque(maxlen=capacity)
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0x2EF1]))

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, critique: str, session_return: float) -> None:
        if critique and np.isfinite(session_return):
            self.entries.append((critique, float(session_return)))

    def sample(self, k: int = 3, seed: int | None = None) -> list[str]:
        """`k` distinct critiques (fewer if the pool is smaller), drawn with p ~ exp(temperature x return);
        with `seed`, from a generator of that seed (evaluation: the same pool, the same draw), else
        from the pool's own (training)."""
        if not self.entries or k < 1:
            return []
        returns = np.array([r for _, r in self.entries])
        logits = self.temperature * (returns - returns.max())  # shifted: exp never overflows
        p = np.exp(logits) / np.exp(logits).sum()
        rng = self.rng if seed is None else np.random.default_rng(np.random.SeedSequence([seed, 0xE7A1]))
        picks = rng.choice(len(self.entries), size=min(k, len(self.entries)), replace=False, p=p)
        return [self.entries[i][0] for i in picks]

    def state(self) -> dict:
        return {"entries": list(self.entries), "rng": self.rng.bit_generator.state}

    def load_state(self, state: dict) -> None:
        self.entries = deque((str(c), float(r)) for c, r in state["entries"])
        self.entries = deque(self.entries, maxlen=self.capacity)
        self.rng.bit_generator.state = state["rng"]
