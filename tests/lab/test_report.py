"""The report command on runs the test writes: rows by experiment name, mean +/- std over seeds,
reference policies once each, PNGs beside the report, clear errors when there is nothing to report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.report import PER_RUN_CONTROLS, POPULATION_MODEL, ReportError, cli, write_report
from learner.evaluation import PLANNER_CONTROLS
from rollout import reference_policies

METRICS = {"Tint": 10.0, "Rcum": 5.0, "Rsin": 0.5, "coverage": 0.1, "diversity": 0.6, "novelty": 3.0,
           "episodes": 64}


def _run(root: Path, name: str, seed: int, tint: float, rcum: float) -> Path:
    run = root / name / f"seed-{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"run": {"name": name, "seed": seed},
                                                 "world": {"dataset": "synthetic", "quit_rule": "patience"}}))
    (run / "eval.json").write_text(json.dumps({"random": METRICS,
                                               "trained": {**METRICS, "Tint": tint, "Rcum": rcum}}))
    rows = [{"iteration": i, "env_steps_total": 1000 * i, "Rcum": rcum * i / 3, "Tint": tint} for i in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return run


def test_report_aggregates_seeds_and_writes_plots(tmp_path: Path) -> None:
    for seed, (tint, rcum) in enumerate([(16.0, 12.0), (18.0, 13.0), (17.0, 12.5)]):
        _run(tmp_path, "lerl", seed, tint, rcum)
    for seed, (tint, rcum) in enumerate([(12.0, 9.0), (13.0, 10.0), (14.0, 11.0)]):
        _run(tmp_path, "flat-ppo", seed, tint, rcum)
    path = write_report([tmp_path])
    text = path.read_text()
    assert "| lerl | 3 | 17.00 ± 1.00 | 12.500 ± 0.500 |" in text
    assert "| flat-ppo | 3 | 13.00 ± 1.00 | 10.000 ± 1.000 |" in text
    assert text.count("random (reference)") == 1
    assert "lerl against flat-ppo: Tint 1.31x (apart), Rcum 1.25x (apart)" in text
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
    assert (tmp_path / "diversity_vs_return.png").stat().st_size > 1000


def test_nothing_to_report_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli([str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err
    run = _run(tmp_path, "x", 0, 1.0, 1.0)
    (run / "eval.json").write_text(json.dumps({"random": METRICS}))
    with pytest.raises(ReportError, match="no 'trained' row"):
        write_report([tmp_path])


def test_one_seed_rows_claim_no_spread(tmp_path: Path) -> None:
    _run(tmp_path, "lerl", 0, 17.0, 12.0)
    _run(tmp_path, "flat-ppo", 0, 13.0, 10.0)
    text = write_report([tmp_path]).read_text()
    assert "| lerl | 1 | 17.00 | 12.000 |" in text
    assert "Tint 1.31x (one seed: spread unknown)" in text


def test_the_protocols_columns_appear_when_every_run_carries_them_and_summary_json_holds_all(tmp_path: Path) -> None:
    beyond = {"gap_closed": 0.4, "div_ratio": 0.2, "popularity_bias": 0.8, "serendipity": 0.1, "MGU": 0.2,
              "DGU": 0.5, "gender_Rcum_gap": 0.3, "age_Rcum_gap": 0.6}
    for seed in (0, 1):
        run = _run(tmp_path, "lerl", seed, 10.0, 5.0 + seed)
        evaluation = json.loads((run / "eval.json").read_text())
        evaluation["trained"].update(beyond, convergence_env_steps=2000.0 + 1000 * seed)
        evaluation["random"].update(beyond, oracle=False)
        evaluation["greedy"] = {**METRICS, **beyond, "oracle": True}
        evaluation["greedy"]["explanations"] = {
            "explanations": 2, "faithful": 0.5, "valid": 1.0, "words": 9.0, "judge": 3.5, "judge_backend": "vllm",
            "examples": [{"text": "More Comedy, like the Drama you liked.", "faithful": True, "judge": 4.0}]}
        (run / "eval.json").write_text(json.dumps(evaluation))
    text = write_report([tmp_path]).read_text()
    assert "| policy | seeds | Tint | Rcum | Rsin | gap closed | coverage | diversity | novelty | DivRatio | pop-bias |" \
           " serendipity | MGU | DGU | gender gap | age gap | converged at |" in text
    assert "| lerl | 2 | 10.00 ± 0.00 | 5.500 ± 0.707 |" in text and "| 2500 ± 707 |" in text
    assert "| greedy (reference) * | 2 |" in text and "| random (reference) | 2 |" in text
    assert text.split("| greedy (reference) * |")[1].splitlines()[0].endswith("| – |")   # no curve of its own
    assert "### Explanations: lerl (seed 0)" in text and text.count("### Explanations") == 1
    assert "| greedy | 2 | 0.50 | 1.00 | 9.0 | 3.50 | vllm |" in text
    assert '- greedy: "More Comedy, like the Drama you liked." (faithful True, judge 4.0)' in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rows"]["lerl"]["MGU"] == [0.2, 0.0] and summary["rows"]["greedy (reference)"]["oracle"] is True
    assert len(summary["runs"]) == 2 and summary["runs"][0]["eval"]["trained"]["DGU"] == 0.5
    # Older runs without the later metrics: the report keeps to the columns they all have.
    _run(tmp_path, "old", 0, 9.0, 4.0)
    assert "| DivRatio |" not in write_report([tmp_path]).read_text()


def test_each_rows_planner_quality_budget_and_provenance(tmp_path: Path) -> None:
    """greedy+planner depends on the run's planner: it is that row's planner quality, never a
    reference row shared by rows with other planners; budgets and commits travel to summary.json."""
    for name, quality in (("lerl", 8.0), ("random-categories", 3.0)):
        for seed in (0, 1):
            run = _run(tmp_path, name, seed, 10.0, 5.0)
            evaluation = json.loads((run / "eval.json").read_text())
            evaluation["greedy+planner"] = {**METRICS, "Rcum": quality + seed, "oracle": True}
            (run / "eval.json").write_text(json.dumps(evaluation))
            (run / "provenance.json").write_text(json.dumps({"commit": "abc123def456", "dirty": False,
                                                             "command": "python -m learner.main --seed 1"}))
    text = write_report([tmp_path]).read_text()
    assert "greedy+planner (reference)" not in text
    assert "| lerl | 2 | 3 ± 0 | 3000 ± 0 | 0 ± 0 | 0 ± 0 | 0.00 ± 0.00 | 0.00 ± 0.00 | – | 8.500 ± 0.707 | – |" in text
    assert "| random-categories | 2 | 3 ± 0 | 3000 ± 0 | 0 ± 0 | 0 ± 0 | 0.00 ± 0.00 | 0.00 ± 0.00 | – | 3.500 ± 0.707 | – |" in text
    assert "commit abc123def4, `python -m learner.main --seed 1`" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["commits"] == ["abc123def456"]
    row = summary["rows"]["random-categories"]
    assert row["planner_quality"]["Rcum"] == [3.5, pytest.approx(0.7071, abs=1e-4)]
    assert row["env_steps"] == [3000.0, 0.0] and row["seed_list"] == [0, 1]


def test_the_best_non_oracle_rule_inside_the_planners_categories_is_a_budget_column(tmp_path: Path) -> None:
    """ridge-exposure-fresh+planner is a row's control too (never a reference row); its Rcum is
    the last budget column, shown only when some row carries it (older runs do not)."""
    for seed in (0, 1):
        run = _run(tmp_path, "lerl-heuristic", seed, 10.0, 5.0)
        evaluation = json.loads((run / "eval.json").read_text())
        evaluation["ridge-exposure-fresh+planner"] = {**METRICS, "Rcum": 2.0 + 2 * seed, "oracle": False}
        (run / "eval.json").write_text(json.dumps(evaluation))
    text = write_report([tmp_path]).read_text()
    assert "ridge-exposure-fresh+planner (reference)" not in text
    assert "| Rcum of ridge-exposure-fresh inside them |" in text
    assert "| lerl-heuristic | 2 | 3 ± 0 | 3000 ± 0 | 0 ± 0 | 0 ± 0 | 0.00 ± 0.00 | 0.00 ± 0.00 | – | – | – | 3.000 ± 1.414 |" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rows"]["lerl-heuristic"]["planner_rule_quality"]["Rcum"] == [3.0, pytest.approx(1.4142, abs=1e-4)]


def test_the_population_posterior_inside_the_planners_categories_is_a_budget_column(tmp_path: Path) -> None:
    """posterior-exposure+planner (the trained row's observable ceiling) is a row's control, never a
    reference row; its Rcum is a budget column after the rule's, shown only when a row carries it."""
    for seed in (0, 1):
        run = _run(tmp_path, "lerl-heuristic", seed, 10.0, 5.0)
        evaluation = json.loads((run / "eval.json").read_text())
        evaluation["ridge-exposure-fresh+planner"] = {**METRICS, "Rcum": 2.0, "oracle": False}
        evaluation["posterior-exposure+planner"] = {**METRICS, "Rcum": 4.0 + 2 * seed, "oracle": False}
        (run / "eval.json").write_text(json.dumps(evaluation))
    text = write_report([tmp_path]).read_text()
    assert "posterior-exposure+planner (reference)" not in text
    assert "| Rcum of posterior-exposure inside them + |" in text
    assert "| 2.000 ± 0.000 | 5.000 ± 1.414 |" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rows"]["lerl-heuristic"]["planner_posterior_quality"]["Rcum"] == [5.0, pytest.approx(1.4142, abs=1e-4)]


def test_a_rows_late_rise_says_whether_its_curve_reached_a_plateau(tmp_path: Path) -> None:
    """The budget table's late rise: the training return over the last 10 % of updates against
    50-70 %, per seed, then mean +/- std (a 3-update curve is too short: –)."""
    for seed, end in ((0, 1.1), (1, 1.3)):
        run = _run(tmp_path, "lerl", seed, 10.0, 5.0)
        rows = [{"iteration": i, "env_steps_total": 100 * i, "Tint": 5.0, "Rcum": 1.0 if i <= 18 else end}
                for i in range(1, 21)]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    text = write_report([tmp_path]).read_text()
    assert "| plan age (steps) | late rise |" in text
    assert "| 0.00 ± 0.00 | 0.00 ± 0.00 | 0.200 ± 0.141 |" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rows"]["lerl"]["late_rise"] == [pytest.approx(0.2), pytest.approx(0.1414, abs=1e-4)]


def test_the_reports_control_rows_are_the_evaluations() -> None:
    assert PER_RUN_CONTROLS == tuple(PLANNER_CONTROLS)
    assert set(POPULATION_MODEL) == set(reference_policies.POPULATION_MODEL)


def test_a_population_model_reference_is_marked_plus(tmp_path: Path) -> None:
    """posterior-exposure reads the training population's true model: a reference row marked +
    (not * as an oracle, not unmarked as a rule that reads no model)."""
    run = _run(tmp_path, "lerl", 0, 10.0, 5.0)
    evaluation = json.loads((run / "eval.json").read_text())
    evaluation["posterior-exposure"] = {**METRICS, "Rcum": 4.5, "oracle": False}
    (run / "eval.json").write_text(json.dumps(evaluation))
    text = write_report([tmp_path]).read_text()
    assert "| posterior-exposure (reference) + | 1 |" in text


def test_a_rows_share_of_its_observable_ceiling(tmp_path: Path) -> None:
    """(trained - random) / (ceiling - random) per seed, the ceiling posterior-exposure inside the
    run's planner categories, or over every item for a run without a planner."""
    for seed, trained in ((0, 3.0), (1, 4.0)):
        run = _run(tmp_path, "lerl", seed, 10.0, trained)
        evaluation = json.loads((run / "eval.json").read_text())
        evaluation["random"] = {**METRICS, "Rcum": 1.0, "oracle": False}
        evaluation["posterior-exposure"] = {**METRICS, "Rcum": 3.0, "oracle": False}
        evaluation["posterior-exposure+planner"] = {**METRICS, "Rcum": 5.0, "oracle": False}
        (run / "eval.json").write_text(json.dumps(evaluation))
    flat = _run(tmp_path, "flat-ppo", 0, 10.0, 2.0)
    evaluation = json.loads((flat / "eval.json").read_text())
    evaluation["random"] = {**METRICS, "Rcum": 1.0, "oracle": False}
    evaluation["posterior-exposure"] = {**METRICS, "Rcum": 3.0, "oracle": False}
    (flat / "eval.json").write_text(json.dumps(evaluation))
    text = write_report([tmp_path]).read_text()
    assert "| share of its observable ceiling + |" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rows"]["lerl"]["observable_share"] == [pytest.approx(0.625), pytest.approx(0.1768, abs=1e-4)]
    assert summary["rows"]["flat-ppo"]["observable_share"] == [pytest.approx(0.5), 0.0]
