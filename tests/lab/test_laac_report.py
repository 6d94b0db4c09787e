"""The offline section the report adds for LAAC runs (offline_eval.json): R@10 / NCV@10 table over
seeds, the LLM policy's 100-candidate row, the accuracy-versus-novelty frontier PNG; runs without
it (LERL) keep their report unchanged."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.report import write_report

EPISODES = {"Tint": 11.0, "Rcum": 4.0, "Rsin": 0.36, "coverage": 0.05, "diversity": 0.8, "novelty": 9.0,
            "episodes": 32}


def _laac_run(root: Path, name: str, seed: int, alpha: float, r10: float, ncv: float, weight: float = 0.3,
              planner: str = "vllm:smollm2", variant: str = "laac") -> None:
    run = root / name / f"seed-{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"run": {"name": name, "seed": seed, "algorithm": "laac"},
                                                 "world": {"dataset": "ml-100k", "quit_rule": "patience"}}))
    (run / "eval.json").write_text(json.dumps({"random": EPISODES, "trained": EPISODES}))
    # LAAC's metrics rows are losses, not episodes: the learning-curve plot must skip them
    (run / "metrics.jsonl").write_text(json.dumps({"iteration": 100, "critic_loss": 0.5}) + "\n")
    full = {"R@10": r10, "NCV@10": ncv, "NCV-liked@10": ncv / 10, "HR@10": 1.3 * r10, "NDCG@10": 0.5 * r10,
            "CV@10": 0.3, "states": 100}
    cand = {"HR@5": 0.4, "R@10": 0.4, "HR@10": 0.5, "NCV@10": 0.5, "NCV-liked@10": 0.05, "states": 50}
    (run / "offline_eval.json").write_text(json.dumps({
        "full": {"trained": full, "popular": {**full, "R@10": 0.03, "NCV@10": 0.0}},
        "candidates": {"trained": cand, "llm": {**cand, "HR@5": 0.09 if planner == "heuristic" else 0.02}},
        "variant": variant, "llm_weight": weight, "alpha": alpha, "planner": planner, "train_users": "all"}))


def test_offline_table_references_comparisons_and_frontier(tmp_path: Path) -> None:
    for seed, (r10, ncv) in enumerate([(0.07, 0.22), (0.08, 0.24)]):
        _laac_run(tmp_path, "laac", seed, 1.0, r10, ncv)
    _laac_run(tmp_path, "laac-heuristic-reference", 0, 1.0, 0.075, 0.2, planner="heuristic")
    _laac_run(tmp_path, "laac-no-llm", 0, 1.0, 0.07, 0.18, weight=0.0)
    _laac_run(tmp_path, "supervised", 0, 1.0, 0.09, 0.1, variant="supervised")
    text = write_report([tmp_path]).read_text()
    assert "| laac | vllm:smollm2 | all | 2 | 0.0750 ± 0.0071 | 0.2300 ± 0.0141 | 0.0230 ± 0.0014 |" in text
    assert "| laac-heuristic-reference | heuristic | all | 1 | 0.0750 | 0.2000 |" in text
    assert "| laac-no-llm | none | all | 1 | 0.0700 | 0.1800 |" in text and "| supervised | none | all | 1 |" in text
    assert "| popular (reference) | – | – | 1 | 0.0300 | 0.0000 |" in text
    # each reference policy alone, named by what answered (never "LLM" for a rule)
    assert "| heuristic alone | 0.0900 |" in text and "| vllm:smollm2 alone | 0.0200 |" in text
    assert ("- **laac** (reference vllm:smollm2) against **laac-no-llm**: R@10 0.0750 vs 0.0700 (+7 %, within the "
            "spread)") in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["offline"]["laac"]["R@10"][0] == pytest.approx(0.075)
    assert set(summary["candidates"]) == {"laac", "laac-heuristic-reference", "laac-no-llm", "supervised",
                                          "heuristic alone", "vllm:smollm2 alone"}
    assert (tmp_path / "laac_frontier.png").stat().st_size > 1000
    assert not (tmp_path / "learning_curves.png").exists()  # no episode curves in LAAC runs
