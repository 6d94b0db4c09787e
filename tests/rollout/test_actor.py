"""The rollout worker's seeding: a fresh worker's episodes are fixed by the run seed; a worker
that Ray re-created after a crash draws new ones instead of replaying its first batches."""
from __future__ import annotations

from rollout.world import WorldConfig

CFG = WorldConfig(dataset="synthetic", num_items=120, num_categories=8, num_users=50, history_len=10)


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

