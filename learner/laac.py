"""LAAC (arXiv 2507.21274): the LLM as a reference policy for an offline actor-critic.

Being built (issue 7); `python -m learner.main --algorithm laac` dispatches here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LAACConfig:
    """LAAC's options (field names start with laac_: flags are flat across sections)."""

    laac_alpha: float = 1.0
    """Weight of the grounding loss in the critics' objective (LAAC: 1.0)."""
    laac_beta: float = 1.0
    """Weight of the TD loss in the critics' objective (LAAC: 1.0)."""

    def validate(self) -> None:
        if self.laac_alpha < 0 or self.laac_beta < 0:
            raise ValueError("laac_alpha and laac_beta must be >= 0")


def train_laac(cfg) -> dict:
    raise NotImplementedError("LAAC is being built (issue 7)")
