"""Tests of policy.summary_attention and of the actor-critic's fast path against its reference
path: the same outputs and gradients, to float tolerance (issue 18: the same maths, faster)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from policy.networks import ActorCritic, PolicyConfig
from policy.ridge import _ridge_fit_lu, ridge_fit
from policy.summary_attention import summary_layer_output


def encoder_layer(d: int, heads: int, seed: int) -> nn.TransformerEncoderLayer:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=0.0, batch_first=True, norm_first=True)
    with torch.no_grad():   # non-trivial norms and biases, so every term of the rewrite is exercised
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_summary_layer_output_is_the_layers_output_at_token_0(heads):
    b, t, d = 7, 9, 16
    layer = encoder_layer(d, heads, seed=heads)
    gen = torch.Generator().manual_seed(0)
    first = torch.randn(b, d, generator=gen, requires_grad=True)
    tokens = torch.randn(b, t, d, generator=gen, requires_grad=True)
    pad = torch.rand(b, t, generator=gen) < 0.3
    pad[0] = True            # a row whose only key is token 0
    pad[1] = False           # and one with nothing padded
    full_pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool), pad], dim=1)
    layer.train()            # the generic path (the eval fast path is another kernel)
    expected = layer(torch.cat([first.unsqueeze(1), tokens], dim=1), src_key_padding_mask=full_pad)[:, 0]
    got = summary_layer_output(layer, first, tokens, pad)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    grads_expected = torch.autograd.grad(expected.pow(2).sum(), [first, tokens, *layer.parameters()])
    grads_got = torch.autograd.grad(got.pow(2).sum(), [first, tokens, *layer.parameters()])
    for g, e in zip(grads_got, grads_expected):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)


def test_summary_layer_output_refuses_a_layer_it_does_not_cover():
    layer = nn.TransformerEncoderLayer(8, 2, batch_first=True, norm_first=False)
    with pytest.raises(ValueError, match="pre-norm"):
        summary_layer_output(layer, torch.zeros(1, 8), torch.zeros(1, 3, 8), torch.zeros(1, 3, dtype=torch.bool))


def models(num_layers: int):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((40, 12)).astype(np.float32)
    categories = rng.integers(0, 5, 40)
    kwargs = dict(num_categories=5, max_steps=20, slate_size=3, item_category=categories)
    cfg = PolicyConfig(model_dim=16, num_layers=num_layers, num_heads=2)
    torch.manual_seed(1)
    fast = ActorCritic(features, 10, cfg, **kwargs)
    reference = ActorCritic(features, 10, cfg, **kwargs, reference_path=True)
    with torch.no_grad():   # trained-looking weights: the mean then depends on the encoder
        for p in fast.parameters():
            p.add_(0.2 * torch.randn_like(p))
    reference.load_state_dict(fast.state_dict())
    return fast, reference


def observations(b: int = 33):
    gen = torch.Generator().manual_seed(3)
    items = torch.randint(-1, 40, (b, 10), generator=gen)
    items[0] = -1                       # an empty history
    items[1, :9] = -1                   # one item
    feedback = torch.rand(b, 10, generator=gen) * (items >= 0)
    mask = torch.rand(b, 5, generator=gen) < 0.5
    step = torch.randint(0, 20, (b,), generator=gen)
    return items, feedback, mask, step


@pytest.mark.parametrize("num_layers", [1, 2])
def test_the_fast_path_gives_the_reference_paths_outputs_and_gradients(num_layers):
    fast, reference = models(num_layers)
    obs = observations()
    outputs = []
    for model in (fast, reference):
        model.train()
        dist, value = model(*obs)
        loss = dist.log_prob(dist.mean.detach() + 0.1).sum() + value.pow(2).sum() + dist.mean.pow(2).sum()
        loss.backward()
        outputs.append((dist.mean, value, {n: p.grad for n, p in model.named_parameters()}))
    (mean_f, value_f, grads_f), (mean_r, value_r, grads_r) = outputs
    torch.testing.assert_close(mean_f, mean_r, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(value_f, value_r, atol=1e-5, rtol=1e-5)
    assert grads_f.keys() == grads_r.keys()
    for name in grads_r:
        torch.testing.assert_close(grads_f[name], grads_r[name], atol=1e-4, rtol=1e-3, msg=name)


def test_fixed_features_made_once_per_batch_are_the_ones_each_minibatch_would_make():
    fast, _ = models(1)
    obs = observations()
    rows = torch.arange(len(obs[0])).flip(0)[::2]   # a minibatch of the batch, out of order
    with torch.no_grad():
        made, value_made = fast(*(o[rows] for o in obs))
        given, value_given = fast(*(o[rows] for o in obs), fixed=fast.fixed_features(obs[0], obs[1])[rows])
    # Equal up to rounding: a batched solve rounds a little differently at another batch size.
    torch.testing.assert_close(made.mean, given.mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(value_made, value_given, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("history", [10, 30])   # shorter (the dual form) and longer than the features
def test_ridge_fit_is_the_primal_lu_solution(history):
    gen = torch.Generator().manual_seed(history)
    features = torch.randn(16, history, 20, generator=gen, dtype=torch.float64)
    feedback = torch.rand(16, history, generator=gen, dtype=torch.float64)
    shown = (torch.rand(16, history, 1, generator=gen) < 0.8).double()
    shown[0] = 0.0
    torch.testing.assert_close(ridge_fit(features, feedback, shown), _ridge_fit_lu(features, feedback, shown))
