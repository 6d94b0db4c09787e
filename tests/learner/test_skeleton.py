"""The run skeleton with a toy algorithm (no Ray, no planner): what every algorithm gets from it."""
from __future__ import annotations

import json

import pytest
import torch

from learner.config import TrainConfig
from learner.runtime import UsageError
from learner.skeleton import Algorithm, run


class Counting(Algorithm):
    """Counts iterations; logs a row every `every` of them; fails at `fail_at` when set."""

    name = "counting"

    def __init__(self, cfg, every=1, fail_at=0):
        super().__init__(cfg)
        self.every, self.fail_at, self.calls, self.closed, self.since = every, fail_at, [], False, 0

    def needs_ray(self) -> bool:
        return False

    def iterate(self, iteration: int):
        if iteration == self.fail_at:
            raise RuntimeError("boom")
        self.calls.append(iteration)
        self.since += 1
        return self.pending_row(iteration) if iteration % self.every == 0 else None

    def pending_row(self, iteration: int):
        row, self.since = {"iteration": iteration, "updates": self.since}, 0
        return row

    def state(self, iteration: int) -> dict:
        return {"calls": list(self.calls)}

    def evaluate(self, run_) -> dict:
        return {"trained": {"episodes": 1, **{m: float(len(self.calls)) for m in (
            "Tint", "Rcum", "Rsin", "coverage", "diversity", "category_entropy", "novelty")}}}

    def close(self) -> None:
        self.closed = True


def config(tmp_path, **run) -> TrainConfig:
    cfg = TrainConfig()
    cfg.run.run_dir, cfg.run.time_budget_s, cfg.run.checkpoint_every = str(tmp_path / "run"), 0.0, 2
    cfg.run.iterations = 5
    for key, value in run.items():
        setattr(cfg.run, key, value)
    return cfg


def test_rows_checkpoints_evaluation_and_close(tmp_path):
    algo = Counting(config(tmp_path), every=2)
    results = run(algo)
    run_dir = tmp_path / "run"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # Rows every 2 iterations, and the last (5) flushed with what accumulated since row 4.
    assert [(r["iteration"], r["updates"]) for r in rows] == [(2, 2), (4, 2), (5, 1)]
    assert algo.calls == [1, 2, 3, 4, 5] and algo.closed
    final = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=False)
    assert final["iteration"] == 5 and final["calls"] == [1, 2, 3, 4, 5]
    assert torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)["iteration"] == 4
    assert json.loads((run_dir / "eval.json").read_text()) == results and results["trained"]["Rcum"] == 5.0
    assert json.loads((run_dir / "config.json").read_text())["run"]["iterations"] == 5


def test_the_time_budget_stops_after_the_iteration_under_way(tmp_path):
    algo = Counting(config(tmp_path, time_budget_s=1e-9), every=10)
    run(algo)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert algo.calls == [1] and rows == [{"iteration": 1, "updates": 1}]  # the pending row is not lost


def test_a_failing_iteration_still_closes_the_algorithm(tmp_path):
    algo = Counting(config(tmp_path), fail_at=3)
    with pytest.raises(RuntimeError, match="boom"):
        run(algo)
    assert algo.closed and algo.calls == [1, 2]


def test_resume_is_refused_where_the_algorithm_cannot(tmp_path):
    algo = Counting(config(tmp_path))
    with pytest.raises(UsageError, match="--resume is not supported with --algorithm counting"):
        run(algo, {"iteration": 2, "config": algo.cfg.to_dict()})
    assert not (tmp_path / "run").exists()  # refused before anything was made
