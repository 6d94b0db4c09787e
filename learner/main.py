"""Train a recommendation policy with the actor-learner loop: `python -m learner.main --help`.

Starts (or joins) Ray, starts the planner service, the rollout actors and the learner, trains,
logs a progress line per iteration plus TensorBoard and JSONL metrics, writes checkpoints, and
ends with an evaluation of the trained policy against the random reference on fixed users.
`--resume RUN_DIR` continues a stopped (or killed) run from its newest checkpoint.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

from lab.experiments import ExperimentError, run_table
from learner.algorithms import make_algorithm
from learner.checkpoint import resume_checkpoint, resumed_config
from learner.config import SECTIONS, TrainConfig, build_parser, config_from_args
from learner.runtime import UsageError
from learner.skeleton import run


def train(cfg: TrainConfig, resume_state: dict | None = None) -> dict:
    """Train the algorithm `cfg.run.algorithm` names (continuing `resume_state`, a checkpoint,
    when given) through the run skeleton; returns the evaluation rows (eval.json)."""
    if cfg.run.resume and resume_state is None:
        resume_state = load_resume(cfg.run.resume)[1]
    return run(make_algorithm(cfg), resume_state)


def load_resume(run_dir: str) -> tuple[Path, dict]:
    """The checkpoint `--resume RUN_DIR` continues from."""
    try:
        return resume_checkpoint(run_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--resume {run_dir}: {exc}") from None


def given_flags(argv: list[str] | None) -> set[str]:
    """The config options ("section.field") given on this command line, whatever their values."""
    probe, unset = build_parser(), object()  # the same flags, defaulting to a marker
    probe.set_defaults(**{f"{section}.{f.name}": unset for section in SECTIONS
                          for f in dataclasses.fields(getattr(TrainConfig(), section))})
    return {dest for dest, value in vars(probe.parse_args(argv)).items() if value is not unset and "." in dest}


def run_experiments(target: str, preset: str, cfg: TrainConfig, argv: list[str] | None) -> None:
    """`--config FILE|DIR` (lab.experiments.run_table) with this command line's flags on top."""
    try:
        run_table(target, preset, cfg, given_flags(argv), train)
    except ExperimentError as exc:
        raise UsageError(str(exc)) from None


def resume_options(cfg: TrainConfig, argv: list[str] | None) -> tuple[TrainConfig, dict]:
    """The config and checkpoint of `--resume`: the run's saved config with the options given
    on this command line on top (refused when they change the world, the policy or PPO)."""
    path, state = load_resume(cfg.run.resume)
    given = given_flags(argv)
    if cfg.run.run_dir and Path(cfg.run.run_dir).resolve() != Path(cfg.run.resume).resolve():
        raise UsageError(f"--run-dir {cfg.run.run_dir} and --resume {cfg.run.resume} name different runs")
    try:
        resumed = resumed_config(state["config"], cfg, given)
    except ValueError as exc:
        raise UsageError(f"--resume {cfg.run.resume}: {exc}") from None
    resumed.run.run_dir = resumed.run.resume = cfg.run.resume
    print(f"resuming {cfg.run.resume} from {path.name} (iteration {state.get('iteration', 0)})", flush=True)
    return resumed, state


def cli(argv: list[str] | None = None) -> int:
    parser = build_parser(description=__doc__)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.config:
            run_experiments(args.config, args.preset, cfg, argv)
            return 0
        if args.preset:
            parser.error("--preset needs --config")
        resume_state = None
        if cfg.run.resume:
            cfg, resume_state = resume_options(cfg, argv)
        try:
            cfg.validate()
        except ValueError as exc:  # one line naming the option (not argparse's 50-line usage)
            print(f"{parser.prog}: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        train(cfg, resume_state)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli())
