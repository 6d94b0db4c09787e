"""The rollout worker: a batch of simulated users, the planner asked once per step for the whole
batch, the latest policy weights acting, and an Arrow RecordBatch of transitions out.

With the planner service, a step's plan is asked for in a thread while the policy encodes the
users' histories (`ActorCritic.history_state`, most of its forward pass, which does not read the
plan); the rest of the pass waits for the plan. The batch is the one planning first would give
(a test holds it to the in-process planner's, value for value); only the wait shrinks
(`seconds_plan_wait` against the calls' `seconds_planner`).

`RolloutWorker` is a plain class, so a serial mode (and the tests) can run it in one process;
`RolloutActor` is the same class as a Ray actor.
"""
from __future__ import annotations

import secrets
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from planner_api.client import InProcessPlanner, connect_planner
from policy.masking import item_mask, select_slate, widen_short_masks
from policy.networks import ActorCritic, PolicyConfig, load_numpy_weights, log_prob
from rollout.batch_schema import batch_dims, build_batch
from rollout.episodes import run_episodes
from rollout.population_posterior import PopulationPosterior
from rollout.reference_policies import posterior_exposure_scores, ridge_exposure_scores
from rollout.session_planner import SessionPlanner
from rollout.world import World, WorldConfig, policy_spec
from rollout.llm_world import attach_llm_user
from rollout.users import UserBatchEnv

ACT_MODES = ("sample", "mean", "random", "oracle", "rule", "posterior")


@dataclass
class RolloutConfig:
    """How rollouts are collected."""

    num_rollout_actors: int = 2
    """Rollout actors (Ray actors), each stepping its own batch of users."""
    users_per_actor: int = 64
    """Simulated users each actor steps together; one batch = one episode per user."""
    plan_categories: int = 4
    """Categories the policy may recommend from each step: the best of the planner's pool (with
    --rotate-categories, the best not shown at the user's last step)."""
    plan_pool: int = 8
    """Categories the planner ranks per user each time it is asked (>= plan_categories)."""
    use_planner: bool = True
    """Ask the planner service each step; off = flat policy over every item (the no-planner ablation)."""
    planner_timeout_s: float = 30.0
    """Deadline of one batched Plan call; past it the actor uses the local heuristic plan and counts a fallback."""
    plan_every: int = 0
    """Ask the planner for a new pool every this many steps, from the user's past and the session so
    far (the pool's age is logged); in between the pool is reused. 0 = auto: every step with the
    heuristic planner, every 5 steps with an LLM (on a CPU the LLM plans about 10 users a second)."""
    plan_max_age: int = -1
    """Plan during the session asynchronously: a due plan is asked for in the background and the
    users go on with their older pool until it comes back; the rollout waits only once a pool is
    this many steps old (the share of rollout time spent waiting is logged as
    planner_wait_share). 0 = wait for every plan at the step it is due. -1 = auto: 0 with the
    heuristic (it answers in microseconds), 2 x plan_every with an LLM."""
    plan_reuse_batches: int = -1
    """Reuse a user's session-start plan when this actor meets the user again, for up to this many
    of its batches (then plan anew; reuses and their age in batches are logged); with reuse on and
    several actors, each actor draws its training users from its own share of them, so each user
    is planned by one actor. With plan_max_age > 0, an expired plan is renewed in the background
    (the user keeps it meanwhile, plans_renewed) and waited for only at 4x this age. Evaluation
    never reuses (a fresh actor). -1 = auto: 100 with an LLM
    (on 2 cores the engine plans about 10 users a second; a run meets each user many times), 0
    with the heuristic (free: every session is planned)."""
    prime_plans_s: float = -1.0
    """Before training (outside the time budget; reported as first_plans_seconds and in the
    report's wall time), make each actor's training users' session-start plans and keep them for
    reuse, asking no more after this many seconds (so at most this plus one call's deadline; the
    users left, and all of a restarted actor's, are planned when first met): on 2 cores an LLM
    plans about 10 users a second, and without this an LLM run's first batches spend their time
    waiting. Needs plan reuse. 0 = off. -1 = auto: 120 with an LLM and plan reuse, 0 otherwise."""
    plan_chunk_users: int = 32
    """Users per Plan call at a session start and when priming, each call's answers kept as they
    come: a call must fit its deadline (planner_timeout_s) with every actor asking at once. The
    most per call: one that takes over half the deadline cuts it to what fits in a third at the
    rate measured (SessionPlanner.fit_chunk; AVX2-only CPUs run the LLM several times slower).
    0 = the whole batch in one call, never cut."""
    rotate_categories: bool = False
    """Rotation, a rule of its own (an ablation, off in the LERL rows): never offer a category shown
    at the user's last step, whatever the planner ranked; the mask is the best plan_categories of
    the pool left. Off, the mask is the planner's own top plan_categories, and keeping users from
    tiring of a category is the planner's and the policy's job."""
    reflect_sessions: int = 2
    """Finished sessions per batch sent to Reflect (best and worst by return first); 0 = no reflections."""
    reflect_async: int = -1
    """1 = the rollout never waits for Reflect: it runs in the background, its critiques reach the
    reflection pool with the first batch that ends after it is done, and a batch that ends while a
    call is out is not reflected on (counted reflects_skipped); 0 = each batch waits for its own
    Reflect call (deterministic). -1 = auto: 1 with an LLM (Reflect generates tens of tokens per
    session: awaited, it was most of the rollout time on 2 cores), 0 with the heuristic."""
    send_titles: bool = False
    """Send the titles of shown items in plan requests: richer prompts for an LLM planner, but about
    three times the prompt tokens per step (off by default on CPUs; the heuristic ignores them)."""
    rollout_torch_threads: int = 1
    """Torch intra-op threads per rollout actor (keep actors x threads <= cores)."""
    rollout_num_cpus: float = 1.0
    """Ray CPUs reserved per rollout actor."""

    def validate(self) -> None:
        if self.num_rollout_actors < 1:
            raise ValueError(f"num_rollout_actors must be >= 1, got {self.num_rollout_actors}")
        if self.users_per_actor < 1:
            raise ValueError(f"users_per_actor must be >= 1, got {self.users_per_actor}")
        if self.plan_categories < 1:
            raise ValueError(f"plan_categories must be >= 1, got {self.plan_categories}")
        if self.plan_pool < self.plan_categories:
            raise ValueError(f"plan_pool={self.plan_pool} must be >= plan_categories={self.plan_categories}")
        if self.reflect_async not in (-1, 0, 1):
            raise ValueError(f"reflect_async must be 0, 1 or -1 (auto), got {self.reflect_async}")
        for name in ("plan_reuse_batches", "plan_max_age"):
            if getattr(self, name) < -1:
                raise ValueError(f"{name} must be >= 0 (or -1: auto), got {getattr(self, name)}")
        if not (self.prime_plans_s >= 0 or self.prime_plans_s == -1):  # also refuses NaN
            raise ValueError(f"prime_plans_s must be >= 0 (or -1: auto), got {self.prime_plans_s}")
        if self.prime_plans_s > 0 and self.plan_reuse_batches == 0:
            raise ValueError("prime_plans_s > 0 needs plan reuse (plan_reuse_batches > 0 or -1): nothing would keep "
                             "the plans")
        for name in ("plan_every", "reflect_sessions", "rollout_num_cpus", "plan_chunk_users"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.planner_timeout_s > 0:  # also refuses NaN
            raise ValueError(f"planner_timeout_s must be > 0, got {self.planner_timeout_s}")
        if self.rollout_torch_threads < 1:
            raise ValueError(f"rollout_torch_threads must be >= 1, got {self.rollout_torch_threads}")


@dataclass
class RolloutStats:
    """What one `collect` call measured, besides the batch itself."""

    batch_id: str
    policy_version: int
    episode_lengths: np.ndarray
    episode_returns: np.ndarray
    env_steps: int
    seconds_total: float
    seconds_policy: float
    seconds_env: float
    masks_widened: int
    seconds_planner: float = 0.0   # in the planner's calls (their latency)
    seconds_plan_wait: float = 0.0  # the rollout blocked on plans (less than the calls' time where it encoded meanwhile)
    seconds_load_weights: float = 0.0  # copying a new version's weights into the model (the broadcast's actor side)
    planner_calls: int = 0
    planner_fallbacks: int = 0
    plan_age_sum: int = 0          # steps since each used plan was made, summed over user-steps
    plan_age_count: int = 0
    plans_reused: int = 0          # session-start plans taken from the actor's cache instead of the planner
    plan_reuse_age_sum: int = 0    # batches since each reused plan was made, summed over reuses
    plans_skipped: int = 0         # due plans not asked for because the last one was still in flight
    plans_renewed: int = 0         # expired session-start plans reused once more while made again in the background
    seconds_reflect: float = 0.0
    reflect_calls: int = 0
    reflect_fallbacks: int = 0
    reflects_in_background: int = 0  # Reflect calls left running while the next batch is rolled out
    reflects_skipped: int = 0        # finished batches not reflected on: the last call was still out
    critiques: list = field(default_factory=list)  # (critique, session return) for the reflection pool


def worker_seeds(seed: int, worker_index: int) -> tuple[int, int, int]:
    """(environment, action sampling, planner) seeds of worker `worker_index` in a run seeded `seed`."""
    env_seed, torch_seed, plan_seed = np.random.SeedSequence([seed, worker_index, 0x5011]).generate_state(3)
    return int(env_seed), int(torch_seed), int(plan_seed)


def _restarted_by_ray() -> bool:
    """True inside a Ray actor that Ray re-created after it died (False outside Ray)."""
    try:
        import ray

        if not ray.is_initialized():
            return False
        with warnings.catch_warnings():  # Ray's own property reads its deprecated actor_id inside
            warnings.simplefilter("ignore", DeprecationWarning)
            return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # noqa: BLE001 - not in an actor (plain worker, tests, evaluation)
        return False


def _scatter_rows(active: np.ndarray, values: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`out` ([B, ...]) with the active rows (in order) set to `values`."""
    out[active] = values
    return out


class RolloutWorker:
    """Steps `users_per_actor` simulated users to the end of their episodes per `collect` call."""

    def __init__(self, world: WorldConfig, policy: PolicyConfig, rollout: RolloutConfig,
                 planner_address: str | None, worker_index: int, seed: int, llm_user_address: str | None = None):
        torch.set_num_threads(rollout.rollout_torch_threads)
        self.world_cfg, self.rollout, self.worker_index = world, rollout, worker_index
        self.world = World.build(world)
        self.dims = batch_dims(world, self.world)
        # Batch ids must stay unique when a worker is re-created (a Ray restart, a resumed run)
        # while the learner remembers the ids it has seen: each incarnation gets its own token.
        # Ids are labels, not data, so this is the one thing a seed does not fix.
        self.incarnation = secrets.token_hex(4)
        env_seed, torch_seed, plan_seed = worker_seeds(seed, worker_index)
        if _restarted_by_ray():  # a crash is not reproducible anyway: do not replay the first episodes
            env_seed, torch_seed = (int(x) for x in np.random.SeedSequence(
                [env_seed, torch_seed, int(self.incarnation, 16)]).generate_state(2))
        self.env = UserBatchEnv(self.world, world, rollout.users_per_actor, env_seed)
        if world.user_model != "mf":  # the LLM answers the users (rollout.llm_world)
            address = llm_user_address or planner_address
            attach_llm_user(self.env, self.world, world, connect_planner(address) if address else None)
        self.generator = torch.Generator().manual_seed(torch_seed)
        self._posterior: PopulationPosterior | None = None   # posterior-exposure's, made when first asked
        with torch.random.fork_rng():  # the learner's initial weights too: same seed, same init
            torch.manual_seed(seed)
            self.model = ActorCritic.from_spec(policy_spec(world, self.world), policy)
        self.model.eval()
        self.version = -1
        self.batches_made = 0
        self.planner = None
        self._plan_executor = None   # the thread plans run in while the policy encodes (_overlaps_plans)
        if rollout.use_planner:
            if not planner_address:
                raise ValueError("rollout.use_planner is on but no planner address was given")
            self.planner = SessionPlanner(self.world, connect_planner(planner_address), rollout.plan_categories,
                                          max(rollout.plan_every, 1), rollout.reflect_sessions, rollout.planner_timeout_s,
                                          plan_seed, rollout.send_titles, world.slate_size, max(rollout.plan_max_age, 0),
                                          rollout.plan_pool, max(rollout.plan_reuse_batches, 0),
                                          rollout.rotate_categories, rollout.reflect_async == 1,
                                          rollout.plan_chunk_users)
            if rollout.plan_reuse_batches > 0 and worker_index < rollout.num_rollout_actors:
                # Each user planned by one actor: this actor's share of the training users.
                share = self.world.train_users[worker_index::rollout.num_rollout_actors]
                self.env.user_pool = share if len(share) else self.world.train_users

    def prime_plans(self, max_seconds: float, reflections: list[str] | tuple = ()) -> dict:
        """The session-start plans of the training users this actor draws from, made now and kept
        for reuse (SessionPlanner.prime), in the order they are listed, asking no more once
        `max_seconds` have passed."""
        if self.planner is None:
            raise ValueError("priming plans needs the planner (rollout.use_planner)")
        users = np.asarray(self.env.user_pool, np.int64)
        return self.planner.prime(users, *self.env.starting_history(users), max_seconds, reflections)

    def set_weights(self, weights: dict[str, np.ndarray], version: int) -> None:
        """Act with these weights from now on (no-op when the version is the one already loaded)."""
        if version != self.version:
            load_numpy_weights(self.model, weights)
            self.version = version

    def collect(self, weights: dict[str, np.ndarray] | None = None, version: int | None = None,
                user_ids: np.ndarray | None = None, act: str = "sample",
                reflections: list[str] | tuple = ()) -> tuple[pa.RecordBatch, RolloutStats]:
        """Run one episode per user slot to the end; returns the transitions and the stats.

        `reflections`: critiques from the learner side's pool, sent with every plan request.
        `act`: "sample" draws from the Gaussian (training), "mean" takes its mean (evaluation),
        "random" ranks the allowed items uniformly at random (the random reference policy),
        "oracle" by the true model's click logits now (the best items inside the planner's categories),
        "rule" by ridge-exposure-fresh's scores (the best rule that reads only what the policy sees),
        "posterior" by posterior-exposure's (the observable ceiling: the population's true model).
        """
        if act not in ACT_MODES:
            raise ValueError(f"act must be one of {ACT_MODES}, got {act!r}")
        t_start = time.perf_counter()
        if weights is not None:
            self.set_weights(weights, int(version if version is not None else 0))
        seconds_load_weights = time.perf_counter() - t_start
        env = self.env
        env.reset(user_ids)
        if self.planner is not None:
            self.planner.start(env.batch_size, list(reflections), env.history_items, env.history_feedback)
        stats = dict(seconds_policy=0.0, seconds_env=0.0, masks_widened=0, seconds_load_weights=seconds_load_weights,
                     seconds_plan_wait=0.0)
        run = run_episodes(env, self._policy_act(act, stats), self.world_cfg.max_steps, record=True,
                           observe=self._planner_record if self.planner is not None else None)
        stats["seconds_env"] = run.seconds_env
        self.last_run = run  # what evaluation's metrics read (slates, clicks, users) besides the batch
        columns = dict(run.columns)
        n_rows = len(columns["step"])
        batch_id = f"actor-{self.worker_index}.{self.incarnation}/{self.batches_made}"
        self.batches_made += 1
        columns["batch_id"] = np.array([batch_id] * n_rows, dtype=object)
        columns["policy_version"] = np.full(n_rows, self.version, np.int64)
        batch = build_batch(self.dims, columns)
        critiques = []
        if self.planner is not None:
            if act == "sample":  # training batches feed the pool; evaluation does not
                critiques = self.planner.reflect(env.user_ids, run.lengths, run.returns)
            stats.update(self.planner.stats)
            if not self._overlaps_plans():   # the rollout waited for each call it made
                stats["seconds_plan_wait"] = stats["seconds_planner"]
        return batch, RolloutStats(
            batch_id=batch_id, policy_version=self.version, episode_lengths=run.lengths,
            episode_returns=run.returns, env_steps=n_rows, seconds_total=time.perf_counter() - t_start,
            critiques=critiques, **stats)

    def _planner_record(self, slates: np.ndarray, result, active: np.ndarray) -> None:
        """What the planner needs to know of each step (its next requests carry the session so far)."""
        self.planner.record(slates, result.clicks, active)

    def _overlaps_plans(self) -> bool:
        """Whether each step's plan is asked for in a thread while this one encodes the histories
        (`ActorCritic.history_state`: most of the policy's work, and it does not read the plan), so
        the service's answer costs only what is left of its wait. Only with a service: its calls
        wait on gRPC, which releases the GIL; the in-process planner's rule is Python that would
        take turns with the encoding."""
        return self.planner is not None and not isinstance(self.planner.client, InProcessPlanner)

    def _plan_thread(self):
        if self._plan_executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._plan_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plan-overlap")
        return self._plan_executor

    def _policy_act(self, act: str, stats: dict):
        """The `act` function of `run_episodes` for this worker: the planner's category masks, then
        the policy network's slate; the policy's share of the time and widened masks go into `stats`."""
        env, k = self.env, self.world_cfg.slate_size

        def choose(step: int, active: np.ndarray) -> tuple[np.ndarray, dict]:
            planning = cmask = None
            if self.planner is None:
                cmask = np.ones((env.batch_size, self.world.num_categories), bool)
            elif self._overlaps_plans():   # planned in a thread while this one encodes (_overlaps_plans)
                planning = self._plan_thread().submit(self.planner.masks, step, active, env.user_ids)
            else:
                cmask = self.planner.masks(step, active, env.user_ids)
            t0 = time.perf_counter()  # after the planner: its wait is seconds_plan_wait
            # Only the active users' rows are computed (late in a batch most slots are users who
            # left, whose slates the env ignores); random draws are made for every slot, as
            # before, so a seed gives the same slates.
            rows = torch.from_numpy(np.flatnonzero(active))
            with torch.no_grad():
                history = torch.from_numpy(env.history_items)[rows]
                feedback = torch.from_numpy(env.history_feedback)[rows]
                summary, fixed = self.model.history_state(history, feedback) if planning is not None else (None, None)
            if planning is not None:
                waited = time.perf_counter()
                cmask = planning.result()
                waited = time.perf_counter() - waited
                stats["seconds_plan_wait"] += waited
                t0 += waited
            available = env.available_items()
            allowed = item_mask(cmask[active], self.world.item_category)
            if available is not None:
                allowed &= available[active]
            allowed, widened = widen_short_masks(allowed, k, None if available is None else available[active])
            stats["masks_widened"] += widened
            with torch.no_grad():
                steps = torch.full((len(rows),), step)
                dist, value = self.model(history, feedback, torch.from_numpy(cmask)[rows], steps, fixed, summary)
                if act in ("random", "oracle", "rule", "posterior"):
                    action = torch.zeros_like(dist.mean)
                    scores = self._control_scores(act)[rows]
                else:
                    noise = torch.randn((env.batch_size, dist.mean.shape[1]), generator=self.generator)[rows]
                    action = dist.mean + dist.stddev * noise if act == "sample" else dist.mean
                    scores = self.model.item_scores(action, history, steps)
                logp = log_prob(dist, action)
                chosen = select_slate(scores, torch.from_numpy(allowed), k)
            stats["seconds_policy"] += time.perf_counter() - t0
            b = env.batch_size
            return _scatter_rows(active, chosen.numpy().astype(np.int32), np.zeros((b, k), np.int32)), {
                "category_mask": cmask, "action": _scatter_rows(active, action.numpy(), np.zeros((b, action.shape[1]), np.float32)),
                "behaviour_logp": _scatter_rows(active, logp.numpy(), np.zeros(b, np.float32)),
                "value": _scatter_rows(active, value.numpy(), np.zeros(b, np.float32))}

        return choose

    def _control_scores(self, act: str) -> torch.Tensor:
        """[B, N] the item scores of a fixed control scorer (`collect`'s act modes besides the policy's)."""
        env = self.env
        if act == "random":
            return torch.rand((env.batch_size, self.world.num_items), generator=self.generator)
        if act == "oracle":
            return torch.from_numpy(env.item_logits())
        if act == "rule":
            return torch.from_numpy(ridge_exposure_scores(env))
        if self._posterior is None:   # made once: the population's logits over the catalog
            self._posterior = PopulationPosterior(self.world)
        return torch.from_numpy(posterior_exposure_scores(env, self._posterior))

    def close(self) -> None:
        if self._plan_executor is not None:
            self._plan_executor.shutdown(wait=True)
        if self.planner is not None:
            self.planner.close()
        if self.env.responder is not None:  # the LLM user's client is this worker's own
            self.env.responder.close()
            self.env.responder.llm_user.client.close()


def make_rollout_actor_class(num_cpus: float):
    """The Ray actor class for rollout workers, reserving `num_cpus` each; restarted by Ray if it dies."""
    import ray

    return ray.remote(num_cpus=num_cpus, max_restarts=3, max_task_retries=0)(RolloutWorker)
