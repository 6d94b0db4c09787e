"""The run skeleton every algorithm fills in (RLlib's Algorithm, reduced to what we need).

`run(algorithm)` owns everything a training run does whatever it trains: refuse a bad resume,
let the algorithm check its settings and data before any process starts, start or join Ray, make
the run directory and write config.json, start the planner service and wait for it, then loop:
one `iterate` per iteration, its metrics row to metrics.jsonl, TensorBoard and a progress line,
a checkpoint every so often, the time budget; then the final checkpoint, the evaluation
(eval.json) and the shut-down, however the run ends.

An `Algorithm` supplies only what is its own: `prepare` (world, data, settings), `setup` (its
actors or networks, once the services run), `iterate`, `progress`, `state` / `load_state`
(the checkpoint), `evaluate` and `close`. Adding an algorithm is a folder under
learner/algorithms/ with one subclass and a line in its registry.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch.utils.tensorboard import SummaryWriter

from learner.checkpoint import check_compatible, save_checkpoint, trim_metrics, work_lost
from learner.provenance import provenance
from learner.evaluation import evaluation_table, with_convergence, with_gap_closed
from learner.runtime import UsageError, init_ray, make_run_dir, shut_down, start_planner, wait_for_planner
from rollout.world import World, data_card, data_card_line, dynamics_card


@dataclass
class Run:
    """What the skeleton started for this run, handed to the algorithm's `setup` and `evaluate`."""

    cfg: Any                       # learner.config.TrainConfig
    run_dir: Path
    ray: Any = None                # the ray module once Ray runs; None for runs without it
    planner_address: str | None = None
    planner_replicas: Any = None   # llm_server.replicas.PlannerReplicas the run started, if any
    start: int = 1                 # first iteration of this process (> 1 after a resume)
    resumed: dict = field(default_factory=dict)   # the checkpoint resumed from ({} for a fresh run)
    resume_cost: dict = field(default_factory=dict)  # resumes, iterations redone, seconds lost so far
    wall_before: float = 0.0       # training seconds of the processes before a resume
    t_budget: float = 0.0          # perf_counter() when the time budget started counting

    def elapsed(self) -> float:
        """Seconds since the time budget started counting (this process only)."""
        return time.perf_counter() - self.t_budget

    def wall_seconds(self) -> float:
        """Training seconds of the whole run, resumes included."""
        return self.wall_before + self.elapsed()


class Algorithm:
    """One way to train, run by `run`. Subclasses set `name` and override the hooks they need."""

    name: ClassVar[str] = ""
    supports_resume: ClassVar[bool] = False
    budget_counts_setup: ClassVar[bool] = False
    """True: the time budget counts from the start of the run (set-up such as LLM answers or
    demonstrations included); False: from the first iteration."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.world_files: dict[str, Any] = {}  # what build_world keeps for the run directory

    def build_world(self, check=None) -> World:
        """The run's world, built in `prepare` (so a user model is trained and cached once, before
        any actor needs it), checked by `check(world)` when given (ValueError), then announced with
        its data card; the card (data.json) and the user model's report (user_model.json) are kept
        for the run directory."""
        cfg = self.cfg
        world = World.build(cfg.world)
        if check is not None:
            check(world)
        card = {**data_card(world), "dynamics": dynamics_card(cfg.world)}
        print(f"world: {cfg.world.dataset}, {world.num_items:,} items in {world.num_categories} categories, "
              f"{world.num_users:,} users, quit rule {cfg.world.quit_rule}", flush=True)
        print(data_card_line(card), flush=True)
        self.world_files = {"data.json": card}
        if world.user_model.report:
            self.world_files["user_model.json"] = world.user_model.report
        return world

    # Before anything starts (ValueError here ends the run with one line, having started nothing).
    def prepare(self) -> None:
        """Check the settings against the data and build what needs no process (the world)."""

    def needs_planner(self) -> bool:
        """Whether this run needs the planner service (the skeleton starts it)."""
        return False

    def needs_ray(self) -> bool:
        return True

    def total_iterations(self) -> int:
        return self.cfg.run.iterations

    def checkpoint_every(self) -> int:
        return self.cfg.run.checkpoint_every

    def run_files(self) -> dict[str, Any]:
        """JSON files for the run directory before training (name -> content): the world's."""
        return self.world_files

    # Once Ray, the run directory and the planner are up.
    def setup(self, run: Run) -> None:
        self.run = run

    def iterate(self, iteration: int) -> dict | None:
        """One iteration; returns its metrics row, or None when it has nothing to log."""
        raise NotImplementedError(f"{type(self).__name__} must implement iterate")

    def pending_row(self, iteration: int) -> dict | None:
        """The row of the iterations since the last one logged, when training stops between rows."""
        return None

    def progress(self, row: dict) -> str:
        return json.dumps(row)

    def stop_training(self) -> None:
        """Training is over (last iteration, time budget or error): stop what runs beside it."""

    def state(self, iteration: int) -> dict:
        """What a checkpoint holds besides the config and the iteration."""
        return {}

    def load_state(self, state: dict) -> None:
        """Continue from `state` (a checkpoint of this algorithm); only with supports_resume."""

    def evaluate(self, run: Run) -> dict:
        """The evaluation rows written as eval.json ({} = none)."""
        return {}

    def close(self) -> None:
        """Release what setup started (the skeleton then stops the planner and Ray)."""


def _log_row(row: dict, writer: SummaryWriter, metrics_file) -> None:
    for key, value in row.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "iteration":
            writer.add_scalar(key, value, row["iteration"])
    metrics_file.write(json.dumps(row) + "\n")
    metrics_file.flush()


def _start(algo: Algorithm, resumed: dict, t_run: float) -> Run:
    """Everything before the first iteration: checks, Ray, run directory, planner."""
    cfg = algo.cfg
    if resumed and not algo.supports_resume:
        raise UsageError(f"--resume is not supported with --algorithm {algo.name}: start the run again")
    start = int(resumed.get("iteration", 0)) + 1
    if start > algo.total_iterations():
        raise UsageError(f"the run is at iteration {start - 1} already; pass --iterations > {start - 1} to go on")
    try:
        if resumed:
            check_compatible(resumed, cfg)
        algo.prepare()
    except ValueError as exc:  # DataError included: missing or malformed data, or settings it cannot meet
        raise UsageError(str(exc)) from None
    ray = init_ray(cfg) if algo.needs_ray() else None
    run_dir = make_run_dir(cfg)
    driver = resumed.get("driver", {})
    run = Run(cfg, run_dir, ray, start=start, resumed=resumed, wall_before=float(driver.get("wall_seconds", 0.0)),
              resume_cost={"resumes": 0, "resume_iterations_redone": 0, "resume_seconds_lost": 0.0,
                           **driver.get("resume", {})}, t_budget=t_run)
    for name, content in algo.run_files().items():
        (run_dir / name).write_text(json.dumps(content, indent=2))
    origin = provenance()
    known = run_dir / "provenance.json"
    if resumed and known.is_file():  # the run's first start stays its origin; each resume is added
        first = json.loads(known.read_text())
        origin = {**first, "resumes": [*first.get("resumes", []), origin]}
    known.write_text(json.dumps(origin, indent=2))
    cfg.save(run_dir / "config.json")
    print(f"run directory: {run_dir}", flush=True)
    if algo.needs_planner():
        run.planner_replicas, run.planner_address = start_planner(ray, cfg)
        wait_for_planner(run.planner_address, cfg.run.planner_ready_timeout_s)
        print(f"planner: {cfg.run.planner_backend if not cfg.run.planner_address else 'external'} "
              f"at {run.planner_address}", flush=True)
        cfg.save(run_dir / "config.json")  # with the backend "auto" resolved to
    if resumed:
        metrics = run_dir / "metrics.jsonl"
        redone, lost = work_lost(metrics, start - 1, run.wall_before)
        dropped = trim_metrics(metrics, start - 1)
        cost = run.resume_cost
        run.resume_cost = {"resumes": cost["resumes"] + 1,
                           "resume_iterations_redone": cost["resume_iterations_redone"] + redone,
                           "resume_seconds_lost": cost["resume_seconds_lost"] + lost}
        print(f"resumed from iteration {start - 1}; {dropped} metrics rows after it dropped ({redone} iterations "
              f"to redo, {lost:.1f} s of training lost)", flush=True)
    return run


def run(algo: Algorithm, resume_state: dict | None = None) -> dict:
    """Train `algo` from scratch (or continue `resume_state`, a checkpoint); returns the
    evaluation rows (eval.json)."""
    cfg, resumed = algo.cfg, resume_state or {}
    t_run = time.perf_counter()
    run_ = _start(algo, resumed, t_run)
    writer = metrics_file = None
    try:
        algo.setup(run_)
        if resumed:
            algo.load_state(resumed)
        if not algo.budget_counts_setup:
            run_.t_budget = time.perf_counter()
        writer = SummaryWriter(str(run_.run_dir / "tensorboard"), purge_step=run_.start if resumed else None)
        metrics_file = open(run_.run_dir / "metrics.jsonl", "a" if resumed else "w")
        total, budget, iteration = algo.total_iterations(), cfg.run.time_budget_s, run_.start - 1
        curve = []  # (env steps so far, Rcum) per logged row: the convergence speed's curve

        def checkpoint(name: str) -> Path:
            state = {**algo.state(iteration), "config": cfg.to_dict(), "iteration": iteration}
            return save_checkpoint(run_.run_dir / "checkpoints" / name, state,
                                   previous="previous.pt" if name == "latest.pt" else None)

        for iteration in range(run_.start, total + 1):
            row = algo.iterate(iteration)
            out_of_time = bool(budget) and run_.elapsed() > budget
            if row is None and (out_of_time or iteration == total):
                row = algo.pending_row(iteration)
            if row is not None:
                _log_row(row, writer, metrics_file)
                if "env_steps_total" in row and "Rcum" in row:
                    curve.append((row["env_steps_total"], row["Rcum"]))
                print(algo.progress(row), flush=True)
            every = algo.checkpoint_every()
            if every and iteration % every == 0:
                checkpoint("latest.pt")
            if out_of_time:
                counted = "set-up included" if algo.budget_counts_setup else "training only"
                print(f"time budget of {budget:g} s reached after {iteration} iterations ({counted})", flush=True)
                break
        algo.stop_training()
        print(f"checkpoint: {checkpoint('final.pt')}", flush=True)
        # Every algorithm's rows: oracle marks, gap closed, the trained row's convergence speed.
        results = with_convergence(with_gap_closed(algo.evaluate(run_)), curve)
        if results:
            (run_.run_dir / "eval.json").write_text(json.dumps(results, indent=2))
            print(evaluation_table(results), flush=True)
        print(f"{algo.name} run finished in {time.perf_counter() - t_run:.0f} s", flush=True)
        return results
    finally:
        algo.stop_training()
        for closing in (writer, metrics_file):
            if closing is not None:
                closing.close()
        shut_down(run_.ray, algo.close,
                  run_.planner_replicas.stop if run_.planner_replicas is not None else None)
