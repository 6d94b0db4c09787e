"""IL-Rec's run inside the skeleton (`--algorithm ilrec`; see learner.algorithms.ilrec):
demonstrations, embeddings, the Ray actor-learner loop with IL-Rec's learner, and the evaluation."""
from __future__ import annotations

import json
import time

from learner.algorithms.ilrec.demonstrations import demo_info, load_or_generate, run_propose_sessions
from learner.algorithms.ilrec.learner import make_ilrec_learner_class
from learner.algorithms.ilrec.text_embeddings import EmbeddingError, cache_root, world_item_embeddings
from learner.evaluation import EVAL_WORKER_INDEX, evaluate_against_references, evaluation_users, summarise
from learner.metrics_row import episode_progress, iteration_metrics
from learner.rollout_pool import RolloutPool, rollout_seed, start_rollout_actors
from learner.runtime import UsageError, learner_gpus
from learner.skeleton import Algorithm, Run
from planner_api.client import connect_planner
from rollout.actor import worker_seeds
from rollout.batch_schema import batch_dims
from rollout.world import policy_spec
from rollout.users import UserBatchEnv


class ILRec(Algorithm):
    """IL-Rec: LLM demonstrations, a discriminator reward on text embeddings, then RL."""

    name = "ilrec"
    budget_counts_setup = True  # demonstrations included

    def prepare(self) -> None:
        cfg = self.cfg
        if cfg.run.num_learners != 1:
            raise ValueError("--algorithm ilrec trains with one learner: pass --num-learners 1")
        if cfg.run.serial:
            raise ValueError("--algorithm ilrec has no serial mode yet (its learner is a Ray actor): drop --serial")
        cfg.rollout.use_planner = False  # the RL policy is flat; the LLM is the demonstrator, not a mask
        self.world = self.build_world()
        try:
            _, self.emb_path = world_item_embeddings(self.world)
        except EmbeddingError as exc:
            raise ValueError(str(exc)) from None

    def needs_planner(self) -> bool:
        return True  # it answers the demonstrator's Propose calls

    def setup(self, run: Run) -> None:
        cfg, ray, self.run = self.cfg, run.ray, run
        backend = "external:" + run.planner_address if cfg.run.planner_address else cfg.run.planner_backend
        print(f"demonstrator: {backend} planner at {run.planner_address}", flush=True)
        self.client = connect_planner(run.planner_address)
        self.settings = cfg.ilrec.propose_settings()
        try:
            demos, self.demo_path, cached = load_or_generate(self.world, cfg.world, self.client, backend,
                                                             cfg.run.planner_model, cfg.ilrec.ilrec_demo_sessions,
                                                             cfg.run.seed, self.settings, cache_root())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        self.info = info = demo_info(demos)
        (run.run_dir / "demonstrations.json").write_text(json.dumps(
            {"path": str(self.demo_path), "cached": cached, "rows": demos.num_rows, **info}, indent=2))
        print(f"demonstrations: {info['steps']:,} steps of {cfg.ilrec.ilrec_demo_sessions} sessions "
              f"(Tint {info['Tint']:.2f}, Rcum {info['Rcum']:.3f}; answered by {', '.join(info['answered_by'])}, "
              f"{info['fallbacks']} of {info['propose_calls']} calls fell back){' from the cache' if cached else ''}: "
              f"{self.demo_path}", flush=True)
        if info["fallbacks"]:
            print(f"warning: {info['fallbacks']} Propose calls timed out or failed and were answered by the heuristic; "
                  "raise --ilrec-propose-timeout-s or lower --ilrec-demo-group-size", flush=True)
        learner_cls = make_ilrec_learner_class(cfg.run.learner_num_cpus, learner_gpus(ray, cfg))
        try:
            self.learner = learner_cls.remote(policy_spec(cfg.world, self.world), batch_dims(cfg.world, self.world),
                                              cfg.policy, cfg.ppo, cfg.run.seed, cfg.ilrec,
                                              str(self.demo_path), str(self.emb_path), cfg.run.learner_device,
                                              cfg.run.learner_torch_threads)
            pretrain = ray.get(self.learner.pretrain.remote())
        except ray.exceptions.RayActorError as exc:
            raise UsageError(f"the IL-Rec learner could not start: {exc}") from None
        print(f"behaviour cloning warm start: {cfg.ilrec.ilrec_pretrain_steps} steps, loss "
              f"{pretrain['pretrain_bc_loss']:.3f}", flush=True)
        self.weights, version = ray.get(self.learner.publish.remote())
        actors = start_rollout_actors(cfg, None, rollout_seed(cfg.run.seed, 1))
        self.pool = RolloutPool(actors, self.weights, version, max_in_flight=cfg.run.max_batches_in_flight,
                                max_policy_lag=cfg.run.max_policy_lag)
        self.per_iteration = cfg.run.batches_per_iteration or len(actors)
        self.totals = {"env_steps": 0}

    def iterate(self, iteration: int) -> dict:
        ray, t_iter = self.run.ray, time.perf_counter()
        collected = sorted((self.pool.next() for _ in range(self.per_iteration)), key=lambda c: c.actor_index)
        t_update = time.perf_counter()
        update, (self.weights, version) = ray.get(
            self.learner.update_and_publish.remote(*[c.batch_ref for c in collected]))
        update["update_seconds"] = time.perf_counter() - t_update
        self.pool.set_weights(self.weights, version)
        row = iteration_metrics(iteration, [c.stats for c in collected], update, time.perf_counter() - t_iter,
                                self.totals, self.run.wall_seconds())
        row.update(self.pool.counters.to_dict(), ilrec_demo_env_steps=self.info["steps"],
                   **{k: v for k, v in update.items() if k.startswith("ilrec_")})
        return row

    def progress(self, row: dict) -> str:
        return (episode_progress(row, self.cfg.run.iterations) + "disc acc "
                f"{row.get('ilrec_disc_acc_demo', 0):.2f}/{row.get('ilrec_disc_acc_policy', 0):.2f} | learned r "
                f"{row.get('ilrec_learned_reward_mean', 0):+.3f} | AWR w {row.get('ilrec_awr_weight_mean', 0):.2f} | "
                f"v{row['policy_version']}")

    def state(self, iteration: int) -> dict:
        return {"learner": self.run.ray.get(self.learner.state.remote()), "demonstrations": str(self.demo_path),
                "driver": {"iteration": iteration, "env_steps_total": self.totals["env_steps"],
                           "wall_seconds": self.run.wall_seconds(), "rollout": self.pool.counters.to_dict()}}

    def evaluate(self, run: Run) -> dict:
        cfg = self.cfg
        if not cfg.run.eval_users:
            return {}
        users = evaluation_users(self.world, cfg.run.eval_users, cfg.run.eval_seed)
        results = evaluate_against_references(self.world, cfg.world, cfg.policy, cfg.rollout, None,
                                              run.ray.get(self.weights), users, cfg.run.eval_seed)
        llm_users = users[:cfg.ilrec.ilrec_llm_eval_users or len(users)]
        results["llm-propose"] = evaluate_llm_propose(self.world, cfg.world, self.client, llm_users,
                                                      cfg.run.eval_seed, self.settings)
        if len(llm_users) < len(users):
            print(f"  (llm-propose on the first {len(llm_users)} of the {len(users)} evaluation users; "
                  "--ilrec-llm-eval-users 0 = all)", flush=True)
        return results

    def close(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()


def evaluate_llm_propose(world, cfg, client, users, seed: int, settings) -> dict:
    """The LLM policy alone (the demonstrator's loop) on `users`, with the evaluation's dice."""
    env = UserBatchEnv(world, cfg, len(users), worker_seeds(seed, EVAL_WORKER_INDEX)[0])
    run = run_propose_sessions(world, cfg, client, env, users, settings, seed)
    metrics = summarise(world, run.episodes)
    metrics.update(planner_fallbacks=run.fallbacks, answered_by=",".join(run.backends))
    return metrics
