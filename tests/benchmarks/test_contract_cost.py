"""benchmarks/contract.py: the planner contract's cost per rollout step, measured end to end on a
tiny request (its figures are the benchmark's business; here: that every part runs and is sane)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))


def test_every_part_of_the_planner_path_is_measured_on_the_requested_history() -> None:
    from benchmarks.contract import planner_parts, reference_step_ms

    parts = planner_parts(users=4, history=12, seed=0)
    assert parts["entries_per_user"] == 12  # two steps of slates of 6
    for name in ("record", "build", "serialize", "parse", "validate", "heuristic"):
        assert parts[f"{name}_ms"] > 0, name
    assert parts["request_bytes"] > 0
    assert reference_step_ms(users=4, seed=0) > 0


def test_bad_options_end_with_a_message() -> None:
    script = REPO_ROOT / "benchmarks" / "contract.py"
    out = subprocess.run([sys.executable, str(script), "--users", "0"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--users" in out.stderr
