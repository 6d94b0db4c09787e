"""How the vLLM engine of the planner service is started (`EngineOptions`: the service's
--model, --max-model-len, --call-budget flags and the CPU settings), apart from the roles it
answers (llm_server.vllm_backend)."""
from __future__ import annotations

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
    kv_cache_gib: float = 1.0       # CPU only: VLLM_CPU_KVCACHE_SPACE
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
