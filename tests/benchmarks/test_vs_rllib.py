"""benchmarks/vs_rllib.py's floor: one world for every part, the parts timed in turns and compared
round by round, and the in-process planner row that tells the planner's own work from the
service's transport."""
from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

import benchmarks.vs_rllib as vs_rllib  # noqa: E402


def test_the_floor_runs_on_the_world_it_is_given_and_planning_adds_work(monkeypatch):
    built = []
    from rollout import actor   # floor_worker imports the worker class when it runs

    class Recording(actor.RolloutWorker):
        def __init__(self, world, *args, **kwargs):
            built.append((world.dataset, args[1].use_planner, args[2]))
            super().__init__(world, *args, **kwargs)

    monkeypatch.setattr(actor, "RolloutWorker", Recording)
    plain = vs_rllib.worker_rate(vs_rllib.floor_worker("synthetic", users=8, seed=0), 0.3)
    planned = vs_rllib.worker_rate(vs_rllib.floor_worker("synthetic", users=8, seed=0, in_process_planner=True), 0.3)
    assert built == [("synthetic", False, None), ("synthetic", True, "in-process")]
    assert plain > 0 and planned > 0


class FakePath:
    """Our rollout path's rates, one per window, with no Ray."""

    def __init__(self, args, rates=(80.0, 45.0, 70.0)):
        self.rates, self.batches, self.fallbacks, self.closed = list(rates), 3, 0, False
        self.dataset = args.dataset

    def rate(self, seconds: float) -> float:
        return self.rates.pop(0)

    def close(self) -> None:
        self.closed = True


def test_the_parts_are_timed_in_turns_and_a_ratio_is_the_median_of_the_rounds(monkeypatch):
    """A drift that halves every rate in round 2 leaves the ratio alone: 0.8, 0.9, 0.7 give 0.8,
    where the ratio of the medians would say 70 / 100."""
    floors = iter([100.0, 90.0, 50.0, 40.0, 100.0, 90.0])   # floor, in-process, ... per round
    monkeypatch.setattr(vs_rllib, "floor_worker", lambda *a, **k: object())
    monkeypatch.setattr(vs_rllib, "worker_rate", lambda worker, seconds: next(floors))
    paths = []
    monkeypatch.setattr(vs_rllib, "RolloutPath", lambda args: paths.append(FakePath(args)) or paths[-1])
    args = vs_rllib.argparse.Namespace(dataset="synthetic", users=8, seed=0, floor_seconds=0.3, actors=2)
    rates = vs_rllib.measure_rates(args)
    assert abs(rates["rollout_over_floor"] - 0.8) < 1e-12 and abs(rates["in_process_over_floor"] - 0.9) < 1e-12
    assert rates["floor"] == 100.0 and len(rates["rounds"]) == vs_rllib.WINDOWS and paths[0].closed


def test_every_part_is_told_the_world(monkeypatch):
    seen = {}

    def measure(args):
        seen["rates"] = args.dataset
        return {"rounds": [], "floor": 100.0, "in_process": 90.0, "rollout": {"env_steps_per_s": 50.0},
                "rollout_over_floor": 0.5, "in_process_over_floor": 0.9}

    monkeypatch.setattr(vs_rllib, "measure_rates", measure)
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
    assert set(seen.values()) == {"ml-100k"} and len(seen) == 4
    assert written["dataset"] == "ml-100k" and written["ratios"]["ours_rollout_over_floor"]["value"] == 0.5
