"""Turn finished runs into a report: a markdown results table (mean +/- std over seeds), learning
curves and a diversity-versus-return plot (PNG), saved beside the runs.

    python -m learner.report runs/lerl-ml100k            # every run under this directory
    python -m learner.report runs/a runs/b --out report/  # several roots, report elsewhere

A run is a directory with config.json, metrics.jsonl and eval.json (what `python -m learner.main`
writes). Runs are grouped into rows by their experiment name (`run.name` in config.json, else the
run directory's parent name), seeds within a row are aggregated; reference policies come from
the runs' own evaluations (the same fixed users), one row each.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from lab import plots
from lab.ilrec_report import DEMONSTRATOR, ilrec_section
from lab.laac_report import offline_section
from rollout.metrics.episodes import late_rise

METRICS = (("Tint", "Tint", 2), ("Rcum", "Rcum", 3), ("Rsin", "Rsin", 3), ("gap_closed", "gap closed", 3),
           ("coverage", "coverage", 3), ("diversity", "diversity", 3), ("novelty", "novelty", 2),
           ("div_ratio", "DivRatio", 3), ("popularity_bias", "pop-bias", 3), ("serendipity", "serendipity", 3),
           ("MGU", "MGU", 3), ("DGU", "DGU", 3), ("gender_Rcum_gap", "gender gap", 3), ("age_Rcum_gap", "age gap", 3),
           ("explanation_faithful", "expl. faithful", 2), ("explanation_judge", "expl. judge", 2),
           ("convergence_env_steps", "converged at", 0))
"""Every column a report can show (`rollout.metrics`, via learner.evaluation.summarise); a report
shows those that every row of its runs carries (older runs lack the later metrics)."""
TRAINED = "trained"
BUDGET_KEYS = ("updates", "env_steps", "wall_s", "first_plans_s", "plan_wait_share", "plan_age", "late_rise")
PER_RUN_CONTROLS = ("random+planner", "greedy+planner", "ridge-exposure-fresh+planner", "posterior-exposure+planner")
"""learner.evaluation.PLANNER_CONTROLS' names (not imported: a report reads JSON and needs no torch;
tests/lab/test_report.py checks they agree). Evaluation rows that depend on each run's own planner: a row's controls, never a reference row
(greedy+planner, the best item inside the planner's categories, is the row's planner quality;
ridge-exposure-fresh+planner, the best non-oracle rule inside them, its quality for a policy that
cannot read the true model; posterior-exposure+planner, what the observation supports inside them
when the population's model is known: the trained row's ceiling)."""
POPULATION_MODEL = ("posterior-exposure", "posterior-exposure+planner")
"""rollout.reference_policies.POPULATION_MODEL (likewise not imported; the test checks they agree):
rows that read the training population's true model, not this user's, marked + in a table."""
CONTROL_QUALITY = {"greedy+planner": ("planner_quality", ("Rcum", "Tint", "gap_closed")),
                   "ridge-exposure-fresh+planner": ("planner_rule_quality", ("Rcum", "gap_closed")),
                   "posterior-exposure+planner": ("planner_posterior_quality", ("Rcum", "gap_closed"))}
"""Per-run control -> (its key in a trained row, the metrics kept there)."""


class ReportError(Exception):
    """Nothing to report on, or a run directory that is not a finished run: printed, exit 2."""


def find_runs(roots: list[Path]) -> list[Path]:
    runs = sorted({p.parent for root in roots for p in root.rglob("eval.json") if (p.parent / "config.json").is_file()})
    if not runs:
        raise ReportError(f"no finished runs (directories with eval.json and config.json) under "
                          f"{', '.join(map(str, roots))}; run `python -m learner.main --config FILE` first")
    return runs


def load_run(run: Path) -> dict:
    try:
        config = json.loads((run / "config.json").read_text())
        evaluation = json.loads((run / "eval.json").read_text())
        metrics_path = run / "metrics.jsonl"
        curve = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()] \
            if metrics_path.is_file() else []
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{run}: cannot read the run ({exc})") from None
    if TRAINED not in evaluation:
        raise ReportError(f"{run}/eval.json has no '{TRAINED}' row (was the run evaluated? --eval-users > 0)")
    name = config.get("run", {}).get("name") or run.parent.name
    origin_path = run / "provenance.json"
    origin = json.loads(origin_path.read_text()) if origin_path.is_file() else {}
    return {"dir": run, "name": name, "seed": config.get("run", {}).get("seed", 0), "config": config,
            "eval": evaluation, "curve": curve, "provenance": origin}


def _budget(run: dict) -> dict:
    """What training a run took: updates, env steps, wall seconds (its metrics.jsonl's last row:
    the training time plus the first plans made before it, `first_plans_s`), and the planner's
    cost: the mean share of rollout time spent waiting for plans and the mean age of the plans
    used, in steps (0 without a planner); and how much its training return still rose at the end
    (`late_rise`: the last 10 % of updates over 50-70 %, minus 1; about 0 is a plateau)."""
    curve = run["curve"]
    last = curve[-1] if curve else {}
    mean = lambda key: float(np.mean([row.get(key, 0.0) for row in curve])) if curve else 0.0  # noqa: E731
    first_plans = float(last.get("first_plans_seconds", 0.0))
    # updates: the last row's iteration (one row per update in LERL; LAAC logs every N updates)
    return {"updates": int(last.get("iteration", len(curve))), "env_steps": float(last.get("env_steps_total", 0)),
            "wall_s": float(last.get("wall_seconds", last.get("seconds", 0.0))) + first_plans,
            "first_plans_s": first_plans,
            "plan_wait_share": mean("planner_wait_share"), "plan_age": mean("plan_age_mean"),
            "late_rise": late_rise([row["Rcum"] for row in curve if "Rcum" in row])}


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def shown_metrics(runs: list[dict]) -> tuple:
    """The METRICS every trained row of `runs` carries (convergence: trained rows only)."""
    return tuple(m for m in METRICS if all(m[0] in r["eval"][TRAINED] for r in runs))


def _stats(values: list[dict], metrics) -> dict:
    """(mean, std) of each metric over rows that carry it ((nan, nan) when none does)."""
    out = {}
    for m, _, _ in metrics:
        present = [v[m] for v in values if m in v and v[m] is not None]
        out[m] = _mean_std(present) if present else (float("nan"), float("nan"))
    return out


def observable_share(run: dict) -> float | None:
    """The trained row's share of the gap from random to its observable ceiling in return: the
    population posterior inside the run's planner categories (posterior-exposure+planner), or
    over every item without a planner (posterior-exposure); None when the run lacks them."""
    ev = run["eval"]
    ceiling = ev.get("posterior-exposure+planner", ev.get("posterior-exposure"))
    if ceiling is None or "random" not in ev or ceiling["Rcum"] <= ev["random"]["Rcum"]:
        return None
    return (ev[TRAINED]["Rcum"] - ev["random"]["Rcum"]) / (ceiling["Rcum"] - ev["random"]["Rcum"])


def aggregate(runs: list[dict]) -> dict[str, dict]:
    """{row name: {"seeds": n, metric: (mean, std), "kind": "algorithm" | "reference", "oracle": bool}}."""
    metrics = shown_metrics(runs)
    rows: dict[str, dict] = {}
    by_name: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_name[run["name"]].append(run)
    for name, group in by_name.items():
        budgets = [_budget(r) for r in group]
        rows[name] = {"kind": "algorithm", "seeds": len(group), "oracle": False,
                      **_stats([r["eval"][TRAINED] for r in group], metrics),
                      **{key: _mean_std([b[key] for b in budgets]) for key in BUDGET_KEYS},
                      "seed_list": [r["seed"] for r in group],
                      "provenance": [{"seed": r["seed"], **{k: r["provenance"].get(k) for k in (
                          "commit", "dirty", "command", "cpu", "cores")}} for r in group if r["provenance"]]}
        shares = [share for share in map(observable_share, group) if share is not None]
        if shares:
            rows[name]["observable_share"] = _mean_std(shares)
        for control, (key, kept) in CONTROL_QUALITY.items():  # the planner's part of the result
            values = [r["eval"][control] for r in group if control in r["eval"]]
            if values:
                rows[name][key] = _stats(values, [m for m in metrics if m[0] in kept])
    references: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        for policy, values in run["eval"].items():
            if policy not in (TRAINED, DEMONSTRATOR, *PER_RUN_CONTROLS) and policy not in by_name:
                references[policy].append(values)
    for policy, values in sorted(references.items()):
        rows[f"{policy} (reference)"] = {"kind": "reference", "seeds": len(values),
                                         "oracle": bool(values[0].get("oracle", False)),
                                         "population_model": policy in POPULATION_MODEL, **_stats(values, metrics)}
    return rows


def markdown_table(rows: dict[str, dict]) -> str:
    """One row per policy (oracles marked *, the population model's references +), a column per metric the rows carry; nan shows as –."""
    metrics = [m for m in METRICS if all(m[0] in row for row in rows.values())]
    head = "| policy | seeds | " + " | ".join(label for _, label, _ in metrics) + " |"
    lines = [head, "|" + "---|" * (len(metrics) + 2)]
    for name, row in rows.items():
        spread = row["kind"] == "algorithm" and row["seeds"] > 1
        cells = ["–" if not np.isfinite(row[m][0]) else
                 f"{row[m][0]:.{d}f} ± {row[m][1]:.{d}f}" if spread else f"{row[m][0]:.{d}f}" for m, _, d in metrics]
        label = name + (" *" if row.get("oracle") else " +" if row.get("population_model") else "")
        lines.append(f"| {label} | {row['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


NAN2 = (float("nan"), float("nan"))
LATE_BUDGET_COLUMNS = (("late_rise", None, "late rise"),)
"""Budget columns shown, after the plan age, only when some row carries them (older runs do not):
(key in a trained row, its entry there or None for the (mean, std) itself, header)."""
CONTROL_BUDGET_COLUMNS = (("planner_rule_quality", "Rcum", "Rcum of ridge-exposure-fresh inside them"),
                          ("planner_posterior_quality", "Rcum", "Rcum of posterior-exposure inside them +"),
                          ("observable_share", None, "share of its observable ceiling +"))
"""Likewise, after the planner quality's gap closed."""


def _budget_cell(v: tuple[float, float], digits: int) -> str:
    return "–" if not np.isfinite(v[0]) else f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"


def _optional_cells(row: dict, columns) -> str:
    """A trained row's cells of `columns` (3 decimals; – where it lacks one)."""
    values = (row.get(key, NAN2) if entry is None else row.get(key, {}).get(entry, NAN2) for key, entry, _ in columns)
    return "".join(f" {_budget_cell(v, 3)} |" for v in values)


def budget_table(rows: dict[str, dict]) -> str:
    """Per trained row: what it took (updates, env steps, wall time) and its planner's quality."""
    late, controls = ([c for c in columns if any(c[0] in row for row in rows.values())]
                      for columns in (LATE_BUDGET_COLUMNS, CONTROL_BUDGET_COLUMNS))
    lines = ["| row | seeds | updates | env steps | wall time (s) | of it, first plans (s) | plan wait share | "
             "plan age (steps) |" + "".join(f" {c[2]} |" for c in late)
             + " planner quality: Rcum of the best items inside its categories * | its gap closed |"
             + "".join(f" {c[2]} |" for c in controls),
             "|---|---|---|---|---|---|---|---|---|---|" + "---|" * (len(late) + len(controls))]
    cell = _budget_cell
    for name, row in rows.items():
        if row["kind"] != "algorithm":
            continue
        quality = row.get("planner_quality", {})
        rcum, gap = quality.get("Rcum", NAN2), quality.get("gap_closed", NAN2)
        lines.append(f"| {name} | {row['seeds']} | {cell(row['updates'], 0)} | {cell(row['env_steps'], 0)} | "
                     f"{cell(row['wall_s'], 0)} | {cell(row.get('first_plans_s', (0.0, 0.0)), 0)} | "
                     f"{cell(row['plan_wait_share'], 2)} | {cell(row['plan_age'], 2)} |{_optional_cells(row, late)}"
                     f" {cell(rcum, 3)} | {cell(gap, 3)} |{_optional_cells(row, controls)}")
    return "\n".join(lines)


def plot_curves(runs: list[dict], path: Path) -> Path | None:
    by_name: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        if run["curve"] and "Rcum" in run["curve"][0]:  # offline runs (LAAC) log losses, not episodes
            by_name[run["name"]].append(run)
    if not by_name:
        return None
    fig, axes = plots.subplots(1, 2, figsize=(11, 4))
    for name, group in sorted(by_name.items()):
        for ax, metric in zip(axes, ("Rcum", "Tint")):
            # Seeds are aligned on environment steps, averaged where all of them got to.
            steps = min(len(r["curve"]) for r in group)
            x = np.mean([[row["env_steps_total"] for row in r["curve"][:steps]] for r in group], axis=0)
            y = np.array([[row[metric] for row in r["curve"][:steps]] for r in group])
            mean, std = y.mean(0), y.std(0)
            if steps > 1 and x[-1] == x[0]:
                # An offline learner took all its environment steps before training: its end, as
                # one point at that count (its curve over updates is its own algorithm's plot).
                ax.errorbar(x[-1:], mean[-1:], yerr=std[-1:], fmt="o", capsize=3,
                            label=f"{name} ({len(group)} seeds; offline: steps taken before training)")
                continue
            ax.plot(x, mean, label=f"{name} ({len(group)} seeds)")
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    for ax, metric in zip(axes, ("return per session (Rcum)", "interaction length (Tint)")):
        ax.set(xlabel="environment steps", ylabel=metric, title=f"training: {metric}")
    return plots.save(fig, path, axes)


def plot_diversity_return(rows: dict[str, dict], path: Path) -> Path:
    fig, ax = plots.subplots(figsize=(6, 4.5))
    for name, row in rows.items():
        (x, xerr), (y, yerr) = row["diversity"], row["Rcum"]
        marker = "o" if row["kind"] == "algorithm" else "s"
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=marker, capsize=3, label=name)
    ax.set(xlabel="diversity (intra-slate, 1 - similarity)", ylabel="return per session (Rcum)",
           title="diversity versus return (evaluation users)")
    return plots.save(fig, path, [ax])


def write_report(roots: list[Path], out: Path | None = None) -> Path:
    runs = [load_run(r) for r in find_runs(roots)]
    out = out or (roots[0] if len(roots) == 1 else Path("."))
    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(runs)
    curves = plot_curves(runs, out / "learning_curves.png")
    scatter = plot_diversity_return(rows, out / "diversity_vs_return.png")
    worlds = sorted({f"{r['config']['world'].get('dataset', '?')} ({r['config']['world'].get('quit_rule', '?')} rule)"
                     for r in runs})
    users = sorted({r["eval"][TRAINED].get("episodes", 0) for r in runs})
    lines = ["# Results", "",
             f"{len(runs)} runs in {len(rows) - sum(r['kind'] == 'reference' for r in rows.values())} rows; "
             f"world: {', '.join(worlds)}; evaluation: {', '.join(map(str, users))} fixed users per run "
             "(mean ± std over training seeds; reference policies are deterministic given the users).", "",
             markdown_table(rows), "", "Budgets, and each planner on its own (no planner: –):", "",
             budget_table(rows), ""]
    gains = _gains(rows)
    if gains:
        lines += ["", *gains, ""]
    lines += explanation_section(runs)
    offline_lines, offline_summary = offline_section(runs, out)
    lines += offline_lines
    ilrec_lines, ilrec_summary = ilrec_section(runs, rows, out)
    lines += ilrec_lines
    if curves:
        lines += [f"![learning curves]({curves.name})", ""]
    lines += [f"![diversity versus return]({scatter.name})", "", "Runs:", ""]
    lines += [f"- {r['name']} seed {r['seed']}: `{r['dir']}`"
              + (f", commit {r['provenance']['commit'][:10]}{' (dirty)' if r['provenance'].get('dirty') else ''}, "
                 f"`{r['provenance']['command']}`" if r["provenance"] else "") for r in runs]
    lines += ["", "`*` oracle: reads the true user model. `+` (posterior-exposure): reads the training population's "
              "true model, never this user's: the observable ceiling (`rollout/population_posterior.py`); a row's share of its "
              "observable ceiling is (Rcum - random) / (ceiling - random), the ceiling being posterior-exposure inside its "
              "planner's categories (over every item without a planner). gap closed = (Rcum - random) / (lookahead - random). "
              "Definitions of every column: `rollout/metrics/` (DivRatio: distinct / recommended items; "
              "pop-bias: mean popularity percentile; serendipity: liked and outside the user's history "
              "categories; MGU / DGU: mean / largest gap between a popularity fifth's share of exposure "
              "and of the catalog; gender / age gap: largest - smallest group mean Rcum; converged at: "
              "env steps to 90 % of the final training return; expl. faithful / judge: "
              "share of sampled explanations naming only what is in the slate or history / the judge's 1-5 "
              "rating, `learner/explanations.py`)."]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    commits = sorted({r["provenance"].get("commit", "") for r in runs if r["provenance"]})
    summary = {"worlds": worlds, "evaluation_users": users, "commits": commits, "rows": rows, **offline_summary,
               **ilrec_summary,
               "runs": [{"name": r["name"], "seed": r["seed"], "dir": str(r["dir"]), "eval": r["eval"]} for r in runs]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return path


def explanation_section(runs: list[dict], per_policy: int = 3) -> list[str]:
    """The explained policies of each experiment's first run: scores, then a few examples."""
    lines = []
    for run in runs:
        explained = {p: v["explanations"] for p, v in run["eval"].items() if "explanations" in v}
        if not explained or any(line.startswith(f"### Explanations: {run['name']}") for line in lines):
            continue
        lines += [f"### Explanations: {run['name']} (seed {run['seed']})", "",
                  "| slates of | n | faithful | valid | words | judge (1-5) | judge by |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {p} | {e['explanations']} | {e['faithful']:.2f} | {e['valid']:.2f} | {e['words']:.1f} | "
                  f"{e['judge']:.2f} | {e['judge_backend']} |" for p, e in explained.items()]
        lines.append("")
        for policy, e in explained.items():
            for example in e["examples"][:per_policy]:
                text = example["text"].replace("|", "/")
                lines.append(f"- {policy}: \"{text}\" (faithful {example['faithful']}, judge {example['judge']:.1f})")
        lines.append("")
    return lines


def _gains(rows: dict[str, dict]) -> list[str]:
    """LERL's headline ratios against flat PPO when both rows are present (by name)."""
    names = [n for n, r in rows.items() if r["kind"] == "algorithm"]
    flat = next((n for n in names if "flat" in n or n.endswith("ppo")), None)
    out = []
    for name in names:
        if flat is None or name == flat:
            continue
        ratios = []
        one_seed = min(rows[name]["seeds"], rows[flat]["seeds"]) < 2
        for metric in ("Tint", "Rcum"):
            (a, sa), (b, sb) = rows[name][metric], rows[flat][metric]
            apart = ("one seed: spread unknown" if one_seed
                     else "apart" if abs(a - b) > sa + sb else "within the seeds' spread")
            ratios.append(f"{metric} {a / b:.2f}x ({apart})" if b else f"{metric} n/a")
        out.append(f"- {name} against {flat}: " + ", ".join(ratios))
    return out


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m learner.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", type=Path, help="run directories, or directories holding runs")
    parser.add_argument("--out", type=Path, default=None, help="where report.md and the PNGs go "
                        "(default: the one root given, else the current directory)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.roots, args.out)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path.read_text())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
