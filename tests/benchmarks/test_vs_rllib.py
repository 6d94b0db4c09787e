"""benchmarks/vs_rllib.py's floor: one world for every part, the best of its windows, and the
in-process planner row that tells the planner's own work from the service's transport."""
from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

import benchmarks.vs_rllib as vs_rllib  # noqa: E402


def test_the_floor_runs_on_the_world_it_is_given_and_planning_adds_work(monkeypatch):
    built = []
    from rollout import actor   # floor_rate imports the worker class when it runs

    class Recording(actor.RolloutWorker):
        def __init__(self, world, *args, **kwargs):
            built.append((world.dataset, args[1].use_planner, args[2]))
            super().__init__(world, *args, **kwargs)

    monkeypatch.setattr(actor, "RolloutWorker", Recording)
    plain = vs_rllib.floor_rate("synthetic", users=8, seconds=0.6, seed=0)
    planned = vs_rllib.floor_rate("synthetic", users=8, seconds=0.6, seed=0, in_process_planner=True)
    assert built == [("synthetic", False, None), ("synthetic", True, "in-process")]
    assert plain > 0 and planned > 0


def test_every_part_is_told_the_world(monkeypatch):
    seen = {}
    monkeypatch.setattr(vs_rllib, "floor_rate", lambda dataset, *a, **k: seen.setdefault("floor", dataset) and 100.0)
    monkeypatch.setattr(vs_rllib, "rollout_rate", lambda args: seen.setdefault("rollout", args.dataset) and
                        {"env_steps_per_s": 50.0})
    monkeypatch.setattr(vs_rllib, "run_ours", lambda args: seen.setdefault("ours", args.dataset) and
                        {"env_steps_per_s": 40.0, "env_steps": 10, "return_last": 1.0, "length_last": 2.0,
                         "time_shares": {}})
    monkeypatch.setattr(vs_rllib, "our_param_count", lambda dataset: seen.setdefault("params", dataset) and 7)
    monkeypatch.setattr(vs_rllib, "run_rllib", lambda args, steps, params: seen.setdefault("rllib", args.dataset) and
                        {"env_steps_per_s": 20.0, "env_steps": 10, "return_last": 0.5, "length_last": 1.0,
                         "params": 7})
    written = {}
    monkeypatch.setattr(vs_rllib, "write_result", lambda name, payload: written.update(payload) or Path("x.json"))
    assert vs_rllib.main(["--dataset", "ml-100k"]) == 0
    assert set(seen.values()) == {"ml-100k"} and len(seen) == 5
    assert written["dataset"] == "ml-100k" and written["ratios"]["ours_rollout_over_floor"]["value"] == 0.5
