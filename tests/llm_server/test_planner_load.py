"""The load benchmark (benchmarks/planner_load.py, docs/reliability.md row 7) at a tiny scale: a
short ramp, then 16 concurrent clients in 2 processes hold the heuristic planner at the measured
capacity for 3 s. No error other than a deadline miss is allowed, and the JSON carries every figure
the row reports. The full run (60 s hold, 64 clients) is the benchmark's default."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "benchmarks" / "planner_load.py"


def test_help_lists_the_options() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for option in ("--duration-s", "--hold-clients", "--ramp", "--load", "--deadline-s", "--out"):
        assert option in out.stdout


def test_bad_options_end_with_a_message() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--ramp", "1,x"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--ramp" in out.stderr


def test_a_short_hold_at_capacity_has_no_errors(tmp_path: Path) -> None:
    result = tmp_path / "planner_load.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANNER_")}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--duration-s", "3", "--ramp", "1,4,16", "--ramp-step-s", "1",
         "--hold-clients", "16", "--processes", "2", "--users", "32", "--out", str(result)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads(result.read_text())
    hold = data["hold"]
    assert hold["clients"] == 16 and hold["requests"] > 0 and hold["errors"] == 0, hold
    assert set(hold["codes"]) <= {"OK", "DEADLINE_EXCEEDED"} and not hold["invalid_answers"]
    assert hold["p50_ms"] <= hold["p95_ms"] <= hold["p99_ms"] <= hold["max_ms"]
    assert [r["clients"] for r in data["ramp"]] == [1, 4, 16]
    assert data["capacity"]["requests_per_s"] > 0
    assert abs(hold["target_rps"] - data["capacity"]["requests_per_s"]) < 1e-6
    assert data["measured"]["users_per_s"] == hold["users_per_s"] > 0
    assert data["reference"]["in_process_heuristic_users_per_s"] > 0 and data["ratio"] > 0
    assert data["machine"]["cpus"] and "goal" in data
