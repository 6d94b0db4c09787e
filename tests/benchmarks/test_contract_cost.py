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
    # The parts are the path: measured one by one they add up to the same path measured end to end
    # (a part measured on the wrong thing, or a costly step left out, breaks the sum). Ratios of
    # figures from one run: a slow machine scales both sides alike.
    split = sum(parts[f"{name}_ms"] for name in ("build", "serialize", "parse", "validate", "heuristic"))
    assert 0.5 < split / parts["path_ms"] < 2.0, (split, parts["path_ms"])
    assert parts["request_bytes"] > 0
    # The reference is the simulator and policy step for those users: 16 times the users cost more.
    assert reference_step_ms(users=4, seed=0) < reference_step_ms(users=64, seed=0)


def test_bad_options_end_with_a_message() -> None:
    script = REPO_ROOT / "benchmarks" / "contract.py"
    out = subprocess.run([sys.executable, str(script), "--users", "0"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--users" in out.stderr
