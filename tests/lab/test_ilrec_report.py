"""The IL-Rec section of a report, on runs the test writes: each IL-Rec row's demonstrator (its
comparison with random on the same users, and alone), its reward model, and the trained policy
against flat PPO, its demonstrator and the best rule that is no oracle; the demonstrator is each
run's own control, never a reference row merged across runs."""
from __future__ import annotations

import json
from pathlib import Path

from lab.ilrec_report import DEMONSTRATOR, demonstrator_label
from lab.report import write_report

METRICS = {"Tint": 3.0, "Rcum": 1.0, "Rsin": 0.3, "coverage": 0.1, "diversity": 0.6, "novelty": 3.0, "episodes": 32}


def _run(root: Path, name: str, seed: int, rcum: float, backend: str = "", demo_rcum: float = 0.2,
         beats: bool = False) -> None:
    run = root / name / f"seed-{seed}"
    run.mkdir(parents=True)
    cfg = {"run": {"name": name, "seed": seed, "algorithm": "ilrec" if backend else "ppo", "planner_backend":
                   backend or "heuristic", "planner_model": "smollm2"},
           "world": {"dataset": "ml-100k", "quit_rule": "interest"},
           "ilrec": {"ilrec_mode": "offline", "ilrec_reward_weight": 0.1, "ilrec_demo_ratio": 0.25}}
    (run / "config.json").write_text(json.dumps(cfg))
    evaluation = {"random": {**METRICS, "Rcum": 0.15}, "ridge-exposure-fresh": {**METRICS, "Rcum": 2.8},
                  "posterior-exposure": {**METRICS, "Rcum": 4.4, "oracle": False},
                  "lookahead": {**METRICS, "Rcum": 9.9, "oracle": True},
                  "trained": {**METRICS, "Rcum": rcum}}
    if backend:
        evaluation[DEMONSTRATOR] = {**METRICS, "Rcum": demo_rcum, "episodes": 16, "demonstrator_vs_random": {
            "sessions": 32, "demonstrator_Rcum": demo_rcum, "random_Rcum": 0.17, "difference": demo_rcum - 0.17,
            "difference_se": 0.04, "beats_random": beats}}
    (run / "eval.json").write_text(json.dumps(evaluation))
    rows = [{"iteration": i, "env_steps_total": 5000, "Rcum": rcum, "Tint": 3.0, "ilrec_reward_auc": 0.9,
             "ilrec_learned_reward_item_std": 2.0} for i in (1, 2)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_ilrec_section_measures_each_demonstrator_and_compares_the_policy(tmp_path: Path) -> None:
    for seed in (0, 1):
        _run(tmp_path, "ilrec", seed, 1.9 + 0.1 * seed, backend="vllm", demo_rcum=0.11)
        _run(tmp_path, "ilrec-heuristic", seed, 2.0, backend="heuristic", demo_rcum=0.4, beats=True)
        _run(tmp_path, "flat-ppo", seed, 2.3 + 0.1 * seed)
    text = write_report([tmp_path]).read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["ilrec"]) == {"ilrec", "ilrec-heuristic"}
    assert f"{DEMONSTRATOR} (reference)" not in summary["rows"]  # two demonstrators: never merged into one row
    assert "| ilrec | offline | vllm:smollm2 | 0.110 (32 sessions) | 0.170 | no (-0.060 ± 0.080) |" in text
    assert "| ilrec-heuristic | offline | heuristic | 0.400 (32 sessions) | 0.170 | yes (+0.230 ± 0.080) |" in text
    assert ("- **ilrec** Rcum against flat-ppo 1.950 vs 2.350 (0.83x, beyond the spread); its demonstrator alone "
            "1.950 vs 0.110 (17.73x, beyond the spread); the best non-oracle reference (ridge-exposure-fresh) "
            "1.950 vs 2.800 (0.70x, beyond the spread)") in text
    assert "![IL-Rec offline learning curves](ilrec_offline_curves.png)" in text
    assert (tmp_path / "ilrec_offline_curves.png").stat().st_size > 1000


def test_demonstrator_label_names_backend_and_model() -> None:
    assert demonstrator_label({"run": {"planner_backend": "vllm", "planner_model": "m"}}) == "vllm:m"
    assert demonstrator_label({"run": {"planner_backend": "heuristic"}}) == "heuristic"
    assert demonstrator_label({"run": {"planner_address": "h:1"}}) == "external:h:1"


def test_a_row_that_uses_no_demonstration_says_its_demonstrator_is_unused(tmp_path: Path) -> None:
    _run(tmp_path, "logs-only", 0, 2.0, backend="heuristic")
    config = tmp_path / "logs-only" / "seed-0" / "config.json"
    cfg = json.loads(config.read_text())
    cfg["ilrec"].update(ilrec_reward_weight=0.0, ilrec_demo_ratio=0.0)
    config.write_text(json.dumps(cfg))
    write_report([tmp_path])
    assert json.loads((tmp_path / "summary.json").read_text())["ilrec"]["logs-only"]["demonstrator"] == \
        "heuristic (unused)"
