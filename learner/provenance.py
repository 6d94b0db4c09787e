"""Where a run's numbers come from: the code's commit, the command and the machine, written as
provenance.json in the run directory, so a results table can say what made each row and a
reader can rerun it."""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

CODE_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(CODE_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def cpu_model() -> str:
    """The CPU's model name (Linux), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(argv: list[str] | None = None) -> dict:
    """The commit (with `dirty` when the work tree has changes), the command line as one would
    type it, when, and on what machine."""
    argv = sys.argv[1:] if argv is None else argv
    return {"commit": _git("rev-parse", "HEAD") or "unknown (not a git checkout)",
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "command": shlex.join(["python", "-m", "learner.main", *argv]),
            "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_model(), "cores": os.cpu_count() or 0, "python": platform.python_version()}
