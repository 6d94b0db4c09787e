"""The ridge fit of a history's feedback on its items' features: the policy's preference estimate
(`policy.networks.ActorCritic`, the direction its action starts from) and the history-ridge and
ridge-exposure references' (rollout.reference_policies), in one place."""
from __future__ import annotations

import torch

RIDGE_LAMBDA = 10.0
"""Ridge penalty of the preference estimate (in squared features). As the rule ridge-exposure
(rollout.reference_policies) on the default MovieLens world's 128 evaluation users, 3, 10 and 30
score Rcum 2.44, 2.66 and 2.57: 10 it is."""


def ridge_fit(features: torch.Tensor, feedback: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
    """[B, F + 1] the ridge fit (RIDGE_LAMBDA; last entry the intercept) of each history's
    feedback ([B, H]) on its items' features ([B, H, F]), over the slots `shown` ([B, H, 1], 1/0)
    marks: the policy's preference estimate and the history-ridge reference's, in one place."""
    x = torch.cat([features, torch.ones_like(features[..., :1])], dim=-1) * shown        # [B, H, F + 1]
    # Cholesky: the system is symmetric positive definite. A history shorter than the features
    # are wide takes the dual form, w = X^T (X X^T + lambda I)^-1 y: the same solution from an
    # H x H system (empty slots are zero rows, of weight 0).
    y = feedback.unsqueeze(-1) * shown                                                   # [B, H, 1]
    dual = x.shape[1] < x.shape[2]
    system = x @ x.transpose(1, 2) if dual else x.transpose(1, 2) @ x
    system.diagonal(dim1=-2, dim2=-1).add_(RIDGE_LAMBDA)
    factor, _ = torch.linalg.cholesky_ex(system)
    if dual:
        return (x * torch.cholesky_solve(y, factor)).sum(1)
    return torch.cholesky_solve((x * y).sum(1).unsqueeze(-1), factor).squeeze(-1)


def _ridge_fit_lu(features: torch.Tensor, feedback: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
    """ridge_fit as it was before (primal form, LU): the reference path's."""
    x = torch.cat([features, torch.ones_like(features[..., :1])], dim=-1) * shown
    gram = x.transpose(1, 2) @ x + RIDGE_LAMBDA * torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return torch.linalg.solve(gram, (x * (feedback.unsqueeze(-1) * shown)).sum(1))
