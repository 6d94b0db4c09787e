"""IL-Rec (arXiv 2510.13229): LLM demonstrations turned into a reward model by inverse RL, then RL.

Being built (issue 7); `python -m learner.main --algorithm ilrec` dispatches here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ILRecConfig:
    """IL-Rec's options (field names start with ilrec_: flags are flat across sections)."""

    ilrec_demo_sessions: int = 256
    """LLM demonstration sessions generated in the simulated world (through Propose)."""

    def validate(self) -> None:
        if self.ilrec_demo_sessions < 1:
            raise ValueError("ilrec_demo_sessions must be >= 1")


def train_ilrec(cfg) -> dict:
    raise NotImplementedError("IL-Rec is being built (issue 7)")
