"""IL-Rec's run inside the skeleton (`--algorithm ilrec`; see learner.algorithms.ilrec):
demonstrations, embeddings, the Ray actor-learner loop with IL-Rec's learner, and the evaluation."""
from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np

from learner.algorithms.ilrec.demonstrations import (demo_info, demonstrator_quality, load_or_generate, load_or_log,
                                                     run_propose_sessions)
from learner.algorithms.ilrec.learner import make_ilrec_learner_class
from learner.algorithms.ilrec.text_embeddings import EmbeddingError, cache_root, world_item_embeddings
from learner.evaluation import (EVAL_WORKER_INDEX, draw_users, evaluate_against_references, evaluate_reference,
                                evaluation_users, summarise)
from learner.metrics_row import episode_progress, iteration_metrics
from learner.rollout_pool import RolloutPool, rollout_seed, start_rollout_actors
from learner.runtime import UsageError, learner_gpus
from learner.skeleton import Algorithm, Run
from planner_api.client import connect_planner
from rollout.actor import RolloutWorker, worker_seeds
from rollout.batch_schema import batch_dims
from rollout.world import policy_spec
from rollout.users import UserBatchEnv


class ILRec(Algorithm):
    """IL-Rec: LLM demonstrations, a reward model by inverse RL (AIRL-structured), then RL on it."""

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
        self.offline = cfg.ilrec.ilrec_mode == "offline"

    def needs_planner(self) -> bool:
        return self.cfg.ilrec.ilrec_demonstrator == "planner"  # it answers the demonstrator's Propose calls

    def setup(self, run: Run) -> None:
        cfg, ray, self.run = self.cfg, run.ray, run
        if self.needs_planner():
            backend = "external:" + run.planner_address if cfg.run.planner_address else cfg.run.planner_backend
            print(f"demonstrator: {backend} planner at {run.planner_address}", flush=True)
            self.client = connect_planner(run.planner_address)
        else:
            backend, self.client = f"reference:{cfg.ilrec.ilrec_demonstrator}", None
            print(f"demonstrator: the {cfg.ilrec.ilrec_demonstrator} reference policy (a control, not an LLM)",
                  flush=True)
        self.settings = cfg.ilrec.propose_settings()
        self._data(backend)
        learner_cls = make_ilrec_learner_class(cfg.run.learner_num_cpus, learner_gpus(ray, cfg))
        try:
            self.learner = learner_cls.remote(policy_spec(cfg.world, self.world), batch_dims(cfg.world, self.world),
                                              cfg.policy, cfg.ppo, cfg.run.seed, cfg.ilrec,
                                              str(self.demo_path), str(self.emb_path), cfg.run.learner_device,
                                              cfg.run.learner_torch_threads,
                                              str(self.logs_path) if self.offline else None)
            if self.offline:
                extracted = ray.get(self.learner.extract_reward.remote(cfg.ilrec.ilrec_reward_steps))
            else:
                pretrain = ray.get(self.learner.pretrain.remote())
        except ray.exceptions.RayActorError as exc:
            raise UsageError(f"the IL-Rec learner could not start: {exc}") from None
        self.totals = {"env_steps": 0}
        self.weights, version = ray.get(self.learner.publish.remote())
        if self.offline:
            self.reward_stats = extracted
            print(f"reward model (AIRL, {cfg.ilrec.ilrec_reward_steps} steps against the random logs): accuracy "
                  f"{extracted.get('ilrec_disc_acc_demo', 0):.2f} demonstrations / "
                  f"{extracted.get('ilrec_disc_acc_policy', 0):.2f} logs; g ranks a demonstration slate above a "
                  f"logged one with AUC {extracted['ilrec_reward_auc']:.3f}", flush=True)
            self.curve_users = curve_users(self.world, cfg.ilrec.ilrec_curve_users, cfg.run.seed)
            self.curve_worker = RolloutWorker(cfg.world, cfg.policy, replace(cfg.rollout, use_planner=False,
                                              users_per_actor=len(self.curve_users)),
                                              None, worker_index=EVAL_WORKER_INDEX, seed=cfg.run.seed)
            self.totals["env_steps"] = self.data_steps  # every environment step it learns from was taken before
            return
        print(f"behaviour cloning warm start: {cfg.ilrec.ilrec_pretrain_steps} steps, loss "
              f"{pretrain['pretrain_bc_loss']:.3f}", flush=True)
        actors = start_rollout_actors(cfg, None, rollout_seed(cfg.run.seed, 1))
        self.pool = RolloutPool(actors, self.weights, version, max_in_flight=cfg.run.max_batches_in_flight,
                                max_policy_lag=cfg.run.max_policy_lag)
        self.per_iteration = cfg.run.batches_per_iteration or len(actors)

    def _data(self, backend: str) -> None:
        """The demonstrations (and, offline, the random logs), their facts in demonstrations.json,
        and the demonstrator measured against random on the same users before it is imitated."""
        cfg, lc = self.cfg, self.cfg.ilrec
        seed = lc.ilrec_demo_seed
        try:
            if self.client is None:
                demos, self.demo_path, cached = load_or_log(self.world, cfg.world, lc.ilrec_demo_sessions, seed,
                                                            lc.ilrec_demo_group_size, cache_root(),
                                                            policy=lc.ilrec_demonstrator)
            else:
                demos, self.demo_path, cached = load_or_generate(self.world, cfg.world, self.client, backend,
                                                                 cfg.run.planner_model, lc.ilrec_demo_sessions,
                                                                 seed, self.settings, cache_root())
            logs, self.logs_path, logs_cached = load_or_log(self.world, cfg.world, max(lc.ilrec_log_sessions,
                                                            lc.ilrec_demo_sessions), seed, lc.ilrec_demo_group_size,
                                                            cache_root())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        self.info = info = demo_info(demos)
        self.quality = quality = demonstrator_quality(demos, logs)
        logs_info = demo_info(logs)
        self.data_steps = info["steps"] + (logs_info["steps"] if self.offline else 0)
        (self.run.run_dir / "demonstrations.json").write_text(json.dumps(
            {"path": str(self.demo_path), "cached": cached, "rows": demos.num_rows, **info,
             "demonstrator_vs_random": quality,
             "logs": {"path": str(self.logs_path), "cached": logs_cached, "rows": logs.num_rows,
                      **{k: logs_info[k] for k in ("Tint", "Rcum", "steps")}}}, indent=2))
        print(f"demonstrations: {info['steps']:,} steps of {lc.ilrec_demo_sessions} sessions "
              f"(Tint {info['Tint']:.2f}, Rcum {info['Rcum']:.3f}; answered by {', '.join(info['answered_by'])}, "
              f"{info['fallbacks']} of {info['propose_calls']} calls fell back){' from the cache' if cached else ''}: "
              f"{self.demo_path}", flush=True)
        print(f"random logs: {logs_info['steps']:,} steps of {logs.column('episode_id').to_numpy().max() + 1} sessions "
              f"(Tint {logs_info['Tint']:.2f}, Rcum {logs_info['Rcum']:.3f}){' from the cache' if logs_cached else ''}"
              f"{'' if self.offline else ' (online mode: only the demonstrator comparison reads them)'}", flush=True)
        verdict = "beats" if quality["beats_random"] else "does NOT beat"
        print(f"demonstrator {verdict} random on the same {quality['sessions']} users: Rcum "
              f"{quality['demonstrator_Rcum']:.3f} vs {quality['random_Rcum']:.3f} (difference "
              f"{quality['difference']:+.3f} +- {2 * quality['difference_se']:.3f}, 2 SE)", flush=True)
        if not quality["beats_random"]:
            print("warning: the demonstrator is no better than random slates; what IL-Rec learns from its "
                  "demonstrations is then the logs' and the environment's, not the LLM's", flush=True)
        if info["fallbacks"]:
            print(f"warning: {info['fallbacks']} Propose calls timed out or failed and were answered by the heuristic; "
                  "raise --ilrec-propose-timeout-s or lower --ilrec-demo-group-size", flush=True)

    def iterate(self, iteration: int) -> dict:
        if self.offline:
            return self._iterate_offline(iteration)
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

    def _iterate_offline(self, iteration: int) -> dict:
        """`ilrec_offline_steps` actor-critic steps on the replay, then the deterministic policy on
        the curve's training users (the learning curve: it takes no step the learner reads)."""
        ray, t_iter = self.run.ray, time.perf_counter()
        update, (self.weights, version) = ray.get(
            self.learner.offline_update_and_publish.remote(self.cfg.ilrec.ilrec_offline_steps))
        update["update_seconds"] = time.perf_counter() - t_iter
        _, stats = self.curve_worker.collect(ray.get(self.weights), version, user_ids=self.curve_users, act="mean")
        stats.env_steps = 0   # evaluation steps: the run's env steps are the data it learns from
        row = iteration_metrics(iteration, [stats], update, time.perf_counter() - t_iter, self.totals,
                                self.run.wall_seconds())
        row.update(ilrec_demo_env_steps=self.info["steps"], ilrec_curve_users=len(self.curve_users),
                   **{k: v for k, v in {**self.reward_stats, **update}.items() if k.startswith("ilrec_")})
        return row

    def progress(self, row: dict) -> str:
        if self.offline:
            return (episode_progress(row, self.cfg.run.iterations) + f"(curve: {row['ilrec_curve_users']} training "
                    f"users) | critic {row.get('ilrec_value_loss', 0):.3f} | AWR max w {row.get('ilrec_awr_weight_max', 0):.0f}"
                    f" | v{row['policy_version']}")
        return (episode_progress(row, self.cfg.run.iterations) + "disc acc "
                f"{row.get('ilrec_disc_acc_demo', 0):.2f}/{row.get('ilrec_disc_acc_policy', 0):.2f} | learned r "
                f"{row.get('ilrec_learned_reward_mean', 0):+.3f} | AWR w {row.get('ilrec_awr_weight_mean', 0):.2f} | "
                f"v{row['policy_version']}")

    def state(self, iteration: int) -> dict:
        rollout = {} if self.offline else self.pool.counters.to_dict()
        return {"learner": self.run.ray.get(self.learner.state.remote()), "demonstrations": str(self.demo_path),
                "driver": {"iteration": iteration, "env_steps_total": self.totals["env_steps"],
                           "wall_seconds": self.run.wall_seconds(), "rollout": rollout}}

    def evaluate(self, run: Run) -> dict:
        cfg = self.cfg
        if not cfg.run.eval_users:
            return {}
        users = evaluation_users(self.world, cfg.run.eval_users, cfg.run.eval_seed)
        results = evaluate_against_references(self.world, cfg.world, cfg.policy, cfg.rollout, None,
                                              run.ray.get(self.weights), users, cfg.run.eval_seed)
        llm_users = users[:cfg.ilrec.ilrec_llm_eval_users or len(users)]
        if self.client is None:  # a reference demonstrator: its own row, on the same users
            results["llm-propose"] = evaluate_reference(self.world, cfg.world, cfg.ilrec.ilrec_demonstrator,
                                                        llm_users, cfg.run.eval_seed)
        else:
            results["llm-propose"] = evaluate_llm_propose(self.world, cfg.world, self.client, llm_users,
                                                          cfg.run.eval_seed, self.settings)
        results["llm-propose"]["demonstrator_vs_random"] = self.quality
        if len(llm_users) < len(users):
            print(f"  (llm-propose on the first {len(llm_users)} of the {len(users)} evaluation users; "
                  "--ilrec-llm-eval-users 0 = all)", flush=True)
        return results

    def close(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        if getattr(self, "curve_worker", None) is not None:
            self.curve_worker.close()


def curve_users(world, count: int, seed: int) -> np.ndarray:
    """The learning curve's users: `count` training users (never the held-out evaluation users),
    drawn by `seed`."""
    return draw_users(world.train_users, count, seed, 0xC0E5)


def evaluate_llm_propose(world, cfg, client, users, seed: int, settings) -> dict:
    """The LLM policy alone (the demonstrator's loop) on `users`, with the evaluation's dice."""
    env = UserBatchEnv(world, cfg, len(users), worker_seeds(seed, EVAL_WORKER_INDEX)[0])
    run = run_propose_sessions(world, cfg, client, env, users, settings, seed)
    metrics = summarise(world, run.episodes)
    metrics.update(planner_fallbacks=run.fallbacks, answered_by=",".join(run.backends))
    return metrics
