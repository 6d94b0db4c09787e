"""The IL-Rec driver (`--algorithm ilrec`; see learner.ilrec): demonstrations, embeddings, the Ray
actor-learner loop with IL-Rec's learner, checkpoints, metrics and the evaluation."""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from learner.checkpoint import save_checkpoint
from learner.config import TrainConfig, save_config
from learner.metrics_row import episode_progress


def _progress(row: dict, total: int) -> str:
    return (episode_progress(row, total) + "disc acc "
            f"{row.get('ilrec_disc_acc_demo', 0):.2f}/{row.get('ilrec_disc_acc_policy', 0):.2f} | learned r "
            f"{row.get('ilrec_learned_reward_mean', 0):+.3f} | AWR w {row.get('ilrec_awr_weight_mean', 0):.2f} | "
            f"v{row['policy_version']}")


def run_ilrec(cfg: TrainConfig) -> dict:
    from learner.demonstrations import load_or_generate
    from learner.evaluate import evaluate_against_references, evaluation_table, evaluation_users
    from learner.ilrec import evaluate_llm_propose
    from learner.ilrec_learner import make_ilrec_learner_class
    from learner.main import (UsageError, _learner_gpus, init_ray, make_run_dir, shut_down, start_planner,
                              wait_for_planner)
    from learner.metrics_row import iteration_metrics
    from learner.rollout_pool import RolloutPool, rollout_seed, start_rollout_actors
    from learner.text_embeddings import EmbeddingError, cache_root, world_item_embeddings
    from planner_api.client import connect_planner
    from rollout.world import World

    t_start = time.perf_counter()
    if cfg.run.resume:
        raise UsageError("--resume is not supported with --algorithm ilrec yet: start the run again (its "
                         "demonstrations and embeddings are cached, so only the training is redone)")
    if cfg.run.num_learners != 1:
        raise UsageError("--algorithm ilrec trains with one learner: pass --num-learners 1")
    cfg.rollout.use_planner = False  # the RL policy is flat; the LLM is the demonstrator, not a mask
    try:
        cfg.validate()
        world = World.build(cfg.world)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"world: {cfg.world.dataset}, {world.num_items:,} items in {world.num_categories} categories, "
          f"{world.num_users:,} users, quit rule {cfg.world.quit_rule}", flush=True)
    try:
        _, emb_path = world_item_embeddings(world)
    except EmbeddingError as exc:
        raise UsageError(str(exc)) from None
    ray = init_ray(cfg)
    run_dir = make_run_dir(cfg)
    if world.user_model.report:
        (run_dir / "user_model.json").write_text(json.dumps(world.user_model.report, indent=2))
    # The planner service answers the demonstrator's Propose calls (start_planner starts it for
    # planner-using configs only, so it gets a copy that says so).
    plan_cfg = copy.deepcopy(cfg)
    plan_cfg.rollout.use_planner = True
    planner_replicas, address = start_planner(ray, plan_cfg)
    cfg.run.planner_backend = plan_cfg.run.planner_backend
    save_config(cfg, run_dir / "config.json")
    print(f"run directory: {run_dir}", flush=True)
    learner, client, metrics_file = None, None, None
    try:
        wait_for_planner(address, cfg.run.planner_ready_timeout_s)
        backend = "external:" + address if cfg.run.planner_address else cfg.run.planner_backend
        print(f"demonstrator: {backend} planner at {address}", flush=True)
        client = connect_planner(address)
        settings = cfg.ilrec.propose_settings()
        try:
            demos, demo_path, cached = load_or_generate(world, cfg.world, client, backend, cfg.run.planner_model,
                                                        cfg.ilrec.ilrec_demo_sessions, cfg.run.seed, settings,
                                                        cache_root())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        from learner.demonstrations import demo_info

        info = demo_info(demos)
        (run_dir / "demonstrations.json").write_text(json.dumps(
            {"path": str(demo_path), "cached": cached, "rows": demos.num_rows, **info}, indent=2))
        print(f"demonstrations: {info['steps']:,} steps of {cfg.ilrec.ilrec_demo_sessions} sessions "
              f"(Tint {info['Tint']:.2f}, Rcum {info['Rcum']:.3f}; answered by {', '.join(info['answered_by'])}, "
              f"{info['fallbacks']} of {info['propose_calls']} calls fell back){' from the cache' if cached else ''}: "
              f"{demo_path}", flush=True)
        if info["fallbacks"]:
            print(f"warning: {info['fallbacks']} Propose calls timed out or failed and were answered by the heuristic; "
                  "raise --ilrec-propose-timeout-s or lower --ilrec-demo-group-size", flush=True)

        learner_cls = make_ilrec_learner_class(cfg.run.learner_num_cpus, _learner_gpus(ray, cfg))
        try:
            learner = learner_cls.remote(cfg.world, cfg.policy, cfg.ppo, cfg.run.seed, cfg.ilrec, str(demo_path),
                                         str(emb_path), cfg.run.learner_device, cfg.run.learner_torch_threads)
            pretrain = ray.get(learner.pretrain.remote())
        except ray.exceptions.RayActorError as exc:
            raise UsageError(f"the IL-Rec learner could not start: {exc}") from None
        print(f"behaviour cloning warm start: {cfg.ilrec.ilrec_pretrain_steps} steps, loss "
              f"{pretrain['pretrain_bc_loss']:.3f}", flush=True)
        weights_ref, version = ray.get(learner.publish.remote())
        actors = start_rollout_actors(cfg, None, rollout_seed(cfg.run.seed, 1))
        pool = RolloutPool(actors, weights_ref, version, max_in_flight=cfg.run.max_batches_in_flight,
                           max_policy_lag=cfg.run.max_policy_lag)
        per_iteration = cfg.run.batches_per_iteration or len(actors)
        metrics_file = open(run_dir / "metrics.jsonl", "w")  # no resume: a restarted run starts over
        totals = {"env_steps": 0}
        iteration = 0

        def checkpoint(name: str) -> Path:
            state = {"learner": ray.get(learner.state.remote()), "config": cfg.to_dict(), "iteration": iteration,
                     "demonstrations": str(demo_path),
                     "driver": {"iteration": iteration, "env_steps_total": totals["env_steps"],
                                "wall_seconds": time.perf_counter() - t_start, "rollout": pool.counters.to_dict()}}
            return save_checkpoint(run_dir / "checkpoints" / name, state)

        for iteration in range(1, cfg.run.iterations + 1):
            t_iter = time.perf_counter()
            collected = [pool.next() for _ in range(per_iteration)]
            update, (weights_ref, version) = ray.get(learner.update_and_publish.remote(*[c.batch_ref for c in collected]))
            pool.set_weights(weights_ref, version)
            row = iteration_metrics(iteration, [c.stats for c in collected], update, time.perf_counter() - t_iter,
                                     totals, time.perf_counter() - t_start)
            row.update(pool.counters.to_dict(), ilrec_demo_env_steps=info["steps"],
                       **{k: v for k, v in update.items() if k.startswith("ilrec_")})
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
            print(_progress(row, cfg.run.iterations), flush=True)
            if cfg.run.checkpoint_every and iteration % cfg.run.checkpoint_every == 0:
                checkpoint("latest.pt")
            if cfg.run.time_budget_s and time.perf_counter() - t_start > cfg.run.time_budget_s:
                print(f"time budget of {cfg.run.time_budget_s:g} s reached after {iteration} iterations "
                      "(demonstrations included)", flush=True)
                break
        print(f"checkpoint: {checkpoint('final.pt')}", flush=True)
        results = {}
        if cfg.run.eval_users:
            weights = ray.get(weights_ref)
            users = evaluation_users(world, cfg.run.eval_users, cfg.run.eval_seed)
            results = evaluate_against_references(world, cfg.world, cfg.policy, cfg.rollout, None, weights, users,
                                                  cfg.run.eval_seed)
            llm_users = users[:cfg.ilrec.ilrec_llm_eval_users or len(users)]
            results["llm-propose"] = evaluate_llm_propose(world, cfg.world, client, llm_users, cfg.run.eval_seed,
                                                          settings)
            (run_dir / "eval.json").write_text(json.dumps(results, indent=2))
            print(evaluation_table(results), flush=True)
            if len(llm_users) < len(users):
                print(f"  (llm-propose on the first {len(llm_users)} of the {len(users)} evaluation users; "
                      "--ilrec-llm-eval-users 0 = all)", flush=True)
        return results
    finally:
        if metrics_file is not None:
            metrics_file.close()
        if client is not None:
            client.close()
        shut_down(ray, planner_replicas.stop if planner_replicas is not None else None)
