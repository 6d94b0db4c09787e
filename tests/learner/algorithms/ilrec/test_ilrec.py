"""IL-Rec (--algorithm ilrec): embeddings cache, demonstrations and random logs, the demonstrator's
comparison, the AIRL-structured reward, the learner (offline and online), and the real entry point
on a tiny budget with the heuristic planner backend."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from learner.algorithms.ilrec.demonstrations import (
    ProposeSettings,
    demo_batch,
    demo_info,
    demo_key,
    demo_path,
    demonstrator_quality,
    generate_demonstrations,
    generate_reference_sessions,
    load_or_generate,
    load_or_log,
    session_returns,
)
from learner.algorithms.ilrec.config import ILRecConfig
from learner.algorithms.ilrec.reward import AIRLReward, Transitions, discriminator_step, next_rows
from learner.algorithms.ilrec.text_embeddings import cached_embeddings, item_texts
from rollout.batch_schema import batch_dims
from rollout.batch_schema import column, validate_batch
from planner_api.client import connect_planner
from rollout.world import World, WorldConfig
from worlds import learner_spec

TINY_WORLD = WorldConfig(dataset="synthetic", num_items=60, num_categories=6, num_users=50, max_steps=6, slate_size=3, history_len=9)
SMALL_PROPOSE = ProposeSettings(candidates=12, recent=4, group_size=4, timeout_s=30.0)


@pytest.fixture(scope="module")
def tiny_world() -> World:
    return World.build(TINY_WORLD)


# --- text embeddings -------------------------------------------------------------------------

def test_item_texts_use_titles_and_fall_back_to_category_names():
    matrix = np.array([[True, False, True], [False, True, False]])
    texts = item_texts(["Toy Story (1995)", ""], matrix, ["Animation", "Drama", "Comedy"])
    assert texts == ["Toy Story (1995) (Animation, Comedy)", "an item about Drama"]


def test_embeddings_are_computed_once_and_then_read_from_the_cache(tmp_path):
    calls = []

    def encoder(texts):
        calls.append(list(texts))
        return np.stack([np.full(4, len(t), np.float32) for t in texts])

    texts = ["a (x)", "bb (y)", "ccc (z)"]
    first, path = cached_embeddings(texts, encoder, "fake", tmp_path, log=lambda *_: None)
    again, path_again = cached_embeddings(texts, encoder, "fake", tmp_path, log=lambda *_: None)
    assert len(calls) == 1 and path == path_again and path.is_file() and path.suffix == ".npy"
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first[:, 0], [5, 6, 7])
    cached_embeddings(texts + ["d"], encoder, "fake", tmp_path, log=lambda *_: None)  # another catalog: new vectors
    cached_embeddings(texts, encoder, "other-encoder", tmp_path, log=lambda *_: None)  # another encoder too
    assert len(calls) == 3
    assert not list(tmp_path.rglob("*.tmp-*"))  # written atomically: no temporary left behind


# --- demonstrations ----------------------------------------------------------------------------

def test_demonstrations_follow_the_transition_schema(tiny_world):
    table = generate_demonstrations(tiny_world, TINY_WORLD, connect_planner("in-process"), 10, 0, SMALL_PROPOSE,
                                    log=lambda *_: None)
    dims = batch_dims(TINY_WORLD, tiny_world)
    batches = [demo_batch(table)]  # one batch of transitions, one id
    validate_batch(batches[0], dims)
    assert column(batches[0], "batch_id")[0] == "demo/seed-0"
    slates = np.concatenate([column(b, "slate") for b in batches])
    assert slates.shape[1] == TINY_WORLD.slate_size
    assert all(len(set(s)) == len(s) for s in slates.tolist())
    episodes = np.concatenate([column(b, "episode_id") for b in batches])
    steps = np.concatenate([column(b, "step") for b in batches])
    done = np.concatenate([column(b, "done") for b in batches])
    assert len(np.unique(episodes)) == 10 and done.sum() == 10  # every session ends exactly once
    for e in np.unique(episodes):  # each session's steps are contiguous, in order, from 0
        np.testing.assert_array_equal(steps[episodes == e], np.arange((episodes == e).sum()))
    info = demo_info(table)
    assert info["answered_by"] == ["heuristic"] and info["fallbacks"] == 0 and info["steps"] == table.num_rows
    # groups of 4, 4 and 2 users, one Propose call per group and step: at least 3, at most 3 x max_steps
    assert 3 <= info["propose_calls"] <= 3 * TINY_WORLD.max_steps


def test_same_seed_same_demonstrations_other_seed_other_ones(tiny_world):
    make = lambda seed: generate_demonstrations(tiny_world, TINY_WORLD, connect_planner("in-process"), 6, seed,  # noqa: E731
                                                SMALL_PROPOSE, log=lambda *_: None)
    a, b, c = make(3), make(3), make(4)
    assert a.equals(b)
    assert not a.equals(c)


def test_demonstrations_are_cached_as_parquet_keyed_by_backend_and_seed(tiny_world, tmp_path):
    client = connect_planner("in-process")
    table, path, cached = load_or_generate(tiny_world, TINY_WORLD, client, "heuristic", "smollm2", 5, 0, SMALL_PROPOSE,
                                           tmp_path, log=lambda *_: None)
    assert not cached and path.suffix == ".parquet" and pq.read_table(path).equals(table)
    again, path_again, cached_again = load_or_generate(tiny_world, TINY_WORLD, client, "heuristic", "smollm2", 5, 0,
                                                       SMALL_PROPOSE, tmp_path, log=lambda *_: None)
    assert cached_again and path_again == path and again.equals(table)
    keys = [demo_key(tiny_world, TINY_WORLD, backend, "smollm2", seed, count, SMALL_PROPOSE)
            for backend, seed, count in (("heuristic", 0, 5), ("vllm", 0, 5), ("heuristic", 1, 5), ("heuristic", 0, 6))]
    assert len({demo_path(k, tmp_path) for k in keys}) == 4
    other_world = demo_key(tiny_world, replace(TINY_WORLD, rho=0.5), "heuristic", "smollm2", 0, 5, SMALL_PROPOSE)
    assert demo_path(other_world, tmp_path) != path


def test_propose_settings_reject_values_the_contract_forbids():
    with pytest.raises(ValueError, match="ilrec_demo_recent"):
        ProposeSettings(recent=17).validate()
    with pytest.raises(ValueError, match="ilrec_demo_group_size"):
        ProposeSettings(group_size=2000).validate()
    with pytest.raises(ValueError, match="ilrec_demo_ratio"):
        ILRecConfig(ilrec_demo_ratio=1.0).validate()
    with pytest.raises(ValueError, match="ilrec_awr_beta"):
        ILRecConfig(ilrec_awr_beta=0.0).validate()


# --- random logs and the demonstrator's comparison ------------------------------------------------

def test_random_logs_meet_the_demonstrations_users_and_pick_uniformly(tiny_world):
    demos = generate_demonstrations(tiny_world, TINY_WORLD, connect_planner("in-process"), 8, 0, SMALL_PROPOSE,
                                    log=lambda *_: None)
    logs = generate_reference_sessions(tiny_world, TINY_WORLD, "random", 40, 0, SMALL_PROPOSE.group_size,
                                       log=lambda *_: None)
    validate_batch(demo_batch(logs), batch_dims(TINY_WORLD, tiny_world))
    first_user = lambda t: {int(e): int(u) for e, u in zip(t.column("episode_id").to_numpy(),  # noqa: E731
                                                           t.column("user_id").to_numpy())}
    demo_users, log_users = first_user(demos), first_user(logs)
    assert all(log_users[e] == u for e, u in demo_users.items())  # the same users, session by session
    assert len(session_returns(logs)) == 40 and demo_info(logs)["answered_by"] == ["random"]
    counts = np.bincount(logs.column("slate").combine_chunks().flatten().to_numpy(), minlength=tiny_world.num_items)
    assert counts.min() > 0  # every item is logged: the logging policy covers the catalog


def test_demonstrator_quality_compares_returns_on_the_same_users(tiny_world, tmp_path):
    logs, _, cached = load_or_log(tiny_world, TINY_WORLD, 16, 0, 4, tmp_path, log=lambda *_: None)
    assert not cached and load_or_log(tiny_world, TINY_WORLD, 16, 0, 4, tmp_path, log=lambda *_: None)[2]
    same = demonstrator_quality(logs, logs)  # random "demonstrations": no better than random
    assert same["difference"] == 0.0 and not same["beats_random"] and same["sessions"] == 16
    ids = logs.column("episode_id").to_numpy()
    better = logs.set_column(logs.schema.get_field_index("reward"), "reward",
                             [logs.column("reward").to_numpy() + np.where(ids % 2 == 0, 1.0, 0.5).astype(np.float32)])
    quality = demonstrator_quality(better, logs)
    assert quality["beats_random"] and quality["demonstrator_Rcum"] > quality["random_Rcum"]


def test_an_oracle_demonstrator_is_a_reference_policy_and_beats_random(tiny_world, tmp_path):
    demos, path, _ = load_or_log(tiny_world, TINY_WORLD, 16, 0, 4, tmp_path, log=lambda *_: None, policy="greedy")
    logs, logs_path, _ = load_or_log(tiny_world, TINY_WORLD, 16, 0, 4, tmp_path, log=lambda *_: None)
    assert path != logs_path and path.name.startswith("demos-") and demo_info(demos)["answered_by"] == ["greedy"]
    assert demonstrator_quality(demos, logs)["demonstrator_Rcum"] > demonstrator_quality(demos, logs)["random_Rcum"]
    with pytest.raises(ValueError, match="ilrec_demonstrator must be planner or a reference policy"):
        ILRecConfig(ilrec_demonstrator="nobody").validate()
    ILRecConfig(ilrec_demonstrator="greedy").validate()


# --- the AIRL-structured reward -------------------------------------------------------------------

def test_next_rows_link_each_step_to_the_next_of_its_session():
    np.testing.assert_array_equal(next_rows(np.array([0, 0, 0, 1, 2, 2]), np.array([0, 0, 1, 1, 0, 1], bool)),
                                  [1, 2, -1, -1, 5, -1])


def test_slate_clicks_read_the_next_history_or_the_reward_where_the_session_ended():
    from learner.algorithms.ilrec.learner import slate_clicks

    feedback = np.array([[0, 0, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], np.float32)  # K = 2, H = 4
    reward = np.array([0.5, 0.0, 0.5, 0.0], np.float32)  # mean clicks per slate
    nxt = np.array([1, -1, -1, -1])                      # row 0 goes on to row 1; rows 1-3 end their sessions
    np.testing.assert_array_equal(slate_clicks(feedback, reward, nxt, 2),
                                  [[1, 0], [0, 0], [0.5, 0.5], [0, 0]])


def _toy_transitions(gen, n, demo, log_pi):
    hist = torch.randint(0, 20, (n, 5), generator=gen)
    slates = torch.randint(0, 20, (n, 3), generator=gen) + (0 if demo else 20)
    return Transitions(hist, torch.ones(n, 5), slates, hist, torch.ones(n, 5), torch.zeros(n, dtype=torch.bool),
                       torch.full((n,), log_pi))


def test_airl_reward_rewards_demonstration_pairs_above_the_negatives():
    """A separable toy: users like the first half of a catalog of 40 items; demonstrations recommend
    items of that half, the negatives' (uniformly random, pi = 3/40) items of the other half."""
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((40, 16)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    torch.manual_seed(0)
    log_pi = float(np.log(3 / 40))
    model = AIRLReward(embeddings, hidden=32, gamma=0.9, g_bias=log_pi)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    demo, negative = _toy_transitions(gen, 200, True, log_pi), _toy_transitions(gen, 200, False, log_pi)
    with torch.no_grad():  # g's bias starts at log pi: the logit near 0
        assert abs(float(model.logits(demo).mean())) < 0.5
    for _ in range(60):
        stats = discriminator_step(model, opt, _toy_transitions(gen, 64, True, log_pi),
                                   _toy_transitions(gen, 64, False, log_pi))
    center = model.set_center(negative.history_items, negative.history_feedback, negative.slates)
    demo_r = model.slate_reward(demo.history_items, demo.history_feedback, demo.slates, clip=5.0)
    negative_r = model.slate_reward(negative.history_items, negative.history_feedback, negative.slates, clip=5.0)
    assert demo_r.mean() - negative_r.mean() > 1.0 and abs(float(negative_r.mean())) < 0.1  # centred on them
    assert stats["disc_acc_demo"] > 0.7 and np.isfinite(stats["disc_loss"]) and center < 0
    assert demo_r.abs().max() <= 5.0
    # AIRL's structure: the logit is g + gamma h(s') - h(s) - log pi; h' counts only if the session goes on.
    ended = Transitions(demo.history_items, demo.history_feedback, demo.slates, demo.next_items, demo.next_feedback,
                        torch.ones(200, dtype=torch.bool), demo.log_pi)
    with torch.no_grad():
        g = model.reward(demo.history_items, demo.history_feedback, demo.slates)
        h = model.shaping(demo.history_items, demo.history_feedback)
        torch.testing.assert_close(model.logits(demo), g + (0.9 * h - h).unsqueeze(-1) - log_pi)
        torch.testing.assert_close(model.logits(ended), g - h.unsqueeze(-1) - log_pi)


# --- the learner (plain class, no Ray) ----------------------------------------------------------

def _learner(tiny_world, tmp_path, **options):
    from learner.algorithms.ilrec.learner import ILRecLearner
    from learner.ppo import PPOConfig
    from policy.networks import PolicyConfig

    _, demos, _ = load_or_generate(tiny_world, TINY_WORLD, connect_planner("in-process"), "heuristic", "", 12, 0,
                                   SMALL_PROPOSE, tmp_path, log=lambda *_: None)
    _, logs, _ = load_or_log(tiny_world, TINY_WORLD, 64, 0, 4, tmp_path, log=lambda *_: None)
    embeddings = np.random.default_rng(0).standard_normal((tiny_world.num_items, 8)).astype(np.float32)
    np.save(tmp_path / "emb.npy", embeddings)
    ilrec = ILRecConfig(**{"ilrec_pretrain_steps": 40, "ilrec_disc_batch": 16, "ilrec_disc_hidden": 16,
                           "ilrec_demo_ratio": 0.5, **options})
    return ILRecLearner(*learner_spec(TINY_WORLD), PolicyConfig(model_dim=16), PPOConfig(minibatch_size=32, epochs=1),
                        0, ilrec, str(demos), str(tmp_path / "emb.npy"), "cpu", 1, str(logs))


def _demo_ce(learner) -> float:
    from learner.ppo import observation

    idx = torch.arange(len(learner.demo["reward"]))
    with torch.no_grad():
        obs = observation(learner.demo, idx)
        dist, _ = learner.model(*obs)
        return learner._slate_ce(dist, obs, learner.demo["slate"][idx]).mean().item()


def test_offline_learner_extracts_the_reward_first_then_learns_from_the_replay(tiny_world, tmp_path):
    learner = _learner(tiny_world, tmp_path)
    with pytest.raises(ValueError, match="extract_reward first"):
        learner.offline_update(1)
    extracted = learner.extract_reward(30)
    assert abs(extracted["ilrec_learned_reward_logs"]) < 0.05  # centred on the logged slates
    assert 0.0 <= extracted["ilrec_reward_auc"] <= 1.0 and np.isfinite(extracted["ilrec_disc_loss"])
    frozen = {k: v.clone() for k, v in learner.reward_model.state_dict().items()}
    before = [p.detach().clone() for p in learner.model.parameters()]
    metrics = learner.offline_update(5)
    assert metrics["version"] == 1 and metrics["rows"] == 5 * 32
    for key in ("ilrec_value_loss", "ilrec_actor_loss", "ilrec_awr_weight_max"):
        assert np.isfinite(metrics[key]), key
    assert metrics["ilrec_awr_weight_max"] >= 1.0  # normalised weights: mean 1, so the largest at least 1
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.model.parameters()))
    for k, v in learner.reward_model.state_dict().items():  # the reward model stays frozen
        assert torch.equal(v, frozen[k]), k


def test_online_learner_clones_demonstrations_and_updates_on_env_plus_learned_reward(tiny_world, tmp_path):
    from policy.networks import PolicyConfig
    from rollout.actor import RolloutConfig, RolloutWorker

    learner = _learner(tiny_world, tmp_path, ilrec_mode="online")
    before = _demo_ce(learner)
    learner.pretrain()
    assert _demo_ce(learner) < before  # the warm start makes the demonstrated slates likelier

    worker = RolloutWorker(TINY_WORLD, PolicyConfig(model_dim=16), RolloutConfig(use_planner=False, users_per_actor=8),
                           None, 0, 0)
    weights, version = learner.weights()
    batch, _ = worker.collect(weights, version)
    metrics = learner.update(batch)
    assert metrics["version"] == 1 and metrics["rows"] == batch.num_rows
    assert metrics["ilrec_demo_rows"] == batch.num_rows  # ratio 0.5: as many demonstration rows as env rows
    for key in ("ilrec_disc_loss", "ilrec_disc_acc_demo", "ilrec_learned_reward_mean", "ilrec_bc_loss",
                "ilrec_awr_weight_mean", "policy_loss"):
        assert np.isfinite(metrics[key]), key
    assert 0 < metrics["ilrec_awr_weight_mean"] <= 20.0
    assert learner.update(batch)["duplicates"] == 1  # a batch is learned from once
    assert "reward_model" in learner.state()


# --- the real entry point ------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("mode", ["offline", "online"])
def test_cli_ilrec_tiny_budget_writes_metrics_checkpoints_and_eval(tmp_path, monkeypatch, mode):
    from learner.main import cli
    from lab.report import load_run

    monkeypatch.setenv("LLMREC_CACHE_DIR", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    argv = ["--algorithm", "ilrec", "--ilrec-mode", mode, "--planner-backend", "heuristic", "--dataset", "synthetic",
            "--num-items", "60", "--num-categories", "6",
            "--num-users", "50", "--max-steps", "6", "--iterations", "2", "--users-per-actor", "8",
            "--eval-users", "12", "--checkpoint-every", "1", "--ilrec-demo-sessions", "8", "--ilrec-log-sessions", "32",
            "--ilrec-reward-steps", "10", "--ilrec-offline-steps", "3", "--ilrec-curve-users", "8",
            "--ilrec-demo-candidates", "12", "--ilrec-pretrain-steps", "5", "--ilrec-llm-eval-users", "0",
            "--minibatch-size", "64", "--run-dir", str(run_dir)]
    assert cli(argv) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    demos = json.loads((run_dir / "demonstrations.json").read_text())
    assert Path(demos["path"]).is_file() and not demos["cached"] and demos["answered_by"] == ["heuristic"]
    assert Path(demos["logs"]["path"]).is_file() and demos["demonstrator_vs_random"]["sessions"] == 8
    for row in rows:
        for key in ("Tint", "Rcum", "Rsin", "env_steps_total", "wall_seconds", "ilrec_disc_loss", "ilrec_demo_env_steps"):
            assert key in row, key
        # A step's reward is a mean click over the slate, in [0, 1]: a return is at most its length.
        assert 1 <= row["Tint"] <= 6 and 0 <= row["Rcum"] <= row["Tint"]
    if mode == "online":
        assert all(r["env_steps"] > 0 and "ilrec_learned_reward_mean" in r for r in rows)
        assert rows[1]["env_steps_total"] > rows[0]["env_steps_total"]
    else:  # every step it learns from was taken before training: the demonstrations and the logs
        assert all(r["env_steps"] == 0 and "ilrec_value_loss" in r and "ilrec_reward_auc" in r for r in rows)
        assert rows[0]["env_steps_total"] == rows[1]["env_steps_total"] == demos["steps"] + demos["logs"]["steps"]
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert {"trained", "llm-propose", "random", "greedy"} <= set(evaluation)
    assert "random+planner" not in evaluation  # the IL-Rec policy is flat: no planner mask
    assert all(m["episodes"] == 12 for m in evaluation.values())
    assert evaluation["llm-propose"]["planner_fallbacks"] == 0
    assert evaluation["llm-propose"]["demonstrator_vs_random"] == demos["demonstrator_vs_random"]
    final = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=False)
    assert final["iteration"] == 2 and final["learner"]["version"] == 2 and "reward_model" in final["learner"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["algorithm"] == "ilrec" and config["ilrec"]["ilrec_demo_sessions"] == 8
    assert config["ilrec"]["ilrec_mode"] == mode
    assert all(0 < m["Rcum"] <= m["Tint"] <= 6 for m in evaluation.values())
    # learner.report reads the run as written: the same evaluation, curve and config.
    run = load_run(run_dir)
    assert run["eval"] == evaluation and run["curve"] == rows and run["config"] == config
    assert len(list((tmp_path / "cache" / "ilrec").glob("item-embeddings-*.npy"))) == 1


def test_cli_rejects_a_bad_ilrec_option_naming_it(capsys):
    from learner.main import cli

    with pytest.raises(SystemExit) as exc:
        cli(["--algorithm", "ilrec", "--ilrec-demo-ratio", "1.5"])
    assert exc.value.code == 2
    assert "ilrec_demo_ratio must be in [0, 1)" in capsys.readouterr().err
