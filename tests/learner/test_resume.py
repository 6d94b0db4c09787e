"""Checkpoints and `--resume`: a run killed with SIGKILL goes on from its last checkpoint, losing
at most the work since; a resume that would change the world, policy or PPO is refused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learner.checkpoint import load_checkpoint, resume_checkpoint, save_checkpoint, trim_metrics
from learner.config import TrainConfig
from learner.algorithms.lerl.reflection_pool import ReflectionPool
from netns import loopback_only, netns_available

REPO = Path(__file__).resolve().parents[2]
FAST = ["--num-rollout-actors", "2", "--users-per-actor", "8", "--planner-backend", "heuristic",
        "--eval-users", "0", "--checkpoint-every", "1", "--time-budget-s", "0",
        "--dataset", "synthetic", "--num-items", "300", "--num-categories", "8", "--num-users", "200"]


def _cmd(args: list[str]) -> list[str]:
    if not netns_available():
        pytest.skip("cannot create a loopback-only network namespace here (needs root or user namespaces)")
    return loopback_only([sys.executable, "-m", "learner.main", *args])


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _latest_iteration(run_dir: Path) -> int:
    path = run_dir / "checkpoints" / "latest.pt"
    try:
        return int(load_checkpoint(path)["iteration"]) if path.exists() else 0
    except Exception:  # noqa: BLE001 - replaced between exists() and the read: try again
        return 0


HANG_GUARD_S = 480  # only turns a hang into a failure; the wait is for the checkpoint itself (~20 s here)


@pytest.mark.ray
@pytest.mark.timeout(2 * HANG_GUARD_S + 120)
def test_sigkilled_run_resumes_from_its_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    err_path = tmp_path / "first.stderr"  # a file, not a pipe nobody reads while the run goes on
    # Its own process group (session), so the kill takes the driver and every child it started.
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(_cmd(["--iterations", "200", "--run-dir", str(run_dir), *FAST]), cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        guard = time.monotonic() + HANG_GUARD_S
        while _latest_iteration(run_dir) < 2:  # the event: a checkpoint of iteration 2 or later
            assert proc.poll() is None, err_path.read_text()[-3000:]
            assert time.monotonic() < guard, f"hung: no checkpoint of iteration >= 2 after {HANG_GUARD_S} s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    saved = resume_checkpoint(run_dir)[1]
    iteration, version = saved["iteration"], saved["learner"]["version"]
    assert iteration >= 2 and version == iteration
    assert saved["driver"]["env_steps_total"] > 0 and "entries" in saved["reflection_pool"]
    target = iteration + 2
    proc = subprocess.run(_cmd(["--resume", str(run_dir), "--iterations", str(target)]), cwd=REPO,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    progress = [line for line in proc.stdout.splitlines() if line.startswith("iter ")]
    assert progress[0].startswith(f"iter {iteration + 1:>4}/{target}") and len(progress) == 2

    rows = _rows(run_dir)
    iterations = [row["iteration"] for row in rows]
    assert iterations == list(range(1, target + 1))  # no duplicated (nor missing) iteration
    assert [row["policy_version"] for row in rows] == iterations  # the learner version continues
    assert rows[iteration]["env_steps_total"] == saved["driver"]["env_steps_total"] + rows[iteration]["env_steps"]
    assert rows[iteration]["wall_seconds"] > saved["driver"]["wall_seconds"]
    batch_ids = [b for row in rows for b in row["batch_ids"] + row["dropped_batch_ids"]]
    assert len(batch_ids) == len(set(batch_ids))
    last = rows[-1]  # the rollout pool's counters, carried over the resume
    assert last["batches_used"] == 2 * target and last["rollout_restarts"] == 0
    assert last["dropped_stale_batches"] == len([b for row in rows for b in row["dropped_batch_ids"]])
    assert 0 <= last["lagged_batches"] <= last["batches_used"] and last["resubmitted_batches"] == 0
    assert all(row["duplicate_batches"] == 0 for row in rows)
    final = load_checkpoint(run_dir / "checkpoints" / "final.pt")
    assert final["iteration"] == target and final["learner"]["version"] == version + 2
    # Same settings as the killed run (taken from its checkpoint), a new iteration count.
    config = json.loads((run_dir / "config.json").read_text())
    assert config["world"]["num_items"] == 300 and config["run"]["iterations"] == target


def test_help_explains_the_resume_and_rollout_pool_options():
    proc = subprocess.run([sys.executable, "-m", "learner.main", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for flag, words in (("--resume", "newest checkpoint"), ("--max-policy-lag", "dropped"),
                        ("--max-batches-in-flight", "backpressure")):
        assert flag in text and words in text


def _saved_run(tmp_path: Path) -> Path:
    """A run directory with a checkpoint (no training needed to test the refusal)."""
    run_dir = tmp_path / "run"
    cfg = TrainConfig()
    cfg.world.dataset, cfg.world.num_items = "synthetic", 300
    save_checkpoint(run_dir / "checkpoints" / "latest.pt",
                    {"learner": {"version": 3}, "config": cfg.to_dict(), "iteration": 3})
    return run_dir


@pytest.mark.parametrize("flags, field", [(["--num-items", "400"], "world.num_items"),
                                          (["--model-dim", "64"], "policy.model_dim"),
                                          (["--lr", "0.5"], "ppo.lr")])
def test_resume_that_changes_world_policy_or_ppo_is_refused_naming_the_field(tmp_path, flags, field):
    run_dir = _saved_run(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "learner.main", "--resume", str(run_dir), "--iterations", "5",
                           *flags], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert field in proc.stderr and flags[0] in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_resume_options_keep_the_checkpoints_settings_and_check_the_iterations(tmp_path, capsys):
    from learner.main import cli, resume_options, config_from_args, build_parser

    run_dir = _saved_run(tmp_path)
    argv = ["--resume", str(run_dir), "--iterations", "9", "--num-items", "300", "--users-per-actor", "4"]
    cfg, state = resume_options(config_from_args(build_parser().parse_args(argv)), argv)
    assert cfg.world.num_items == 300 and cfg.run.iterations == 9 and cfg.rollout.users_per_actor == 4
    assert cfg.run.run_dir == str(run_dir) and state["iteration"] == 3
    assert cli(["--resume", str(run_dir), "--iterations", "3"]) == 2
    assert "at iteration 3 already" in capsys.readouterr().err
    assert cli(["--resume", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_newest_checkpoint_wins_and_torn_metrics_rows_are_dropped(tmp_path):
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder / "latest.pt", {"iteration": 7})
    save_checkpoint(folder / "final.pt", {"iteration": 5})
    (folder / ".latest.pt.tmp-123").write_bytes(b"half a checkpoint")  # a writer killed mid-write
    path, state = resume_checkpoint(tmp_path)
    assert path.name == "latest.pt" and state["iteration"] == 7
    assert not (folder / ".latest.pt.tmp-123").exists()
    save_checkpoint(folder / "final.pt", {"iteration": 7})
    assert resume_checkpoint(tmp_path)[0].name == "final.pt"

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"iteration": i}) + "\n" for i in range(1, 10)) + '{"iterat')
    assert trim_metrics(metrics, 7) == 3
    assert [json.loads(line)["iteration"] for line in metrics.read_text().splitlines()] == list(range(1, 8))
    assert trim_metrics(metrics, 7) == 0


def test_reflection_pool_state_round_trips_with_its_rng():
    pool = ReflectionPool(capacity=5, temperature=0.1, seed=3)
    for i in range(8):
        pool.add(f"critique {i}", float(i))
    pool.sample(2)
    restored = ReflectionPool(capacity=5, temperature=0.1, seed=99)
    restored.load_state(pool.state())
    assert list(restored.entries) == list(pool.entries) and len(restored) == 5
    assert [restored.sample(3) for _ in range(4)] == [pool.sample(3) for _ in range(4)]
    restored.add("one more", 1.0)
    assert len(restored) == 5  # the capacity still holds after a load
