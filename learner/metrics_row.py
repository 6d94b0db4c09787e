"""One metrics.jsonl row per training iteration, and the progress line printed from it.

Batch accounting (the ids let a reader check that nothing was lost or learned twice):
`batch_ids` are the batches handed to the learner this iteration; of those, `rejected_batch_ids`
failed the transition schema (not learned from) and `duplicate_batches` had been seen before (not
learned from); `dropped_batch_ids` were collected but too stale to use. Over a run, batch_ids
plus dropped_batch_ids add up to the rollout pool's `batches_collected`.
"""
from __future__ import annotations

import numpy as np

from rollout.metrics import episode_metrics


def iteration_metrics(iteration: int, stats: list, update: dict, elapsed: float, totals: dict,
                      wall: float) -> dict:
    """The row of one iteration from its batches' stats and the learner's update metrics;
    `totals` (env_steps, planner_fallbacks, rejected_batches) are run totals it advances."""
    lengths = np.concatenate([s.episode_lengths for s in stats])
    returns = np.concatenate([s.episode_returns for s in stats])
    steps = sum(s.env_steps for s in stats)
    calls = sum(s.planner_calls for s in stats)
    fallbacks = sum(s.planner_fallbacks for s in stats)
    totals["env_steps"] += steps
    for key, value in (("planner_fallbacks", fallbacks), ("rejected_batches", update.get("rejected", 0))):
        totals[key] = totals.get(key, 0) + value
    lags = update.get("policy_lags", [])
    rollout_seconds = sum(s.seconds_total for s in stats)
    return {
        "iteration": iteration,
        **episode_metrics(lengths, returns),
        "env_steps": steps,
        "env_steps_total": totals["env_steps"],
        "env_steps_per_s": steps / max(elapsed, 1e-9),
        "planner_latency_ms": 1000 * sum(s.seconds_planner for s in stats) / max(calls, 1),
        "planner_wait_share": sum(s.seconds_plan_wait for s in stats) / max(rollout_seconds, 1e-9),
        # The plan calls' own time (the actors may encode meanwhile, so it can exceed the wait).
        "planner_call_seconds": sum(s.seconds_planner for s in stats),
        "planner_fallback_rate": fallbacks / max(calls, 1),
        "plan_age_mean": sum(s.plan_age_sum for s in stats) / max(sum(s.plan_age_count for s in stats), 1),
        "plans_reused": sum(s.plans_reused for s in stats),
        "plans_skipped": sum(s.plans_skipped for s in stats),
        "plans_renewed": sum(s.plans_renewed for s in stats),
        "plan_reuse_age_mean": sum(s.plan_reuse_age_sum for s in stats) / max(sum(s.plans_reused for s in stats), 1),
        "reflect_calls": sum(s.reflect_calls for s in stats),
        "reflect_fallbacks": sum(s.reflect_fallbacks for s in stats),
        "reflects_in_background": sum(s.reflects_in_background for s in stats),
        "reflects_skipped": sum(s.reflects_skipped for s in stats),
        "masks_widened": sum(s.masks_widened for s in stats),
        "policy_lag_mean": float(np.mean(lags)) if lags else 0.0,
        "policy_lag_max": int(max(lags)) if lags else 0,
        "policy_lags": lags,
        "planner_fallbacks": fallbacks,
        "planner_fallbacks_total": totals["planner_fallbacks"],
        "batch_ids": [s.batch_id for s in stats],
        "duplicate_batches": update.get("duplicates", 0),
        "rejected_batches": update.get("rejected", 0),
        "rejected_batch_ids": update.get("rejected_batch_ids", []),
        "rejected_reasons": update.get("rejected_reasons", []),
        "rejected_batches_total": totals["rejected_batches"],
        "policy_version": update.get("version", 0),
        "seconds": elapsed,
        "update_seconds": update.get("update_seconds", 0.0),
        "update_compute_seconds": update.get("compute_seconds", update.get("update_seconds", 0.0)),
        "publish_seconds": update.get("publish_seconds", 0.0),
        "rollout_seconds": rollout_seconds,
        **time_shares(stats, update, elapsed),
        "wall_seconds": wall,
        **{k: update[k] for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac") if k in update},
    }


def time_shares(stats: list, update: dict, elapsed: float) -> dict:
    """Where the time goes.

    The rollout actors' time (summed over the iteration's batches): loading the new weights (the
    broadcast's actor side), simulating users, the policy's forward pass, waiting for plans,
    reflecting, and the rest (building the Arrow batch, bookkeeping). The driver's iteration: the
    learner's update (its compute), publishing the weights (one `ray.put`), the batches' transfer
    into the learner with the call's own overhead (the call's time less those two), and waiting for
    batches. Learners that do not time their parts count the whole call as the update."""
    total = max(sum(s.seconds_total for s in stats), 1e-9)
    parts = {"load_weights": sum(s.seconds_load_weights for s in stats),
             "simulate": sum(s.seconds_env for s in stats), "policy_forward": sum(s.seconds_policy for s in stats),
             "plan_wait": sum(s.seconds_plan_wait for s in stats), "reflect": sum(s.seconds_reflect for s in stats)}
    shares = {f"rollout_{name}_share": value / total for name, value in parts.items()}
    shares["rollout_other_share"] = max(0.0, 1.0 - sum(shares.values()))
    call = update.get("update_seconds", 0.0)
    compute = update.get("compute_seconds", call)
    publish = update.get("publish_seconds", 0.0)
    elapsed = max(elapsed, call, 1e-9)
    driver = {"update_share": compute / elapsed, "publish_share": publish / elapsed,
              "batch_transfer_share": max(0.0, call - compute - publish) / elapsed}
    driver["collect_wait_share"] = max(0.0, 1.0 - sum(driver.values()))
    return {**shares, **driver}


def episode_progress(row: dict, total: int) -> str:
    """The start every algorithm's progress line shares: iteration, episode metrics, throughput."""
    return (f"iter {row['iteration']:>4}/{total} | Tint {row['Tint']:5.2f}  Rcum {row['Rcum']:6.3f}  "
            f"Rsin {row['Rsin']:.3f} | {row['env_steps_per_s']:8,.0f} env-steps/s | ")


def progress_line(row: dict, total: int) -> str:
    """The line printed per iteration (README, "What a run does and shows")."""
    return (episode_progress(row, total) +
            f"plan {row['planner_latency_ms']:6.1f} ms (fallback {100 * row['planner_fallback_rate']:.0f}%) | "
            f"lag {row['policy_lag_mean']:.2f} (max {row['policy_lag_max']}; {row['lagged_batches']} lagged, "
            f"{row['dropped_stale_batches']} dropped) | restarts {row['rollout_restarts']} | v{row['policy_version']}")
