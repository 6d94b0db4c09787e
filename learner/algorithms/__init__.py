"""The algorithms, one folder each, and the registry `--algorithm` picks from.

Each folder holds an `Algorithm` subclass (learner.skeleton) and everything only it uses; the run
skeleton, PPO, the rollout pool and the evaluation are the learner core's. Adding an algorithm is
a folder and a line here (plus its options section in learner.config, when it has options).
"""
from __future__ import annotations

from learner.algorithms.ilrec.algorithm import ILRec
from learner.algorithms.laac.algorithm import LAAC
from learner.algorithms.lerl.algorithm import LERL
from learner.skeleton import Algorithm

ALGORITHMS: dict[str, type[Algorithm]] = {
    "lerl": LERL,    # the planner's category sets mask a PPO policy's items
    "ppo": LERL,     # the same loop with no planner (LERL's flat baseline; TrainConfig.validate turns it off)
    "laac": LAAC,    # offline actor-critic with the LLM as reference policy
    "ilrec": ILRec,  # inverse RL on LLM demonstrations, then RL
}


def make_algorithm(cfg) -> Algorithm:
    """The algorithm `cfg.run.algorithm` names, set up with `cfg` (a validated TrainConfig)."""
    return ALGORITHMS[cfg.run.algorithm](cfg)
