"""Checkpoints: written atomically and verifiable, so a crash mid-write never yields a file that is
loaded as if it were complete.

A checkpoint file is a `torch.save` of a dict (so `torch.load` reads it as it is) followed by a
trailer: a marker and the SHA-256 of everything before it. `save_checkpoint` writes a temporary
file, fsyncs it, and only then renames it to its final name (keeping the file it replaces as
`previous.pt` when asked); `load_checkpoint` refuses a file without the trailer (a torn write) or
whose digest differs (corruption) with `CheckpointCorrupt`, and a checkpoint of another
`CHECKPOINT_SCHEMA_VERSION` or batch schema with `CheckpointIncompatible`, naming the field.

The driver's checkpoints hold the learner's state (weights, optimizer, version, RNG, seen batch
ids), the reflection pool (entries and RNG), the driver's counters (iteration, env steps, wall
time, rollout pool totals) and the config; `--resume RUN_DIR` goes on from the newest one that
verifies (`resume_checkpoint`: latest.pt, previous.pt, final.pt), `resumed_config` and
`check_compatible` keep its world, policy and PPO settings, `trim_metrics` drops the rows of
iterations it redoes.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import torch

from rollout.batch_schema import SCHEMA_VERSION as BATCH_SCHEMA_VERSION

log = logging.getLogger(__name__)

# Bump when the layout of the saved state changes in a way older code cannot read (or newer code
# cannot read older files): a checkpoint of another version is refused, naming both versions.
CHECKPOINT_SCHEMA_VERSION = 2
TRAILER_MARKER = b"\nLLMREC-CHECKPOINT-SHA256:"
_TRAILER_LEN = len(TRAILER_MARKER) + 64 + 1  # marker, hex digest, newline
# The files `resume_checkpoint` considers, newest kind first.
RESUME_CANDIDATES = ("latest.pt", "previous.pt", "final.pt")


class CheckpointCorrupt(ValueError):
    """A checkpoint file that is incomplete (a write was interrupted) or damaged."""


class CheckpointIncompatible(ValueError):
    """A complete checkpoint this code must not load (other schema version, other settings)."""


def save_checkpoint(path: str | os.PathLike, state: dict, previous: str | os.PathLike | None = None) -> Path:
    """Write `state` (learner state, config, iteration, ...) to `path` atomically: temporary file,
    fsync, rename. With `previous`, the file at `path` (if any) is first renamed to `previous`, so
    the last good checkpoint survives whatever happens to the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_SCHEMA_VERSION, "schema_version": CHECKPOINT_SCHEMA_VERSION,
                "batch_schema_version": BATCH_SCHEMA_VERSION, **state}, buffer)
    payload = buffer.getvalue()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(payload)
        fh.write(TRAILER_MARKER + hashlib.sha256(payload).hexdigest().encode() + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    if previous is not None and path.is_file():
        os.replace(path, path.with_name(Path(previous).name))
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (no-op where a directory cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read and verify a checkpoint written by `save_checkpoint`. FileNotFoundError when there is
    none; CheckpointCorrupt when it is incomplete or damaged; CheckpointIncompatible when it is of
    another checkpoint or batch schema version (the message names the field and both values)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    data = path.read_bytes()
    payload, trailer = data[:-_TRAILER_LEN], data[-_TRAILER_LEN:]
    if len(data) < _TRAILER_LEN or not trailer.startswith(TRAILER_MARKER) or not trailer.endswith(b"\n"):
        raise CheckpointCorrupt(f"{path} is incomplete: no integrity trailer at its end (its write was "
                                f"interrupted, or it was written by a version before checkpoint schema "
                                f"{CHECKPOINT_SCHEMA_VERSION})")
    expected = trailer[len(TRAILER_MARKER):-1].decode("ascii", "replace")
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise CheckpointCorrupt(f"{path} is damaged: its SHA-256 is {actual[:12]}..., the trailer says "
                                f"{expected[:12]}...")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - verified bytes that still do not load: name the file
        raise CheckpointCorrupt(f"{path} cannot be read: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointCorrupt(f"{path} holds a {type(state).__name__}, not a checkpoint")
    for key, want in (("schema_version", CHECKPOINT_SCHEMA_VERSION), ("batch_schema_version", BATCH_SCHEMA_VERSION)):
        if state.get(key) != want:
            raise CheckpointIncompatible(f"{path} has {key}={state.get(key)!r}, this code needs {want!r}: it "
                                         f"was written by another version of llmrec-rl; resume it with that "
                                         f"version or start a new run")
    return state


def resume_checkpoint(run_dir: str | os.PathLike) -> tuple[Path, dict]:
    """The newest checkpoint of a run directory that verifies, among checkpoints/latest.pt,
    previous.pt and final.pt (the highest iteration; final.pt on a tie), and its state.

    Temporary files a killed writer left behind are removed (they were never renamed, so they
    never counted). A file that is incomplete or damaged is skipped, logged, and renamed to
    NAME.corrupt so that a later save cannot rotate it over the good previous.pt. A checkpoint
    of another schema version is refused (CheckpointIncompatible), not skipped: the older
    files are no more loadable than it is. FileNotFoundError when none is usable."""
    folder = Path(run_dir) / "checkpoints"
    for stale in folder.glob(".*.tmp-*"):
        stale.unlink(missing_ok=True)
    best: tuple[Path, dict] | None = None
    skipped = []
    for name in RESUME_CANDIDATES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            state = load_checkpoint(path)
        except CheckpointCorrupt as exc:
            skipped.append(str(exc))
            log.warning("skipping checkpoint %s", exc)
            os.replace(path, path.with_name(path.name + ".corrupt"))
            continue
        if best is None or int(state.get("iteration", 0)) >= int(best[1].get("iteration", 0)):
            best = (path, state)
    if best is None:
        reasons = f" ({'; '.join(skipped)})" if skipped else ""
        raise FileNotFoundError(f"no checkpoint to resume from in {folder} (latest.pt, previous.pt or "
                                f"final.pt){reasons}")
    return best


def trim_metrics(path: str | os.PathLike, last_iteration: int) -> int:
    """Drop the rows of a metrics.jsonl after `last_iteration` (work a resumed run redoes) and a
    torn last line, rewriting the file atomically; returns how many rows were dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        row = _row(line)
        if row is not None and int(row.get("iteration", 0)) <= last_iteration:
            kept.append(line)
        else:
            dropped += 1  # after the checkpoint, or torn: the process died while writing it
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    return dropped


def work_lost(path: str | os.PathLike, last_iteration: int, checkpoint_wall_s: float) -> tuple[int, float]:
    """What a resume from a checkpoint of `last_iteration` (written at `checkpoint_wall_s` of run
    time) redoes, read from the metrics.jsonl before `trim_metrics`: (iterations that finished
    after the checkpoint, run seconds from the checkpoint to the last of them). The seconds are a
    lower bound: work after the last complete row left no trace."""
    path = Path(path)
    if not path.is_file():
        return 0, 0.0
    rows = [row for row in map(_row, path.read_text().splitlines())
            if row is not None and int(row.get("iteration", 0)) > last_iteration]
    wall = max((float(row.get("wall_seconds", 0.0)) for row in rows), default=checkpoint_wall_s)
    return len({int(row["iteration"]) for row in rows}), max(wall - checkpoint_wall_s, 0.0)


def _row(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


# Sections a resumed run must share with the checkpoint: the weights and the optimizer only make
# sense for the same world, network and objective. Run and rollout options may change.
FROZEN_SECTIONS = ("world", "policy", "ppo")


def resumed_config(saved: dict, requested, given: set[str]):
    """The config of a resumed run: the checkpoint's, with the options given on this command line
    (`given`: "section.field" names) on top. A given world, policy or PPO option that differs from
    the checkpoint's is refused (ValueError naming it). `requested` is this command line's
    TrainConfig; the result is of its class."""
    cfg = type(requested).from_dict(saved)
    for dest in sorted(given):
        section, _, name = dest.partition(".")
        new, old = getattr(getattr(requested, section), name), getattr(getattr(cfg, section), name)
        if section in FROZEN_SECTIONS and new != old:
            raise ValueError(f"cannot resume with --{name.replace('_', '-')} {new!r}: the run was trained with "
                             f"{section}.{name}={old!r} (world, policy and PPO options must stay as they were)")
        setattr(getattr(cfg, section), name, new)
    return cfg


def check_compatible(state: dict, cfg) -> None:
    """Refuse (CheckpointIncompatible naming the first field that differs) to continue `cfg`'s run
    from a checkpoint whose world, policy or PPO settings are not the same: its weights and
    optimizer would not fit, or would silently mean something else. Used where a state reaches
    `train` without `resumed_config` (an experiment table resuming its unfinished runs)."""
    try:
        saved = type(cfg).from_dict(state.get("config", {}))
    except ValueError as exc:
        raise CheckpointIncompatible(f"the checkpoint's config cannot be read by this version: {exc}") from None
    for section in FROZEN_SECTIONS:
        old, new = getattr(saved, section), getattr(cfg, section)
        for name in vars(old):
            if getattr(old, name) != getattr(new, name):
                raise CheckpointIncompatible(
                    f"the checkpoint was trained with {section}.{name}={getattr(old, name)!r}, this run asks for "
                    f"{getattr(new, name)!r} (world, policy and PPO settings must match to continue a run; "
                    f"start a new run directory instead)")
