"""Tests of policy.networks: the actor-critic, and weights travelling as numpy arrays."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from policy.networks import ActorCritic, PolicyConfig, load_numpy_weights, log_prob, weights_to_numpy


NUM_ITEMS, FEAT, HIST = 30, 8, 10


def make_model(seed: int = 0, cfg: PolicyConfig | None = None) -> ActorCritic:
    torch.manual_seed(seed)
    features = np.random.default_rng(123).standard_normal((NUM_ITEMS, FEAT)).astype(np.float32)
    return ActorCritic(features, HIST, cfg or PolicyConfig()).eval()


def random_history(b: int, seed: int = 0, empty_from: int | None = None):
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(0, NUM_ITEMS, (b, HIST), generator=gen, dtype=torch.int32)
    fb = (torch.rand(b, HIST, generator=gen) < 0.4).float()
    if empty_from is not None:
        items[:, :empty_from] = -1
        fb[:, :empty_from] = 0.0
    return items, fb


def test_all_empty_history_gives_finite_outputs_of_the_right_shapes():
    model = make_model()
    b = 5
    items = torch.full((b, HIST), -1, dtype=torch.int32)
    fb = torch.zeros(b, HIST)
    with torch.no_grad():
        dist, value = model(items, fb)
        action = dist.sample()
        lp = log_prob(dist, action)
        scores = model.item_scores(action)
    assert dist.mean.shape == (b, FEAT)
    assert dist.stddev.shape == (b, FEAT)
    assert value.shape == (b,)
    assert lp.shape == (b,)
    assert scores.shape == (b, NUM_ITEMS)
    for t in (dist.mean, dist.stddev, value, lp, scores):
        assert torch.isfinite(t).all()
    # Every user with an empty history is in the same state.
    assert torch.allclose(dist.mean, dist.mean[:1].expand_as(dist.mean))


def test_mixed_histories_are_finite_and_depend_on_the_history():
    model = make_model()
    items, fb = random_history(6, empty_from=4)
    items[0] = -1
    fb[0] = 0.0
    with torch.no_grad():
        dist, value = model(items, fb)
    assert torch.isfinite(dist.mean).all() and torch.isfinite(value).all()
    assert not torch.allclose(dist.mean[1], dist.mean[2])


def test_initial_std_and_log_prob_match_the_gaussian():
    model = make_model(cfg=PolicyConfig(init_log_std=-0.5))
    items, fb = random_history(3)
    with torch.no_grad():
        dist, _ = model(items, fb)
        action = dist.mean + 0.1
        lp = log_prob(dist, action)
    assert torch.allclose(dist.stddev, torch.full_like(dist.stddev, float(np.exp(-0.5))))
    expected = torch.distributions.Normal(dist.mean, dist.stddev).log_prob(action).sum(-1)
    assert torch.allclose(lp, expected)


def test_item_scores_are_dot_products_with_item_features():
    model = make_model()
    action = torch.randn(2, FEAT)
    features = model.item_features[:NUM_ITEMS]
    assert model.item_features.shape == (NUM_ITEMS + 1, FEAT)
    assert (model.item_features[NUM_ITEMS] == 0).all()  # the padding row
    assert torch.allclose(model.item_scores(action), action @ features.T)


def test_weights_round_trip_gives_identical_outputs():
    a, b = make_model(seed=0), make_model(seed=1)
    items, fb = random_history(4, seed=3, empty_from=2)
    with torch.no_grad():
        mean_a, value_a = a(items, fb)[0].mean, a(items, fb)[1]
        assert not torch.equal(value_a, b(items, fb)[1])  # different seeds, different nets
        load_numpy_weights(b, weights_to_numpy(a))
        dist_b, value_b = b(items, fb)
    assert torch.equal(mean_a, dist_b.mean)
    assert torch.equal(value_a, value_b)


def test_loading_read_only_arrays_works_without_warnings():
    a, b = make_model(seed=0), make_model(seed=1)
    weights = weights_to_numpy(a)
    for arr in weights.values():
        arr.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_numpy_weights(b, weights)
    for name, tensor in b.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), weights[name], err_msg=name)
    # The model owns its parameters: they do not alias the published arrays.
    with torch.no_grad():
        for p in b.parameters():
            p.add_(1.0)
    assert all(np.array_equal(v, a.state_dict()[k].numpy()) for k, v in weights.items())


def test_published_weights_are_independent_copies_without_item_features():
    model = make_model()
    weights = weights_to_numpy(model)
    assert "item_features" not in weights
    assert set(weights) == set(model.state_dict())
    assert set(weights) >= {name for name, _ in model.named_parameters()}
    assert all(isinstance(v, np.ndarray) for v in weights.values())
    before = weights["log_std"].copy()
    with torch.no_grad():
        model.log_std.add_(1.0)
    np.testing.assert_array_equal(weights["log_std"], before)


def test_loading_is_strict():
    model = make_model()
    weights = weights_to_numpy(model)
    missing = dict(weights)
    missing.pop("log_std")
    with pytest.raises(RuntimeError, match="log_std"):
        load_numpy_weights(model, missing)
    extra = dict(weights, item_features=np.zeros((NUM_ITEMS + 1, FEAT), np.float32))
    with pytest.raises(RuntimeError, match="item_features"):
        load_numpy_weights(model, extra)


@pytest.mark.parametrize("kwargs,match", [
    ({"model_dim": 30, "num_heads": 4}, "divisible"),
    ({"num_layers": 0}, "num_layers"),
])
def test_policy_config_validate(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PolicyConfig(**kwargs).validate()


def test_the_allowed_categories_and_the_step_are_inputs_of_the_decision():
    """The policy sees what it must choose within (the planner's categories) and how far into the
    session it is; both change the action and the value, and a mask of the wrong width is refused."""
    torch.manual_seed(0)
    features = np.random.default_rng(123).standard_normal((NUM_ITEMS, FEAT)).astype(np.float32)
    model = ActorCritic(features, HIST, PolicyConfig(), num_categories=4, max_steps=20).eval()
    torch.nn.init.normal_(model.mu_head.correction[-1].weight)  # as after some training (it starts at 0)
    items, fb = random_history(3)
    mask = torch.tensor([[True, True, False, False]] * 3)
    with torch.no_grad():
        base, value = model(items, fb, mask, torch.zeros(3, dtype=torch.int32))
        other_mask, other_mask_value = model(items, fb, ~mask, torch.zeros(3, dtype=torch.int32))
        later, later_value = model(items, fb, mask, torch.full((3,), 15, dtype=torch.int32))
    assert not torch.allclose(base.mean, other_mask.mean) and not torch.allclose(value, other_mask_value)
    assert not torch.allclose(base.mean, later.mean) and not torch.allclose(value, later_value)
    with pytest.raises(ValueError, match="categories"):
        model(items, fb, torch.ones(3, 5, dtype=torch.bool), None)


def test_an_untrained_policy_ranks_by_the_ridge_estimate_of_the_users_preference():
    """The mean starts as the least-squares fit of the history's feedback on its items' features
    (the correction is zero at initialisation), scaled to norm sqrt(F); an empty history gives 0."""
    model = make_model()
    items, fb = random_history(3, seed=4, empty_from=3)
    items[2] = -1
    fb[2] = 0.0
    with torch.no_grad():
        mean = model(items, fb)[0].mean
    features = model.item_features[items[0][3:].long()]
    x = torch.cat([features, torch.ones(len(features), 1)], dim=1)
    ridge = torch.linalg.solve(x.T @ x + 10.0 * torch.eye(FEAT + 1), x.T @ fb[0][3:])[:-1]
    assert torch.allclose(mean[0], ridge / ridge.norm() * FEAT ** 0.5, atol=1e-4)
    assert torch.allclose(mean[0].norm(), torch.tensor(FEAT ** 0.5))
    assert (mean[2] == 0).all()


def session_model(slate_size: int = 2, max_steps: int = 10, categories: int = 3) -> ActorCritic:
    torch.manual_seed(0)
    features = np.random.default_rng(123).standard_normal((NUM_ITEMS, FEAT)).astype(np.float32)
    return ActorCritic(features, HIST, PolicyConfig(), categories, max_steps, slate_size,
                       np.arange(NUM_ITEMS) % categories).eval()


def test_session_features_read_this_sessions_slates_off_the_history():
    from policy.networks import RECENT_SLATES, session_features

    # Slate size 2; the newest slots are last. At step 3 the session's slates are the last 6 slots.
    history = torch.tensor([[9, 9, 0, 3, 1, 4, 0, 2, 5, 8]], dtype=torch.int32)
    category = torch.arange(NUM_ITEMS) % 3
    share, shown = session_features(history, torch.tensor([3]), category, 3, NUM_ITEMS, 2)
    assert shown[0, 0] == 1 and shown[0, 9] == 0 and shown[0, 3] == 0    # older than the session
    assert shown[0, 1] == shown[0, 4] == shown[0, 2] == shown[0, 5] == shown[0, 8] == 1
    # The last RECENT_SLATES (2) slates: items 0, 2, 5, 8 -> categories 0, 2, 2, 2.
    assert RECENT_SLATES == 2
    assert torch.allclose(share[0], torch.tensor([0.25, 0.0, 0.75]))
    share0, shown0 = session_features(history, torch.tensor([0]), category, 3, NUM_ITEMS, 2)
    assert shown0.sum() == 0 and share0.sum() == 0                        # step 0: nothing shown yet


def test_the_session_weights_start_at_zero_and_steer_the_slate():
    """The action's last entries weigh the session features: the untrained mean puts nothing on
    them (the ridge estimate knows nothing of the session), and a weight against earlier showings
    keeps the history's items out of the slate."""
    from policy.networks import SESSION_FEATURES

    model = session_model()
    items, fb = random_history(4, seed=3)
    steps = torch.full((4,), 5)
    with torch.no_grad():
        dist, _ = model(items, fb, None, steps)
    assert model.action_dim == FEAT + len(SESSION_FEATURES)
    assert torch.equal(dist.mean[:, FEAT:], torch.zeros(4, len(SESSION_FEATURES)))
    with pytest.raises(ValueError, match="history_items and step"):
        model.item_scores(dist.mean)
    away = dist.mean.clone()
    away[:, -1] = -10.0
    scores = model.item_scores(away, items, steps)
    slates = torch.topk(scores, 2, dim=1).indices
    for row in range(4):
        session = items[row, -5 * 2:]
        assert not set(slates[row].tolist()) & set(session.tolist())
