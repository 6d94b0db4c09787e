"""The test bed proves itself: every reference policy on fixed evaluation users of one world, the
lookahead oracle as the ceiling's estimate, and the trade-off between the next click and the
user staying, as numbers and as a plot.

    python benchmarks/test_bed.py [--dataset ml-100k] [--users N] [--seed 2024]

Goals (issue 15), on the default MovieLens world: the lookahead oracle's return beats the best
myopic oracle's (greedy with its diversity rules) by at least 15 %, and no other reference comes
within 10 % of the lookahead oracle's return. Writes benchmarks/results/test_bed.json
(`references`: per policy `oracle`, `Rcum`, `Tint`, `Rsin`, and more; `lookahead_oracle` and
`best_myopic_oracle` name the two) and benchmarks/results/test_bed.png (reward per step against
return: a world with a trade-off puts the myopic oracles top left and the lookahead top right).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import write_result  # noqa: E402
from learner.evaluation import (  # noqa: E402
    evaluate_episodes,
    evaluate_reference,
    evaluation_table,
    evaluation_users,
    with_gap_closed,
)
from rollout.reference_policies import EXPOSURE_PRICE, MYOPIC_ORACLES, ORACLES, REFERENCE_POLICIES  # noqa: E402
from rollout.slates import exposure_greedy  # noqa: E402
from rollout.world import World, WorldConfig  # noqa: E402

GOAL_OVER_MYOPIC = 1.15      # lookahead / best myopic oracle, in return
GOAL_OTHERS_BELOW = 0.90     # every other reference / lookahead, in return
PRICES = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0, 16.0)  # greedy-exposure's price is the best of these


def price_sweep(world: World, cfg: WorldConfig, ids, seed: int) -> dict[str, float]:
    """Rcum of greedy on exposure-priced scores at each price: is greedy-exposure's the best rule?"""
    def make_act(price):
        return lambda env: (lambda step, active: (exposure_greedy(env, price), {}))
    return {str(price): evaluate_episodes(world, cfg, ids, seed, make_act(price))["Rcum"] for price in PRICES}


def measure_test_bed(world: World, cfg: WorldConfig, users: int, seed: int, log=print) -> dict:
    """Every reference on the same `users` evaluation users; the verdict against the goals."""
    ids = evaluation_users(world, users, seed)
    rows, seconds = {}, {}
    for name in REFERENCE_POLICIES:
        t0 = time.perf_counter()
        rows[name] = evaluate_reference(world, cfg, name, ids, seed)
        seconds[name] = time.perf_counter() - t0
        log(f"  {name:<18} Rcum {rows[name]['Rcum']:7.3f}  Tint {rows[name]['Tint']:6.2f}  ({seconds[name]:.1f} s)")
    rows = with_gap_closed(rows)
    sweep = price_sweep(world, cfg, ids, seed)
    log(f"  greedy-exposure price sweep (Rcum): {sweep}")
    best_myopic = max(MYOPIC_ORACLES, key=lambda n: rows[n]["Rcum"])
    ceiling = rows["lookahead"]["Rcum"]
    runner_up = max((n for n in rows if n != "lookahead"), key=lambda n: rows[n]["Rcum"])
    return {
        "references": {n: {"oracle": n in ORACLES, "seconds": seconds[n], **m} for n, m in rows.items()},
        "lookahead_oracle": "lookahead",
        "best_myopic_oracle": best_myopic,
        "lookahead_over_best_myopic": ceiling / rows[best_myopic]["Rcum"],
        "runner_up": runner_up,
        "runner_up_share_of_lookahead": rows[runner_up]["Rcum"] / ceiling,
        "exposure_price_sweep": sweep,
        "exposure_price": EXPOSURE_PRICE,
        "exposure_price_is_best": max(sweep, key=sweep.get) == str(EXPOSURE_PRICE),
        "goals": {"lookahead_over_best_myopic": GOAL_OVER_MYOPIC, "others_below_share": GOAL_OTHERS_BELOW},
        "goals_met": bool(ceiling >= GOAL_OVER_MYOPIC * rows[best_myopic]["Rcum"]
                          and rows[runner_up]["Rcum"] < GOAL_OTHERS_BELOW * ceiling),
        "table": evaluation_table(rows),
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, m in result["references"].items():
        ax.scatter(m["Rsin"], m["Rcum"], marker="*" if m["oracle"] else "o", s=80 if m["oracle"] else 40,
                   color="tab:red" if m["oracle"] else "tab:blue")
        ax.annotate(name, (m["Rsin"], m["Rcum"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("reward per step (Rsin)")
    ax.set_ylabel("return (Rcum)")
    ax.set_title("References: the next click against the user staying (* = oracle)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=WorldConfig.dataset, help="the world's data set (default: %(default)s)")
    parser.add_argument("--users", type=int, default=0,
                        help="evaluation users, drawn from the held-out ones (default 0: every held-out user once)")
    parser.add_argument("--seed", type=int, default=2024, help="evaluation seed (default: %(default)s)")
    args = parser.parse_args(argv)
    cfg = WorldConfig(dataset=args.dataset)
    if args.users < 0:
        parser.error("--users must be >= 0")
    world = World.build(cfg)
    users = args.users or len(world.eval_users)
    print(f"test bed: {args.dataset}, {users} evaluation users (held out of {world.num_users}), seed {args.seed}")
    result = measure_test_bed(world, cfg, users, args.seed)
    result.update(dataset=args.dataset, users=users, seed=args.seed, world=asdict(cfg))
    print(result["table"])
    print(f"lookahead / best myopic oracle ({result['best_myopic_oracle']}): "
          f"{result['lookahead_over_best_myopic']:.3f} (goal >= {GOAL_OVER_MYOPIC}); runner-up "
          f"{result['runner_up']} at {100 * result['runner_up_share_of_lookahead']:.1f}% of the lookahead "
          f"(goal < {100 * GOAL_OTHERS_BELOW:.0f}%): goals {'met' if result['goals_met'] else 'NOT met'}")
    out = write_result("test_bed", result)
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0 if result["goals_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
