"""Tests of learner.ppo: GAE on a hand-computed example, config checks, and the clipped update."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from learner.ppo import PPOConfig, gae, ppo_update
from policy.networks import ActorCritic, PolicyConfig, log_prob


# Two episodes: A (ids 3) of three steps, B (id 8) of two.
REWARDS = np.array([1.0, 0.0, 2.0, 1.0, 1.0], np.float32)
VALUES = np.array([0.5, 0.4, 0.3, 0.2, 0.6], np.float32)
DONES = np.array([False, False, True, False, True])
EPISODES = np.array([3, 3, 3, 8, 8], np.int64)


def test_gae_matches_a_hand_computation():
    gamma, lam = 0.9, 0.8
    adv, ret = gae(REWARDS, VALUES, DONES, EPISODES, gamma, lam)
    # Episode A, backwards:
    #   delta2 = 2 - 0.3 = 1.7 (terminal: no bootstrap)          adv2 = 1.7
    #   delta1 = 0 + 0.9*0.3 - 0.4 = -0.13                          adv1 = -0.13 + 0.72*1.7 = 1.094
    #   delta0 = 1 + 0.9*0.4 - 0.5 = 0.86                           adv0 = 0.86 + 0.72*1.094 = 1.64768
    # Episode B (nothing flows in from A):
    #   delta4 = 1 - 0.6 = 0.4                                      adv4 = 0.4
    #   delta3 = 1 + 0.9*0.6 - 0.2 = 1.34                           adv3 = 1.34 + 0.72*0.4 = 1.628
    expected_adv = np.array([1.64768, 1.094, 1.7, 1.628, 0.4])
    np.testing.assert_allclose(adv, expected_adv, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ret, expected_adv + VALUES, rtol=1e-6, atol=1e-6)
    assert adv.dtype == np.float32 and adv.shape == (5,)


def test_gae_does_not_bootstrap_across_episodes_even_without_a_done_flag():
    # Episode A's last row is not flagged done (e.g. a truncated log): the episode id change
    # alone must stop the bootstrap and the advantage recursion.
    dones = DONES.copy()
    dones[2] = False
    adv, _ = gae(REWARDS, VALUES, dones, EPISODES, 0.9, 0.8)
    np.testing.assert_allclose(adv, [1.64768, 1.094, 1.7, 1.628, 0.4], rtol=1e-6, atol=1e-6)


def test_gae_done_inside_an_id_stops_the_bootstrap():
    # Same ids for everything, done at row 2: rows 0..2 must not see rows 3..4.
    ids = np.zeros(5, np.int64)
    adv, _ = gae(REWARDS, VALUES, DONES, ids, 0.9, 0.8)
    np.testing.assert_allclose(adv, [1.64768, 1.094, 1.7, 1.628, 0.4], rtol=1e-6, atol=1e-6)


def test_gae_limits():
    # lambda = 1, gamma = 1: the advantage is the undiscounted reward-to-go minus the value.
    adv, ret = gae(REWARDS, VALUES, DONES, EPISODES, 1.0, 1.0)
    np.testing.assert_allclose(ret, [3.0, 2.0, 2.0, 2.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(adv, np.array([3.0, 2.0, 2.0, 2.0, 1.0]) - VALUES, rtol=1e-6)
    # lambda = 0: one-step TD errors.
    adv, _ = gae(REWARDS, VALUES, DONES, EPISODES, 0.9, 0.0)
    np.testing.assert_allclose(adv, [0.86, -0.13, 1.7, 1.34, 0.4], rtol=1e-6, atol=1e-6)


def test_default_ppo_config_is_valid():
    PPOConfig().validate()


@pytest.mark.parametrize("changes,match", [
    ({"lr": 0.0}, "lr must be > 0"),
    ({"lr": -1e-3}, "lr must be > 0"),
    ({"gamma": 1.5}, "gamma must be in"),
    ({"gamma": -0.1}, "gamma must be in"),
    ({"gae_lambda": 2.0}, "gae_lambda must be in"),
    ({"clip_coef": 0.0}, "clip_coef"),
    ({"epochs": 0}, "epochs"),
    ({"minibatch_size": 0}, "minibatch_size"),
    ({"max_grad_norm": 0.0}, "max_grad_norm"),
])
def test_ppo_config_validate_messages(changes, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(PPOConfig(), **changes).validate()


# --- the update ---------------------------------------------------------------------------------

NUM_ITEMS, FEAT, HIST, ROWS = 20, 4, 4, 256


def tiny_problem(seed: int = 0):
    """A model and a batch where actions with a[0] > 0 have advantage +1, the rest -1."""
    torch.manual_seed(seed)
    features = np.random.default_rng(seed).standard_normal((NUM_ITEMS, FEAT)).astype(np.float32)
    model = ActorCritic(features, HIST, PolicyConfig(model_dim=16, num_heads=2, init_log_std=0.0),
                        num_categories=3, max_steps=10).eval()
    gen = torch.Generator().manual_seed(seed + 100)
    items = torch.randint(-1, NUM_ITEMS, (ROWS, HIST), generator=gen, dtype=torch.int32)
    fb = (torch.rand(ROWS, HIST, generator=gen) < 0.5).float()
    mask = torch.rand(ROWS, 3, generator=gen) < 0.5
    step = torch.randint(0, 10, (ROWS,), generator=gen, dtype=torch.int32)
    with torch.no_grad():
        dist, _ = model(items, fb, mask, step)
        action = dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=gen)
        logp = log_prob(dist, action)
    advantages = torch.where(action[:, 0] > 0, 1.0, -1.0)
    data = {"history_items": items, "history_feedback": fb, "category_mask": mask, "step": step,
            "action": action, "behaviour_logp": logp,
            "advantages": advantages, "returns": torch.zeros(ROWS)}
    return model, data


def surrogate(model: ActorCritic, data: dict) -> tuple[float, float]:
    """(-mean(adv * ratio), mean of the policy mean's first component) over the whole batch."""
    with torch.no_grad():
        dist, _ = model(data["history_items"], data["history_feedback"], data["category_mask"], data["step"])
        ratio = (log_prob(dist, data["action"]) - data["behaviour_logp"]).exp()
        return float(-(data["advantages"] * ratio).mean()), float(dist.mean[:, 0].mean())


def run_updates(seed: int = 0, iterations: int = 3):
    model, data = tiny_problem(seed)
    cfg = PPOConfig(lr=3e-3, epochs=4, minibatch_size=64, normalize_advantages=False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    before = surrogate(model, data)
    metrics = [ppo_update(model, opt, cfg, data, gen) for _ in range(iterations)]
    return model, data, before, surrogate(model, data), metrics


def test_ppo_update_moves_the_mean_toward_positive_advantage_actions():
    model, data, (loss0, mean0), (loss1, mean1), metrics = run_updates()
    assert loss0 == pytest.approx(-float(data["advantages"].mean()), abs=1e-5)  # ratio 1 before
    assert loss1 < loss0 - 0.05
    assert mean1 > mean0 + 0.1
    assert not model.training  # left in eval mode
    first = metrics[0]
    assert set(first) == {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac"}
    assert all(np.isfinite(v) for m in metrics for v in m.values())
    assert metrics[-1]["policy_loss"] < first["policy_loss"]
    assert metrics[-1]["clip_frac"] > 0.0  # the ratio moved past the clip at some point


def test_ppo_update_is_deterministic_under_seeds():
    a = run_updates(seed=0, iterations=2)
    b = run_updates(seed=0, iterations=2)
    assert a[4] == b[4]
    for (name, pa), pb in zip(a[0].state_dict().items(), b[0].state_dict().values()):
        assert torch.equal(pa, pb), name


def test_ppo_update_fits_the_value_toward_the_returns():
    model, data = tiny_problem(1)
    data["returns"] = torch.full((ROWS,), 2.0)
    data["advantages"] = torch.zeros(ROWS)
    cfg = PPOConfig(lr=1e-2, epochs=4, minibatch_size=64, value_coef=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    first = ppo_update(model, opt, cfg, data, gen)
    for _ in range(4):
        last = ppo_update(model, opt, cfg, data, gen)
    assert last["value_loss"] < 0.25 * first["value_loss"]
    with torch.no_grad():
        _, value = model(data["history_items"], data["history_feedback"])
    assert abs(float(value.mean()) - 2.0) < 0.5


def test_ppo_update_on_the_fast_path_matches_the_reference_path():
    """Issue 18: the fast implementation computes the reference's update (same losses, same
    weights after it, to float tolerance)."""
    fast, data = tiny_problem(2)
    reference = ActorCritic(fast.item_features[:-1].numpy(), HIST, PolicyConfig(model_dim=16, num_heads=2, init_log_std=0.0),
                            num_categories=3, max_steps=10, reference_path=True).eval()
    reference.load_state_dict(fast.state_dict())
    cfg = PPOConfig(lr=3e-3, epochs=2, minibatch_size=64)
    results = []
    for model in (fast, reference):
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        results.append(ppo_update(model, opt, cfg, data, torch.Generator().manual_seed(5)))
    for key in results[1]:
        assert results[0][key] == pytest.approx(results[1][key], rel=1e-4, abs=1e-5), key
    for (name, a), b in zip(fast.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=name)
