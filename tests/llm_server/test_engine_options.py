"""The CPU engine's KV cache size: asked, from the environment, or sized to the machine."""
from __future__ import annotations

import pytest

from learner.config import RunConfig
from llm_server.cli import cli
from llm_server.engine_options import CPU_KV_CACHE_MAX_GIB, CPU_KV_CACHE_MIN_GIB, cpu_kv_cache_gib


def test_an_asked_size_wins_over_the_environment():
    assert cpu_kv_cache_gib(3, environ={"VLLM_CPU_KVCACHE_SPACE": "1"}, memory_gib=24) == (3, "asked")


def test_the_environment_wins_over_the_machine_share():
    assert cpu_kv_cache_gib(None, environ={"VLLM_CPU_KVCACHE_SPACE": "2"}, memory_gib=64) == (2, "VLLM_CPU_KVCACHE_SPACE")


@pytest.mark.parametrize("memory, expected", [(4, CPU_KV_CACHE_MIN_GIB), (8, 1), (24, 4), (64, CPU_KV_CACHE_MAX_GIB),
                                              (0, CPU_KV_CACHE_MIN_GIB)])
def test_by_default_a_sixth_of_the_machine_within_bounds(memory, expected):
    gib, source = cpu_kv_cache_gib(None, environ={}, memory_gib=memory)
    assert gib == expected and "of" in source


@pytest.mark.parametrize("asked", [0, -1, 1.5])
def test_a_size_below_one_gib_or_not_whole_is_refused(asked):
    with pytest.raises(ValueError, match="whole number of GiB"):
        cpu_kv_cache_gib(asked, environ={}, memory_gib=24)


def test_a_size_past_the_machines_memory_is_refused():
    with pytest.raises(ValueError, match="more than this machine's 24 GiB"):
        cpu_kv_cache_gib(100, environ={}, memory_gib=24)


def test_the_service_flag_says_what_is_wrong(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(["--backend", "vllm", "--kv-cache-gib", "0"])
    assert exit_info.value.code == 2
    assert "--kv-cache-gib must be a whole number of GiB >= 1" in capsys.readouterr().err


def test_a_run_refuses_a_negative_cache():
    with pytest.raises(ValueError, match="planner_kv_cache_gib must be >= 0"):
        RunConfig(planner_kv_cache_gib=-1).validate()


def test_a_malformed_environment_says_what_to_set():
    with pytest.raises(ValueError, match="whole number of GiB >= 1, or unset it"):
        cpu_kv_cache_gib(None, environ={"VLLM_CPU_KVCACHE_SPACE": "4G"}, memory_gib=24)
