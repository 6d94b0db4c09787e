"""lab.fidelity_report: the user-fidelity table from the benchmark's JSON, labelled by what answered."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lab.fidelity_report import fidelity_markdown, summary_from, write

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def benchmark_json(tmp_path_factory) -> Path:
    """A real run of the benchmark on two seeds with the heuristic backend (the rule user answers)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import user_fidelity

    payload = user_fidelity.main(["--backend", "heuristic", "--users", "12", "--seeds", "0,1", "--cost-batches", "1,4",
                                  "--no-cache"])
    path = tmp_path_factory.mktemp("fidelity") / "user_fidelity.json"
    path.write_text(json.dumps(payload))
    return path


def test_the_table_says_what_answered_and_keeps_the_designs_summary_shape(benchmark_json, tmp_path) -> None:
    out = write(benchmark_json, tmp_path / "user-fidelity")
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["rows"]) == {"popularity", "rule", "mf", "llm", "hybrid", "mf+rule"}
    for row in summary["rows"].values():
        assert row["seeds"] == 2 and not row["oracle"] and "mean" in row["metrics"]["auc"]
    table = fidelity_markdown(summary)
    assert "answered by the heuristic backend (no LLM)" in table   # never called an LLM when none ran
    report = (out / "report.md").read_text()
    assert table in report and (out / "auc.png").is_file() and (out / "calibration.png").is_file()
    # The rule user answering as "llm" is the rule user: the same AUC, and the mf blends coincide.
    rows = summary["rows"]
    assert rows["llm"]["metrics"]["auc"] == rows["rule"]["metrics"]["auc"]
    assert rows["hybrid"]["metrics"]["auc"] == rows["mf+rule"]["metrics"]["auc"]
    assert rows["mf"]["metrics"]["auc"]["mean"] > 0.7 > rows["rule"]["metrics"]["auc"]["mean"]
    assert summary_from(json.loads(benchmark_json.read_text()))["cost"][0]["batch"] == 1


def test_the_cross_world_table_ranks_policies_against_the_learned_models_world(tmp_path) -> None:
    from lab.fidelity_report import cross_world_markdown, kendall_tau, load_cross_world

    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0 and kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    for world, returns in (("mf", [0.1, 0.6, 2.6]), ("llm", [0.3, 0.2, 0.1])):
        (tmp_path / f"{world}.json").write_text(json.dumps(
            {name: {"Rcum": r, "Tint": 2.0, "llm_user_fallback_cases": 0} for name, r in zip(["a", "b", "c"], returns)}))
    table = cross_world_markdown({"cross_world": load_cross_world(tmp_path)})
    assert "| c | 2.600 | 0.100 | 2.00 | 2.00 |" in table
    assert "llm: -1.00" in table   # the llm world ranks them the other way round
