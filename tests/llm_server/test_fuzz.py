"""Fuzzing the planner service (docs/reliability.md, row 3).

A real server (`python -m llm_server --backend heuristic`, a subprocess on 127.0.0.1, so its memory
can be read) gets a seeded stream of malformed, oversized and adversarial requests on every RPC
(tests/llm_server/fuzz_cases.py), sent as raw bytes through a generic channel so that invalid
UTF-8 and broken wire format get through. Every answer must be a clean gRPC error
(INVALID_ARGUMENT naming the field, RESOURCE_EXHAUSTED for a message over the 64 MiB limit) or a
valid answer; good requests interleaved with them must keep getting the heuristic's exact answer;
and the server's resident memory must stay bounded.
"""
from __future__ import annotations

import collections
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from fuzz_cases import OK, REQUEST_TYPES, RESPONSE_TYPES, RPCS, TOO_BIG, VALID, Case, make_case
from planner_api import contract
from planner_api.heuristics import (
    heuristic_explain,
    heuristic_judge,
    heuristic_plan,
    heuristic_propose,
    heuristic_reflect,
    heuristic_respond,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SEED = 20_240_611
NUM_CASES = 5_000          # fuzzed requests (a good request goes between every GOOD_EVERY of them)
GOOD_EVERY = 8
NUM_OVERSIZED = 2          # 65 MiB each: over the limit, costly to send, so only two
WORKERS = 4
SLOWDOWN_LIMIT = 3.0       # a request late in the stream may cost at most this many times one of the warm-up
RPC_TIMEOUT_S = 30.0
# Resident memory may grow this much between the end of the warm-up and the end of the stream:
# allocator caches after the largest valid requests, not a leak (that would grow with the count).
RSS_GROWTH_LIMIT_MB = 64.0
WARMUP_CASES = 400
CHECKS = {"Plan": contract.check_plan_response, "Reflect": contract.check_reflect_response,
          "Propose": contract.check_propose_response, "Explain": contract.check_explain_response,
          "Judge": contract.check_judge_response, "Respond": contract.check_respond_response}
HEURISTICS = {"Plan": heuristic_plan, "Reflect": heuristic_reflect, "Propose": heuristic_propose,
              "Explain": heuristic_explain, "Judge": heuristic_judge, "Respond": heuristic_respond}

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(),
                                reason="reads the server's resident memory from /proc (Linux only)")


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@pytest.fixture(scope="module")
def server() -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANNER_")}
    process = subprocess.Popen([sys.executable, "-m", "llm_server", "--backend", "heuristic", "--port", "0"],
                               cwd=REPO_ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        first = lines.get(timeout=60)
        assert first.startswith("planner serving on 127.0.0.1:"), first
        yield process, first.split()[3]
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def oversized_plan_bytes() -> bytes:
    """A PlanRequest whose one category name makes it 65 MiB: over the 64 MiB message limit."""
    size = contract.MAX_MESSAGE_BYTES + (1 << 20)
    length, varint = size, bytearray()
    while length >= 0x80:
        varint.append(length & 0x7F | 0x80)
        length >>= 7
    varint.append(length)
    return b"\x12" + bytes(varint) + b"n" * size


class Stream:
    """Sends cases and good requests, and records what came back."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.calls = {rpc: channel.unary_unary(f"/{contract.PLANNER_SERVICE_NAME}/{rpc}") for rpc in RPCS}
        self.lock = threading.Lock()
        self.codes: collections.Counter = collections.Counter()  # (kind, code name)
        self.failures: list[str] = []
        self.good = 0

    def send(self, rpc: str, payload: bytes) -> tuple[grpc.StatusCode, bytes | str]:
        try:
            return OK, self.calls[rpc](payload, timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as error:
            return error.code(), error.details() or ""

    def fail(self, text: str) -> None:
        with self.lock:
            if len(self.failures) < 20:
                self.failures.append(text)

    def run_case(self, case: Case) -> None:
        code, answer = self.send(case.rpc, case.payload)
        with self.lock:
            self.codes[(case.kind, code.name)] += 1
        label = f"{case.kind} {case.rpc} ({len(case.payload)} bytes)"
        if code not in case.allowed:
            self.fail(f"{label}: got {code.name} {str(answer)[:200]!r}, allowed {sorted(c.name for c in case.allowed)}")
        elif code == OK:
            request = REQUEST_TYPES[case.rpc].FromString(case.payload)  # the server accepted it: it decodes
            try:
                CHECKS[case.rpc](request, RESPONSE_TYPES[case.rpc].FromString(answer))
            except ValueError as error:
                self.fail(f"{label}: answered, but the answer breaks the contract: {error}")
        elif code == grpc.StatusCode.INVALID_ARGUMENT:
            if not answer or (case.field is not None and case.field not in answer):
                self.fail(f"{label}: INVALID_ARGUMENT {answer!r} does not name {case.field!r}")

    def run_good(self, index: int) -> None:
        import random

        rpc = RPCS[(index // GOOD_EVERY) % len(RPCS)]
        request = VALID[rpc](random.Random(f"good-{SEED}-{index}"))
        code, answer = self.send(rpc, request.SerializeToString())
        if code != OK:
            self.fail(f"good {rpc} #{index}: {code.name} {answer!r}")
        elif RESPONSE_TYPES[rpc].FromString(answer) != HEURISTICS[rpc](request):
            self.fail(f"good {rpc} #{index}: the answer differs from the heuristic's")
        with self.lock:
            self.good += 1

    def run(self, index: int) -> None:
        if index % GOOD_EVERY == 0:
            self.run_good(index)
        self.run_case(make_case(index, SEED))


def test_fuzzed_requests_get_clean_errors_and_the_server_stays_up_and_bounded(server) -> None:
    process, address = server
    options = [("grpc.max_send_message_length", 2 * contract.MAX_MESSAGE_BYTES),
               ("grpc.max_receive_message_length", contract.MAX_MESSAGE_BYTES)]
    started = time.perf_counter()
    with grpc.insecure_channel(address, options=options) as channel:
        stream = Stream(channel)
        rss_start = rss_mb(process.pid)
        warm_started = time.perf_counter()
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(stream.run, range(WARMUP_CASES)))
        warm_s = time.perf_counter() - warm_started
        oversized = oversized_plan_bytes()
        stream.run_case(Case("oversized", "Plan", oversized, frozenset({TOO_BIG})))
        rss_warm = rss_mb(process.pid)
        main_started = time.perf_counter()
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(stream.run, range(WARMUP_CASES, NUM_CASES)))
        main_s = time.perf_counter() - main_started
        for _ in range(NUM_OVERSIZED - 1):
            stream.run_case(Case("oversized", "Explain", oversized, frozenset({TOO_BIG})))
        del oversized
        rss_end = rss_mb(process.pid)
        stream.run_good(0)  # still serving after everything
    seconds = time.perf_counter() - started
    by_code = collections.Counter()
    for (_, code), count in stream.codes.items():
        by_code[code] += count
    total = sum(by_code.values())
    print(f"\nfuzz: {total} fuzzed + {stream.good} good requests in {seconds:.1f} s; codes {dict(by_code)}; "
          f"server RSS {rss_start:.0f} MiB at start, {rss_warm:.0f} after warm-up, {rss_end:.0f} at the end "
          f"(growth {rss_end - rss_warm:+.1f} MiB); {1e3 * warm_s / WARMUP_CASES:.2f} ms per request in the "
          f"warm-up, {1e3 * main_s / (NUM_CASES - WARMUP_CASES):.2f} ms after")
    for (kind, code), count in sorted(stream.codes.items()):
        print(f"  {kind:18s} {code:20s} {count}")
    assert process.poll() is None, "the server died"
    assert not stream.failures, "\n".join(stream.failures)
    assert total == NUM_CASES + NUM_OVERSIZED
    assert stream.good == NUM_CASES // GOOD_EVERY + 1
    assert set(by_code) <= {"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}
    assert by_code["RESOURCE_EXHAUSTED"] == NUM_OVERSIZED
    assert rss_end - rss_warm < RSS_GROWTH_LIMIT_MB, (rss_warm, rss_end)
    # Bounded in time as in memory: the server does not slow down as the stream goes on (a ratio of
    # two figures of this run, whatever the machine's speed; a hung call fails at RPC_TIMEOUT_S).
    per_case_warm, per_case_main = warm_s / WARMUP_CASES, main_s / (NUM_CASES - WARMUP_CASES)
    assert per_case_main < SLOWDOWN_LIMIT * per_case_warm, (per_case_warm, per_case_main)


def test_undecodable_bytes_name_the_field_or_the_byte() -> None:
    """The decoder's messages, without a server: invalid UTF-8 names the field, broken wire
    format names where it broke."""
    from llm_server.request_decoding import parse_request
    from planner_api.history import history_from_columns
    from protos import planner_pb2

    req = planner_pb2.PlanRequest(category_names=["a", "b"])
    req.users.add(candidate_categories=[0], num_categories=1,
                  history=history_from_columns([0], [0], [1.0], [0], ["ok"]))
    req.users.add(candidate_categories=[1], num_categories=1,
                  history=history_from_columns([0, 1], [1, 1], [1.0, 0.0], [0, 0], ["ok", "XX"]))
    bad = req.SerializeToString().replace(b"XX", b"\xc3\x28")
    with pytest.raises(ValueError, match=r"users\[1\]\.history\.titles\[1\] is not valid UTF-8"):
        parse_request(planner_pb2.PlanRequest, bad)
    data = req.SerializeToString()
    with pytest.raises(ValueError, match=r"not a valid recrl\.planner\.v3\.PlanRequest: users\[1\]: length \d+ "
                                         r"runs past the end at byte"):
        parse_request(planner_pb2.PlanRequest, data[: data.index(b"XX") + 1])
    with pytest.raises(ValueError, match="invalid wire type 7"):
        parse_request(planner_pb2.PlanRequest, b"\x0f\x00")
    assert parse_request(planner_pb2.PlanRequest, data) == req
