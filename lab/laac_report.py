"""The offline part of a report, for runs that have offline_eval.json (LAAC's runs): a table of
R@10, NCV@10, NCV-liked@10, HR@10, NDCG@10 and CV@10 on held-out users (mean ± std over seeds)
with the popularity ranking beside it; each reference policy alone on its 100-candidate protocol
(hit@5); each row with a reference policy against the row without one that learned from the same
users (differences and whether they exceed the seeds' spread); and the accuracy-versus-novelty
frontier, every row a point (rows that differ only in alpha joined in order of it).

`lab.report.write_report` adds it to report.md, and its rows to summary.json ("offline",
"candidates"), when any run has offline_eval.json.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from lab import plots

OFFLINE_FILE = "offline_eval.json"
FULL = (("R@10", 4), ("NCV@10", 4), ("NCV-liked@10", 4), ("HR@10", 4), ("NDCG@10", 4), ("CV@10", 3))
CANDIDATE = ("HR@5", "R@10", "HR@10", "NCV@10", "NCV-liked@10")
COMPARED = ("R@10", "NCV@10", "NCV-liked@10")


def load_offline(runs: list[dict]) -> list[dict]:
    """The runs (dicts of `lab.report.load_run`) that have an offline evaluation, with it under "offline"."""
    out = []
    for run in runs:
        path = Path(run["dir"]) / OFFLINE_FILE
        if path.is_file():
            out.append({**run, "offline": json.loads(path.read_text())})
    return out


def _stat(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def reference_name(offline: dict) -> str:
    """What a row's critics compared against: the planner that answered (vllm:MODEL, heuristic,
    random), or none (no reference term, or the supervised model)."""
    if offline.get("variant", "laac") != "laac" or not offline.get("llm_weight", 0.0):
        return "none"
    return offline.get("planner", "") or "none"


def offline_rows(runs: list[dict]) -> dict[str, dict]:
    """{row: {"seeds": n, "kind", "variant", "reference", "train_users", "alpha", metric: (mean, std)}}:
    each experiment, then the popularity ranking."""
    by_name: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_name[run["name"]].append(run)
    rows = {}
    full = [(m, d) for m, d in FULL if all(m in r["offline"]["full"]["trained"] for r in runs)]  # older runs lack some
    for name, group in sorted(by_name.items()):
        first = group[0]["offline"]
        rows[name] = {"seeds": len(group), "kind": "algorithm", "variant": first.get("variant", ""),
                      "llm_weight": first.get("llm_weight", 0.0), "alpha": first.get("alpha", 0.0),
                      "planner": first.get("planner", ""), "reference": reference_name(first),
                      "train_users": first.get("train_users", "all"),
                      **{m: _stat([r["offline"]["full"]["trained"][m] for r in group]) for m, _ in full}}
    popular = [r["offline"]["full"]["popular"] for r in runs if "popular" in r["offline"]["full"]]
    if popular:
        rows["popular (reference)"] = {"seeds": 1, "kind": "reference", **{m: _stat([popular[0][m]]) for m, _ in full}}
    return rows


def candidate_rows(runs: list[dict]) -> dict[str, dict]:
    """The 100-candidate protocol: each row's trained policy (mean over seeds), then each reference
    policy alone ("<planner> alone"), which is the same answer in every run that asked it."""
    by_name: dict[str, list[dict]] = defaultdict(list)
    alone: dict[str, dict] = {}
    for run in runs:
        cand = run["offline"].get("candidates") or {}
        if cand:
            by_name[run["name"]].append(cand["trained"])
            alone[run["offline"].get("planner", "") or "reference"] = cand["llm"]
    cols = [c for c in CANDIDATE if all(c in g for group in by_name.values() for g in group)]
    rows = {name: {"kind": "algorithm", **{c: _stat([g[c] for g in group]) for c in cols}}
            for name, group in sorted(by_name.items())}
    rows.update({f"{planner} alone": {"kind": "reference", **{c: _stat([values[c]]) for c in cols if c in values}}
                 for planner, values in sorted(alone.items())})
    return rows


def _cells(row: dict, columns) -> list[str]:
    spread = row["kind"] == "algorithm" and row.get("seeds", 1) > 1
    return [f"{row[m][0]:.{d}f} ± {row[m][1]:.{d}f}" if spread else f"{row[m][0]:.{d}f}" for m, d in columns]


def offline_markdown(rows: dict[str, dict]) -> str:
    full = [(m, d) for m, d in FULL if all(m in row for row in rows.values())]
    lines = ["| policy | reference | trained on | seeds | " + " | ".join(m for m, _ in full) + " |",
             "|" + "---|" * (len(full) + 4)]
    for name, row in rows.items():
        lines.append(f"| {name} | {row.get('reference', '–')} | {row.get('train_users', '–')} | {row['seeds']} | "
                     + " | ".join(_cells(row, full)) + " |")
    return "\n".join(lines)


def candidate_markdown(rows: dict[str, dict]) -> str:
    cols = [c for c in CANDIDATE if all(c in row for row in rows.values())]
    lines = ["| policy (100 candidates: 99 random + the true next item) | " + " | ".join(cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c][0]:.4f}" for c in cols) + " |")
    return "\n".join(lines)


def comparisons(rows: dict[str, dict]) -> list[str]:
    """Each LAAC row with a reference policy against the LAAC row without one trained on the same
    users: the change in each COMPARED metric, marked where it exceeds the two rows' spreads added."""
    base = {row["train_users"]: (name, row) for name, row in rows.items()
            if row["kind"] == "algorithm" and row.get("variant") == "laac" and row.get("reference") == "none"}
    lines = []
    for name, row in rows.items():
        if row["kind"] != "algorithm" or row.get("reference", "none") == "none" or row["train_users"] not in base:
            continue
        other, ref = base[row["train_users"]]
        parts = []
        for m in COMPARED:
            if m not in row or m not in ref:
                continue
            (a, sa), (b, sb) = row[m], ref[m]
            change = (a - b) / b * 100 if b else float("nan")
            parts.append(f"{m} {a:.4f} vs {b:.4f} ({change:+.0f} %{', beyond the spread' if abs(a - b) > sa + sb else ', within the spread'})")
        lines.append(f"- **{name}** (reference {row['reference']}) against **{other}**: " + "; ".join(parts))
    return lines


def plot_frontier(rows: dict[str, dict], path: Path) -> Path:
    """R@10 (y) against NCV@10 (x) per row; rows that differ only in alpha (same reference and
    training users) joined in order of it."""
    fig, ax = plots.subplots(figsize=(7, 4.8))
    for name, row in rows.items():
        (x, xerr), (y, yerr) = row["NCV@10"], row["R@10"]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o" if row["kind"] == "algorithm" else "s", capsize=3, label=name)
    sweeps: dict[tuple, list[tuple]] = defaultdict(list)
    for row in rows.values():
        if row["kind"] == "algorithm" and row.get("variant") == "laac" and row.get("reference", "none") != "none":
            sweeps[(row["reference"], row["train_users"])].append((row["alpha"], row["NCV@10"][0], row["R@10"][0]))
    for points in sweeps.values():
        if len(points) < 2:
            continue
        points.sort()
        ax.plot([p[1] for p in points], [p[2] for p in points], "k--", lw=1, alpha=0.6)
        for alpha, x, y in points:
            ax.annotate(f"α={alpha:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set(xlabel="NCV@10 (novel: unseen by the user and long-tail)", ylabel="R@10 (rating-weighted hit)",
           title="accuracy versus novelty on held-out users")
    return plots.save(fig, path, [ax])


def offline_section(runs: list[dict], out: Path) -> tuple[list[str], dict]:
    """(markdown lines of the offline section, {"offline": rows, "candidates": rows} for
    summary.json); ([], {}) when no run has offline_eval.json."""
    offline = load_offline(runs)
    if not offline:
        return [], {}
    rows, cand = offline_rows(offline), candidate_rows(offline)
    frontier = plot_frontier(rows, out / "laac_frontier.png")
    lines = ["## Offline evaluation (held-out users)", "",
             "Each held-out transition's policy ranks the catalog less the items the user rated before. R@10: the next "
             "item's rating / 5 when it is in the top 10; NCV@10: the share of the top 10 that the user has not rated "
             "before and that is outside the 10 % most-rated items; NCV-liked@10: the share that is that and also rated "
             "4 or 5 stars by the user later (novel and liked). Definitions: `learner/algorithms/laac/evaluation.py`, "
             "computed by `rollout/metrics/ranking.py`. `reference`: what the critics compared against (the planner "
             "that answered; none = no reference term).", "", offline_markdown(rows), ""]
    compared = comparisons(rows)
    if compared:
        lines += ["Each row with a reference policy against the row without one, trained on the same users "
                  "(beyond the spread: the means differ by more than the two standard deviations added):", "",
                  *compared, ""]
    if cand:
        lines += ["A reference policy alone cannot rank a whole catalog; on its own protocol, beside the trained "
                  "policies ranking the same 100 candidates:", "", candidate_markdown(cand), ""]
    lines += [f"![accuracy versus novelty]({frontier.name})", ""]
    return lines, {"offline": rows, "candidates": cand}
