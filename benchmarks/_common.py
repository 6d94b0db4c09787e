"""What every benchmark shares: the machine description and the JSON result file."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(), "gpu": gpu}


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=2))
    return path


def process_tree_cpu_seconds(pid: int, include_root: bool = True) -> float:
    """CPU seconds (user + system) used so far by process `pid`'s descendants, and by `pid` itself
    with `include_root` (psutil, which the vLLM install brings). A process that ends while it is
    read is skipped."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in ([root] if include_root else []) + root.children(recursive=True):
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total
