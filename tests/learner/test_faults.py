"""Faults during training (issue 8, point 1): one run of the real entry point that meets every fault
the loop must survive, on 127.0.0.1 in a loopback-only namespace, bounded in time and count:

- a rollout actor killed every few seconds (--chaos-kill-rollout-every-s), then, after the resume,
  every 3rd iteration (--chaos-kill-rollout-every);
- a planner replica killed every 3rd iteration (--chaos-kill-planner-every);
- planner requests held past their deadline (--chaos-planner-hang-every);
- a schema-breaking batch slipped in every 4th iteration (--chaos-corrupt-batch-every);
- the driver itself SIGKILLed mid-run, and the run resumed with --resume.

The run completes; metrics.jsonl shows the restarts, the fallbacks and the time lost; every batch
is accounted for (handed to the learner + dropped = collected, no duplicates), and the corrupted
batches were rejected and counted, never learned from (they are not in the learner's seen ids).

No bound on how fast: the test waits for the events themselves (a checkpoint that saw a kill, a
metrics row after it, the resumed run's exit). The limits below only turn a hang into a failure;
a slow machine takes what it takes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learner.checkpoint import load_checkpoint, resume_checkpoint
from netns import loopback_only, netns_available

REPO = Path(__file__).resolve().parents[2]
ITERATIONS = 16
CORRUPT_EVERY, PLANNER_KILL_EVERY, ROLLOUT_KILL_EVERY = 4, 3, 3
HANG_S = 30.0  # a held Plan request would sleep this long: far past the 1 s deadline that must cut it
# Hang guards, not speed bounds (here the first run takes ~20 s, the whole test ~50 s).
FIRST_RUN_GUARD_S = 600
RESUME_GUARD_S = 600


def _cmd(args: list[str]) -> list[str]:
    return loopback_only([sys.executable, "-m", "learner.main", *args])


def _rows(run_dir: Path) -> list[dict]:
    rows = []
    path = run_dir / "metrics.jsonl"
    for line in (path.read_text().splitlines() if path.exists() else []):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a row being written right now
            pass
    return rows


def _wait_for(event, proc: subprocess.Popen, err_path: Path, guard_s: float, what: str):
    """Poll `event()` until it returns something truthy (returned). Fails at once when the
    process exits first (with its stderr), and after `guard_s` only as a hang guard."""
    guard = time.monotonic() + guard_s
    while not (found := event()):
        assert proc.poll() is None, f"the run exited ({proc.returncode}) before {what}:\n" + err_path.read_text()[-3000:]
        assert time.monotonic() < guard, f"hung: no {what} after {guard_s:g} s\n" + err_path.read_text()[-3000:]
        time.sleep(0.2)
    return found


def _checkpoint(run_dir: Path) -> tuple[int, int]:
    """(iteration, time-based rollout kills so far) of the newest latest.pt; (0, 0) before one."""
    try:
        state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    except (FileNotFoundError, ValueError):  # none yet, or replaced while read
        return 0, 0
    return int(state["iteration"]), int(state["driver"]["chaos"]["rollout_kills"])


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(FIRST_RUN_GUARD_S + RESUME_GUARD_S + 120)
def test_run_survives_killed_actors_hung_planner_corrupted_batches_and_a_killed_driver(tmp_path: Path) -> None:
    if not netns_available():
        pytest.skip("cannot create a loopback-only network namespace here (needs root or user namespaces)")
    started = time.monotonic()
    run_dir = tmp_path / "run"
    first = ["--iterations", str(ITERATIONS), "--run-dir", str(run_dir), "--num-rollout-actors", "2",
             "--users-per-actor", "8", "--dataset", "synthetic", "--num-items", "300", "--num-categories", "8", "--num-users", "200",
             # LERL's 20-step sessions: enough plan requests for the planner's hangs to come round
             "--quit-rule", "patience", "--satiation", "0", "--item-fatigue", "0", "--max-steps", "20",
             "--planner-backend", "heuristic", "--planner-replicas", "2", "--planner-timeout-s", "1",
             "--eval-users", "0", "--checkpoint-every", "3", "--time-budget-s", "0",
             "--chaos-kill-rollout-every-s", "2", "--chaos-kill-planner-every", str(PLANNER_KILL_EVERY),
             "--chaos-planner-hang-every", "60", "--chaos-planner-hang-s", str(HANG_S),
             "--chaos-corrupt-batch-every", str(CORRUPT_EVERY)]
    # stderr to a file, not a pipe nobody reads while the run goes on (a run that logged more than
    # a pipe holds, 64 KiB, would block on it); it is shown when the run fails.
    err_path = tmp_path / "first.stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(_cmd(first), cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        # Kill the driver once a checkpoint that saw a time-based kill exists and at least one
        # iteration finished after it.
        def killed_checkpoint_then_an_iteration() -> bool:
            saved, kills = _checkpoint(run_dir)
            return kills >= 1 and any(row["iteration"] > saved for row in _rows(run_dir))

        _wait_for(killed_checkpoint_then_an_iteration, proc, err_path, FIRST_RUN_GUARD_S,
                  "checkpoint after a kill, then an iteration")
        os.kill(proc.pid, signal.SIGKILL)  # the driver, as a crash would: no cleanup, no final checkpoint
        proc.wait(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # then what it left behind (its local Ray)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    first_run_s = time.monotonic() - started
    _, saved = resume_checkpoint(run_dir)
    redone = len({row["iteration"] for row in _rows(run_dir) if row["iteration"] > saved["iteration"]})
    assert saved["iteration"] >= 3 and redone >= 1 and saved["iteration"] < ITERATIONS

    # The resume changes run options only: time-based rollout kills off, iteration-based ones on.
    second = ["--resume", str(run_dir), "--chaos-kill-rollout-every-s", "0",
              "--chaos-kill-rollout-every", str(ROLLOUT_KILL_EVERY)]
    done = subprocess.run(_cmd(second), cwd=REPO, capture_output=True, text=True, timeout=RESUME_GUARD_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "FAULT INJECTION" in done.stderr  # labelled as such wherever it is on

    rows = _rows(run_dir)
    last = rows[-1]
    assert [r["iteration"] for r in rows] == list(range(1, ITERATIONS + 1))  # none lost, none twice
    assert [r["policy_version"] for r in rows] == list(range(1, ITERATIONS + 1))

    # Batches: everything collected was handed to the learner or dropped as stale, exactly once.
    used = [b for r in rows for b in r["batch_ids"]]
    dropped = [b for r in rows for b in r["dropped_batch_ids"]]
    rejected = [b for r in rows for b in r["rejected_batch_ids"]]
    assert len(used) == len(set(used)) == 2 * ITERATIONS
    assert not set(used) & set(dropped) and len(dropped) == len(set(dropped))
    assert len(used) + len(dropped) == last["batches_collected"]
    assert sum(r["duplicate_batches"] for r in rows) == 0
    # Corrupted batches: rejected and counted, never learned from.
    corrupted_iterations = [i for i in range(1, ITERATIONS + 1) if i % CORRUPT_EVERY == 0]
    assert [r["iteration"] for r in rows if r["rejected_batches"]] == corrupted_iterations
    assert last["chaos_corrupted_batches"] == last["rejected_batches_total"] == len(rejected) == len(corrupted_iterations)
    assert set(rejected) <= set(used)
    assert all("reward" in reason for r in rows for reason in r["rejected_reasons"])
    learned = set(load_checkpoint(run_dir / "checkpoints" / "final.pt")["learner"]["seen_batch_ids"])
    assert learned == set(used) - set(rejected)

    # Rollout actors: killed, restarted by Ray, their lost batches asked for again; the time lost measured.
    after_resume = [i for i in range(saved["iteration"] + 1, ITERATIONS + 1) if i % ROLLOUT_KILL_EVERY == 0]
    # (the time-based kills up to the checkpoint, then the iteration-based ones)
    assert last["chaos_rollout_kills"] == saved["driver"]["chaos"]["rollout_kills"] + len(after_resume) > len(after_resume)
    assert last["rollout_restarts"] >= 1 and last["resubmitted_batches"] >= 1
    assert last["restart_seconds_lost"] > 0
    # Planner: replicas killed and brought back; hung requests cut at the deadline and answered by the fallback.
    assert last["chaos_planner_kills"] == ITERATIONS // PLANNER_KILL_EVERY
    assert max(r.get("planner_restarts", 0) for r in rows) >= 1
    # (planner counters are the process's: the row with the most hangs, before or after the resume)
    busiest = max(rows, key=lambda r: r.get("planner_chaos_hangs", 0))
    hangs, hang_seconds = busiest.get("planner_chaos_hangs", 0), busiest.get("planner_chaos_hang_seconds", 0.0)
    assert hangs >= 1 and last["planner_fallbacks_total"] >= 1 and hang_seconds > 0
    # Every hold was cut by the caller's 1 s deadline (or earlier, when a chaos kill took the caller):
    # none slept the 30 s the hang asked for, in any row of either run. The deadline bounds the time lost.
    assert all(r.get("planner_chaos_hangs_completed", 0) == 0 for r in rows)
    # The driver's death: one resume, the iterations it redid and the training time they had taken.
    assert last["resumes"] == 1 and last["resume_iterations_redone"] == redone
    assert last["resume_seconds_lost"] > 0
    print(json.dumps({k: last[k] for k in (
        "batches_collected", "batches_used", "dropped_stale_batches", "rejected_batches_total", "duplicate_batches",
        "chaos_rollout_kills", "rollout_restarts", "resubmitted_batches", "restart_seconds_lost",
        "chaos_planner_kills", "planner_fallbacks_total", "resumes", "resume_iterations_redone",
        "resume_seconds_lost")} | {"planner_restarts_max": max(r.get("planner_restarts", 0) for r in rows),
                                   "planner_chaos_hangs_max": hangs, "planner_chaos_hang_seconds_max": hang_seconds,
                                   "saved_iteration": saved["iteration"], "first_run_seconds": first_run_s,
                                   "seconds": time.monotonic() - started}))
