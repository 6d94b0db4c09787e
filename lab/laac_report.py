"""The offline part of a report, for runs that have offline_eval.json (LAAC's runs): a table of
R@10, NCV@10, HR@10 and CV@10 on held-out users (mean ± std over seeds), the reference rows (the
popularity ranking, and the LLM policy alone on its 100-candidate protocol with hit@5), and the
trade-off frontier: R@10 against NCV@10, the rows with the same reference policy joined in order
of alpha.

`lab.report.write_report` adds it to report.md when any run has offline_eval.json.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from lab import plots

OFFLINE_FILE = "offline_eval.json"
FULL = (("R@10", 4), ("NCV@10", 4), ("HR@10", 4), ("NDCG@10", 4), ("CV@10", 3))


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


def offline_rows(runs: list[dict]) -> dict[str, dict]:
    """{row: {"seeds": n, "kind", "alpha", metric: (mean, std)}}: each experiment, then the references."""
    by_name: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_name[run["name"]].append(run)
    rows = {}
    full = [(m, d) for m, d in FULL if all(m in r["offline"]["full"]["trained"] for r in runs)]  # older runs: no NDCG
    for name, group in sorted(by_name.items()):
        first = group[0]["offline"]
        rows[name] = {"seeds": len(group), "kind": "algorithm", "variant": first.get("variant", ""),
                      "llm_weight": first.get("llm_weight", 0.0), "alpha": first.get("alpha", 0.0),
                      "planner": first.get("planner", ""),
                      **{m: _stat([r["offline"]["full"]["trained"][m] for r in group]) for m, _ in full}}
    popular = [r["offline"]["full"]["popular"] for r in runs if "popular" in r["offline"]["full"]]
    if popular:
        rows["popular (reference)"] = {"seeds": 1, "kind": "reference", **{m: _stat([popular[0][m]]) for m, _ in full}}
    return rows


def candidate_lines(runs: list[dict]) -> list[str]:
    """The 100-candidate protocol: every row's trained policy and the LLM policy alone (hit@5)."""
    cols = ("HR@5", "R@10", "HR@10", "NCV@10")
    by_name: dict[str, list[dict]] = defaultdict(list)
    llm = []
    for run in runs:
        cand = run["offline"].get("candidates") or {}
        if cand:
            by_name[run["name"]].append(cand["trained"])
            llm.append((run["offline"].get("planner", ""), cand["llm"]))
    if not by_name:
        return []
    lines = ["| policy (100 candidates: 99 random + the true next item) | " + " | ".join(cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, group in sorted(by_name.items()):
        lines.append(f"| {name} | " + " | ".join(f"{np.mean([g[c] for g in group]):.4f}" for c in cols) + " |")
    for planner, values in sorted({p: v for p, v in llm}.items()):
        lines.append(f"| LLM policy alone ({planner}) | " + " | ".join(f"{values[c]:.4f}" for c in cols) + " |")
    return lines


def offline_markdown(rows: dict[str, dict]) -> str:
    full = [(m, d) for m, d in FULL if all(m in row for row in rows.values())]
    head = "| policy | seeds | " + " | ".join(m for m, _ in full) + " |"
    lines = [head, "|" + "---|" * (len(full) + 2)]
    for name, row in rows.items():
        spread = row["kind"] == "algorithm" and row["seeds"] > 1
        cells = [f"{row[m][0]:.{d}f} ± {row[m][1]:.{d}f}" if spread else f"{row[m][0]:.{d}f}" for m, d in full]
        lines.append(f"| {name} | {row['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_frontier(rows: dict[str, dict], path: Path) -> Path:
    """R@10 (y) against NCV@10 (x) per row; the LAAC rows with an LLM term, ordered by alpha, joined."""
    fig, ax = plots.subplots(figsize=(6.5, 4.5))
    for name, row in rows.items():
        (x, xerr), (y, yerr) = row["NCV@10"], row["R@10"]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o" if row["kind"] == "algorithm" else "s", capsize=3, label=name)
    by_planner: dict[str, list[tuple]] = defaultdict(list)  # one frontier per reference policy
    for row in rows.values():
        if row["kind"] == "algorithm" and row.get("variant") == "laac" and row.get("llm_weight", 0) > 0:
            by_planner[row.get("planner", "")].append((row["alpha"], row["NCV@10"][0], row["R@10"][0]))
    for planner, points in by_planner.items():
        if len(points) < 2:
            continue
        points.sort()
        ax.plot([p[1] for p in points], [p[2] for p in points], "k--", lw=1, alpha=0.6)
        for alpha, x, y in points:
            ax.annotate(f"α={alpha:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set(xlabel="NCV@10 (novel: unseen by the user and long-tail)", ylabel="R@10 (rating-weighted hit)",
           title="accuracy versus novelty on held-out users")
    return plots.save(fig, path, [ax])


def offline_section(runs: list[dict], out: Path) -> list[str]:
    """Markdown lines of the offline section (empty when no run has offline_eval.json)."""
    offline = load_offline(runs)
    if not offline:
        return []
    rows = offline_rows(offline)
    frontier = plot_frontier(rows, out / "laac_frontier.png")
    lines = ["## Offline evaluation (held-out users)", "",
             "R@10: the held-out next item's rating / 5 when it is in the top 10 of the whole catalog; NCV@10: the "
             "share of the top 10 that the user has not rated before and that is outside the 10 % most-rated items "
             "(definitions: `learner/algorithms/laac/evaluation.py`).", "", offline_markdown(rows), ""]
    cand = candidate_lines(offline)
    if cand:
        lines += ["The LLM policy alone cannot rank a whole catalog; on its own protocol, beside the trained "
                  "policies ranking the same 100 candidates:", "", *cand, ""]
    lines += [f"![accuracy versus novelty]({frontier.name})", ""]
    return lines
