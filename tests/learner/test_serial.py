"""Serial mode (`--serial`): the same loop in one process without Ray gives the Ray run's metrics.

With one collect in flight (--max-batches-in-flight 1) the Ray pool hands batches over in a fixed
order (each actor's collect is submitted when the previous one is handed in), so both runs see the
same users, weights and dice; the learning metrics must then be equal. Timings differ, and so do
the planner service's request counters (with Ray the next collect is already asking the planner
when the counters are read; the serial pool runs a collect only when its batch is asked for)."""
from __future__ import annotations

import json

import pytest

from learner.main import cli

SMALL = ["--planner-backend", "heuristic", "--seed", "3", "--iterations", "3", "--num-rollout-actors", "2",
         "--users-per-actor", "8", "--dataset", "synthetic", "--num-items", "200", "--num-users", "300", "--max-batches-in-flight", "1",
         "--eval-users", "8", "--checkpoint-every", "0"]
NOT_COMPARED = {"env_steps_per_s", "planner_latency_ms", "planner_wait_share", "planner_call_seconds", "seconds",
                "update_seconds", "update_compute_seconds",
                "publish_seconds", "rollout_seconds",
                "wall_seconds", "batch_ids", "batches_in_flight", "first_plans_seconds"}


def _rows(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in NOT_COMPARED and not k.startswith("planner_rpcs")
             and not k.endswith("_share")}   # where the time goes: timings
            for row in rows]


@pytest.mark.ray
def test_serial_run_gives_the_ray_runs_metrics(tmp_path, monkeypatch):
    import learner.skeleton as skeleton

    started = []
    real_init = skeleton.init_ray
    monkeypatch.setattr(skeleton, "init_ray", lambda cfg: started.append(cfg.run.serial) or real_init(cfg))
    assert cli([*SMALL, "--serial", "true", "--run-dir", str(tmp_path / "serial")]) == 0
    assert started == []  # a serial run never starts Ray
    assert cli([*SMALL, "--run-dir", str(tmp_path / "ray")]) == 0
    assert started == [False]

    serial, ray_rows = _rows(tmp_path / "serial"), _rows(tmp_path / "ray")
    assert [r["iteration"] for r in serial] == [1, 2, 3]
    assert serial == ray_rows
    assert serial[-1]["policy_version"] == 3 and serial[0]["env_steps"] > 0
    serial_eval = json.loads((tmp_path / "serial" / "eval.json").read_text())
    ray_eval = json.loads((tmp_path / "ray" / "eval.json").read_text())
    assert serial_eval["trained"]["Rcum"] == ray_eval["trained"]["Rcum"]


@pytest.mark.parametrize("clash", [["--num-learners", "2"], ["--planner-replicas", "2"],
                                   ["--chaos-kill-rollout-every", "2"], ["--address", "127.0.0.1:6379"]])
def test_serial_refuses_what_needs_ray(clash, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli([*SMALL, "--serial", "true", *clash])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "serial runs everything in one process without Ray" in err and len(err.splitlines()) == 1
