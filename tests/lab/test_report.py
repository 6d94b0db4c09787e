"""The report command on runs the test writes: rows by experiment name, mean +/- std over seeds,
reference policies once each, PNGs beside the report, clear errors when there is nothing to report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.report import ReportError, cli, write_report

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
