"""How the vLLM engine of the planner service is started (`EngineOptions`: the service's
--model, --max-model-len, --call-budget flags and the CPU settings), apart from the roles it
answers (llm_server.vllm_backend)."""
from __future__ import annotations

import os
from dataclasses import dataclass

CPU_STEP_TOKENS = 512
"""Tokens per engine step on a CPU (EngineOptions.step_tokens). Against vLLM's CPU default (2-4k):
a Plan of 8 users x 5 steps in the same time (2.3-6.9 s against 3.0-6.3 s on 2 cores), and an
abandoned 32-user call stops costing after about a second instead of several."""


@dataclass
class EngineOptions:
    """How the engine is started (the planner service's --model, --max-model-len, ... flags)."""

    model: str = "smollm2"
    max_model_len: int = 4096
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    kv_cache_gib: int | None = None  # CPU only: the KV cache in GiB (VLLM_CPU_KVCACHE_SPACE); None: that
    # variable when set, else sized to this machine's memory (cpu_kv_cache_gib)
    seed: int = 0
    enforce_eager: bool | None = None  # None: eager on CPU (skips a long compile), graphs on GPU
    block_size: int | None = None   # KV-cache block in tokens; None: 32 on CPU (vLLM's CPU default of 128
    # caches prefixes only in 128-token steps, which wastes most of a plan prompt's reuse), vLLM's own on GPU
    call_token_budget: int = 1 << 20  # prompt tokens one call may ask for (its distinct prompts), else
    # RESOURCE_EXHAUSTED: the default admits 256 users (a rollout actor's) at 4096 tokens each
    step_tokens: int | None = None  # tokens per engine step (max_num_batched_tokens); None: 512 on CPU, vLLM's
    # own on GPU. A step cannot be interrupted: an abort (a call nobody waits for any more) takes effect
    # after it, so on a CPU a step of vLLM's default 2-4k prompt tokens keeps the cores busy for seconds


def on_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


CPU_KV_CACHE_SHARE = 6
"""On a CPU the KV cache takes 1/CPU_KV_CACHE_SHARE of the machine's memory by default, between
CPU_KV_CACHE_MIN_GIB and CPU_KV_CACHE_MAX_GIB. vLLM's CPU default is 1 GiB: about 46k SmolLM2
tokens (23 KB each), some 64 users' persona prefixes, so an LLM-user evaluation of 128 users
thrashed the prefix cache and ran past 21 minutes; with 4 GiB it took 404 s (README, The LLM as
the user). A sixth leaves the rest of a 8-16 GiB laptop to Ray, the actors and the learner."""
CPU_KV_CACHE_MIN_GIB, CPU_KV_CACHE_MAX_GIB = 1, 8


def machine_memory_gib() -> float:
    """This machine's physical memory in GiB (0 when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        return 0.0


def cpu_kv_cache_gib(requested: int | None, environ=os.environ, memory_gib: float | None = None) -> tuple[int, str]:
    """(GiB of KV cache for a CPU engine, where the figure came from): `requested` when given (at
    least 1: vLLM's CPU cache is sized in whole GiB), else VLLM_CPU_KVCACHE_SPACE when set, else
    1/CPU_KV_CACHE_SHARE of the machine's memory within [CPU_KV_CACHE_MIN_GIB, CPU_KV_CACHE_MAX_GIB]."""
    memory = machine_memory_gib() if memory_gib is None else memory_gib
    if requested is not None:
        if int(requested) != requested or requested < 1:
            raise ValueError(f"kv_cache_gib must be a whole number of GiB >= 1, got {requested}")
        if memory and requested > memory:
            raise ValueError(f"kv_cache_gib={requested} is more than this machine's {memory:.0f} GiB of memory")
        return int(requested), "asked"
    if (value := environ.get("VLLM_CPU_KVCACHE_SPACE", "").strip()):
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"VLLM_CPU_KVCACHE_SPACE={value!r}: set it to a whole number of GiB >= 1, or unset it")
        return int(value), "VLLM_CPU_KVCACHE_SPACE"
    share = int(memory // CPU_KV_CACHE_SHARE)
    return max(CPU_KV_CACHE_MIN_GIB, min(CPU_KV_CACHE_MAX_GIB, share)), f"1/{CPU_KV_CACHE_SHARE} of {memory:.0f} GiB"
