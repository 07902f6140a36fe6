"""S, scaled extrapolation: linear in the predictors' time (step or sigma), damped by gamma."""

from __future__ import annotations

import torch

from .base import Action, StepContext
from .reuse import reuse_last


def scaled_extrapolate(
    last: torch.Tensor, prev: torch.Tensor, t: float, t_last: float, t_prev: float, gamma: float = 1.0
) -> torch.Tensor:
    """Linear extrapolation to time t, scaled by the gap and damped by gamma:
    ``psi_last + gamma * (t - t_last) / (t_last - t_prev) * (psi_last - psi_prev)``."""
    if t_last == t_prev:
        return last
    ratio = gamma * (t - t_last) / (t_last - t_prev)
    return torch.add(last, last - prev, alpha=ratio)


def scaled(ctx: StepContext) -> torch.Tensor:
    """Gap-scaled, gamma-damped linear extrapolation (the last fresh output while only one exists)."""
    if len(ctx.branch.fresh) < 2:
        return reuse_last(ctx)
    (_, t_prev, prev), (_, t_last, last) = ctx.branch.fresh
    return scaled_extrapolate(last, prev, ctx.t, t_last, t_prev, ctx.predictor.gamma)


ACTION = Action("S", "predicted", output=scaled)
