"""E, extrapolate: ZEUS's second-order predictor over the two most recent fresh outputs."""

from __future__ import annotations

import torch

from .base import Action, StepContext
from .reuse import reuse_last


def zeus_extrapolate(last: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """ZEUS's second-order predictor ``2 * psi_last - psi_prev``, unscaled by the step gap."""
    return last.mul(2).sub_(prev)


def extrapolate(ctx: StepContext) -> torch.Tensor:
    """ZEUS extrapolation ``2 * psi_last - psi_prev`` (the last fresh output while only one exists)."""
    if len(ctx.branch.fresh) < 2:
        return reuse_last(ctx)
    return zeus_extrapolate(ctx.branch.last, ctx.branch.prev)


ACTION = Action("E", "predicted", output=extrapolate)
