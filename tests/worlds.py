"""Helpers the tests share for building things from a world config."""
from __future__ import annotations

from policy.networks import PolicySpec
from rollout.batch_schema import BatchDims, batch_dims
from rollout.world import World, WorldConfig, policy_spec


def learner_spec(cfg: WorldConfig) -> tuple[PolicySpec, BatchDims]:
    """(network spec, batch dims) of the world `cfg` builds: a Learner's first two arguments."""
    world = World.build(cfg, log=lambda line: None)
    return policy_spec(cfg, world), batch_dims(cfg, world)
