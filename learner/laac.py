"""LAAC (arXiv 2507.21274): the LLM as a reference policy for an offline actor-critic.

`python -m learner.main --algorithm laac` (options --laac-*):
1. the logged interactions of --dataset become a sequential MDP (`learner.offline_data`: state =
   the last items, action = the next item, reward = its rating), split by user into train and
   held-out;
2. the planner service's `Propose` call (the LLM reference policy: last 5 items, 100 random
   candidates, up to 10 items back) answers a seeded sample of the training states once, in
   batched RPCs; the answers are cached as Parquet beside the offline data (`learner.laac_data`);
3. an actor and twin critics are trained by LAAC's bilevel adversarial objective
   (`learner.laac_model`: the actor maximises its advantage over the LLM under the critics, the
   critics minimise it plus alpha x grounding plus beta x TD) on the learner device;
4. the policy is evaluated offline on held-out users (R@10, NCV@10, ...; `learner.laac_eval`),
   against the LLM policy alone and the popularity ranking, and in the simulated world against
   the reference policies.
Baselines: --laac-llm-weight 0 (the same actor-critic without the LLM term), --laac-variant
supervised (a next-item classifier with the same network). The run directory gets config.json,
metrics.jsonl, checkpoints/, offline_eval.json and eval.json.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

VARIANTS = ("laac", "supervised")


@dataclass
class LAACConfig:
    """LAAC's options (field names start with laac_: flags are flat across sections)."""

    laac_variant: str = "laac"
    """What to train: laac (the adversarial actor-critic; --laac-llm-weight 0 is its no-LLM variant)
    or supervised (a next-item classifier on the same network: the supervised baseline)."""
    laac_iterations: int = 10000
    """Gradient updates (LAAC: 10,000; about 2.5 minutes on one CPU core). --time-budget-s, counted
    from the start of the run (LLM answers included), may stop it earlier; --iterations is PPO's."""
    laac_batch_size: int = 256
    """Transitions per update."""
    laac_alpha: float = 1.0
    """Weight of the grounding loss in the critics' objective: it anchors the critics' values of the
    LLM's items to the value of the logged item (LAAC: 1.0; 0 = no grounding)."""
    laac_grounding: str = "upper"
    """Form of the grounding loss: upper penalises the critics' value of the LLM's items only above
    the logged item's value (an over-estimate: the paper's concern), both on either side."""
    laac_beta: float = 1.0
    """Weight of the TD loss in the critics' objective (LAAC: 1.0)."""
    laac_gamma: float = 0.99
    """Discount of the TD targets (LAAC: 0.99)."""
    laac_critic_lr: float = 0.01
    """Adam learning rate of the twin critics (LAAC: 0.01)."""
    laac_actor_lr: float = 0.001
    """Adam learning rate of the actor, and of the supervised baseline (LAAC: 0.001)."""
    laac_llm_weight: float = 0.3
    """Share of the critics' reference that is the LLM's answer on states that have one (the rest is
    the logged item); 1 = the paper's pure LLM reference, 0 = the no-LLM variant (ATAC-style: LLM
    answers ignored, no grounding). 0.3: on ml-100k it kept R@10 within 1 % of the no-LLM variant
    where 1 lost 30-40 % of it (README, LAAC)."""
    laac_entropy_coef: float = 0.01
    """Entropy bonus of the actor's softmax (keeps the ranking below the top item informative)."""
    laac_target_tau: float = 0.005
    """Polyak rate of the critics' target networks."""
    laac_embedding_dim: int = 32
    """Width of the item embeddings and state encoder of every network."""
    laac_history_len: int = 10
    """Items in a state (the offline MDP's window; the prompt shows the last laac_recent_items)."""
    laac_holdout_fraction: float = 0.1
    """Share of users held out for the offline evaluation (split seeded by --world-seed)."""
    laac_reference_states: int = 100
    """Training transitions that get an LLM answer (a seeded sample; 0 = all ~87k on ml-100k, for GPU
    clusters: the vLLM backend on a CPU needs ~1 s per prompt). The LLM terms apply to these only."""
    laac_llm_batch_share: float = 0.1
    """Share of every minibatch drawn from the transitions that have an LLM answer (so a small sample
    still shapes every update); the rest is drawn from all training transitions. With 100 answered
    states, 0.5 made the critics diverge on ml-100k; 0.1 did not."""
    laac_eval_llm_states: int = 50
    """Held-out transitions the LLM policy alone is evaluated on (100 candidates, the true next item
    among them: its hit@5); 0 = skip. Cached like the training answers."""
    laac_eval_states: int = 0
    """Held-out transitions of the full-catalog offline evaluation (a seeded sample; 0 = all)."""
    laac_recent_items: int = 5
    """Last items of the state shown in the LLM's prompt (LAAC: 5)."""
    laac_candidates: int = 100
    """Random candidate items in the LLM's prompt (LAAC: 100)."""
    laac_proposals: int = 10
    """Items the LLM answers with, best first (LAAC: 10)."""
    laac_candidate_seed: int = 0
    """Seed of the candidate lists and of the states sampled for LLM answers (part of the cache key)."""
    laac_propose_batch: int = 64
    """Queries per Propose RPC (the service batches them into the engine)."""
    laac_propose_timeout_s: float = 900.0
    """Deadline of one Propose RPC; past it that batch gets the heuristic's answers (not cached)."""
    laac_log_every: int = 100
    """Write a metrics row (and print a progress line) every this many updates."""
    laac_checkpoint_every: int = 2000
    """Write checkpoints/latest.pt every this many updates (0 = only final.pt)."""

    def validate(self) -> None:
        """Raise ValueError naming the option when a value cannot work."""
        if self.laac_grounding not in ("upper", "both"):
            raise ValueError(f"laac_grounding must be upper or both, got {self.laac_grounding!r}")
        if self.laac_variant not in VARIANTS:
            raise ValueError(f"laac_variant must be one of {', '.join(VARIANTS)}, got {self.laac_variant!r}")
        for name in ("laac_alpha", "laac_beta", "laac_entropy_coef", "laac_reference_states", "laac_eval_llm_states",
                     "laac_eval_states", "laac_candidate_seed", "laac_checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("laac_iterations", "laac_batch_size", "laac_embedding_dim", "laac_history_len", "laac_recent_items",
                     "laac_candidates", "laac_proposals", "laac_propose_batch", "laac_log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("laac_gamma", "laac_llm_weight", "laac_llm_batch_share", "laac_target_tau"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.laac_critic_lr <= 0 or self.laac_actor_lr <= 0 or self.laac_propose_timeout_s <= 0:
            raise ValueError("laac_critic_lr, laac_actor_lr and laac_propose_timeout_s must be > 0")
        if not 0.0 < self.laac_holdout_fraction < 1.0:
            raise ValueError(f"laac_holdout_fraction must be in (0, 1), got {self.laac_holdout_fraction}")
        if self.laac_recent_items > 16 or self.laac_candidates > 256 or self.laac_proposals > min(20, self.laac_candidates):
            raise ValueError("the Propose contract allows laac_recent_items <= 16, laac_candidates <= 256 and "
                             "laac_proposals <= min(20, laac_candidates)")

    def uses_llm(self) -> bool:
        """Whether training needs the LLM's answers (the evaluation may still ask for some)."""
        return self.laac_variant == "laac" and self.laac_llm_weight > 0


def _device(cfg):
    import torch

    wanted = cfg.run.learner_device
    if wanted == "cuda" and not torch.cuda.is_available():
        from learner.main import UsageError

        raise UsageError("--learner-device cuda, but torch sees no GPU; use auto or cpu")
    return torch.device("cuda" if wanted != "cpu" and torch.cuda.is_available() else "cpu")


def _planner_key(cfg) -> str:
    if cfg.run.planner_address:
        return f"external:{cfg.run.planner_address}"
    backend = cfg.run.planner_backend
    return f"vllm:{cfg.run.planner_model}" if backend == "vllm" else backend


def train_laac(cfg) -> dict:
    """The LAAC run (module doc); returns the simulated-world evaluation (a "trained" row beside
    the reference policies; empty with --eval-users 0)."""
    import torch

    from learner.checkpoint import save_checkpoint
    from learner.config import save_config
    from learner.evaluate import evaluate_reference, evaluation_table, evaluation_users
    from learner.laac_data import OfflineArrays, choose_rows, reference_answers
    from learner.laac_eval import (candidate_metrics, evaluate_in_world, offline_metrics, offline_table,
                                   top_among, torch_scorer, user_sequences)
    from learner.laac_model import LAACAgent, SupervisedAgent
    from learner.main import UsageError, init_ray, make_run_dir, shut_down, start_planner, wait_for_planner
    from learner.offline_data import load_or_build
    from rollout.reference_policies import REFERENCE_POLICIES
    from rollout.world import World

    lc, t_start = cfg.laac, time.perf_counter()
    if cfg.run.resume:
        raise UsageError("--resume is not supported with --algorithm laac (a LAAC run takes minutes); start it again")
    try:
        world = World.build(cfg.world)
        table, offline_path = load_or_build(world.data, lc.laac_history_len, lc.laac_holdout_fraction,
                                            cfg.world.world_seed)
    except ValueError as exc:  # DataError included
        raise UsageError(str(exc)) from None
    data = world.data
    scale = data.rating_scale if data.feedback == "rating" else None
    arrays = OfflineArrays.from_table(table, scale)
    train_rows, test_rows = np.flatnonzero(arrays.train), np.flatnonzero(~arrays.train)
    if not len(train_rows) or not len(test_rows):
        raise UsageError(f"the {cfg.world.dataset} logs gave {len(train_rows)} training and {len(test_rows)} held-out "
                         "transitions; both must be > 0 (raise --laac-holdout-fraction or use a larger data set)")
    print(f"offline data: {len(arrays):,} transitions ({len(train_rows):,} train, {len(test_rows):,} held-out) of "
          f"{data.num_users:,} users and {data.num_items:,} items -> {offline_path}", flush=True)
    run_dir = make_run_dir(cfg)
    save_config(cfg, run_dir / "config.json")
    print(f"run directory: {run_dir}", flush=True)

    ray, replicas, client = None, None, None
    need_planner = lc.uses_llm() or lc.laac_eval_llm_states > 0
    metrics_file = open(run_dir / "metrics.jsonl", "w")
    try:
        if need_planner:
            from planner_api.client import connect_planner

            cfg.rollout.use_planner = True
            if not cfg.run.planner_address:
                ray = init_ray(cfg)
            replicas, address = start_planner(ray, cfg)
            wait_for_planner(address, cfg.run.planner_ready_timeout_s)
            save_config(cfg, run_dir / "config.json")  # with the backend "auto" resolved to
            client = connect_planner(address)
            print(f"reference policy: the {_planner_key(cfg)} planner at {address}", flush=True)
        ask = dict(offline_path=offline_path, planner_key=_planner_key(cfg) if need_planner else "",
                   seed=lc.laac_candidate_seed, recent=lc.laac_recent_items, count=lc.laac_candidates,
                   proposals=lc.laac_proposals, batch_size=lc.laac_propose_batch, timeout_s=lc.laac_propose_timeout_s)


        def answers_for(rows: np.ndarray, include_target: bool):
            try:
                return reference_answers(arrays, rows, data, client, include_target=include_target, **ask)
            except ValueError as exc:  # settings the catalog cannot meet, or a request the service refused
                raise UsageError(str(exc)) from None

        llm = np.full((len(arrays), lc.laac_proposals), -1, np.int64)
        ref_stats = {}
        if lc.uses_llm():
            ref_rows = choose_rows(train_rows, lc.laac_reference_states, lc.laac_candidate_seed, 0x7EF)
            answers, _, ref_stats = answers_for(ref_rows, include_target=False)
            llm[ref_rows] = answers
            source = "from the cache" if ref_stats["cached"] else f"in {ref_stats['seconds']:.0f} s"
            print(f"reference policy: {len(ref_rows):,} training states answered ({source})", flush=True)
        has_llm = llm[:, 0] >= 0

        device = _device(cfg)
        torch.set_num_threads(cfg.run.learner_torch_threads)
        agent_cls = LAACAgent if lc.laac_variant == "laac" else SupervisedAgent
        agent = agent_cls(data.num_items, lc.laac_history_len, lc, device, cfg.run.seed)
        rng = np.random.default_rng(np.random.SeedSequence([cfg.run.seed, 0x1AAC]))
        answered = train_rows[has_llm[train_rows]]
        n_llm = int(round(lc.laac_llm_batch_share * lc.laac_batch_size)) if len(answered) else 0
        tensors = {name: torch.as_tensor(value, device=device) for name, value in
                   (("items", arrays.items), ("feedback", arrays.feedback), ("action", arrays.action),
                    ("reward", arrays.reward), ("reward_feedback", arrays.action_feedback), ("done", arrays.done),
                    ("llm", llm), ("has_llm", has_llm))}
        settings = (f" (llm weight {lc.laac_llm_weight:g}, alpha {lc.laac_alpha:g}, beta {lc.laac_beta:g})"
                    if lc.laac_variant == "laac" else "")
        print(f"training {lc.laac_variant}{settings} on {device}: up to {lc.laac_iterations:,} updates of {lc.laac_batch_size} transitions "
              f"({n_llm} with an LLM answer)", flush=True)

        def checkpoint(iteration: int, name: str):
            return save_checkpoint(run_dir / "checkpoints" / name,
                                   {"laac": agent.state(), "config": cfg.to_dict(), "iteration": iteration})

        sums, t_log, iteration = {}, time.perf_counter(), 0
        for iteration in range(1, lc.laac_iterations + 1):
            idx = np.concatenate([answered[rng.integers(len(answered), size=n_llm)] if n_llm else np.empty(0, np.int64),
                                  train_rows[rng.integers(len(train_rows), size=lc.laac_batch_size - n_llm)]])
            index = torch.as_tensor(idx, device=device)
            batch = {name: t[index] for name, t in tensors.items()}
            for key, value in agent.update(batch).items():
                sums[key] = sums.get(key, 0.0) + value
            out_of_time = cfg.run.time_budget_s and time.perf_counter() - t_start > cfg.run.time_budget_s
            if iteration % lc.laac_log_every == 0 or iteration == lc.laac_iterations or out_of_time:
                count = (iteration - 1) % lc.laac_log_every + 1
                now = time.perf_counter()
                row = {"iteration": iteration, **{k: v / count for k, v in sums.items()},
                       "updates_per_s": count / max(now - t_log, 1e-9), "wall_seconds": now - t_start}
                metrics_file.write(json.dumps(row) + "\n")
                metrics_file.flush()
                print(f"iter {iteration:>6}/{lc.laac_iterations} | " + "  ".join(
                    f"{k} {v:8.4f}" for k, v in row.items() if k not in ("iteration", "wall_seconds", "updates_per_s"))
                      + f" | {row['updates_per_s']:5.0f} updates/s", flush=True)
                sums, t_log = {}, now
            if lc.laac_checkpoint_every and iteration % lc.laac_checkpoint_every == 0:
                checkpoint(iteration, "latest.pt")
            if out_of_time:
                print(f"time budget of {cfg.run.time_budget_s:g} s reached after {iteration} updates", flush=True)
                break
        print(f"checkpoint: {checkpoint(iteration, 'final.pt')}", flush=True)

        # Offline evaluation on held-out users.
        seqs = user_sequences(arrays)
        popularity = np.bincount(arrays.action[train_rows], minlength=data.num_items).astype(np.int64)
        eval_rows = choose_rows(test_rows, lc.laac_eval_states, cfg.world.world_seed, 0xE7A1)
        score = torch_scorer(agent, device)
        popular_score = lambda items, feedback: np.broadcast_to(  # noqa: E731
            popularity - np.arange(data.num_items) / (2.0 * data.num_items), (len(items), data.num_items))
        offline = {"full": {"trained": offline_metrics(score, arrays, eval_rows, seqs, popularity),
                            "popular": offline_metrics(popular_score, arrays, eval_rows, seqs, popularity)},
                   "candidates": {}, "reference_training_states": int(has_llm.sum()), "reference": ref_stats,
                   "variant": lc.laac_variant, "llm_weight": lc.laac_llm_weight, "alpha": lc.laac_alpha,
                   "iterations": iteration, "planner": _planner_key(cfg) if need_planner else ""}
        if lc.laac_eval_llm_states:
            rows = choose_rows(test_rows, lc.laac_eval_llm_states, lc.laac_candidate_seed, 0xE7A2)
            answers, candidates, stats = answers_for(rows, include_target=True)
            offline["candidates"] = {
                "trained": candidate_metrics(top_among(score(arrays.items[rows], arrays.feedback[rows]), candidates),
                                             arrays, rows, seqs, popularity),
                "llm": candidate_metrics(answers, arrays, rows, seqs, popularity)}
            offline["llm_eval"] = stats
        (run_dir / "offline_eval.json").write_text(json.dumps(offline, indent=2))
        print(offline_table(offline), flush=True)

        results = {}
        if cfg.run.eval_users:
            users = evaluation_users(world, cfg.run.eval_users, cfg.run.eval_seed)
            for name in REFERENCE_POLICIES:
                results[name] = evaluate_reference(world, cfg.world, name, users, cfg.run.eval_seed)
            results["trained"] = evaluate_in_world(world, cfg.world, score, lc.laac_history_len, users,
                                                   cfg.run.eval_seed)
            (run_dir / "eval.json").write_text(json.dumps(results, indent=2))
            print(evaluation_table(results), flush=True)
        print(f"LAAC run finished in {time.perf_counter() - t_start:.0f} s", flush=True)
        return results
    finally:
        metrics_file.close()
        if client is not None:
            client.close()
        shut_down(ray, replicas.stop if replicas is not None else None)
