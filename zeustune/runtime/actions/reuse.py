"""R, reuse: the last fresh output, held (zeroth order)."""

from __future__ import annotations

import torch

from .base import Action, StepContext


def reuse(last: torch.Tensor) -> torch.Tensor:
    """Zeroth order: the last fresh output."""
    return last


def reuse_last(ctx: StepContext) -> torch.Tensor:
    """Zeroth-order hold: a copy of the last fresh output (the other predictors' fallback too)."""
    return reuse(ctx.branch.last).clone()  # a copy: the history must not see what the pipeline does to it


ACTION = Action("R", "predicted", output=reuse_last)
