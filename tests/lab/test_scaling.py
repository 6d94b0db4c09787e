"""The scaling-grid command on a one-by-two grid: every cell a real short training run, then the
CSV, the markdown table and the PNG; a failing cell is recorded and the grid goes on."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lab import scaling

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.ray
@pytest.mark.slow
def test_grid_writes_csv_markdown_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    out = tmp_path / "grid"
    code = scaling.main(["--actors", "1", "--users", "8", "--replicas", "1", "--learners", "1,2",
                         "--iterations", "3", "--warmup", "1", "--out", str(out)])
    assert code == 0
    rows = list(csv.DictReader(open(out / "scaling.csv")))
    assert [(r["actors"], r["learners"], r["status"]) for r in rows] == [("1", "1", "ok"), ("1", "2", "ok")]
    assert all(float(r["env_steps_per_s"]) > 0 for r in rows)
    for r in rows:
        runs = [json.loads(line) for line in
                (out / "runs" / f"a1-u8-r1-l{r['learners']}" / "metrics.jsonl").read_text().splitlines()]
        # Each batch's lag is the learner's version at the update minus the version it was collected
        # with: in [0, max_policy_lag (4)] and never more than the updates made before it.
        assert all(0 <= lag <= min(4, run["policy_version"] - 1) for run in runs for lag in run["policy_lags"])
        # One actor, resubmitted at once with the weights of the moment: the first batch is on the
        # initial weights, every later one exactly one update behind.
        assert [run["policy_lags"] for run in runs] == [[0], [1], [1]]
        # The grid reports the iterations after the warm-up one.
        assert float(r["policy_lag_mean"]) == 1.0 and int(r["policy_lag_max"]) == 1
    assert "| 1 | 8 | 1 | 2 |" in (out / "scaling.md").read_text()
    assert (out / "scaling.png").stat().st_size > 1000


def test_failed_cells_are_recorded_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    out = tmp_path / "grid"
    # an option learner.main refuses: the cell fails fast with its message, the grid still writes
    code = scaling.main(["--actors", "1", "--replicas", "1", "--learners", "1", "--iterations", "3", "--warmup", "1",
                         "--out", str(out), "--", "--slate-size", "0"])
    assert code == 1
    [row] = list(csv.DictReader(open(out / "scaling.csv")))
    assert row["status"].startswith("failed:") and "slate" in row["status"]


def test_bad_grid_arguments_are_refused() -> None:
    with pytest.raises(SystemExit):
        scaling.main(["--actors", "0"])
    with pytest.raises(SystemExit):
        scaling.main(["--iterations", "2", "--warmup", "2"])
