"""The one training config: the run options plus every component's dataclass, and the CLI built
from them (each field's docstring is its --help text, so the two never drift apart)."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import textwrap
from dataclasses import dataclass, field
from functools import lru_cache

from learner.algorithms import ALGORITHMS
from learner.algorithms.ilrec.config import ILRecConfig
from learner.algorithms.laac.config import LAACConfig
from learner.ppo import PPOConfig
from policy.networks import PolicyConfig
from rollout.actor import RolloutConfig
from rollout.world import WorldConfig



CHAOS_OPTIONS = ("chaos_kill_rollout_every", "chaos_kill_planner_every", "chaos_kill_rollout_every_s",
                 "chaos_planner_hang_every", "chaos_corrupt_batch_every")


@dataclass
class RunConfig:
    """What to run, where, and for how long."""

    algorithm: str = "lerl"
    """What to train: lerl (the planner's category sets mask a PPO policy's items; the planner is
    chosen by --planner-backend), ppo (flat PPO over every item, no planner: LERL's baseline), laac
    (offline actor-critic with the LLM as reference policy; options --laac-*) or ilrec (inverse RL
    on LLM demonstrations, then RL; options --ilrec-*)."""
    serial: bool = False
    """Run the rollout workers, the learner and the planner service in this one process, without Ray
    (for a debugger or a profiler): the same loop and, for a seed, the same metrics as the Ray run.
    Not with --address, --num-learners > 1, --planner-replicas > 1 or the --chaos-* options."""
    iterations: int = 300
    """PPO updates to run at most (300 take about 6 minutes on a 2-core laptop with the heuristic
    planner; with an LLM on the CPU, --time-budget-s usually ends training first)."""
    time_budget_s: float = 420.0
    """Stop training after this many seconds (the iteration under way finishes), then checkpoint and
    evaluate as usual; 0 = no limit. Keeps the default run under 10 minutes on a 2-core laptop even
    when an LLM on the CPU plans."""
    batches_per_iteration: int = 0
    """Rollout batches per update; 0 = one per rollout actor."""
    seed: int = 0
    """Fixes the initial weights, the simulated users' episodes and the planner's sampling."""
    name: str = ""
    """The run's row name in reports (experiment files set it; "" = the run directory's parent)."""
    run_dir: str = ""
    """Where metrics, TensorBoard files, checkpoints and the evaluation go; "" = runs/<date-time>."""
    address: str = ""
    """Ray cluster to join: "" starts a local Ray on this machine, "auto" joins the cluster this
    machine belongs to (as under `ray job submit`), "HOST:PORT" joins that head's GCS."""
    planner_backend: str = "auto"
    """Backend of the planner service this run starts: vllm (the LLM), heuristic (no LLM), random
    (random category sets: an ablation), or auto = vllm when vLLM is installed, else heuristic (said
    once at start). Ignored with --planner-address."""
    planner_model: str = "smollm2"
    """LLM for the vllm backend: smollm2 (embedded SmolLM2-135M-Instruct), a local Hugging Face
    folder, or a hub id (needs a network; e.g. an 8B instruct model on GPU nodes)."""
    planner_tensor_parallel: int = 1
    """GPUs one planner replica spreads the LLM over (vLLM tensor parallelism)."""
    planner_kv_cache_gib: int = 0
    """vllm backend on a CPU: each replica's KV cache (its prefix cache) in whole GiB; 0 = the
    service's default (VLLM_CPU_KVCACHE_SPACE when set, else a sixth of the machine's memory, 1 to
    8 GiB). Ignored on a GPU."""
    planner_replicas: int = 1
    """Planner services started as Ray actors; rollout actors balance their calls over all of them
    (gRPC round-robin), and a replica that dies is restarted on its own address meanwhile."""
    planner_gpus_per_replica: float = -1.0
    """GPUs each planner replica reserves; -1 = planner_tensor_parallel with the vllm backend when the
    cluster has that many GPUs for every replica, else 0."""
    num_learners: int = 1
    """Data-parallel learner ranks (torch.distributed: NCCL on GPUs, gloo on CPUs); each takes a
    shard of every minibatch and gradients are averaged, so M ranks learn what one would."""
    learner_timeout_s: float = 300.0
    """How long the learner ranks wait for each other (start-up rendezvous, every collective)."""
    reflection_pool_size: int = 200
    """Critiques the learner side keeps (LERL: 200); the oldest leaves first."""
    reflection_temperature: float = 0.1
    """A critique is sampled with probability proportional to exp(this x its session's return) (LERL: 0.1)."""
    reflections_per_plan: int = 3
    """Critiques sent with every plan request (LERL: 3); 0 = planning without reflections."""
    planner_address: str = ""
    """Use a planner service already running at HOST:PORT instead of starting one; "in-process"
    calls the heuristic rule inside each rollout actor (no server; for debugging)."""
    planner_host: str = "127.0.0.1"
    """Address the started planner service binds. Loopback reaches only rollout actors on the
    same node (others fall back to the heuristic); "node-ip" binds the node's cluster address, for
    multi-node clusters on a private network (the service has no authentication yet)."""
    learner_device: str = "auto"
    """Learner device: auto (CUDA when torch sees a GPU), cpu or cuda."""
    learner_num_gpus: float = -1.0
    """GPUs each learner rank reserves from Ray; -1 = 1 per rank when the cluster has a GPU for every
    rank (--num-learners), else 0."""
    learner_num_cpus: float = 1.0
    """CPUs the learner actor reserves from Ray."""
    learner_torch_threads: int = 1
    """Torch intra-op threads in the learner."""
    checkpoint_every: int = 20
    """Write checkpoints/latest.pt every this many iterations (0 = only the final one)."""
    max_batches_in_flight: int = 0
    """Rollout collects outstanding at once (backpressure: finished batches wait in the object store
    only this many at a time); each actor has at most one. 0 = one per rollout actor."""
    max_policy_lag: int = 4
    """A finished batch whose policy is more than this many versions behind the learner is dropped
    (counted as dropped_stale_batches); newer ones are used, their lag corrected by the PPO ratio
    against the behaviour log-probabilities (counted as lagged_batches when the lag is > 0)."""
    chaos_kill_rollout_every: int = 0
    """Fault injection: kill one rollout actor (round-robin) every this many iterations; Ray
    restarts it and its lost batch is requested again (0 = off). For reliability tests."""
    chaos_kill_planner_every: int = 0
    """Fault injection: kill one planner replica every this many iterations; it is restarted on its
    address while the others (or the heuristic fallback) serve (0 = off)."""
    chaos_kill_rollout_every_s: float = 0.0
    """Fault injection: kill one rollout actor (round-robin) every this many seconds of training,
    wherever the loop is (mid-collect, mid-update), once the previous victim delivers again; Ray
    restarts it and its lost batch is requested again (0 = off). For reliability tests."""
    chaos_planner_hang_every: int = 0
    """Fault injection: every planner replica holds one Plan request in this many for
    --chaos-planner-hang-s seconds, past the callers' deadline, so they fall back to the heuristic
    (counted as planner_chaos_hangs; 0 = off). For reliability tests."""
    chaos_planner_hang_s: float = 0.0
    """Fault injection: how long a held Plan request waits (0 = --planner-timeout-s plus one second)."""
    chaos_corrupt_batch_every: int = 0
    """Fault injection: every this many iterations, one collected batch is replaced by a copy that
    breaks the transition schema before it reaches the learner, which must reject and count it
    (rejected_batches), not learn from it (0 = off). For reliability tests."""
    resume: str = ""
    """Continue the stopped run in this run directory from its newest checkpoint
    (checkpoints/latest.pt or final.pt): weights, optimizer, RNG states, reflection pool and
    counters are restored and training goes on from the next iteration, appending to its
    metrics.jsonl. Options not given are the checkpoint's; run options (e.g. a
    higher --iterations, --time-budget-s, which counts this process's time) and rollout options may
    change, world, policy and PPO options may not (the run is refused, naming the option)."""
    eval_users: int = 128
    """Evaluation users (a fixed, seeded set) for the final trained-versus-random comparison; 0 = skip."""
    eval_seed: int = 2024
    """Seed that picks the evaluation users and their episodes' randomness."""
    explain_slates: int = 12
    """After evaluation, this many slates (seeded) of each explained policy (trained, greedy and
    greedy+planner: without and with the planner) get an Explain answer, scored for faithfulness,
    length and validity and by the planner service's judge (learner.explanations); 0 = none."""
    planner_ready_timeout_s: float = 600.0
    """How long to wait for the planner service to report SERVING at start-up (an LLM engine
    starts in ~20 s on a CPU; the embedded model is converted once, ~30 s more)."""

    def validate(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        for name, low in (("iterations", 1), ("planner_replicas", 1), ("num_learners", 1), ("reflection_pool_size", 1),
                          ("planner_tensor_parallel", 1), ("learner_torch_threads", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        for name in ("batches_per_iteration", "time_budget_s", "checkpoint_every", "eval_users", "explain_slates", "learner_num_cpus",
                     "reflections_per_plan", "max_batches_in_flight", "max_policy_lag", "planner_kv_cache_gib",
                     "chaos_kill_rollout_every", "chaos_kill_planner_every", "chaos_planner_hang_every",
                     "chaos_corrupt_batch_every", "chaos_kill_rollout_every_s", "chaos_planner_hang_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("learner_timeout_s", "planner_ready_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("learner_num_gpus", "planner_gpus_per_replica"):
            if getattr(self, name) < 0 and getattr(self, name) != -1:
                raise ValueError(f"{name} must be >= 0, or -1 for automatic, got {getattr(self, name)}")
        if self.learner_device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"learner_device must be auto, cpu or cuda, got {self.learner_device!r}")
        if self.serial:
            clash = [name for name, bad in (("address", self.address), ("num_learners", self.num_learners > 1),
                                            ("planner_replicas", self.planner_replicas > 1),
                                            *((n, getattr(self, n)) for n in CHAOS_OPTIONS)) if bad]
            if clash:
                raise ValueError(f"serial runs everything in one process without Ray; drop {', '.join(clash)}")
        if self.planner_backend not in ("auto", "vllm", "heuristic", "random"):
            raise ValueError(f"planner_backend must be auto, vllm, heuristic or random, got {self.planner_backend!r}")


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as config.json in the run directory."""

    run: RunConfig = field(default_factory=RunConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    laac: LAACConfig = field(default_factory=LAACConfig)
    ilrec: ILRecConfig = field(default_factory=ILRecConfig)

    def validate(self) -> None:
        for section in SECTIONS:
            getattr(self, section).validate()
        if self.run.algorithm == "ppo" and self.rollout.use_planner:
            self.rollout.use_planner = False  # flat PPO is the policy without the planner's mask
        if self.world.user_model != "mf" and self.run.algorithm not in ("lerl", "ppo"):
            # LAAC and IL-Rec learn from logs and their own data sets; their simulated evaluation reads oracles.
            raise ValueError(f"user_model={self.world.user_model}: only --algorithm lerl or ppo trains in an LLM user's "
                             f"world; evaluate a {self.run.algorithm} checkpoint there with python -m learner.evaluate "
                             f"--checkpoint FILE --eval-user-model {self.world.user_model} --llm-user-address HOST:PORT")
        if self.world.dataset == "synthetic" and self.rollout.plan_categories > self.world.num_categories:
            raise ValueError(f"plan_categories={self.rollout.plan_categories} exceeds "
                             f"num_categories={self.world.num_categories}")
        if self.run.max_batches_in_flight > self.rollout.num_rollout_actors:
            raise ValueError(f"max_batches_in_flight={self.run.max_batches_in_flight} exceeds "
                             f"num_rollout_actors={self.rollout.num_rollout_actors} (one collect per actor)")
        if self.run.chaos_planner_hang_s and self.run.chaos_planner_hang_s <= self.rollout.planner_timeout_s:
            raise ValueError(f"chaos_planner_hang_s={self.run.chaos_planner_hang_s:g} must exceed "
                             f"planner_timeout_s={self.rollout.planner_timeout_s:g} (the fault is a hang past the "
                             "deadline), or be 0 for one second past it")

    def validate_world(self, world) -> None:
        """The checks that need the built world (a logged data set's catalog is known only once
        loaded); run before any process starts. ValueError naming the option."""
        name = self.world.dataset
        if not self.rollout.use_planner or self.run.algorithm == "ppo":
            return
        if self.rollout.plan_categories > world.num_categories:
            raise ValueError(f"plan_categories={self.rollout.plan_categories} exceeds the {world.num_categories} "
                             f"categories of the {name} world")
        # The most items any mask of plan_categories categories can allow: the largest ones together.
        sizes = sorted(world.item_category_matrix.sum(axis=0), reverse=True)
        largest = int(sum(sizes[:self.rollout.plan_categories]))
        if largest < self.world.slate_size:
            raise ValueError(f"plan_categories={self.rollout.plan_categories}: the largest {self.rollout.plan_categories} "
                             f"categories of the {name} world hold {largest} items, fewer than slate_size="
                             f"{self.world.slate_size}, so no planner mask could ever fill a slate; raise "
                             "--plan-categories or lower --slate-size")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path) -> None:
        """Write the config as JSON (config.json of a run directory)."""
        with open(path, "w") as fh:
            json.dump(self.to_dict(), fh, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Rebuild from `to_dict` output; an unknown section or key is an error that names it."""
        cfg = cls()
        for section, values in data.items():
            if section not in SECTIONS:
                raise ValueError(f"unknown config section {section!r}; known: {', '.join(SECTIONS)}")
            target = getattr(cfg, section)
            names = {f.name for f in dataclasses.fields(target)}
            for key, value in values.items():
                if key not in names:
                    raise ValueError(f"unknown config key {section}.{key}")
                setattr(target, key, value)
        return cfg


SECTIONS = ("run", "world", "policy", "ppo", "rollout", "laac", "ilrec")
_SECTION_TITLES = {"run": "run", "world": "simulated world", "policy": "policy network",
                   "ppo": "PPO", "rollout": "rollouts and planning", "laac": "LAAC (--algorithm laac)",
                   "ilrec": "IL-Rec (--algorithm ilrec)"}


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each dataclass field (CleanRL/tyro style), by field name."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    docs, body = {}, tree.body[0].body
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_config_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...] = SECTIONS) -> None:
    """A flag per field of these config sections (field names are unique across sections, so
    flags stay flat: --slate-size, not --world.slate-size)."""
    defaults = TrainConfig()
    seen: dict[str, str] = {}
    for section in sections:
        obj = getattr(defaults, section)
        group = parser.add_argument_group(_SECTION_TITLES[section])
        docs = field_docs(type(obj))
        for f in dataclasses.fields(obj):
            if f.name in seen:
                raise RuntimeError(f"config field {f.name} is in both {seen[f.name]} and {section}")
            seen[f.name] = section
            default = getattr(obj, f.name)
            kind = _bool if isinstance(default, bool) else type(default)
            group.add_argument(_flag(f.name), dest=f"{section}.{f.name}", type=kind, default=default,
                               metavar=type(default).__name__.upper(),
                               help=f"{docs.get(f.name, '')} (default: {default!r})".replace("%", "%%"))


def build_parser(prog: str = "python -m learner.main", description: str = "") -> argparse.ArgumentParser:
    """The training CLI: every config field of every section."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_argument_group("experiments")
    group.add_argument("--config", default="", metavar="FILE|DIR",
                       help="run the experiment in this file (every seed it lists; see experiments/), or every "
                            "experiment file of this directory and then their report; flags given here override "
                            "the file's options")
    group.add_argument("--preset", default="", metavar="NAME",
                       help="with --config: the files' named variant, e.g. quick (a small budget)")
    add_config_flags(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig()
    for dest, value in vars(args).items():
        section, _, name = dest.partition(".")
        if section in SECTIONS:
            setattr(getattr(cfg, section), name, value)
    return cfg

