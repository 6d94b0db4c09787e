"""The cost model (lab/cost_model.py): its terms bind where they should, calibration recovers the
costs a run was made of, and the grid check and projection run end to end on metrics files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.cost_model import ComponentCosts, GpuAssumptions, best_split, calibrate, check_grid, main, predict

COSTS = ComponentCosts(actor_s_per_step=1e-3, plan_s_per_step=2e-4, learner_s_per_row=5e-4, learner_dp_s=0.05,
                       publish_s=0.01, transfer_s_per_row=1e-5, steps_per_batch=300.0, users_per_actor=64)


def _row(costs: ComponentCosts, actors: int, learners: int, seconds: float) -> dict:
    steps = int(costs.steps_per_batch) * actors
    rollout = steps * (costs.actor_s_per_step + costs.plan_s_per_step)
    compute = costs.learner_s_per_row * steps / learners + costs.learner_dp_s * (learners > 1)
    return {"env_steps": steps, "seconds": seconds, "rollout_seconds": rollout, "batch_ids": ["b"] * actors,
            "rollout_plan_wait_share": steps * costs.plan_s_per_step / rollout, "rollout_reflect_share": 0.0,
            "update_compute_seconds": compute, "publish_seconds": costs.publish_s,
            "update_seconds": compute + costs.publish_s + costs.transfer_s_per_row * steps, "policy_lag_mean": 1.0}


def test_the_bound_moves_from_collecting_to_learning_to_the_cores() -> None:
    one = predict(COSTS, 1, 1, 1)
    assert one.bound == "collect" and one.env_steps_per_s == pytest.approx(1 / 1.2e-3, rel=0.05)
    many = predict(COSTS, 64, 8, 1)                       # 64 batches per update on one learner
    assert many.bound == "learn"
    assert predict(COSTS, 64, 8, 4).env_steps_per_s > 2 * many.env_steps_per_s
    shared = predict(COSTS, 4, 1, 1, cores=2)
    assert shared.bound == "cpu" and shared.env_steps_per_s < predict(COSTS, 4, 1, 1).env_steps_per_s
    assert one.policy_lag == 1.0 and predict(COSTS, 4, 1, 1, batches_per_iteration=2).policy_lag == 2.0


def test_fewer_planner_replicas_mean_longer_plan_waits() -> None:
    busy = ComponentCosts(**{**COSTS.__dict__, "plan_s_per_step": 1e-3})
    assert predict(busy, 16, 1, 8).env_steps_per_s < predict(busy, 16, 8, 8).env_steps_per_s


def test_calibration_recovers_the_costs_a_run_was_made_of() -> None:
    single = [_row(COSTS, 1, 1, 0.5)] * 3
    two = [_row(COSTS, 1, 2, 0.5)] * 3
    got = calibrate(single, two, 64)
    for name in ("actor_s_per_step", "plan_s_per_step", "learner_s_per_row", "learner_dp_s", "publish_s",
                 "transfer_s_per_row", "steps_per_batch"):
        assert getattr(got, name) == pytest.approx(getattr(COSTS, name), rel=1e-6), name


def _grid(tmp_path: Path) -> Path:
    for actors, learners in ((1, 1), (1, 2), (2, 1), (4, 1)):
        pred = predict(COSTS, actors, 1, learners, cores=2)
        run = tmp_path / "runs" / f"a{actors}-u64-r1-l{learners}"
        run.mkdir(parents=True)
        rows = [_row(COSTS, actors, learners, pred.iteration_s)] * 4
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_the_grid_check_predicts_cells_it_did_not_calibrate_on(tmp_path: Path) -> None:
    costs, cells = check_grid(_grid(tmp_path), warmup=1, cores=2)
    assert [c["calibration"] for c in cells] == [True, True, False, False]
    assert all(abs(c["error"]) < 0.05 for c in cells)


def test_the_command_writes_the_check_and_the_projection(tmp_path: Path) -> None:
    grid = _grid(tmp_path / "grid")
    llm = tmp_path / "llm"
    llm.mkdir()
    slow = {**_row(COSTS, 2, 1, 10.0), "rollout_plan_wait_share": 0.9}
    (llm / "metrics.jsonl").write_text("".join(json.dumps(slow) + "\n" for _ in range(4)))
    assert main(["--grid", str(grid), "--llm-run", str(llm), "--warmup", "1", "--cores", "2",
                 "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "cost_model.json").read_text())
    assert [p["gpus"] for p in result["projection"]] == [8, 64, 512]
    assert result["projection"][2]["env_steps_per_s"] > result["projection"][0]["env_steps_per_s"]
    assert "planner_speedup" in (tmp_path / "out" / "cost_model.md").read_text()


def test_a_grid_without_runs_fails_with_what_to_do(tmp_path: Path, capsys) -> None:
    assert main(["--grid", str(tmp_path)]) == 2
    assert "python -m learner.scaling" in capsys.readouterr().err


def test_the_best_split_uses_every_gpu() -> None:
    split = best_split(COSTS, 8, GpuAssumptions())
    assert split["replicas"] + split["learners"] == 8 and split["actors"] == 16 * 8


def test_the_readme_quotes_the_committed_cost_model() -> None:
    """The README's cost-model figures are benchmarks/results/cost_model.json's."""
    root = Path(__file__).resolve().parents[2]
    result = json.loads((root / "benchmarks" / "results" / "cost_model.json").read_text())
    readme = " ".join((root / "README.md").read_text().split())
    for projected in result["projection"]:
        assert f"{projected['env_steps_per_s']:,.0f}" in readme, projected
    checked = [c for c in result["cells"] if not c["calibration"]]
    within = max(abs(c["error"]) for c in checked if c["actors"] <= 2)
    beyond = [abs(c["error"]) for c in checked if c["actors"] > 2]
    assert f"within {100 * within:.0f} %" in readme
    assert f"{100 * min(beyond):.0f}-{100 * max(beyond):.0f} % too high" in readme
    assert f"{1000 * result['llm_plan_s_per_step']:.2f} ms of engine time" in readme


def test_an_actor_that_encodes_while_its_plan_is_made_waits_only_for_the_rest() -> None:
    """Rows that carry the plan calls' own time (planner_call_seconds) beside the actors' wait:
    the calibration keeps the service time for the replicas' queue and the covered part apart,
    and the collect is shorter by that part; rows without it read as before (wait = service)."""
    hidden = 1.5e-4
    rows = []
    for row in [_row(COSTS, 1, 1, 0.5)] * 3:
        steps, rollout = row["env_steps"], row["rollout_seconds"] - hidden * row["env_steps"]
        rows.append({**row, "rollout_seconds": rollout, "planner_call_seconds": COSTS.plan_s_per_step * steps,
                     "rollout_plan_wait_share": (COSTS.plan_s_per_step - hidden) * steps / rollout})
    got = calibrate(rows, None, 64)
    assert got.plan_s_per_step == pytest.approx(COSTS.plan_s_per_step, rel=1e-6)
    assert got.plan_hidden_s_per_step == pytest.approx(hidden, rel=1e-6)
    assert got.actor_s_per_step == pytest.approx(COSTS.actor_s_per_step, rel=1e-6)
    assert calibrate([_row(COSTS, 1, 1, 0.5)] * 3, None, 64).plan_hidden_s_per_step == 0.0
    assert predict(got, 1, 1, 1).env_steps_per_s == pytest.approx(1 / (1e-3 + 5e-5), rel=0.05)
    # Many actors on one replica: the queue grows with the service time, not with the wait.
    assert predict(got, 16, 1, 8).env_steps_per_s < predict(got, 16, 8, 8).env_steps_per_s
