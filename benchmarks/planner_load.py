"""Load on the planner service: the heuristic planner held at its measured capacity by many
concurrent clients sending realistic batched Plan requests (docs/reliability.md, row 7).

1. Ramp (closed loop): 1, 2, 4, ... concurrent clients, each sending its next request as soon as the
   last is answered, for --ramp-step-s seconds per level. Capacity = the highest throughput of a
   level with no error and a p99 under the deadline.
2. Hold (open loop): --hold-clients clients together send --load x capacity requests per second, each
   on its own schedule, for --duration-s seconds. Latency is counted from the scheduled send time, so
   a client held up by a slow server counts the wait too (no coordinated omission); a client more than
   one interval behind skips the slots it missed, as a rollout actor sends its next request, not a
   backlog (counted as `skipped`; `achieved` is the share of the target rate served).

Clients are threads in --processes worker processes (so the load generator is not one GIL); every
call carries a deadline (--deadline-s): a missed one is what a rollout actor answers with the
heuristic fallback, counted apart; any other failure, or an answer that breaks the contract (every
50th is checked), is an error. The reference, measured in the same run: heuristic_plan called
in-process on the same requests (one core, no gRPC), users/s.

The server is `python -m llm_server --backend heuristic` on 127.0.0.1 (a subprocess; `--backend
vllm` for the LLM engine, with the embedded model), unless --address names one already running
(then the PLANNER_* variables give the token and TLS). After the hold, the server's processes
(the engine's included) are watched idle for a few seconds: the share of a core they use then
(`idle_cpu_share`) says whether the engine spins with nothing to do.

    python benchmarks/planner_load.py [--duration-s 60] [--hold-clients 64] [--users 64]
    HF_HUB_OFFLINE=1 python benchmarks/planner_load.py --backend vllm --users 8 --deadline-s 30 \
        --ramp 1,2,4 --ramp-step-s 30 --hold-clients 4 --duration-s 60 --out benchmarks/results/planner_load_vllm.json

Writes benchmarks/results/planner_load.json (or --out).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import RESULTS, machine, process_tree_cpu_seconds  # noqa: E402

GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western", "unknown"]
CHECK_EVERY = 50
REQUESTS_PER_WORKER = 8  # distinct requests each worker cycles through


def build_request(seed: int, users: int, max_steps: int = 20, slate: int = 6):
    """A training-like PlanRequest (MovieLens genres): `users` sessions at random steps, slates of 6
    with titles, 3 reflections, every genre a candidate, a pool of 6 to choose."""
    from protos import planner_pb2
    from planner_api.history import make_history

    rng = random.Random(seed)
    reflections = [f"Liked most: {rng.choice(GENRES)} ({rng.randint(1, 9)}/{rng.randint(9, 20)}). Rotate categories "
                   f"and favour {rng.choice(GENRES)}." for _ in range(3)]
    req = planner_pb2.PlanRequest(category_names=GENRES, seed=seed)
    for u in range(users):
        steps = rng.randrange(max_steps)
        user = req.users.add(user_id=seed * 10_000 + u, step=steps, candidate_categories=range(len(GENRES)),
                             num_categories=6, reflections=reflections)
        user.history.CopyFrom(make_history(
            (rng.randrange(1682), rng.randrange(len(GENRES)), float(rng.random() < 0.3), s,
             f"Movie {rng.randrange(1682)} ({rng.randrange(1930, 1999)})")
            for s in range(steps) for _ in range(slate)))
    return req


def percentiles_ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)
    pick = lambda q: 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99), "max_ms": 1000 * ordered[-1]}


# --- client worker processes ----------------------------------------------------------------------


def _worker(conn, address: str, seed: int, users: int, deadline_s: float) -> None:
    """Holds one channel and a few requests; runs the phases the parent sends, returns raw figures."""
    import grpc

    from protos import planner_pb2
    from planner_api.contract import GRPC_MESSAGE_OPTIONS, PLANNER_SERVICE_NAME, check_plan_response
    from planner_api.security import ClientSecurity

    security = ClientSecurity.from_env()
    channel = security.open_channel(address, list(GRPC_MESSAGE_OPTIONS))
    call = channel.unary_unary(f"/{PLANNER_SERVICE_NAME}/Plan")
    metadata = security.metadata()
    requests = [build_request(seed * 100 + k, users) for k in range(REQUESTS_PER_WORKER)]
    payloads = [r.SerializeToString() for r in requests]
    conn.send(("ready", sum(map(len, payloads)) / len(payloads)))
    while (phase := conn.recv()) is not None:
        threads, start_at, duration_s, interval_s = phase
        lock = threading.Lock()
        latencies, service, codes, invalid, skipped = [], [], Counter(), [], [0]

        def client(index: int) -> None:
            mine, mine_service, count, missed = [], [], 0, 0
            offset = interval_s * random.random()  # threads of all processes spread over one interval
            scheduled = start_at + offset
            end = start_at + duration_s
            while (now := time.time()) < end:
                if interval_s:
                    if now - scheduled > interval_s:  # behind by whole slots: skip them
                        behind = int((now - scheduled) / interval_s)
                        missed += behind
                        scheduled += behind * interval_s
                    if scheduled > now:
                        time.sleep(scheduled - now)
                    began = scheduled
                    scheduled += interval_s
                else:
                    began = now
                sent = time.time()
                k = (index + count) % len(payloads)
                try:
                    answer = call(payloads[k], timeout=deadline_s, metadata=metadata)
                    code = "OK"
                except grpc.RpcError as error:
                    code, answer = error.code().name, None
                done = time.time()
                mine.append(done - began)
                mine_service.append(done - sent)
                count += 1
                if answer is not None and count % CHECK_EVERY == 0:
                    try:
                        check_plan_response(requests[k], planner_pb2.PlanResponse.FromString(answer))
                    except ValueError as error:
                        invalid.append(str(error))
                with lock:
                    codes[code] += 1
            with lock:
                latencies.extend(mine)
                service.extend(mine_service)
                skipped[0] += missed

        pool = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        conn.send((latencies, service, dict(codes), invalid[:5], skipped[0]))
    channel.close()


class Clients:
    """--processes worker processes; `run` spreads a number of client threads over them."""

    def __init__(self, address: str, processes: int, users: int, deadline_s: float, seed: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns, self.procs = [], []
        for p in range(processes):
            parent, child = context.Pipe()
            proc = context.Process(target=_worker, args=(child, address, seed + p, users, deadline_s), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        self.request_bytes = statistics.mean(conn.recv()[1] for conn in self.conns)
        self.users = users

    def run(self, clients: int, duration_s: float, rate: float | None) -> dict:
        """`clients` threads for duration_s: closed loop (rate None) or together `rate` requests/s."""
        start_at = time.time() + 0.3
        shares = [clients // len(self.conns) + (p < clients % len(self.conns)) for p in range(len(self.conns))]
        active = [(conn, n) for conn, n in zip(self.conns, shares) if n]
        for conn, n in active:
            conn.send((n, start_at, duration_s, clients / rate if rate else 0.0))  # each thread's interval
        latencies, service, codes, invalid, skipped = [], [], Counter(), [], 0
        for conn, _ in active:
            lat, serv, code, bad, skip = conn.recv()
            latencies += lat
            service += serv
            codes.update(code)
            invalid += bad
            skipped += skip
        ok = codes.get("OK", 0)
        misses = codes.get("DEADLINE_EXCEEDED", 0)
        return {"clients": clients, "seconds": duration_s, "target_rps": rate, "requests": sum(codes.values()),
                "requests_per_s": ok / duration_s, "users_per_s": ok * self.users / duration_s,
                "achieved": ok / duration_s / rate if rate else None, "skipped": skipped,
                **percentiles_ms(latencies), "service_p99_ms": percentiles_ms(service)["p99_ms"],
                "deadline_misses": misses,
                "errors": sum(codes.values()) - ok - misses + len(invalid), "codes": dict(codes),
                "invalid_answers": invalid}

    def close(self) -> None:
        for conn in self.conns:
            conn.send(None)
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


# --- the run -----------------------------------------------------------------------------------------


def start_server(backend: str) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANNER_")}
    proc = subprocess.Popen([sys.executable, "-m", "llm_server", "--backend", backend, "--port", "0"],
                            cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    seen = []
    for line in proc.stdout:  # vLLM logs to stdout before the service says where it serves
        if line.startswith("planner serving on "):
            break
        seen.append(line)
    else:
        proc.kill()
        raise SystemExit(f"the planner service did not start: {''.join(seen[-5:])!r}")
    # Keep reading what it prints, or a full pipe would stall the server mid-benchmark.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, line.split()[3]


def idle_cpu_share(pid: int, seconds: float = 5.0) -> float | None:
    """The share of one core the process `pid` and its children use over `seconds` with no calls
    (None without psutil, which only the vLLM install brings)."""
    if importlib.util.find_spec("psutil") is None:
        return None
    time.sleep(1.0)  # the last answers' own tail
    before = process_tree_cpu_seconds(pid)
    time.sleep(seconds)
    return (process_tree_cpu_seconds(pid) - before) / seconds


def reference_users_per_s(users: int, seed: int, seconds: float = 2.0) -> float:
    """heuristic_plan in this process on the same kind of requests: users planned per second."""
    from planner_api.heuristics import heuristic_plan

    requests = [build_request(seed * 100 + k, users) for k in range(REQUESTS_PER_WORKER)]
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        heuristic_plan(requests[done % len(requests)])
        done += 1
    return done * users / (time.perf_counter() - started)


def pick_capacity(ramp: list[dict], deadline_s: float) -> dict:
    healthy = [r for r in ramp if r["errors"] == 0 and r["deadline_misses"] == 0 and r["p99_ms"] is not None
               and r["p99_ms"] < 1000 * deadline_s]
    if not healthy:
        raise SystemExit("no ramp level ran without errors under the deadline: no capacity to hold")
    return max(healthy, key=lambda r: r["requests_per_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=60.0, help="how long the hold at capacity lasts")
    parser.add_argument("--ramp", default="1,2,4,8,16,32,64", help="closed-loop client counts tried to find capacity")
    parser.add_argument("--ramp-step-s", type=float, default=4.0, help="seconds per ramp level")
    parser.add_argument("--hold-clients", type=int, default=64, help="concurrent clients during the hold")
    parser.add_argument("--load", type=float, default=1.0, help="hold rate as a share of the measured capacity")
    parser.add_argument("--processes", type=int, default=4, help="client worker processes (threads spread over them)")
    parser.add_argument("--users", type=int, default=64, help="users per Plan request (a rollout actor's batch)")
    parser.add_argument("--deadline-s", type=float, default=2.0, help="deadline of every call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--address", help="a running planner (host:port) instead of starting one")
    parser.add_argument("--backend", choices=("heuristic", "vllm"), default="heuristic",
                        help="the backend of the server this starts (vllm: the embedded model; slower: use "
                             "fewer users per request and a longer deadline)")
    parser.add_argument("--out", type=Path, default=RESULTS / "planner_load.json", help="the JSON result file")
    args = parser.parse_args(argv)
    try:
        ramp_levels = [int(x) for x in args.ramp.split(",")]
    except ValueError:
        parser.error(f"--ramp {args.ramp!r} is not a comma-separated list of client counts")
    if min(ramp_levels) < 1 or args.hold_clients < 1 or args.processes < 1 or args.users < 1:
        parser.error("--ramp, --hold-clients, --processes and --users must be >= 1")
    if args.duration_s <= 0 or args.ramp_step_s <= 0 or args.deadline_s <= 0 or not 0 < args.load <= 2:
        parser.error("--duration-s, --ramp-step-s and --deadline-s must be > 0, --load in (0, 2]")

    load_before = os.getloadavg()
    server, address = start_server(args.backend) if args.address is None else (None, args.address)
    clients = Clients(address, args.processes, args.users, args.deadline_s, args.seed)
    try:
        ramp = []
        print(f"planner at {address}; {args.users} users per Plan request "
              f"({clients.request_bytes / 1024:.0f} KiB); deadline {args.deadline_s:g} s")
        print(f"{'phase':>6} {'clients':>7} {'req/s':>8} {'users/s':>9} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
              f"{'misses':>6} {'errors':>6}")
        row = lambda name, r: print(f"{name:>6} {r['clients']:>7} {r['requests_per_s']:>8.1f} {r['users_per_s']:>9.0f} "  # noqa: E731
                                    f"{r['p50_ms'] or 0:>7.1f} {r['p95_ms'] or 0:>7.1f} {r['p99_ms'] or 0:>7.1f} "
                                    f"{r['deadline_misses']:>6} {r['errors']:>6}")
        for level in ramp_levels:
            ramp.append(clients.run(level, args.ramp_step_s, None))
            row("ramp", ramp[-1])
        capacity = pick_capacity(ramp, args.deadline_s)
        hold = clients.run(args.hold_clients, args.duration_s, args.load * capacity["requests_per_s"])
        row("hold", hold)
        print(f"hold: {hold['achieved']:.0%} of the target {hold['target_rps']:.1f} req/s served, "
              f"{hold['skipped']} send slots skipped by late clients, service p99 {hold['service_p99_ms']:.1f} ms")
        idle = idle_cpu_share(server.pid) if server is not None else None
        if idle is not None:
            print(f"idle after the hold: the server's processes used {100 * idle:.1f}% of a core")
    finally:
        clients.close()
        if server is not None:
            server.terminate()
            server.wait(15)
    reference = reference_users_per_s(args.users, args.seed)
    result = {
        "benchmark": "planner_load", "machine": machine(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "request_bytes": clients.request_bytes,
        "load_average_before_after": [load_before, os.getloadavg()],
        "ramp": ramp, "capacity": {k: capacity[k] for k in ("clients", "requests_per_s", "users_per_s", "p99_ms")},
        "hold": hold, "idle_cpu_share": idle,
        "measured": {"users_per_s": hold["users_per_s"], "requests_per_s": hold["requests_per_s"],
                     "achieved_share_of_capacity": hold["achieved"],
                     "p50_ms": hold["p50_ms"], "p95_ms": hold["p95_ms"], "p99_ms": hold["p99_ms"],
                     "deadline_misses": hold["deadline_misses"], "errors": hold["errors"]},
        "reference": {"in_process_heuristic_users_per_s": reference},
        "ratio": hold["users_per_s"] / reference,
        "goal": f"no error other than deadline misses while held at capacity for {args.duration_s:g} s, "
                f"p99 under the {args.deadline_s:g} s deadline",
        "goal_met": hold["errors"] == 0 and hold["deadline_misses"] == 0 and hold["p99_ms"] is not None
                    and hold["p99_ms"] < 1000 * args.deadline_s,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"served {hold['users_per_s']:.0f} users/s at capacity against {reference:.0f} users/s in-process "
          f"(ratio {result['ratio']:.2f}); goal {'met' if result['goal_met'] else 'NOT met'}; wrote {args.out}")
    return 0 if hold["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
