"""LAAC (arXiv 2507.21274): the LLM as a reference policy for an offline actor-critic.

`python -m learner.main --algorithm laac` (options --laac-*):
1. the logged interactions of --dataset become a sequential MDP (`learner.algorithms.laac.offline_data`: state =
   the last items, action = the next item, reward = its rating), split by user into train and
   held-out (the world's held-out users; --laac-train-users may keep one group of the rest);
2. the planner service's `Propose` call (the reference policy: the LLM with --planner-backend vllm,
   or the heuristic or random control; last 5 items, 100 random candidates, up to 10 items back)
   answers a seeded sample of the training states once, in batched RPCs, before training; the
   answers are cached as Parquet beside the offline data (`learner.algorithms.laac.reference`);
3. an actor and twin critics are trained by LAAC's bilevel adversarial objective
   (`learner.algorithms.laac.model`: the actor maximises its advantage over the LLM under the critics, the
   critics minimise it plus alpha x grounding plus beta x TD) on the learner device;
4. the policy is evaluated offline on held-out users (R@10, NCV@10, ...; `learner.algorithms.laac.evaluation`),
   against each reference policy alone and the popularity ranking, and in the simulated world against
   the reference policies.
Baselines: --laac-llm-weight 0 (the same actor-critic without the LLM term), --laac-variant
supervised (a next-item classifier with the same network). The run directory gets config.json,
metrics.jsonl, checkpoints/, offline_eval.json and eval.json.
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch

from learner.algorithms.laac.evaluation import (
    UserLogs,
    candidate_metrics,
    evaluate_in_world,
    offline_metrics,
    offline_table,
    top_among,
    torch_scorer,
)
from learner.algorithms.laac.model import LAACAgent, SupervisedAgent
from learner.algorithms.laac.offline_data import load_or_build
from learner.algorithms.laac.reference import OfflineArrays, choose_rows, reference_answers, reference_cache_path
from learner.evaluation import evaluate_reference, evaluation_users
from learner.learner_actor import pick_device
from learner.runtime import UsageError
from learner.skeleton import Algorithm, Run
from planner_api.client import connect_planner
from rollout.reference_policies import REFERENCE_POLICIES

TENSORS = ("items", "feedback", "action", "reward", "reward_feedback", "done", "llm", "has_llm")


def planner_key(cfg) -> str:
    """The reference policy's name in cache keys and reports: the backend (and model) or the address."""
    if cfg.run.planner_address:
        return f"external:{cfg.run.planner_address}"
    backend = cfg.run.planner_backend
    return f"vllm:{cfg.run.planner_model}" if backend == "vllm" else backend


def train_user_filter(data, spec: str) -> np.ndarray:
    """[num_users] bool: the users `--laac-train-users` lets LAAC learn from (all, or FEATURE=VALUE
    of the data set's user features; ValueError naming what exists when it matches nobody)."""
    if spec == "all":
        return np.ones(data.num_users, bool)
    feature, value = spec.split("=", 1)
    if feature not in data.user_features:
        raise ValueError(f"--laac-train-users {spec}: the {data.name} data has no user feature {feature!r} "
                         f"(it has: {', '.join(sorted(data.user_features)) or 'none'})")
    column = np.asarray(data.user_features[feature]).astype(str)
    keep = column == value
    if not keep.any():
        raise ValueError(f"--laac-train-users {spec}: no user has {feature} = {value!r} "
                         f"(values: {', '.join(sorted(set(column.tolist()))[:20])})")
    return keep


class LAAC(Algorithm):
    """The LAAC run (module doc); one iteration is one gradient update."""

    name = "laac"
    # The time budget counts training only: the reference policy's answers are made once per data
    # split and planner, then read from the cache (an LLM on a 2-core CPU takes about 5 s a
    # state; counted in, the default run's answers alone spent its whole budget).
    budget_counts_setup = False

    def prepare(self) -> None:
        cfg, lc = self.cfg, self.cfg.laac
        self.world = self.build_world()
        if not self.world.users_held_out:
            raise ValueError("LAAC is evaluated on held-out users: --eval-user-share must be > 0")
        data = self.world.data
        table, self.offline_path = load_or_build(data, lc.laac_history_len, self.world.eval_users)
        self.arrays = OfflineArrays.from_table(table, data.rating_scale if data.feedback == "rating" else None)
        self.all_train_rows, self.test_rows = np.flatnonzero(self.arrays.train), np.flatnonzero(~self.arrays.train)
        learns_from = train_user_filter(data, lc.laac_train_users)
        self.train_rows = self.all_train_rows[learns_from[self.arrays.user[self.all_train_rows]]]
        if not len(self.train_rows) or not len(self.test_rows):
            raise ValueError(f"the {cfg.world.dataset} logs gave {len(self.train_rows)} training and "
                             f"{len(self.test_rows)} held-out transitions; both must be > 0 (change "
                             "--eval-user-share or --laac-train-users, or use a larger data set)")
        subset = "" if lc.laac_train_users == "all" else f" of users with {lc.laac_train_users}"
        print(f"offline data: {len(self.arrays):,} transitions ({len(self.train_rows):,} train{subset}, "
              f"{len(self.test_rows):,} held-out) of {data.num_users:,} users and {data.num_items:,} items "
              f"-> {self.offline_path}", flush=True)
        self.device = pick_device(cfg.run.learner_device)

    def uses_reference(self) -> bool:
        """Whether the run reads the reference policy's answers (to train on, or to score it alone)."""
        lc = self.cfg.laac
        return lc.uses_llm() or lc.laac_eval_llm_states > 0

    def reference_rows(self) -> dict[bool, np.ndarray]:
        """{include_target: rows} of every set of answers the run reads: False, a seeded sample of
        the training states (the reference in the critics' loss); True, of the held-out states (the
        reference alone on the 100-candidate protocol, the true next item among the candidates)."""
        lc, out = self.cfg.laac, {}
        if lc.uses_llm():
            out[False] = choose_rows(self.train_rows, lc.laac_reference_states, lc.laac_candidate_seed, 0x7EF)
        if lc.laac_eval_llm_states:
            out[True] = choose_rows(self.test_rows, lc.laac_eval_llm_states, lc.laac_candidate_seed, 0xE7A2)
        return out

    def needs_planner(self) -> bool:
        """The service starts only when an answer the run reads is not cached yet (an LLM on a CPU
        takes a minute to start; a table's later rows and seeds read the first one's answers)."""
        if not self.uses_reference():
            return False
        if self.cfg.run.planner_address:
            return True
        lc, key = self.cfg.laac, planner_key(self.cfg)
        return not all(reference_cache_path(self.offline_path, key, lc.laac_candidate_seed, rows, lc.laac_recent_items,
                                            lc.laac_candidates, lc.laac_proposals, target).is_file()
                       for target, rows in self.reference_rows().items())

    def needs_ray(self) -> bool:
        return self.needs_planner() and not self.cfg.run.planner_address and not self.cfg.run.serial

    def total_iterations(self) -> int:
        return self.cfg.laac.laac_iterations

    def checkpoint_every(self) -> int:
        return self.cfg.laac.laac_checkpoint_every

    def _answers(self, rows: np.ndarray, include_target: bool):
        lc = self.cfg.laac
        try:
            return reference_answers(self.arrays, rows, self.world.data, self.client, include_target=include_target,
                                     offline_path=self.offline_path,
                                     planner_key=planner_key(self.cfg) if self.uses_reference() else "",
                                     seed=lc.laac_candidate_seed, recent=lc.laac_recent_items,
                                     count=lc.laac_candidates, proposals=lc.laac_proposals,
                                     batch_size=lc.laac_propose_batch, timeout_s=lc.laac_propose_timeout_s)
        except ValueError as exc:  # settings the catalog cannot meet, or a request the service refused
            raise UsageError(str(exc)) from None

    def setup(self, run: Run) -> None:
        cfg, lc, arrays, self.run = self.cfg, self.cfg.laac, self.arrays, run
        self.client = connect_planner(run.planner_address) if run.planner_address else None
        if self.client is not None:
            print(f"reference policy: the {planner_key(cfg)} planner at {run.planner_address}", flush=True)
        llm = np.full((len(arrays), lc.laac_proposals), -1, np.int64)
        self.ref_stats = {}
        if lc.uses_llm():
            ref_rows = self.reference_rows()[False]
            answers, _, self.ref_stats = self._answers(ref_rows, include_target=False)
            llm[ref_rows] = answers
            source = "from the cache" if self.ref_stats["cached"] else f"in {self.ref_stats['seconds']:.0f} s"
            print(f"reference policy: {len(ref_rows):,} training states answered ({source})", flush=True)
        self.has_llm = llm[:, 0] >= 0
        torch.set_num_threads(cfg.run.learner_torch_threads)
        agent_cls = LAACAgent if lc.laac_variant == "laac" else SupervisedAgent
        self.agent = agent_cls(self.world.data.num_items, lc.laac_history_len, lc, self.device, cfg.run.seed)
        self.rng = np.random.default_rng(np.random.SeedSequence([cfg.run.seed, 0x1AAC]))
        self.answered = self.train_rows[self.has_llm[self.train_rows]]
        self.n_llm = int(round(lc.laac_llm_batch_share * lc.laac_batch_size)) if len(self.answered) else 0
        values = (arrays.items, arrays.feedback, arrays.action, arrays.reward, arrays.action_feedback, arrays.done,
                  llm, self.has_llm)
        self.tensors = {name: torch.as_tensor(value, device=self.device) for name, value in zip(TENSORS, values)}
        settings = (f" (llm weight {lc.laac_llm_weight:g}, alpha {lc.laac_alpha:g}, beta {lc.laac_beta:g})"
                    if lc.laac_variant == "laac" else "")
        print(f"training {lc.laac_variant}{settings} on {self.device}: up to {lc.laac_iterations:,} updates of "
              f"{lc.laac_batch_size} transitions ({self.n_llm} with an LLM answer)", flush=True)
        self.sums, self.t_log, self.iteration = {}, time.perf_counter(), 0

    def iterate(self, iteration: int) -> dict | None:
        lc, rng = self.cfg.laac, self.rng
        idx = np.concatenate([
            self.answered[rng.integers(len(self.answered), size=self.n_llm)] if self.n_llm else np.empty(0, np.int64),
            self.train_rows[rng.integers(len(self.train_rows), size=lc.laac_batch_size - self.n_llm)]])
        index = torch.as_tensor(idx, device=self.device)
        for key, value in self.agent.update({name: t[index] for name, t in self.tensors.items()}).items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.iteration = iteration
        return self.pending_row(iteration) if iteration % lc.laac_log_every == 0 else None

    def pending_row(self, iteration: int) -> dict | None:
        """The mean of the updates since the last row."""
        count = (iteration - 1) % self.cfg.laac.laac_log_every + 1
        now = time.perf_counter()
        row = {"iteration": iteration, **{k: v / count for k, v in self.sums.items()},
               "updates_per_s": count / max(now - self.t_log, 1e-9), "wall_seconds": self.run.wall_seconds()}
        self.sums, self.t_log = {}, now
        return row

    def progress(self, row: dict) -> str:
        losses = "  ".join(f"{k} {v:8.4f}" for k, v in row.items()
                           if k not in ("iteration", "wall_seconds", "updates_per_s"))
        return f"iter {row['iteration']:>6}/{self.cfg.laac.laac_iterations} | {losses} | {row['updates_per_s']:5.0f} updates/s"

    def state(self, iteration: int) -> dict:
        return {"laac": self.agent.state()}

    def evaluate(self, run: Run) -> dict:
        """Offline on held-out users (offline_eval.json), then in the simulated world."""
        cfg, lc, arrays, data = self.cfg, self.cfg.laac, self.arrays, self.world.data
        logs = UserLogs(arrays, data)
        # The long tail is the training users' (all of them, also when LAAC learned from a subset).
        popularity = np.bincount(arrays.action[self.all_train_rows], minlength=data.num_items).astype(np.int64)
        eval_rows = choose_rows(self.test_rows, lc.laac_eval_states, cfg.world.world_seed, 0xE7A1)
        score = torch_scorer(self.agent, self.device)
        popular_score = lambda items, feedback: np.broadcast_to(  # noqa: E731
            popularity - np.arange(data.num_items) / (2.0 * data.num_items), (len(items), data.num_items))
        offline = {"full": {"trained": offline_metrics(score, arrays, eval_rows, logs, popularity),
                            "popular": offline_metrics(popular_score, arrays, eval_rows, logs, popularity)},
                   "candidates": {}, "reference_training_states": int(self.has_llm.sum()), "reference": self.ref_stats,
                   "variant": lc.laac_variant, "llm_weight": lc.laac_llm_weight, "alpha": lc.laac_alpha,
                   "iterations": self.iteration, "planner": planner_key(cfg) if self.uses_reference() else "",
                   "train_users": lc.laac_train_users, "train_transitions": int(len(self.train_rows))}
        if lc.laac_eval_llm_states:
            rows = self.reference_rows()[True]
            answers, candidates, stats = self._answers(rows, include_target=True)
            offline["candidates"] = {
                "trained": candidate_metrics(top_among(score(arrays.items[rows], arrays.feedback[rows]), candidates),
                                             arrays, rows, logs, popularity),
                "llm": candidate_metrics(answers, arrays, rows, logs, popularity)}
            offline["llm_eval"] = stats
        (run.run_dir / "offline_eval.json").write_text(json.dumps(offline, indent=2))
        print(offline_table(offline), flush=True)
        if not cfg.run.eval_users:
            return {}
        users = evaluation_users(self.world, cfg.run.eval_users, cfg.run.eval_seed)
        results = {name: evaluate_reference(self.world, cfg.world, name, users, cfg.run.eval_seed)
                   for name in REFERENCE_POLICIES}
        results["trained"] = evaluate_in_world(self.world, cfg.world, score, lc.laac_history_len, users,
                                               cfg.run.eval_seed)
        return results

    def close(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
