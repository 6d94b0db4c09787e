"""Experiment files: each row of a results table is a named config file in the repository, and
`python -m learner.main --config FILE` runs it (every seed it lists); `--config DIR` runs every
row of a table, then writes the table's report.

A file (YAML or JSON) holds:

    name: lerl                      # the row's name in reports
    description: LLM planner with reflections over a masked PPO policy
    seeds: [0, 1, 2]                # one training run per seed
    run:     {planner_backend: vllm}        # any config section: run, world, policy, ppo, rollout
    rollout: {use_planner: true}
    presets:                        # optional named variants, chosen with --preset NAME
      quick: {seeds: [0], run: {iterations: 3}}

`_defaults.yaml` in the same directory, if present, is merged under every file of it (the world,
the budget and the presets a table's rows share). The command line overrides both: flags given
there win over the file. Runs go to RUN_ROOT/NAME/seed-S (RUN_ROOT: --run-dir, else runs/ and the
table's directory name); a run that already has its evaluation (eval.json) is skipped, so
re-running a table after a crash only runs what is missing.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab.report import ReportError, write_report
from learner.checkpoint import resume_checkpoint
from learner.config import SECTIONS, TrainConfig

DEFAULTS_FILE = "_defaults.yaml"
TOP_KEYS = {"name", "description", "seeds", "presets", *SECTIONS}


class ExperimentError(ValueError):
    """A malformed experiment file; the message names the file and the key."""


@dataclass
class Experiment:
    path: Path
    name: str
    description: str
    seeds: list[int]
    sections: dict = field(default_factory=dict)  # section -> {field: value}


def _read(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ExperimentError(f"cannot read experiment file {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - json's and yaml's parse errors alike: one line naming the file
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ExperimentError(f"{path}: not valid {kind}: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ExperimentError(f"{path}: an experiment file is a mapping of keys, got {type(data).__name__}")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise ExperimentError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(TOP_KEYS))}")
    return data


def _merge(base: dict, top: dict) -> dict:
    """Section-wise merge (top wins, field by field)."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_experiment(path: str | Path, preset: str = "") -> Experiment:
    """The experiment in `path` (merged over its directory's _defaults.yaml, then `preset`)."""
    path = Path(path)
    defaults_path = path.parent / DEFAULTS_FILE
    data = _read(defaults_path) if defaults_path.is_file() and path.name != DEFAULTS_FILE else {}
    data = _merge(data, _read(path))
    presets = data.pop("presets", {}) or {}
    if preset:
        if preset not in presets:
            raise ExperimentError(f"{path}: no preset {preset!r}; it has: {', '.join(sorted(presets)) or 'none'}")
        variant = presets[preset]
        unknown = sorted(set(variant) - (TOP_KEYS - {"presets", "name"}))
        if unknown:
            raise ExperimentError(f"{path}: preset {preset!r} has unknown key(s) {', '.join(unknown)}")
        data = _merge(data, variant)
    name = data.get("name") or path.stem
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ExperimentError(f"{path}: seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    sections = {k: v for k, v in data.items() if k in SECTIONS}
    for section, values in sections.items():
        if not isinstance(values, dict):
            raise ExperimentError(f"{path}: {section} must be a mapping of options, got {values!r}")
    try:
        TrainConfig.from_dict(sections)  # unknown keys fail here, named
    except ValueError as exc:
        raise ExperimentError(f"{path}: {exc}") from None
    return Experiment(path, str(name), str(data.get("description", "")), list(seeds), sections)


def experiment_files(target: str | Path) -> list[Path]:
    """A file, or every *.yaml / *.json row of a table directory (not _defaults.yaml), sorted."""
    target = Path(target)
    if target.is_dir():
        files = sorted(p for p in target.iterdir() if p.suffix in (".yaml", ".yml", ".json") and p.name != DEFAULTS_FILE)
        if not files:
            raise ExperimentError(f"{target}: no experiment files (*.yaml, *.json) in this directory")
        return files
    if not target.is_file():
        raise ExperimentError(f"no experiment file or directory at {target}")
    return [target]


def expand(experiment: Experiment, given: TrainConfig, given_flags: set[str], run_root: Path,
           only_seed: int | None = None) -> list[TrainConfig]:
    """One TrainConfig per seed: defaults, then the file, then the flags given on the command line."""
    configs = []
    for seed in ([only_seed] if only_seed is not None else experiment.seeds):
        cfg = TrainConfig.from_dict(experiment.sections)
        for dest in given_flags:
            section, _, name = dest.partition(".")
            setattr(getattr(cfg, section), name, copy.deepcopy(getattr(getattr(given, section), name)))
        cfg.run.seed, cfg.run.name = seed, experiment.name
        cfg.run.run_dir = str(run_root / experiment.name / f"seed-{seed}")
        configs.append(cfg)
    return configs


def default_run_root(target: str | Path) -> Path:
    target = Path(target)
    return Path("runs") / (target.name if target.is_dir() else target.parent.name)


def run_table(target: str | Path, preset: str, cfg: TrainConfig, given: set[str],
              train: Callable[[TrainConfig, dict | None], object]) -> None:
    """Every seed of every experiment file of `target` (a file or a table directory), with the
    `given` command-line options of `cfg` on top: all validated before any run starts; finished
    runs skipped, unfinished ones resumed from their checkpoint; then the report when there is
    more than one run. ExperimentError for a bad file or option."""
    root = Path(cfg.run.run_dir) if "run.run_dir" in given else default_run_root(target)
    only_seed = cfg.run.seed if "run.seed" in given else None
    given = given - {"run.run_dir", "run.seed", "run.resume"}
    runs = []
    for path in experiment_files(target):
        experiment = load_experiment(path, preset)
        for run_cfg in expand(experiment, cfg, given, root, only_seed):
            try:
                run_cfg.validate()
            except ValueError as exc:
                raise ExperimentError(f"{path}: {exc}") from None
            runs.append(run_cfg)
    print(f"{len(runs)} runs ({', '.join(sorted({r.run.name for r in runs}))}) under {root}", flush=True)
    for n, run_cfg in enumerate(runs, 1):
        run_dir = Path(run_cfg.run.run_dir)
        label = f"[{n}/{len(runs)}] {run_cfg.run.name} seed {run_cfg.run.seed}"
        if (run_dir / "eval.json").is_file():
            print(f"{label}: finished before, skipped ({run_dir})", flush=True)
            continue
        state = None
        try:
            _, state = resume_checkpoint(run_dir)
        except (FileNotFoundError, ValueError):
            pass
        if state is not None and int(state.get("iteration", 0)) < run_cfg.run.iterations:
            print(f"{label}: resuming the unfinished run from iteration {state['iteration']}", flush=True)
        else:  # nothing to resume (or it died while evaluating): start over
            state = None
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        print(f"{label} -> {run_dir}", flush=True)
        train(run_cfg, state)
    if len(runs) > 1:
        try:
            print(f"report: {write_report([root])}", flush=True)
        except ReportError as exc:
            print(f"no report: {exc}", flush=True)
