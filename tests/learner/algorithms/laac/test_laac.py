"""LAAC (`--algorithm laac`): the losses, the cached LLM answers, the offline metrics, and the real
entry point on a tiny budget (heuristic planner service on MovieLens-100K; in-process on the
synthetic world for determinism)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from learner.algorithms.laac.config import LAACConfig
from learner.algorithms.laac.reference import OfflineArrays, candidate_lists, reference_answers
from learner.algorithms.laac.evaluation import UserLogs, list_metrics, offline_metrics
from learner.algorithms.laac.model import LAACAgent, critic_losses
from learner.main import cli
from learner.algorithms.laac.offline_data import load_or_build
from rollout.data.dataset import Dataset, Interactions
from rollout.reference_policies import REFERENCE_POLICIES
from planner_api.client import InProcessPlanner

SHARED_ML100K = Path(__file__).resolve().parents[5] / "shared" / "data" / "ml-100k"
N, H, B = 40, 4, 16


def _batch(seed: int = 0, llm_seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    llm = torch.randint(0, N, (B, 3), generator=torch.Generator().manual_seed(llm_seed))
    return {"items": torch.randint(-1, N, (B, H), generator=g), "feedback": torch.rand(B, H, generator=g),
            "action": torch.randint(0, N, (B,), generator=g), "reward": torch.rand(B, generator=g),
            "reward_feedback": torch.rand(B, generator=g), "done": torch.rand(B, generator=g) < 0.2,
            "llm": llm, "has_llm": torch.rand(B, generator=torch.Generator().manual_seed(llm_seed)) < 0.5}


def _agent(**overrides) -> LAACAgent:
    return LAACAgent(N, H, LAACConfig(laac_embedding_dim=8, **overrides), torch.device("cpu"), seed=0)


def test_td_target_uses_the_minimum_of_the_twin_target_critics() -> None:
    agent, batch = _agent(laac_gamma=0.9), _batch()
    low, high = torch.rand(B, N), torch.rand(B, N) + 1.0
    agent.targets = [lambda *_: high, lambda *_: low]  # the second target critic is always lower
    with torch.no_grad():
        from learner.algorithms.laac.model import next_state

        s2 = next_state(batch["items"], batch["feedback"], batch["action"], batch["reward_feedback"])
        pi_next = torch.softmax(agent.actor(*s2), -1)
    expected = batch["reward"] + 0.9 * (1 - batch["done"].float()) * (pi_next * low).sum(1)
    torch.testing.assert_close(agent.td_target(batch), expected)
    agent.targets = [lambda *_: low, lambda *_: high]  # order does not matter
    torch.testing.assert_close(agent.td_target(batch), expected)


def test_alpha_zero_removes_grounding_and_grounding_only_counts_answered_rows() -> None:
    q = torch.randn(B, N, requires_grad=True)
    pi = torch.softmax(torch.randn(B, N), -1)
    batch = _batch()
    w = batch["has_llm"].float()
    target = torch.rand(B)
    with_ground = critic_losses(q, pi, batch["action"], batch["llm"], w, target, alpha=2.0, beta=1.0, grounding="both")
    without = critic_losses(q, pi, batch["action"], batch["llm"], w, target, alpha=0.0, beta=1.0, grounding="both")
    assert with_ground["ground"] > 0
    torch.testing.assert_close(without["loss"], without["adv"] + without["td"])
    torch.testing.assert_close(with_ground["loss"], with_ground["adv"] + 2.0 * with_ground["ground"] + with_ground["td"])
    # Rows without an answer add nothing to grounding: change their LLM items, grounding stays.
    llm2 = batch["llm"].clone()
    llm2[~batch["has_llm"]] = (llm2[~batch["has_llm"]] + 7) % N
    again = critic_losses(q, pi, batch["action"], llm2, w, target, alpha=2.0, beta=1.0, grounding="both")
    torch.testing.assert_close(again["ground"], with_ground["ground"])


def test_upper_grounding_only_penalises_over_estimated_llm_items() -> None:
    batch = _batch()
    w, target, pi = torch.ones(B), torch.zeros(B), torch.full((B, N), 1.0 / N)
    q = torch.zeros(B, N)
    q[torch.arange(B), batch["action"]] = 1.0  # the logged item is worth more than every other item
    llm = (batch["action"][:, None] + torch.tensor([1, 2, 3])) % N
    below = critic_losses(q, pi, batch["action"], llm, w, target, 1.0, 1.0, grounding="upper")
    assert below["ground"] == 0 and critic_losses(q, pi, batch["action"], llm, w, target, 1.0, 1.0, "both")["ground"] > 0
    above = critic_losses(q + 2.0 * torch.nn.functional.one_hot(llm, N).sum(1), pi, batch["action"], llm, w, target,
                          1.0, 1.0, grounding="upper")
    assert above["ground"] == pytest.approx(1.0)  # each LLM item 2, the logged item 1: gap 1


def _params(agent: LAACAgent) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in [*agent.actor.parameters(), *agent.critics.parameters()]])


def test_no_llm_variant_ignores_llm_answers_and_laac_does_not() -> None:
    for weight, same in ((0.0, True), (1.0, False)):
        a, b = _agent(laac_llm_weight=weight), _agent(laac_llm_weight=weight)
        for step in range(3):
            a.update(_batch(step, llm_seed=1))
            b.update(_batch(step, llm_seed=99))  # other answers, on other rows
        assert torch.equal(_params(a), _params(b)) == same, f"llm_weight={weight}"


def test_update_is_deterministic_for_a_seed() -> None:
    a, b = _agent(), _agent()
    for step in range(3):
        ma, mb = a.update(_batch(step)), b.update(_batch(step))
    assert ma == mb and torch.equal(_params(a), _params(b))


def _tiny_dataset(num_items: int = 150) -> Dataset:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(6), 12).astype(np.int32)
    items = np.concatenate([rng.choice(num_items, 12, replace=False) for _ in range(6)]).astype(np.int32)
    inter = Interactions(user=users, item=items, label=rng.integers(1, 6, len(users)).astype(np.float32),
                         timestamp=np.tile(np.arange(12), 6).astype(np.int64))
    cats = np.zeros((num_items, 3), bool)
    cats[np.arange(num_items), np.arange(num_items) % 3] = True
    return Dataset(name="tiny", category_names=["a", "b", "c"], item_category=(np.arange(num_items) % 3).astype(np.int32),
                   item_category_matrix=cats, item_titles=[f"movie {i}" for i in range(num_items)],
                   item_raw_ids=np.arange(num_items), user_raw_ids=np.arange(6), interactions=inter, feedback="rating")


class _CountingPlanner(InProcessPlanner):
    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def propose(self, req, timeout_s):
        self.requests += 1
        return super().propose(req, timeout_s)


def test_reference_answers_are_cached_atomically_and_reused(tmp_path: Path) -> None:
    data = _tiny_dataset()
    table, path = load_or_build(data, history_len=5, eval_users=[0], cache_dir=tmp_path)
    arrays = OfflineArrays.from_table(table, data.rating_scale)
    rows = np.flatnonzero(arrays.train)[:20]
    ask = dict(offline_path=path, planner_key="heuristic", seed=3, recent=5, count=30, proposals=10,
               include_target=False, batch_size=8, timeout_s=10.0, log=lambda *_: None)
    planner = _CountingPlanner()
    first, candidates, stats = reference_answers(arrays, rows, data, planner, **ask)
    assert planner.requests == 3 and not stats["cached"]  # 20 queries in batches of 8
    assert (first >= 0).all() and all(set(a) <= set(c) for a, c in zip(first, candidates))
    again, _, stats2 = reference_answers(arrays, rows, data, planner, **ask)
    assert planner.requests == 3 and stats2["cached"] and np.array_equal(first, again)
    assert not list(tmp_path.glob(".*tmp*"))  # written under a temporary name, then renamed
    # Another candidate seed or another planner is another cache entry.
    reference_answers(arrays, rows, data, planner, **{**ask, "seed": 4})
    reference_answers(arrays, rows, data, planner, **{**ask, "planner_key": "vllm:smollm2"})
    assert planner.requests == 9 and len(list(tmp_path.glob("*.laac-reference-*.parquet"))) == 3


def test_candidates_avoid_the_state_and_include_the_target_only_when_asked(tmp_path: Path) -> None:
    data = _tiny_dataset()
    table, _ = load_or_build(data, history_len=5, eval_users=[0], cache_dir=tmp_path)
    arrays = OfflineArrays.from_table(table, data.rating_scale)
    rows = np.arange(len(arrays))
    plain = candidate_lists(arrays, rows, data.num_items, 30, seed=1, include_target=False)
    with_target = candidate_lists(arrays, rows, data.num_items, 30, seed=1, include_target=True)
    for i, row in enumerate(rows):
        assert len(set(plain[i])) == 30 and not set(plain[i]) & set(arrays.items[row][arrays.items[row] >= 0])
        assert arrays.action[row] not in plain[i] and arrays.action[row] in with_target[i]
    assert np.array_equal(plain[5:], candidate_lists(arrays, rows[5:], data.num_items, 30, 1, False))


def test_offline_metrics_on_a_hand_made_example(tmp_path: Path) -> None:
    data = _tiny_dataset()
    table, _ = load_or_build(data, history_len=5, eval_users=[0], cache_dir=tmp_path)
    arrays = OfflineArrays.from_table(table, data.rating_scale)
    logs = UserLogs(arrays, data)
    row = int(np.flatnonzero(arrays.step == 3)[0])
    user = int(arrays.user[row])
    user_items = logs.sequences[user]
    popularity = np.zeros(data.num_items, np.int64)
    popularity[:15] = 100  # the 10 % most popular: items 0..14
    fresh = [i for i in range(15, data.num_items) if i not in user_items][:8]
    # top 10: the true next item, one item seen before, and 8 novel long-tail items
    top = np.array([[arrays.action[row], user_items[0], *fresh]])
    m = list_metrics(top, arrays, np.array([row]), logs, popularity)
    assert m["R@10"] == pytest.approx(arrays.reward[row]) and m["HR@10"] == 1.0
    novel_target = arrays.action[row] >= 15
    assert m["NCV@10"] == pytest.approx((8 + novel_target) / 10)
    # Novel and liked: only the novel items this user rated 4 or 5 stars (the fresh ones: never).
    liked_later = [i for i in user_items[arrays.step[row]:] if i >= 15 and i in logs.liked[user]]
    assert m["NCV-liked@10"] == pytest.approx(len(set(liked_later) & set(top[0].tolist())) / 10)
    miss = list_metrics(top[:, 1:], arrays, np.array([row]), logs, popularity)
    assert miss["R@10"] == 0.0 and miss["HR@10"] == 0.0 and miss["NCV-liked@10"] == 0.0


def test_the_full_catalog_ranking_leaves_out_what_the_user_rated_before(tmp_path: Path) -> None:
    data = _tiny_dataset()
    table, _ = load_or_build(data, history_len=5, eval_users=[0], cache_dir=tmp_path)
    arrays = OfflineArrays.from_table(table, data.rating_scale)
    logs = UserLogs(arrays, data)
    rows = np.flatnonzero(arrays.step >= 3)
    popularity = np.zeros(data.num_items, np.int64)
    popularity[:15] = 100  # the 10 % most popular: items 0..14

    def score(items, feedback):  # loves what the user rated before, then the long tail
        out = np.zeros((len(items), data.num_items))
        out[:, 15:] = 5.0
        for i, state in enumerate(items):
            out[i, state[state >= 0]] = 10.0
        return out
    m = offline_metrics(score, arrays, rows, logs, popularity, chunk=4)
    # Every top 10 is unseen long tail: the seen items, best scored, never made it.
    assert m["states"] == len(rows) and m["NCV@10"] == 1.0


def test_bad_options_end_with_a_message_naming_them(capsys) -> None:
    for flags, word in ((["--laac-variant", "sarsa"], "laac_variant"), (["--laac-llm-weight", "2"], "laac_llm_weight"),
                        (["--laac-candidates", "300"], "laac_candidates")):
        with pytest.raises(SystemExit) as exc:
            cli(["--algorithm", "laac", *flags])
        assert exc.value.code == 2 and word in capsys.readouterr().err


def _synthetic_run(run_dir: Path, *extra: str) -> dict:
    args = ["--algorithm", "laac", "--dataset", "synthetic", "--num-items", "200", "--num-users", "300",
            "--planner-address", "in-process", "--laac-iterations", "40", "--laac-batch-size", "64",
            "--laac-reference-states", "200", "--laac-eval-llm-states", "30", "--laac-log-every", "20",
            "--eval-users", "8", "--run-dir", str(run_dir), *extra]
    assert cli(args) == 0
    return json.loads((run_dir / "offline_eval.json").read_text())


def test_same_seed_same_result_and_the_baselines_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # a fresh cache: run a asks the planner, run b reads the cache
    a = _synthetic_run(tmp_path / "a")
    b = _synthetic_run(tmp_path / "b")
    assert not a["reference"]["cached"] and b["reference"]["cached"]
    assert a["full"] == b["full"] and a["candidates"] == b["candidates"]
    assert json.loads((tmp_path / "a" / "eval.json").read_text()) == json.loads((tmp_path / "b" / "eval.json").read_text())
    other = _synthetic_run(tmp_path / "c", "--seed", "1")
    assert other["full"]["trained"] != a["full"]["trained"]
    # (a world history of 5 shown items, shorter than the policy's 10-item state: padded in the simulator)
    supervised = _synthetic_run(tmp_path / "sup", "--laac-variant", "supervised", "--laac-eval-llm-states", "0",
                                "--history-len", "5")
    assert supervised["variant"] == "supervised" and supervised["candidates"] == {}
    assert supervised["reference_training_states"] == 0  # the baseline needs no LLM answers at all


@pytest.mark.ray
@pytest.mark.skipif(not (SHARED_ML100K / "u.data").is_file(),
                    reason=f"MovieLens-100K is not at {SHARED_ML100K} (see ../shared/data/README.md)")
def test_entry_point_on_movielens_with_the_heuristic_planner_service(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code = cli(["--algorithm", "laac", "--dataset", "ml-100k", "--data-dir", str(SHARED_ML100K),
                "--planner-backend", "heuristic", "--laac-iterations", "30", "--laac-log-every", "10",
                "--laac-reference-states", "256", "--laac-eval-llm-states", "40", "--laac-eval-states", "400",
                "--laac-checkpoint-every", "20", "--eval-users", "8", "--run-dir", str(run_dir)])
    assert code == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["algorithm"] == "laac" and config["run"]["planner_backend"] == "heuristic"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [10, 20, 30] and all(np.isfinite(r["critic_loss"]) for r in rows)
    assert (run_dir / "checkpoints" / "final.pt").is_file() and (run_dir / "checkpoints" / "latest.pt").is_file()
    offline = json.loads((run_dir / "offline_eval.json").read_text())
    assert offline["reference_training_states"] == 256 and offline["reference"]["fell_back"] == 0
    full = offline["full"]["trained"]
    assert full["states"] == 400 and 0 <= full["R@10"] <= full["HR@10"] <= 1 and 0 <= full["NCV@10"] <= 1
    assert 0 <= offline["candidates"]["llm"]["HR@5"] <= 1 and offline["candidates"]["llm"]["states"] == 40
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert set(evaluation) == {*REFERENCE_POLICIES, "trained"}
    assert all(m["episodes"] == 8 for m in evaluation.values())


def test_train_users_pick_a_user_feature_value_and_bad_ones_say_what_exists() -> None:
    from learner.algorithms.laac.algorithm import train_user_filter

    data = _tiny_dataset()
    data.user_features = {"gender": np.array(["F", "M", "M", "F", "M", "M"])}
    assert train_user_filter(data, "all").all()
    assert train_user_filter(data, "gender=F").tolist() == [True, False, False, True, False, False]
    with pytest.raises(ValueError, match=r"no user feature 'age' \(it has: gender\)"):
        train_user_filter(data, "age=20")
    with pytest.raises(ValueError, match="no user has gender = 'X' .values: F, M"):
        train_user_filter(data, "gender=X")
    with pytest.raises(ValueError, match="laac_train_users must be all or FEATURE=VALUE"):
        LAACConfig(laac_train_users="female").validate()


def test_the_planner_starts_only_while_an_answer_the_run_reads_is_not_cached(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from learner.algorithms.laac.algorithm import LAAC, planner_key
    from learner.config import TrainConfig

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # a fresh cache
    cfg = TrainConfig.from_dict({"world": {"dataset": "synthetic", "num_items": 200, "num_users": 300},
                                 "run": {"algorithm": "laac", "planner_backend": "heuristic"},
                                 "laac": {"laac_reference_states": 40, "laac_eval_llm_states": 10}})
    algo = LAAC(cfg)
    algo.prepare()
    assert algo.needs_planner() and algo.needs_ray()
    held_out = set(algo.world.eval_users.tolist())
    assert set(algo.arrays.user[algo.test_rows].tolist()) == held_out  # the world's held-out users, exactly
    assert not held_out & set(algo.arrays.user[algo.train_rows].tolist())
    lc = cfg.laac
    for target, rows in algo.reference_rows().items():
        reference_answers(algo.arrays, rows, algo.world.data, InProcessPlanner(), offline_path=algo.offline_path,
                          planner_key=planner_key(cfg), seed=lc.laac_candidate_seed, recent=lc.laac_recent_items,
                          count=lc.laac_candidates, proposals=lc.laac_proposals, include_target=target,
                          batch_size=64, timeout_s=10.0, log=lambda *_: None)
    assert not algo.needs_planner() and not algo.needs_ray()  # every answer it reads is cached
    no_reference = TrainConfig.from_dict({**cfg.to_dict(), "laac": {**cfg.to_dict()["laac"], "laac_llm_weight": 0.0,
                                                                      "laac_eval_llm_states": 0}})
    assert not LAAC(no_reference).uses_reference()
