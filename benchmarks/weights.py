"""Weight broadcast: the time from the learner's update to every rollout actor acting on the new
weights, for models of 1M and 10M parameters and 2 to 16 rollout actors.

Ours (DESIGN.md): the learner publishes a dict of numpy arrays with one `ray.put` per version;
every actor receives the same object reference, reads the arrays zero-copy from its node's object
store, copies them into its torch model once and acts. The reference, measured in the same run: a
torch state dict sent the way a plain Ray program sends it (`ray.put` of the torch tensors,
pickled and copied out again on every actor).

The latency is measured on the driver, so it needs no synchronised clocks on a cluster: from the
moment the learner's update returns to the moment the last actor has loaded the version and run a
forward pass with it; the update itself is not counted.

    python benchmarks/weights.py [--params 1e6,1e7] [--actors 2,4,8,16] [--repeats 5] [--address auto]

Writes benchmarks/results/weights.json.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import write_result  # noqa: E402

OBS_DIM = 64


def build_model(num_params: int):
    """An MLP of about `num_params` parameters (two hidden layers of width h: h^2 + 130h + 64)."""
    import torch

    h = int((-130 + math.sqrt(130 ** 2 + 4 * max(num_params - 64, 1))) / 2)
    return torch.nn.Sequential(torch.nn.Linear(OBS_DIM, h), torch.nn.ReLU(), torch.nn.Linear(h, h),
                               torch.nn.ReLU(), torch.nn.Linear(h, OBS_DIM))


class BenchLearner:
    """Holds the model and its optimizer; `update_and_publish` takes one real Adam step, then
    publishes the weights in the requested form and reports how long the update took."""

    def __init__(self, num_params: int, seed: int):
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(seed)
        self.model = build_model(num_params)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.version = 0

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def update_and_publish(self, form: str) -> list:
        import ray
        import torch

        from policy.networks import weights_to_numpy

        t0 = time.perf_counter()
        x = torch.randn(32, OBS_DIM)
        loss = self.model(x).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.version += 1
        update_s = time.perf_counter() - t0
        # The ref rides inside a list so Ray hands the reference itself back to the driver.
        if form == "numpy":
            return [ray.put(weights_to_numpy(self.model)), self.version, update_s]
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return [ray.put(state), self.version, update_s]


class BenchActor:
    """A rollout actor reduced to what the broadcast touches: load a version once, then act."""

    def __init__(self, num_params: int):
        import torch

        torch.set_num_threads(1)
        self.model = build_model(num_params)
        self.model.eval()
        self.version = -1
        self.obs = torch.randn(64, OBS_DIM)

    def ready(self) -> bool:
        return True

    def act(self, weights, version: int, form: str) -> int:
        import torch

        from policy.networks import load_numpy_weights

        if version != self.version:
            if form == "numpy":
                load_numpy_weights(self.model, weights)
            else:
                self.model.load_state_dict(weights)
            self.version = version
        with torch.no_grad():
            self.model(self.obs)
        return self.version


def measure(ray, num_params: int, num_actors: int, repeats: int, seed: int) -> dict:
    learner = ray.remote(num_cpus=0)(BenchLearner).remote(num_params, seed)
    actors = [ray.remote(num_cpus=0)(BenchActor).remote(num_params) for _ in range(num_actors)]
    ray.get([a.ready.remote() for a in actors])
    row = {"params": ray.get(learner.num_params.remote()), "actors": num_actors}
    for form in ("numpy", "torch"):
        times = []
        for i in range(repeats + 1):  # the first round warms both sides up and is not counted
            ref, version, update_s = ray.get(learner.update_and_publish.remote(form))
            t0 = time.perf_counter()
            acted = ray.get([a.act.remote(ref, version, form) for a in actors])
            elapsed = time.perf_counter() - t0
            if acted != [version] * num_actors:
                raise RuntimeError(f"actors acted on versions {acted}, expected {version}")
            if i:
                times.append(elapsed)
            del ref
        row[f"{form}_ms_median"] = 1000 * float(np.median(times))
        row[f"{form}_ms_p90"] = 1000 * float(np.percentile(times, 90))
    row["speedup_over_torch_state_dict"] = row["torch_ms_median"] / row["numpy_ms_median"]
    for handle in (learner, *actors):
        ray.kill(handle)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="1e6,1e7", help="model sizes in parameters (comma-separated)")
    parser.add_argument("--actors", default="2,4,8,16", help="rollout actor counts (comma-separated)")
    parser.add_argument("--repeats", type=int, default=5, help="broadcasts timed per cell (after one warm-up)")
    parser.add_argument("--address", default="", help="Ray cluster to join; '' starts a local Ray on 127.0.0.1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        sizes = [int(float(p)) for p in args.params.split(",")]
        counts = [int(a) for a in args.actors.split(",")]
    except ValueError:
        parser.error("--params and --actors take comma-separated numbers, e.g. --params 1e6,1e7 --actors 2,4")
    if args.repeats < 1 or min(sizes) < 1000 or min(counts) < 1:
        parser.error("--repeats and --actors must be >= 1 and --params >= 1000")

    import ray

    if args.address:
        ray.init(address=args.address, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level=logging.WARNING)
    rows = []
    try:
        print(f"{'params':>10} {'actors':>6} {'numpy dict ms':>14} {'torch dict ms':>14} {'speed-up':>9}")
        for size in sizes:
            for count in counts:
                row = measure(ray, size, count, args.repeats, args.seed)
                rows.append(row)
                print(f"{row['params']:>10,} {count:>6} {row['numpy_ms_median']:>14.1f} "
                      f"{row['torch_ms_median']:>14.1f} {row['speedup_over_torch_state_dict']:>8.2f}x", flush=True)
    finally:
        ray.shutdown()
    path = write_result("weights", {"rows": rows, "repeats": args.repeats,
                                    "reference": "torch state dict through ray.put, measured in the same run"})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
