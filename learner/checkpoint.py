"""Checkpoints: written atomically (temporary name, fsync, rename) so a crash mid-write never
leaves a file that looks complete. The driver's hold the learner's state (weights, optimizer,
version, RNG, seen batch ids), the reflection pool (entries and RNG), the driver's counters
(iteration, env steps, wall time, rollout pool totals) and the config; `--resume RUN_DIR` goes
on from the newest one (`resume_checkpoint`, `resumed_config`, `trim_metrics`)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write `state` (learner state, config, iteration, ...) to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by `save_checkpoint`; refuses other formats with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a checkpoint of format {CHECKPOINT_FORMAT}")
    return state


def resume_checkpoint(run_dir: str | os.PathLike) -> tuple[Path, dict]:
    """The newest checkpoint of a run directory (checkpoints/latest.pt or final.pt, the one with
    the higher iteration; final.pt on a tie) and its state. Temporary files a killed writer left
    behind are removed: they were never renamed, so they never counted as checkpoints."""
    folder = Path(run_dir) / "checkpoints"
    for stale in folder.glob(".*.tmp-*"):
        stale.unlink(missing_ok=True)
    best: tuple[Path, dict] | None = None
    for path in (folder / "latest.pt", folder / "final.pt"):
        if path.is_file():
            state = load_checkpoint(path)
            if best is None or int(state.get("iteration", 0)) >= int(best[1].get("iteration", 0)):
                best = (path, state)
    if best is None:
        raise FileNotFoundError(f"no checkpoint to resume from in {folder} (latest.pt or final.pt)")
    return best


def trim_metrics(path: str | os.PathLike, last_iteration: int) -> int:
    """Drop the rows of a metrics.jsonl after `last_iteration` (work a resumed run redoes) and a
    torn last line, rewriting the file atomically; returns how many rows were dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # the process died while writing this line
            dropped += 1
            continue
        if int(row.get("iteration", 0)) <= last_iteration:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    return dropped


# Sections a resumed run must share with the checkpoint: the weights and the optimizer only make
# sense for the same world, network and objective. Run and rollout options may change.
FROZEN_SECTIONS = ("world", "policy", "ppo")


def resumed_config(saved: dict, requested, given: set[str]):
    """The config of a resumed run: the checkpoint's, with the options given on this command line
    (`given`: "section.field" names) on top. A given world, policy or PPO option that differs from
    the checkpoint's is refused (ValueError naming it)."""
    from learner.config import TrainConfig

    cfg = TrainConfig.from_dict(saved)
    for dest in sorted(given):
        section, _, name = dest.partition(".")
        new, old = getattr(getattr(requested, section), name), getattr(getattr(cfg, section), name)
        if section in FROZEN_SECTIONS and new != old:
            raise ValueError(f"cannot resume with --{name.replace('_', '-')} {new!r}: the run was trained with "
                             f"{section}.{name}={old!r} (world, policy and PPO options must stay as they were)")
        setattr(getattr(cfg, section), name, new)
    return cfg
