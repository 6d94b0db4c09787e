"""LERL's training loop (and flat PPO, its no-planner baseline) inside the run skeleton.

Rollout actors step batches of simulated users, asking the planner service for each user's
category set (the mask over the item space); the learner turns their Arrow batches into PPO
updates and publishes versioned weights; finished sessions' critiques go into the reflection
pool, three of which travel with every plan request. With `--serial` the same loop runs its
workers and learner in this process (learner.serial).
"""
from __future__ import annotations

import time

from learner.chaos import DriverChaos
from learner.distributed import LearnerGroup
from learner.evaluation import PLANNER_CONTROLS, evaluate_against_references, evaluation_users, llm_user_tag
from learner.explanations import explain_runs, with_explanations
from learner.learner_actor import Learner
from learner.metrics_row import iteration_metrics, progress_line
from learner.rollout_pool import RolloutPool, rollout_seed, start_rollout_actors
from learner.runtime import UsageError, learner_gpus
from learner.serial import SerialLearnerGroup, SerialRolloutPool
from learner.skeleton import Algorithm, Run
from learner.algorithms.lerl.reflection_pool import ReflectionPool
from planner_api.client import connect_planner
from rollout.actor import RolloutWorker
from rollout.batch_schema import batch_dims
from rollout.llm_world import ensure_calibration
from rollout.world import policy_spec


class LERL(Algorithm):
    """The hierarchical planner + low-level PPO (`--algorithm lerl`); `--algorithm ppo` is the
    same loop with no planner (every item allowed)."""

    name = "lerl"
    supports_resume = True

    def prepare(self) -> None:
        self.world = self.build_world(check=self.cfg.validate_world)

    def needs_planner(self) -> bool:
        # In an LLM user's world the service answers the users too (rollout.llm_world).
        return self.cfg.rollout.use_planner or self.cfg.world.user_model != "mf"

    def needs_ray(self) -> bool:
        return not self.cfg.run.serial

    def _calibrate_llm_user(self, run: Run) -> None:
        """In an LLM user's world: the calibration (made now through the run's service, or found), set in
        the config every rollout worker builds its world from, and saved with the run's config."""
        cfg = self.cfg
        client = connect_planner(run.planner_address)
        try:
            cfg.world.llm_user_calibration = ensure_calibration(
                self.world, cfg.world, client, llm_user_tag(cfg.run.planner_backend, cfg.run.planner_model))
        finally:
            client.close()
        print(f"users answered by the {cfg.run.planner_backend} service ({cfg.world.user_model} world), calibration "
              f"{cfg.world.llm_user_calibration}", flush=True)
        cfg.save(run.run_dir / "config.json")

    def setup(self, run: Run) -> None:
        cfg, self.run = self.cfg, run
        if cfg.world.user_model != "mf":
            self._calibrate_llm_user(run)
        driver = run.resumed.get("driver", {})
        self.learner = self._learner_group(run)
        self.reflections = ReflectionPool(cfg.run.reflection_pool_size, cfg.run.reflection_temperature, cfg.run.seed)
        if run.resumed:
            self.learner.load_state(run.resumed["learner"])
            if "reflection_pool" in run.resumed:
                self.reflections.load_state(run.resumed["reflection_pool"])
        seed = rollout_seed(cfg.run.seed, run.start)
        sample = lambda: self.reflections.sample(cfg.run.reflections_per_plan)  # noqa: E731
        if run.ray is None:
            workers = [RolloutWorker(cfg.world, cfg.policy, cfg.rollout, run.planner_address, i, seed)
                       for i in range(cfg.rollout.num_rollout_actors)]
            weights, version = self.learner.publish()
            first_plans = self._prime_plans(workers, run)
            self.pool = SerialRolloutPool(workers, weights, version, max_in_flight=cfg.run.max_batches_in_flight,
                                          max_policy_lag=cfg.run.max_policy_lag, reflections=sample)
        else:
            # The actors start (each builds its world) while the learner builds its network.
            workers = start_rollout_actors(cfg, run.planner_address, seed)
            weights, version = self.learner.publish()
            first_plans = self._prime_plans(workers, run)
            # Actors collect asynchronously with the newest weights at submission; the learner takes
            # whichever batches finish first (so its lag is measured, not assumed zero).
            self.pool = RolloutPool(workers, weights, version, max_in_flight=cfg.run.max_batches_in_flight,
                                    max_policy_lag=cfg.run.max_policy_lag, reflections=sample)
        self.weights = weights
        self.per_iteration = cfg.run.batches_per_iteration or len(workers)
        for key, value in driver.get("rollout", {}).items():
            setattr(self.pool.counters, key, value)
        self.chaos = DriverChaos(run.ray, cfg.run, workers, run.planner_replicas, driver.get("chaos"),
                                 self.pool.collected_from)
        self.totals = {**driver.get("totals", {}), "env_steps": int(driver.get("env_steps_total", 0))}
        self.totals["first_plans_seconds"] = self.totals.get("first_plans_seconds", 0.0) + first_plans
        self.chaos.start()

    def _prime_plans(self, workers: list, run: Run) -> float:
        """The actors' session-start plans made before the time budget starts (rollout.prime_plans_s;
        on 2 cores an LLM plans about 10 users a second), with a draw from the reflection pool (empty
        unless resumed); returns the seconds the slowest actor spent priming. An actor that fails
        here plans its users when it first meets them (Ray restarts it as it would in a collect)."""
        rollout = self.cfg.rollout
        limit = rollout.prime_plans_s if rollout.use_planner else 0.0
        if limit <= 0:
            return 0.0
        if rollout.plan_reuse_batches <= 0:  # the auto value resolves to 0 with the heuristic or --planner-address
            raise UsageError("--prime-plans-s needs plan reuse: pass --plan-reuse-batches > 0 (nothing would keep the "
                             "plans)")
        print(f"planner: making the training users' session-start plans before training (at most {limit:g} s; "
              "reported as first_plans_seconds) ...", flush=True)
        reflections = self.reflections.sample(self.cfg.run.reflections_per_plan)
        if run.ray is None:
            done = [w.prime_plans(limit, reflections) for w in workers]
        else:
            done = []
            for ref in [w.prime_plans.remote(limit, reflections) for w in workers]:
                try:
                    done.append(run.ray.get(ref))
                except run.ray.exceptions.RayError as exc:
                    print(f"planner: a rollout actor failed while priming ({type(exc).__name__}); its users are "
                          "planned when first met", flush=True)
        seconds = max((d["seconds"] for d in done), default=0.0)
        users, calls, fallbacks = (sum(d[k] for d in done) for k in ("users", "calls", "fallbacks"))
        chunk = min((d.get("chunk_users", rollout.plan_chunk_users) for d in done), default=rollout.plan_chunk_users)
        fitted = f"; calls cut to {chunk} users, the rate this machine showed" if chunk < rollout.plan_chunk_users else ""
        print(f"planner: {users} users planned in {seconds:.0f} s ({calls} calls, {fallbacks} fell back{fitted}; the "
              "users left are planned when first met)", flush=True)
        return seconds

    def _learner_group(self, run: Run):
        cfg = self.cfg
        spec, dims = policy_spec(cfg.world, self.world), batch_dims(cfg.world, self.world)
        try:
            if run.ray is None:
                return SerialLearnerGroup(Learner(spec, dims, cfg.policy, cfg.ppo, cfg.run.seed, cfg.run.learner_device,
                                                  cfg.run.learner_torch_threads))
            return LearnerGroup(spec, dims, cfg.policy, cfg.ppo, cfg.run.seed, num_learners=cfg.run.num_learners,
                                device=cfg.run.learner_device, num_cpus=cfg.run.learner_num_cpus,
                                num_gpus=learner_gpus(run.ray, cfg), torch_threads=cfg.run.learner_torch_threads,
                                timeout_s=cfg.run.learner_timeout_s)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def iterate(self, iteration: int) -> dict:
        self.chaos.before_iteration(iteration)  # before collecting: a kill hits collects in flight
        t_iter = time.perf_counter()
        collected, dropped_before = [], len(self.pool.dropped_batch_ids)
        while len(collected) < self.per_iteration:
            collected.append(self.pool.next())
            for critique, session_return in collected[-1].stats.critiques:
                self.reflections.add(critique, session_return)
        # In actor order, not arrival order: the update (minibatch shuffles) and the row's means
        # then depend on the seed alone, not on which actor finished first.
        collected.sort(key=lambda c: c.actor_index)
        t_update = time.perf_counter()
        update, (self.weights, version) = self.learner.update_and_publish(
            self.chaos.corrupt(iteration, [c.batch_ref for c in collected]))
        update["update_seconds"] = time.perf_counter() - t_update
        self.pool.set_weights(self.weights, version)
        row = iteration_metrics(iteration, [c.stats for c in collected], update, time.perf_counter() - t_iter,
                                self.totals, self.run.wall_seconds())
        row.update(self.pool.counters.to_dict(), **self.chaos.row(), **self.run.resume_cost,
                   dropped_batch_ids=self.pool.dropped_batch_ids[dropped_before:],
                   batches_in_flight=self.pool.in_flight, reflection_pool_size=len(self.reflections),
                   first_plans_seconds=self.totals["first_plans_seconds"])
        replicas = self.run.planner_replicas
        if replicas is not None:
            replicas.ensure_serving()  # brings back replicas Ray restarted
            row.update({f"planner_{k}": v for k, v in replicas.stats().items()})
        return row

    def progress(self, row: dict) -> str:
        return progress_line(row, self.cfg.run.iterations)

    def stop_training(self) -> None:
        if hasattr(self, "chaos"):
            self.chaos.stop()

    def state(self, iteration: int) -> dict:
        return {"learner": self.learner.state(), "reflection_pool": self.reflections.state(),
                "driver": {"iteration": iteration, "env_steps_total": self.totals["env_steps"],
                           "wall_seconds": self.run.wall_seconds(), "rollout": self.pool.counters.to_dict(),
                           "totals": dict(self.totals), "resume": dict(self.run.resume_cost),
                           "chaos": dict(self.chaos.counts)}}

    def evaluate(self, run: Run) -> dict:
        cfg = self.cfg
        if not cfg.run.eval_users:
            return {}
        weights = self.weights if run.ray is None else run.ray.get(self.weights)
        users = evaluation_users(self.world, cfg.run.eval_users, cfg.run.eval_seed)
        explain = bool(cfg.run.explain_slates and run.planner_address and cfg.rollout.use_planner)
        runs = {} if explain else None
        # Reflections act at evaluation as in training: a seeded draw from the trained pool.
        reflections = tuple(self.reflections.sample(cfg.run.reflections_per_plan, seed=cfg.run.eval_seed))
        rows = evaluate_against_references(self.world, cfg.world, cfg.policy, cfg.rollout, run.planner_address,
                                           weights, users, cfg.run.eval_seed, runs, reflections)
        for name in (*PLANNER_CONTROLS, "trained"):
            if name in rows:
                rows[name]["reflections"] = list(reflections)
        if explain:
            client = connect_planner(run.planner_address)
            try:
                summaries = explain_runs(self.world, client, runs, cfg.run.explain_slates, cfg.run.eval_seed,
                                         cfg.rollout.planner_timeout_s, cfg.run.planner_backend)
            finally:
                client.close()
            with_explanations(rows, summaries)
        return rows

    def close(self) -> None:
        if hasattr(self, "pool"):
            self.pool.close()
        if hasattr(self, "learner"):
            self.learner.shutdown()
