"""The rollout worker's seeding: a fresh worker's episodes are fixed by the run seed; a worker
that Ray re-created after a crash draws new ones instead of replaying its first batches."""
from __future__ import annotations

from rollout.world import WorldConfig

CFG = WorldConfig(num_items=120, num_categories=8, num_users=50, history_len=10)


def test_a_worker_restarted_by_ray_does_not_replay_its_first_episodes(monkeypatch) -> None:
    import rollout.actor as actor_module
    from policy.networks import PolicyConfig
    from rollout.actor import RolloutConfig, RolloutWorker

    def first_batch(restarted: bool):
        monkeypatch.setattr(actor_module, "_restarted_by_ray", lambda: restarted)
        worker = RolloutWorker(CFG, PolicyConfig(), RolloutConfig(use_planner=False, users_per_actor=16), None, 0, 0)
        batch, _ = worker.collect()
        return batch.column("reward").to_pylist(), batch.column("user_id").to_pylist()

    assert first_batch(False) == first_batch(False)  # the seed fixes a fresh worker's episodes
    assert first_batch(True) != first_batch(False)    # a restarted one draws new ones


def test_rollout_actors_run_niced_and_the_driver_keeps_its_priority(local_ray) -> None:
    """Rollout actors yield the CPU to the learner where they share cores (--rollout-nice); a
    worker built in the driver (serial mode, evaluation) never renices the driver."""
    import os

    import ray

    from policy.networks import PolicyConfig
    from rollout.actor import RolloutConfig, RolloutWorker, make_rollout_actor_class

    before = os.nice(0)
    RolloutWorker(CFG, PolicyConfig(), RolloutConfig(use_planner=False, users_per_actor=4, rollout_nice=7), None, 0, 0)
    assert os.nice(0) == before
    cls = make_rollout_actor_class(0)
    niced = cls.remote(CFG, PolicyConfig(), RolloutConfig(use_planner=False, users_per_actor=4, rollout_nice=7), None, 0, 0)
    plain = cls.remote(CFG, PolicyConfig(), RolloutConfig(use_planner=False, users_per_actor=4, rollout_nice=0), None, 1, 0)
    read_nice = lambda self: os.nice(0)  # noqa: E731 - runs inside the actor
    base = ray.get(plain.__ray_call__.remote(read_nice))
    assert ray.get(niced.__ray_call__.remote(read_nice)) == min(base + 7, 19)


def test_rollout_nice_outside_0_to_19_is_refused() -> None:
    import pytest

    from rollout.actor import RolloutConfig

    for bad in (-1, 20):
        with pytest.raises(ValueError, match="rollout_nice must be in"):
            RolloutConfig(rollout_nice=bad).validate()
