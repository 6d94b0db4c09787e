"""The user-fidelity table: `benchmarks/user_fidelity.py`'s JSON made into results/user-fidelity/
(report.md, summary.json, calibration.png, auc.png).

    python -m lab.fidelity_report benchmarks/results/user_fidelity.json --out results/user-fidelity

summary.json keeps the design's shape (rows of predictors, each with its metrics as mean and std
over the seeds of the split) and adds the cost rows, the hybrid's fitted weights and the goal.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lab import plots

TABLE = "user-fidelity"
COLUMNS = (("auc", "AUC liked vs not", 3), ("rmse", "rating RMSE", 3), ("ece", "ECE of like", 3),
           ("like_on_liked", "like on liked", 3), ("like_on_not_liked", "like on not liked", 3))
LABELS = {"popularity": "popularity (liked count)", "rule": "rule user (category record)",
          "mf": "learned model (mf)", "llm": "LLM user", "hybrid": "hybrid (mf + LLM)",
          "mf+rule": "mf + rule user (control)"}
COST = (("batch", "users per call", 0), ("steps", "session steps each", 0), ("users_per_s", "user-steps/s", 2),
        ("prompt_tokens_per_user_step", "prompt tokens per user-step", 0),
        ("computed_tokens_per_user_step", "computed (not cached)", 0),
        ("answer_tokens_per_user_step", "answer tokens", 1), ("engine_requests_per_user_step", "engine requests", 1),
        ("prefix_cache_share", "prefix-cache share", 2))


def summary_from(benchmark: dict) -> dict:
    """summary.json of the table, from the benchmark's JSON."""
    seeds = len(benchmark["seeds"])
    rows = {name: {"oracle": False, "seeds": seeds, "env_steps": 0, "wall_s": benchmark["wall_s"] / len(metrics),
                   "metrics": metrics}
            for name, metrics in ((n, benchmark["summary"][n]) for n in benchmark["summary"])}
    return {"table": TABLE, "kind": "user-fidelity", "command": benchmark["command"],
            "commit": benchmark.get("provenance", {}).get("commit", "unknown"),
            "dirty": benchmark.get("provenance", {}).get("dirty", False),
            "dataset": benchmark["dataset"], "backend": benchmark["backend"], "model": benchmark["model"],
            "settings": {k: benchmark[k] for k in ("seeds", "users", "items", "val_items")},
            "rows": rows, "cost": benchmark["cost"], "sessions": benchmark.get("sessions", {}), "goal": benchmark["goal"],
            "weights": [s["weights"] for s in benchmark["per_seed"]],
            "llm_items_per_s": [s["llm_items"] / max(s["llm_seconds"], 1e-9) for s in benchmark["per_seed"]],
            "calibration": {name: benchmark["per_seed"][0]["metrics"][name].get("calibration")
                            for name in benchmark["summary"]}}


def _cell(metrics: dict, key: str, digits: int) -> str:
    return f"{metrics[key]['mean']:.{digits}f} ± {metrics[key]['std']:.{digits}f}" if key in metrics else "–"


def label(name: str, summary: dict) -> str:
    """A row's label; the "LLM" rows say so only when an LLM answered (a label says what runs)."""
    if name in ("llm", "hybrid") and summary["backend"] != "vllm":
        return f"{LABELS[name]}, answered by the {summary['backend']} backend (no LLM)"
    return LABELS.get(name, name) + (f" ({summary['model']})" if name == "llm" else "")


def fidelity_markdown(summary: dict) -> str:
    """One row per predictor: each column's mean ± std over the seeds of the split."""
    lines = ["| predictor | seeds | " + " | ".join(label for _, label, _ in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for name, row in summary["rows"].items():
        cells = [_cell(row["metrics"], key, digits) for key, _, digits in COLUMNS]
        lines.append(f"| {label(name, summary)} | {row['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_markdown(summary: dict) -> str:
    """One row per Respond call size of the cost part."""
    if not summary["cost"]:
        return ""
    lines = ["| " + " | ".join(label for _, label, _ in COST) + " |", "|" + "---|" * len(COST)]
    for row in summary["cost"]:
        lines.append("| " + " | ".join(f"{row[key]:.{digits}f}" for key, _, digits in COST) + " |")
    return "\n".join(lines)


WORLDS = ("mf", "hybrid", "llm")
SESSIONS = (("users", "users", 0), ("click_rate", "click rate", 3), ("logged_like_share", "logged like share", 3),
            ("auc", "AUC vs logged likes", 3), ("slates_stayed", "slates stayed", 2),
            ("logged_slates", "logged slates", 2), ("stayed_to_the_end", "stayed to the end", 2),
            ("category_js", "category JS divergence", 3))


def sessions_markdown(summary: dict) -> str:
    """One row per world: the replayed logged sessions' figures (rollout.log_replay)."""
    sessions = summary.get("sessions") or {}
    if not sessions:
        return ""
    lines = ["| world | " + " | ".join(label for _, label, _ in SESSIONS) + " |", "|---|" + "---|" * len(SESSIONS)]
    for world, row in sessions.items():
        lines.append(f"| {world} | " + " | ".join(f"{row[key]:.{digits}f}" for key, _, digits in SESSIONS) + " |")
    return "\n".join(lines)


def load_cross_world(folder: Path) -> dict:
    """{world: {policy: {Tint, Rcum, llm_user_fallback_cases}}} from `learner.evaluate --out` files
    named mf.json, hybrid.json, llm.json in `folder` (those present), and the command that made them."""
    worlds = {}
    for world in WORLDS:
        path = folder / f"{world}.json"
        if path.is_file():
            rows = json.loads(path.read_text())
            worlds[world] = {name: {key: float(row[key]) for key in ("Tint", "Rcum", "llm_user_fallback_cases")
                                    if key in row} for name, row in rows.items()}
    command = (folder / "command.txt").read_text().strip() if (folder / "command.txt").is_file() else ""
    return {"worlds": worlds, "command": command}


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's rank agreement of two scorings of the same items (ties count 0)."""
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))]
    agree = sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in pairs)
    return float(agree / len(pairs)) if pairs else float("nan")


def cross_world_markdown(summary: dict) -> str:
    """Each policy's return and length in every world, and how far each world's ranking of the
    policies agrees with the mf world's (Kendall's tau on Rcum)."""
    cross = summary.get("cross_world", {}).get("worlds", {})
    if "mf" not in cross:
        return ""
    worlds = [w for w in WORLDS if w in cross]
    policies = list(cross["mf"])
    lines = ["| policy | " + " | ".join(f"Rcum {w}" for w in worlds) + " | " + " | ".join(f"Tint {w}" for w in worlds) + " |",
             "|---|" + "---|" * (2 * len(worlds))]
    for name in policies:
        lines.append(f"| {name} | " + " | ".join(f"{cross[w][name]['Rcum']:.3f}" for w in worlds) + " | "
                     + " | ".join(f"{cross[w][name]['Tint']:.2f}" for w in worlds) + " |")
    taus = [f"{w}: {kendall_tau([cross['mf'][p]['Rcum'] for p in policies], [cross[w][p]['Rcum'] for p in policies]):+.2f}"
            for w in worlds if w != "mf"]
    lines.append(f"| Kendall's tau of the ranking against mf's (Rcum) | {'; '.join(taus)} |" + " |" * (2 * len(worlds) - 1))
    return "\n".join(lines)


def plot_calibration(summary: dict, path: Path) -> Path:
    fig, ax = plots.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="calibrated")
    for name, bins in summary["calibration"].items():
        if bins:
            ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], marker="o", ms=3,
                    label=label(name, summary))
    ax.set(xlabel="predicted probability of liking", ylabel="observed share liked",
           title=f"calibration on held-out items (seed {summary['settings']['seeds'][0]})")
    return plots.save(fig, path, [ax])


def plot_auc(summary: dict, path: Path) -> Path:
    names = list(summary["rows"])
    means = [summary["rows"][n]["metrics"]["auc"]["mean"] for n in names]
    stds = [summary["rows"][n]["metrics"]["auc"]["std"] for n in names]
    fig, ax = plots.subplots(figsize=(6, 3.2))
    ax.bar(range(len(names)), means, yerr=stds, color=["C0" if n not in ("llm", "hybrid") else "C3" for n in names],
           label="mean ± std over seeds")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(names)), [label(n, summary) for n in names], rotation=25, ha="right", fontsize=7)
    ax.set(ylabel="AUC, liked vs not", ylim=(0.4, 1.0), title="held-out AUC")
    return plots.save(fig, path, [ax])


def report_markdown(summary: dict) -> str:
    rows, goal, settings = summary["rows"], summary["goal"], summary["settings"]
    llm, mf = rows["llm"]["metrics"], rows["mf"]["metrics"]
    liked_share = llm["liked_share"]["mean"]
    on_liked, on_not = llm["like_on_liked"]["mean"], llm["like_on_not_liked"]["mean"]
    predicted = liked_share * on_liked + (1 - liked_share) * on_not   # its like rate on these items
    verdict = ("an over-cooperative user: it likes most of what it is shown" if on_not > 0.5 else
               f"it leans cooperative: it likes {predicted:.3f} of the items against its users' {liked_share:.3f}"
               if predicted > 1.25 * liked_share else
               "not over-cooperative: it likes few of the items its user did not like")
    signs = {np.sign(w["hybrid"]["other_logit"]) for w in summary["weights"]}
    steady = ("a sign that changes from seed to seed: it fits noise" if len(signs) > 1 else
              "the same sign in every seed")
    speed = next((c for c in summary["cost"] if c["batch"] == max(r["batch"] for r in summary["cost"])), None)
    weights = ", ".join(f"{w['hybrid']['other_logit']:+.2f}" for w in summary["weights"])
    parts = [
        f"# {TABLE}: the LLM as the user, measured on held-out logs",
        f"Command: `{summary['command']}` then `python -m lab.fidelity_report benchmarks/results/user_fidelity.json "
        f"--out results/{TABLE}`; commit {summary['commit']}{' (with uncommitted changes)' if summary['dirty'] else ''}. "
        f"Data: {summary['dataset']}; LLM: {summary['model']} on the {summary['backend']} backend.",
        "## Protocol",
        f"- Per seed ({len(settings['seeds'])}): each user's latest 10 % of logged ratings is test, the latest 10 % "
        "of the rest validation; the learned model is fitted on the remainder, and every persona is built from it.",
        f"- {settings['users']} users drawn per seed; up to {settings['items']} test ratings each and as many items "
        f"they never rated (validation: {settings['val_items']}). Liked = 4 stars or more; not liked = fewer, or never rated.",
        "- The LLM user answers one constrained digit (1-5 stars) per item; its rating is the expected stars and its "
        "like the probability of 4 or 5, read from the digits' log-probabilities. The hybrid blends the learned "
        "model's logit and the LLM's like logit by a logistic fit on validation (ratings by least squares); "
        "mf + rule user is the same blend with the category-record rule, the control for what any record adds.",
        "## Fidelity (test items, mean ± std over seeds)",
        fidelity_markdown(summary),
        "![AUC](auc.png) ![calibration](calibration.png)",
        "## What it says",
        f"- Hybrid minus learned model, AUC: {goal['hybrid_minus_mf_auc']:+.3f}; the goal (above it beyond the "
        f"seeds' spread) is {'met' if goal['hybrid_auc_above_mf_beyond_spread'] else 'not met'}. The LLM's fitted "
        f"weight in the blend, per seed: {weights} (on its like logit; {steady}).",
        f"- The {label('llm', summary)} alone: AUC {llm['auc']['mean']:.3f} against the learned model's "
        f"{mf['auc']['mean']:.3f} and popularity's {rows['popularity']['metrics']['auc']['mean']:.3f}.",
        f"- Rating RMSE: the LLM's {llm['rmse']['mean']:.3f} against the learned model's {mf['rmse']['mean']:.3f}, the "
        f"hybrid's {rows['hybrid']['metrics']['rmse']['mean']:.3f} and the items' mean rating's (the popularity row) "
        f"{rows['popularity']['metrics']['rmse']['mean']:.3f}.",
        f"- Over-cooperation check: it gives a like probability of {on_not:.3f} to the items its user did not like "
        f"and {on_liked:.3f} to those they liked (the liked share is {liked_share:.3f}): {verdict}"
        + ("; it does not tell them apart either." if abs(on_liked - on_not) < 0.02 else "."),
        "- For scale (different protocols, not comparable figure for figure): Agent4Rec's alignment with real "
        "preferences is about 69 % with a rating RMSE near 0.76 as cited by SimUSER, which reports 79 % and 0.50 "
        "with a large model. A larger model is one flag away: `--planner-model` on a GPU.",
    ]
    if speed:
        parts += ["## Cost (what an llm world's evaluation pays: session steps of fresh users, a slate of 6 each "
                  "after the steps before, no cache)",
                  cost_markdown(summary),
                  f"At {speed['users_per_s']:.2f} user-steps/s ({speed['batch']} users per call), one step of 128 users "
                  f"takes about {128 / speed['users_per_s']:.0f} s on this machine: an evaluation of 128 users for "
                  f"T steps each, T times that."]
    if table := sessions_markdown(summary):
        parts += ["## Logged sessions replayed (the same items, slate by slate, in each world)",
                  "Each held-out user's next logged session (ratings less than an hour apart, in the logs the learned "
                  "model never saw) shown as it happened, six items a slate, from the history before it; clicks in "
                  "expectation. A user whose logged session runs out stops there. Category JS divergence: between "
                  "the categories of what the simulated users clicked and of what the real ones liked (0 = the same).",
                  table]
    if table := cross_world_markdown(summary):
        cross = summary["cross_world"]
        fallbacks = sum(row.get("llm_user_fallback_cases", 0) for rows in cross["worlds"].values() for row in rows.values())
        parts += ["## Across worlds: policies of the learned model's world, evaluated where the LLM answers",
                  f"Command: `{cross['command']}`. The same held-out users and dice in every world; the trained row is "
                  "flat PPO trained in the mf world (results/ilrec-ml100k, seed 0). Oracles are left out of the llm "
                  "and hybrid worlds (they read every item's response). Cases answered by the rule user because a "
                  f"call fell back: {fallbacks:.0f}. The other direction, training in an LLM user's world "
                  "(`python -m learner.main --algorithm ppo --user-model hybrid`), is not run here: on this CPU a "
                  "user-step costs about a second (the cost table), and a training run takes tens of thousands.",
                  table]
    return "\n\n".join(parts) + "\n"


def write(benchmark_path: Path, out: Path, cross_world: Path | None = None) -> Path:
    benchmark = json.loads(benchmark_path.read_text())
    summary = summary_from(benchmark)
    if cross_world is not None:
        summary["cross_world"] = load_cross_world(cross_world)
    out.mkdir(parents=True, exist_ok=True)
    plot_calibration(summary, out / "calibration.png")
    plot_auc(summary, out / "auc.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    (out / "report.md").write_text(report_markdown(summary))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Make results/user-fidelity/ from benchmarks/user_fidelity.py's JSON.")
    parser.add_argument("benchmark_json", type=Path, help="benchmarks/results/user_fidelity.json")
    parser.add_argument("--out", type=Path, default=Path("results") / TABLE, help="the table's folder")
    parser.add_argument("--cross-world", type=Path, default=None, metavar="DIR",
                        help="also show the cross-world evaluation: DIR holds mf.json, hybrid.json and llm.json written "
                             "by python -m learner.evaluate --eval-user-model WORLD --out (and command.txt)")
    args = parser.parse_args(argv)
    if not args.benchmark_json.is_file():
        parser.error(f"{args.benchmark_json} does not exist: run `python benchmarks/user_fidelity.py` first")
    if args.cross_world is not None and not (args.cross_world / "mf.json").is_file():
        parser.error(f"{args.cross_world}/mf.json does not exist: the cross-world table compares against the mf world")
    print(f"wrote {write(args.benchmark_json, args.out, args.cross_world)}")


if __name__ == "__main__":
    main()
