"""The results in the repository: each results/<table>/ holds report.md, its plots and
summary.json; report.md's tables are the ones summary.json's rows make, every trained row says
which commit and command made it, and every number the README quotes from a table is the one in
summary.json (the README quotes a table between `<!-- results/<table> -->` and `<!-- end -->`)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lab.fidelity_report import cost_markdown, cross_world_markdown, fidelity_markdown, sessions_markdown
from lab.ilrec_report import ilrec_comparisons, ilrec_markdown
from lab.laac_report import candidate_markdown, comparisons, offline_markdown
from lab.report import budget_table, markdown_table

REPO_ROOT = Path(__file__).resolve().parents[1]
TABLES = sorted(p.parent for p in (REPO_ROOT / "results").glob("*/summary.json"))


def _quoted(readme: str, table: str) -> list[str]:
    match = re.search(rf"<!-- results/{re.escape(table)} -->\n(.*?)<!-- end -->", readme, re.S)
    return [line for line in match.group(1).splitlines() if line.startswith("|")] if match else []


def test_there_are_results_in_the_repository() -> None:
    assert TABLES, "no results/<table>/summary.json: run a table and `python -m learner.report` it into results/"


@pytest.mark.parametrize("table", TABLES, ids=[t.name for t in TABLES])
def test_a_tables_report_and_readme_are_its_summary(table: Path) -> None:
    summary = json.loads((table / "summary.json").read_text())
    report = (table / "report.md").read_text()
    rows = summary["rows"]
    if summary.get("kind") == "user-fidelity":  # predictors of held-out logs, not policies in a world
        made = (fidelity_markdown(summary).splitlines() + cost_markdown(summary).splitlines()
                + cross_world_markdown(summary).splitlines() + sessions_markdown(summary).splitlines())
        assert summary["commit"] and not summary["dirty"], "the fidelity table was made from uncommitted code"
    else:
        made = markdown_table(rows).splitlines() + budget_table(rows).splitlines()
    if "offline" in summary:  # LAAC's tables: the offline rows and each reference alone
        made += offline_markdown(summary["offline"]).splitlines() + comparisons(summary["offline"])
        made += candidate_markdown(summary["candidates"]).splitlines() if summary.get("candidates") else []
    if "ilrec" in summary:  # IL-Rec's tables: each row's demonstrator and reward model, and its comparisons
        made += ilrec_markdown(summary["ilrec"]).splitlines() + ilrec_comparisons(summary["ilrec"], rows)
    for line in made:
        assert line in report, f"{table.name}/report.md lacks the summary's line {line!r}"
    for png in re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", report):
        assert (table / png).is_file(), f"{table.name}/report.md shows {png}, which is not there"
    for name, row in rows.items():
        if row.get("kind") == "algorithm":
            assert row["provenance"] and all(p["commit"] and p["command"] for p in row["provenance"]), name
    quoted = _quoted((REPO_ROOT / "README.md").read_text(), table.name)
    assert quoted, f"README.md does not quote results/{table.name} (a block <!-- results/{table.name} --> ... <!-- end -->)"
    for line in quoted:
        assert line in made, f"README quotes {line!r}, which differs from results/{table.name}/summary.json"
