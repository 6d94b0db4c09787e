"""The IL-Rec part of a report: each IL-Rec row's demonstrator (measured against random slates on
the same users before it was imitated, and alone on the held-out users), its reward model, and
the trained policy against its demonstrator, flat RL and the strongest rule that needs no
learning. Reads the runs' JSON only (no torch), as lab.report does."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lab import plots

DEMONSTRATOR = "llm-propose"
"""learner.algorithms.ilrec's evaluation row of the demonstrator alone (not imported: JSON only).
It is each run's own demonstrator (the LLM, or the rule an ablation names), so it is a row's
control, never a reference row shared across runs."""


def demonstrator_label(config: dict) -> str:
    """The demonstrator's name: the planner backend (and model), as LAAC names its reference."""
    run = config.get("run", {})
    demonstrator = config.get("ilrec", {}).get("ilrec_demonstrator", "planner")
    if demonstrator != "planner":
        return f"reference:{demonstrator}"
    if run.get("planner_address"):
        return f"external:{run['planner_address']}"
    backend = run.get("planner_backend", "?")
    return f"vllm:{run.get('planner_model', '?')}" if backend == "vllm" else backend


def _stat(values: list[float]) -> tuple[float, float]:
    return (float(np.mean(values)), float(np.std(values))) if values else (float("nan"), 0.0)


def ilrec_rows(runs: list[dict]) -> dict[str, dict]:
    """{row: {demonstrator, mode, seeds, demo_vs_random: {...}, demonstrator_alone, reward_auc, ...}}
    for the rows whose runs trained IL-Rec."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        if run["config"].get("run", {}).get("algorithm") == "ilrec" and DEMONSTRATOR in run["eval"]:
            groups.setdefault(run["name"], []).append(run)
    rows = {}
    for name, group in groups.items():
        first = group[0]
        quality = first["eval"][DEMONSTRATOR].get("demonstrator_vs_random", {})
        last = [r["curve"][-1] if r["curve"] else {} for r in group]
        options = first["config"].get("ilrec", {})
        unused = options.get("ilrec_reward_weight") == 0 and options.get("ilrec_demo_ratio") == 0
        rows[name] = {
            # A control that learns from neither the demonstrations nor the reward says so.
            "demonstrator": demonstrator_label(first["config"]) + (" (unused)" if unused else ""),
            "mode": first["config"].get("ilrec", {}).get("ilrec_mode", "online"),
            "seeds": len(group),
            # One data set for every seed (--ilrec-demo-seed): the comparison is the same in each run.
            "demo_vs_random": quality,
            "demonstrator_alone": _stat([r["eval"][DEMONSTRATOR]["Rcum"] for r in group]),
            "demonstrator_alone_users": int(first["eval"][DEMONSTRATOR].get("episodes", 0)),
            "reward_auc": _stat([x["ilrec_reward_auc"] for x in last if "ilrec_reward_auc" in x]),
            "reward_item_std": _stat([x["ilrec_learned_reward_item_std"] for x in last
                                      if "ilrec_learned_reward_item_std" in x]),
            "reward_weight": first["config"].get("ilrec", {}).get("ilrec_reward_weight", float("nan")),
            "demo_ratio": first["config"].get("ilrec", {}).get("ilrec_demo_ratio", float("nan")),
        }
    return rows


def _cell(v, digits: int = 3) -> str:
    return "–" if not np.isfinite(v[0]) else f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"


def ilrec_markdown(ilrec: dict[str, dict]) -> str:
    lines = ["| row | mode | demonstrator | its Rcum on the training users | random's on the same users | "
             "beats random (2 SE) | demonstrator alone, held-out users | reward AUC (demo vs logged slates) | "
             "learned reward weight x item std | demonstration share of the replay |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in ilrec.items():
        q = row["demo_vs_random"]
        beats = ("yes" if q.get("beats_random") else "no") + f" ({q.get('difference', float('nan')):+.3f} ± " \
            f"{2 * q.get('difference_se', float('nan')):.3f})"
        spread = row["reward_weight"] * row["reward_item_std"][0]
        lines.append(f"| {name} | {row['mode']} | {row['demonstrator']} | {q.get('demonstrator_Rcum', float('nan')):.3f} "
                     f"({q.get('sessions', 0)} sessions) | {q.get('random_Rcum', float('nan')):.3f} | {beats} | "
                     f"{_cell(row['demonstrator_alone'])} ({row['demonstrator_alone_users']} users) | "
                     f"{_cell(row['reward_auc'])} | {spread:.3f} | {row['demo_ratio']:.2f} |")
    return "\n".join(lines)


def _versus(a: tuple[float, float], b: tuple[float, float]) -> str:
    ratio = f"{a[0] / b[0]:.2f}x" if b[0] > 0 else "–"
    apart = "beyond the spread" if abs(a[0] - b[0]) > a[1] + b[1] else "within the spread"
    return f"{a[0]:.3f} vs {b[0]:.3f} ({ratio}, {apart})"


def ilrec_comparisons(ilrec: dict[str, dict], rows: dict[str, dict]) -> list[str]:
    """Each IL-Rec row's Rcum against flat PPO (the table's `flat-ppo` row), its demonstrator alone
    and the best reference that is neither an oracle nor the population's model."""
    rules = {name: row for name, row in rows.items()
             if row["kind"] == "reference" and not row["oracle"] and not row.get("population_model")}
    best_rule = max(rules, key=lambda n: rules[n]["Rcum"][0]) if rules else None
    lines = []
    for name in ilrec:
        if name not in rows:
            continue
        mine, parts = rows[name]["Rcum"], []
        if "flat-ppo" in rows:
            parts.append(f"flat-ppo {_versus(mine, rows['flat-ppo']['Rcum'])}")
        parts.append(f"its demonstrator alone {_versus(mine, ilrec[name]['demonstrator_alone'])}")
        if best_rule:
            parts.append(f"the best non-oracle reference ({best_rule.removesuffix(' (reference)')}) "
                         f"{_versus(mine, rules[best_rule]['Rcum'])}")
        gap = rows[name].get("gap_closed")
        if gap:
            parts.append(f"gap closed to the lookahead oracle {gap[0]:.3f} ± {gap[1]:.3f}")
        lines.append(f"- **{name}** Rcum against " + "; ".join(parts))
    return lines


def plot_offline_curves(runs: list[dict], path: Path) -> Path | None:
    """Each offline IL-Rec row's learning curve: the policy's return on the curve's training users
    against the offline updates taken (mean and spread over seeds); None without offline rows."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        options = run["config"].get("ilrec", {})
        if run["config"].get("run", {}).get("algorithm") == "ilrec" and options.get("ilrec_mode") == "offline" \
                and run["curve"]:
            groups.setdefault(run["name"], []).append(run)
    if not groups:
        return None
    fig, ax = plots.subplots(figsize=(6, 4))
    for name, group in sorted(groups.items()):
        steps = min(len(r["curve"]) for r in group)
        per = group[0]["config"]["ilrec"].get("ilrec_offline_steps", 1)
        x = np.array([row["iteration"] for row in group[0]["curve"][:steps]]) * per
        y = np.array([[row["Rcum"] for row in r["curve"][:steps]] for r in group])
        ax.plot(x, y.mean(0), label=f"{name} ({len(group)} seeds)")
        ax.fill_between(x, y.mean(0) - y.std(0), y.mean(0) + y.std(0), alpha=0.2)
    ax.set(xlabel="offline updates (minibatches)", ylabel="return per session (Rcum), training users",
           title="IL-Rec offline: learning curves")
    return plots.save(fig, path, [ax])


def ilrec_section(runs: list[dict], rows: dict[str, dict], out: Path | None = None) -> tuple[list[str], dict]:
    """(markdown lines of the IL-Rec section, {"ilrec": rows} for summary.json); ([], {}) without
    IL-Rec runs. With `out`, the offline rows' learning curves are plotted there."""
    ilrec = ilrec_rows(runs)
    if not ilrec:
        return [], {}
    curves = plot_offline_curves(runs, out / "ilrec_offline_curves.png") if out is not None else None
    lines = ["## IL-Rec: the demonstrator, the reward model, the policy", "",
             "The demonstrator's sessions against uniformly random slates on the same training users (one data set "
             "for every seed; beats random: the mean paired difference exceeds 2 standard errors), then the "
             "demonstrator alone on the first held-out users; the reward model's AUC: how well its g alone ranks a "
             "demonstration slate above a logged random one.", "", ilrec_markdown(ilrec), "",
             *ilrec_comparisons(ilrec, rows), ""]
    if curves:
        lines += [f"![IL-Rec offline learning curves]({curves.name})", ""]
    return lines, {"ilrec": ilrec}
