"""The state encoder's last layer, for the one output anybody reads: the summary token's.

The policy reads only token 0 of the encoder's last layer (policy.networks). A pre-norm encoder
layer's output there needs the query, the attention row, the output projection and the
feed-forward of token 0 alone: about three quarters of the layer's multiply-adds are outputs at
the other tokens. `summary_layer_output` is an exact rewrite of `layer(cat(first, tokens))[:, 0]`,
the same maths to float rounding (tests/policy/test_summary_attention.py holds it to that, values
and gradients). With one query the other tokens' keys and values need not be made:
q . (W_k h + b_k) = (W_k^T q) . h + q . b_k, whose second term is the same at every token (softmax
drops it), and the weights sum to 1, so the weighted values are W_v (weighted h) + b_v. What is
left are two products of the normed tokens with small matrices.

Tried and dropped: also skipping the normed tokens (their means and variances follow from
per-item numbers of the projected catalog, gathered, since the first layer's tokens are affine):
exact, but slower on CPU (many small operations per minibatch instead of a few large ones).
"""
from __future__ import annotations

import torch
from torch import nn


def _check(layer: nn.TransformerEncoderLayer) -> None:
    attn = layer.self_attn
    if not layer.norm_first or not attn.batch_first or attn.in_proj_weight is None or attn.bias_k is not None:
        raise ValueError("the summary-only layer covers pre-norm, batch-first layers with a packed in-projection")


def _query(layer: nn.TransformerEncoderLayer, h0: torch.Tensor):
    """Token 0's query folded into key space: [B, heads, d] (W_k^T q / sqrt(head_dim)), and the
    value projection's per-head weights [heads, hd, d] and biases [heads, hd]."""
    attn = layer.self_attn
    d = h0.shape[-1]
    heads, head_dim = attn.num_heads, d // attn.num_heads
    w_q, w_k, w_v = attn.in_proj_weight.view(3, heads, head_dim, d).unbind(0)
    b_q, _, b_v = attn.in_proj_bias.view(3, heads, head_dim).unbind(0)
    q = torch.einsum("bd,hed->bhe", h0, w_q) + b_q
    return torch.einsum("bhe,hed->bhd", q, w_k) * head_dim ** -0.5, w_v, b_v


def _finish(layer: nn.TransformerEncoderLayer, first: torch.Tensor, mixed: torch.Tensor, w_v, b_v) -> torch.Tensor:
    """Token 0's output from its attention-weighted normed tokens ([B, heads, d])."""
    attended = (torch.einsum("bhd,hed->bhe", mixed, w_v) + b_v).reshape(first.shape)
    y = first + layer.self_attn.out_proj(attended)
    return y + layer.linear2(layer.activation(layer.linear1(layer.norm2(y))))


def summary_layer_output(layer: nn.TransformerEncoderLayer, first: torch.Tensor, tokens: torch.Tensor,
                         pad: torch.Tensor) -> torch.Tensor:
    """[B, d] layer(cat(first [B, d], tokens [B, T, d]))[:, 0] with key padding `pad` ([B, T]
    over `tokens`, True = ignored; token 0 is never padded)."""
    _check(layer)
    h0, h = layer.norm1(first), layer.norm1(tokens)
    query, w_v, b_v = _query(layer, h0)
    scores = torch.cat([(query * h0.unsqueeze(1)).sum(-1, keepdim=True),
                        torch.bmm(query, h.transpose(1, 2)).masked_fill(pad.unsqueeze(1), float("-inf"))], dim=-1)
    weights = scores.softmax(-1)                                                       # [B, heads, 1 + T]
    mixed = weights[:, :, :1] * h0.unsqueeze(1) + torch.bmm(weights[:, :, 1:], h)
    return _finish(layer, first, mixed, w_v, b_v)
