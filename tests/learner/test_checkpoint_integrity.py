"""Checkpoint integrity (issue 8, point 2): a checkpoint whose write was interrupted, at any point,
is never loaded (the previous good one is), and one of another schema version or config is refused
with a message naming the field. No Ray: every case is a file on disk, checked in milliseconds."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
from pathlib import Path

import pytest
import torch

from learner import checkpoint as ckpt
from learner.checkpoint import (CheckpointCorrupt, CheckpointIncompatible, check_compatible, load_checkpoint,
                                resume_checkpoint, save_checkpoint)
from learner.config import TrainConfig


def _state(iteration: int, cfg: TrainConfig | None = None) -> dict:
    return {"iteration": iteration, "config": (cfg or TrainConfig()).to_dict(), "learner": {"version": iteration},
            "weights": torch.arange(4096, dtype=torch.float32) * iteration}


def _save_two(folder: Path) -> Path:
    """latest.pt at iteration 6, previous.pt at iteration 3, as the driver leaves them."""
    save_checkpoint(folder / "latest.pt", _state(3), previous="previous.pt")
    return save_checkpoint(folder / "latest.pt", _state(6), previous="previous.pt")


def test_each_save_keeps_the_one_before_and_files_stay_plain_torch_files(tmp_path):
    folder = tmp_path / "checkpoints"
    latest = _save_two(folder)
    assert load_checkpoint(latest)["iteration"] == 6
    assert load_checkpoint(folder / "previous.pt")["iteration"] == 3
    assert torch.load(latest, weights_only=False)["iteration"] == 6  # tools that torch.load it still can
    assert sorted(p.name for p in folder.iterdir()) == ["latest.pt", "previous.pt"]  # no temporary left


@pytest.mark.parametrize("damage", ["truncated", "one byte flipped", "trailer cut", "empty"])
def test_a_damaged_latest_is_skipped_and_the_previous_one_loaded(tmp_path, damage, caplog):
    folder = tmp_path / "checkpoints"
    latest = _save_two(folder)
    data = latest.read_bytes()
    if damage == "truncated":  # e.g. the rename reached the disk, the data did not
        latest.write_bytes(data[: len(data) // 2])
    elif damage == "one byte flipped":  # inside the tensor data, which torch.load alone reads back silently
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0xFF
        latest.write_bytes(bytes(flipped))
    elif damage == "trailer cut":
        latest.write_bytes(data[:-10])
    else:
        latest.write_bytes(b"")
    with pytest.raises(CheckpointCorrupt, match="incomplete|damaged"):
        load_checkpoint(latest)
    with caplog.at_level(logging.WARNING, logger="learner.checkpoint"):
        path, state = resume_checkpoint(tmp_path)
    assert path.name == "previous.pt" and state["iteration"] == 3
    assert torch.equal(state["weights"], torch.arange(4096, dtype=torch.float32) * 3)
    assert "skipping checkpoint" in caplog.text and "latest.pt" in caplog.text
    # Set aside, so that the next save cannot rotate it over the good previous.pt.
    assert not latest.exists() and (folder / "latest.pt.corrupt").exists()
    save_checkpoint(folder / "latest.pt", _state(9), previous="previous.pt")
    assert load_checkpoint(folder / "previous.pt")["iteration"] == 3


def test_a_crash_before_the_rename_leaves_the_old_checkpoint_and_a_temporary_that_is_ignored(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    _save_two(folder)

    def crash(fd):  # the process dies after writing the temporary file, before it is renamed
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ckpt.os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(folder / "latest.pt", _state(9), previous="previous.pt")
    monkeypatch.undo()
    assert any(p.name.startswith(".latest.pt.tmp-") for p in folder.iterdir())
    path, state = resume_checkpoint(tmp_path)
    assert (path.name, state["iteration"]) == ("latest.pt", 6)
    assert not any(p.name.startswith(".latest.pt.tmp-") for p in folder.iterdir())


def test_a_crash_between_the_two_renames_resumes_from_previous(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    _save_two(folder)
    real_replace, calls = os.replace, []

    def replace(src, dst):  # latest -> previous happens, tmp -> latest does not
        calls.append(Path(dst).name)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the renames")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(folder / "latest.pt", _state(9), previous="previous.pt")
    monkeypatch.undo()
    assert calls == ["previous.pt", "latest.pt"] and not (folder / "latest.pt").exists()
    path, state = resume_checkpoint(tmp_path)
    assert (path.name, state["iteration"]) == ("previous.pt", 6)


def test_resume_cli_falls_back_and_says_so_when_nothing_is_usable(tmp_path, capsys):
    from learner.main import cli

    folder = tmp_path / "checkpoints"
    latest = _save_two(folder)
    latest.write_bytes(latest.read_bytes()[:100])
    # previous.pt (iteration 3) is what the run continues from: the one-line refusal shows it.
    assert cli(["--resume", str(tmp_path), "--iterations", "3"]) == 2
    assert "at iteration 3 already" in capsys.readouterr().err
    (folder / "previous.pt").write_bytes(b"garbage")
    (folder / "latest.pt.corrupt").unlink()
    assert cli(["--resume", str(tmp_path), "--iterations", "30"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no checkpoint to resume from" in err and "previous.pt is incomplete" in err


def _write_raw(path: Path, state: dict) -> None:
    """A verifiable file with whatever header fields `state` has (what another version would write)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload + ckpt.TRAILER_MARKER + hashlib.sha256(payload).hexdigest().encode() + b"\n")


@pytest.mark.parametrize("field, value", [("schema_version", 1), ("batch_schema_version", "0")])
def test_another_schema_version_is_refused_naming_the_field(tmp_path, field, value, capsys):
    from learner.main import cli

    good = {"format": ckpt.CHECKPOINT_SCHEMA_VERSION, "schema_version": ckpt.CHECKPOINT_SCHEMA_VERSION,
            "batch_schema_version": ckpt.BATCH_SCHEMA_VERSION, **_state(3)}
    _write_raw(tmp_path / "checkpoints" / "latest.pt", {**good, field: value})
    with pytest.raises(CheckpointIncompatible, match=f"{field}={value!r}, this code needs"):
        resume_checkpoint(tmp_path)
    assert (tmp_path / "checkpoints" / "latest.pt").exists()  # refused, not set aside as corrupt
    assert cli(["--resume", str(tmp_path), "--iterations", "9"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{field}={value!r}" in err


def test_a_file_from_before_checkpoint_schema_2_is_reported_as_such(tmp_path):
    old = tmp_path / "old.pt"
    torch.save({"format": 1, **_state(3)}, old)  # what save_checkpoint wrote before the trailer
    with pytest.raises(CheckpointCorrupt, match="before checkpoint schema 2"):
        load_checkpoint(old)


@pytest.mark.parametrize("section, field, value", [("world", "num_items", 400), ("policy", "model_dim", 64),
                                                   ("ppo", "lr", 0.5)])
def test_a_checkpoint_of_another_config_is_refused_naming_the_field(tmp_path, section, field, value):
    from learner.main import train
    from learner.runtime import UsageError

    saved = TrainConfig()
    state = _state(3, saved)
    check_compatible(state, saved)
    other = TrainConfig()
    setattr(other, section, dataclasses.replace(getattr(other, section), **{field: value}))
    other.run.run_dir = str(tmp_path / "run")
    with pytest.raises(CheckpointIncompatible, match=rf"{section}\.{field}=.*asks for {value!r}"):
        check_compatible(state, other)
    # The driver refuses it before building the world or starting Ray (an experiment table resuming).
    with pytest.raises(UsageError, match=rf"{section}\.{field}"):
        train(other, state)
    assert not (tmp_path / "run").exists()
    with pytest.raises(CheckpointIncompatible, match="unknown config key world.num_itemz"):
        check_compatible({"config": {"world": {"num_itemz": 1}}}, saved)
