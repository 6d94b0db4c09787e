"""Experiment files: loading, defaults and presets, clear errors naming the file and key, and the
quick preset of the LERL table run end to end through `python -m learner.main --config DIR`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from learner.config import TrainConfig
from tiny_model import make_tiny_llama
from lab.experiments import ExperimentError, expand, experiment_files, load_experiment
from learner.evaluation import PLANNER_CONTROLS
from rollout.reference_policies import REFERENCE_POLICIES

REPO = Path(__file__).resolve().parents[2]
TABLES = sorted(p for p in (REPO / "experiments").iterdir() if p.is_dir())


@pytest.mark.parametrize("table", TABLES, ids=lambda p: p.name)
def test_every_experiment_file_in_the_repository_loads(table: Path) -> None:
    for path in experiment_files(table):
        for preset in ("", "quick"):
            experiment = load_experiment(path, preset)
            for cfg in expand(experiment, TrainConfig(), set(), Path("runs/x")):
                cfg.validate()
                assert cfg.run.name == experiment.name and cfg.run.run_dir.endswith(f"seed-{cfg.run.seed}")
        assert len(load_experiment(path).seeds) >= 3  # the tables report mean +/- std over 3 seeds


def test_defaults_presets_and_command_line_layering(tmp_path: Path) -> None:
    (tmp_path / "_defaults.yaml").write_text("seeds: [0, 1, 2]\nworld: {num_items: 300}\nrun: {iterations: 50}\n"
                                             "presets:\n  quick: {seeds: [7], run: {iterations: 2}}\n")
    (tmp_path / "row.yaml").write_text("name: row\nrun: {iterations: 40}\nrollout: {use_planner: false}\n")
    full = load_experiment(tmp_path / "row.yaml")
    assert full.seeds == [0, 1, 2] and full.sections["run"]["iterations"] == 40
    quick = load_experiment(tmp_path / "row.yaml", "quick")
    assert quick.seeds == [7] and quick.sections["run"]["iterations"] == 2
    given = TrainConfig()
    given.world.num_items = 400
    [cfg] = expand(quick, given, {"world.num_items"}, tmp_path / "runs")
    assert cfg.world.num_items == 400 and cfg.run.iterations == 2 and cfg.rollout.use_planner is False
    assert cfg.run.run_dir == str(tmp_path / "runs" / "row" / "seed-7")


@pytest.mark.parametrize("text, message", [
    ("name: x\nwrold: {}\n", "unknown key(s) wrold"),
    ("run: {iterationz: 3}\n", "unknown config key run.iterationz"),
    ("seeds: []\n", "seeds must be a non-empty list"),
    ("run: [1, 2]\n", "run must be a mapping"),
    ("run: {iterations: 3\n", "not valid YAML"),
])
def test_malformed_files_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ExperimentError, match="bad.yaml") as err:
        load_experiment(path)
    assert message in str(err.value)
    with pytest.raises(ExperimentError, match="no preset 'fast'"):
        path.write_text("name: ok\n")
        load_experiment(path, "fast")


def test_bad_config_fails_before_any_run_starts(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\nrun: {iterations: 2}\n")
    (tmp_path / "b.yaml").write_text("name: b\nworld: {slate_size: 0}\n")
    proc = subprocess.run([sys.executable, "-m", "learner.main", "--config", str(tmp_path),
                           "--run-dir", str(tmp_path / "runs")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "b.yaml" in proc.stderr and "slate_size" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_preset_of_the_lerl_table_runs_end_to_end(tmp_path: Path) -> None:
    """The smoke test of issue 6: the whole table's quick preset, then its report. Its LLM rows run
    the real vLLM engine on a tiny local model (given on the command line, over the files' SmolLM2):
    what is tested is the table machinery, and SmolLM2's start costs twice the tiny one's."""
    runs = tmp_path / "runs"
    model = make_tiny_llama(tmp_path / "tiny-llama")
    cmd = [sys.executable, "-m", "learner.main", "--config", "experiments/lerl-synthetic", "--preset", "quick",
           "--run-dir", str(runs), "--planner-model", str(model)]
    # A cache of its own: the synthetic world trains no user model, and a local model folder needs
    # no conversion, so nothing may appear in its models/ folder.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LLMREC_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = {p.stem for p in experiment_files(REPO / "experiments" / "lerl-synthetic")}
    for name in names:
        evaluation = json.loads((runs / name / "seed-0" / "eval.json").read_text())
        assert {"trained", "random", "greedy", "round-robin"} <= set(evaluation)
    report = (runs / "report.md").read_text()
    assert all(f"| {name} | 1 |" in report for name in names)
    assert (runs / "learning_curves.png").is_file() and (runs / "diversity_vs_return.png").is_file()
    check_vllm_planner_run(runs / "lerl" / "seed-0", iterations=3, eval_users=32, cache=env["LLMREC_CACHE_DIR"])
    # Re-running the table skips what finished.
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("finished before, skipped") == len(names)


def check_vllm_planner_run(run_dir: Path, iterations: int, eval_users: int, cache: str) -> None:
    """A LERL run with the vllm planner backend: what its config, metrics and evaluation must say."""
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["planner_backend"] == "vllm"
    # plan_every and plan_max_age (auto) are resolved before the actors start and saved: with an
    # LLM, every 5 steps, asynchronously, waiting once a plan is 10 steps old.
    assert config["rollout"]["plan_every"] == 5 and config["rollout"]["plan_max_age"] == 10
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(1, iterations + 1))
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
    assert set(evaluation) == {*REFERENCE_POLICIES, *PLANNER_CONTROLS, "trained"}
    assert all(m["episodes"] == eval_users for m in evaluation.values())
    models = Path(cache) / "models"
    assert not models.exists() or not any(models.iterdir())
