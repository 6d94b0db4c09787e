"""`python -m learner.evaluate`: the table, the JSON file, usage errors, determinism, and a
trained checkpoint's row (run as a user would, in a subprocess)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from learner.evaluation import COLUMNS, evaluate_reference, evaluation_users
from learner.evaluate import cli
from rollout.reference_policies import REFERENCE_POLICIES
from rollout.world import World, WorldConfig
from worlds import learner_spec

REPO = Path(__file__).resolve().parents[2]
HEADERS = ("Tint", "Rcum", "Rsin", "coverage", "diversity", "cat-entropy", "novelty")
KEYS = ("Tint", "Rcum", "Rsin", "coverage", "diversity", "category_entropy", "novelty")


def evaluate(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLMREC_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "learner.evaluate", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def table_text(stdout: str) -> str:
    """The evaluation table and what follows it (a first run also logs training the user model)."""
    return stdout[stdout.index("evaluation on "):]


def rows(stdout: str) -> dict[str, list[float]]:
    """Policy name -> the numbers on its table row (an oracle's name is marked " *")."""
    out = {}
    for line in stdout.splitlines():
        parts = [p for p in line.split() if p != "*"]
        if len(parts) == 1 + len(HEADERS):
            try:
                out[parts[0]] = [float(x) for x in parts[1:]]
            except ValueError:
                continue
    return out


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate-cli")
    runs = []
    for i in range(2):
        out = tmp / f"run{i}.json"
        proc = evaluate("--users", "32", "--policies", "random,greedy", "--out", str(out), cache=tmp)
        runs.append((proc, out))
    return runs


def test_prints_a_table_with_both_policies_and_every_metric(two_runs):
    proc, _ = two_runs[0]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = table_text(proc.stdout).splitlines()
    assert lines[0] == "evaluation on 32 fixed users:"
    assert lines[1].split() == ["policy", *HEADERS]
    table = rows(proc.stdout)
    assert list(table) == ["random", "greedy"]
    for name, values in table.items():
        tint, rcum, rsin, coverage, diversity, entropy, novelty = values
        assert 1 <= tint <= WorldConfig().max_steps, name
        assert 0 <= rsin <= 1 and 0 < coverage <= 1 and 0 <= diversity <= 2 and entropy > 0 and novelty > 0, name
    # The defining contrast on the default world: greedy is the more accurate.
    assert table["greedy"][2] > table["random"][2], proc.stdout


def test_out_writes_json_with_every_metric(two_runs):
    proc, out = two_runs[0]
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert list(results) == ["random", "greedy"]
    table = rows(proc.stdout)
    for name, metrics in results.items():
        for key in KEYS:
            assert isinstance(metrics[key], (int, float)), (name, key)
        assert metrics["episodes"] == 32
        # The table shows the same numbers, rounded as its format says.
        for (key, _, fmt), shown in zip(COLUMNS, table[name]):
            assert float(format(metrics[key], fmt)) == shown, (name, key)


def test_the_same_command_gives_the_same_numbers(two_runs):
    (first, out1), (second, out2) = two_runs
    assert first.returncode == second.returncode == 0
    assert table_text(first.stdout) == table_text(second.stdout)
    assert json.loads(out1.read_text()) == json.loads(out2.read_text())


def test_the_cli_numbers_are_the_library_numbers(two_runs, monkeypatch):
    """The CLI evaluates evaluation_users(world, 32, 2024) with seed 2024 on the default world."""
    _, out = two_runs[0]
    monkeypatch.setenv("LLMREC_CACHE_DIR", str(out.parent))  # the user model the CLI trained
    results = json.loads(out.read_text())
    cfg = WorldConfig()
    world = World.build(cfg)
    users = evaluation_users(world, 32, 2024)
    assert len(np.unique(users)) == 32
    expected = evaluate_reference(world, cfg, "greedy", users, 2024)
    assert {k: results["greedy"][k] for k in KEYS} == pytest.approx({k: expected[k] for k in KEYS}, rel=1e-12)


@pytest.mark.parametrize("args,needle", [
    (["--users", "32", "--policies", "random,oracle"], "unknown policies ['oracle']; known: "
                                                       + ", ".join(REFERENCE_POLICIES)),
    (["--users", "0", "--policies", "random"], "--users must be >= 1"),
])
def test_usage_errors_exit_2_with_one_error_line(tmp_path, args, needle):
    proc = evaluate(*args, cache=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert errors == [f"python -m learner.evaluate: error: {needle}"], proc.stderr
    assert proc.stderr.startswith("usage: python -m learner.evaluate")


@pytest.mark.parametrize("args,needle", [
    (["--checkpoint", "/nonexistent/ckpt.pt"], "no checkpoint at /nonexistent/ckpt.pt"),
    (["--quit-rule", "never"], "quit_rule"),
    (["--slate-size", "2000"], "slate_size"),
])
def test_other_usage_errors_in_process(capsys, args, needle):
    with pytest.raises(SystemExit) as exit_info:
        cli(["--users", "4", "--policies", "random", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert needle in line


def test_a_checkpoint_gets_a_trained_row(tmp_path):
    from learner.checkpoint import save_checkpoint
    from learner.config import TrainConfig
    from learner.learner_actor import Learner

    cfg = TrainConfig(world=WorldConfig(dataset="synthetic", num_items=200, num_categories=8, num_users=100, latent_dim=8,
                                        slate_size=4, max_steps=8, history_len=8, world_seed=1))
    cfg.validate()
    learner = Learner(*learner_spec(cfg.world), cfg.policy, cfg.ppo, seed=0, device="cpu")
    path = save_checkpoint(tmp_path / "ckpt.pt", {"learner": learner.state(), "config": cfg.to_dict(), "iteration": 0})
    out = tmp_path / "eval.json"
    proc = evaluate("--checkpoint", str(path), "--users", "16", "--policies", "random", "--out", str(out),
                    cache=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.splitlines()[0] == "evaluation on 16 fixed users:"
    table = rows(proc.stdout)
    assert list(table) == ["random", "trained"], proc.stdout
    assert "trained vs random: Rcum" in proc.stdout
    results = json.loads(out.read_text())
    assert set(results) == {"random", "trained"}
    for name in ("random", "trained"):
        assert results[name]["episodes"] == 16
        assert 1 <= results[name]["Tint"] <= 8    # the checkpoint's world (8 steps), not the CLI default (20)
    assert results["trained"]["planner_fallbacks"] == 0
    for key in KEYS:
        assert np.isfinite(results["trained"][key]), key


def test_evaluation_in_a_hybrid_world_answered_through_the_service(tmp_path, monkeypatch) -> None:
    """--eval-user-model hybrid: the users answered through a running service's Respond call (the
    heuristic backend's rule user here), a calibration made once and reused, oracles left out."""
    from llm_server.backends import HeuristicBackend
    from planner_requests import start_in_background

    monkeypatch.setenv("LLMREC_CACHE_DIR", str(tmp_path / "cache"))
    host, address = start_in_background(HeuristicBackend())
    try:
        args = ["--dataset", "synthetic", "--eval-user-model", "hybrid", "--llm-user-address", address]
        with pytest.raises(SystemExit):  # the synthetic world's items mean nothing to an LLM
            cli(args)
        out = tmp_path / "hybrid.json"
        args = ["--eval-user-model", "hybrid", "--llm-user-address", address, "--llm-user-model", "rule-user-test",
                "--policies", "random,popular,greedy", "--users", "12", "--out", str(out)]
        assert cli(args) == 0
        results = json.loads(out.read_text())
        assert set(results) == {"random", "popular"}   # greedy reads every item's response: left out
        assert results["random"]["llm_user_cases"] > 12 and results["random"]["llm_user_fallback_cases"] == 0
        calibrations = list((tmp_path / "cache" / "llm_user").glob("calibration-*rule-user-test*.json"))
        assert len(calibrations) == 1
        assert cli(args) == 0   # the same calibration, the same answers, now replayed from the cache
        again = json.loads(out.read_text())

        def metrics(rows):
            return {name: {k: v for k, v in row.items() if not k.startswith("llm_user_")} for name, row in rows.items()}

        assert metrics(again) == metrics(results)
        assert results["random"]["llm_user_cache_hits"] == 0
        assert again["random"]["llm_user_cache_hits"] == again["random"]["llm_user_cases"]
        with pytest.raises(SystemExit):
            cli(["--eval-user-model", "llm", "--policies", "random"])   # no --llm-user-address
    finally:
        host.stop()
