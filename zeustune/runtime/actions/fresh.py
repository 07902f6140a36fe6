"""F, fresh: the hook calls the denoiser; this keeps its output for the predictors."""

from __future__ import annotations

import torch

from .base import Action, StepContext


def record_fresh(ctx: StepContext, psi: torch.Tensor) -> None:
    """Fresh step: ``(k, t, psi)`` becomes the newest of the two fresh outputs the predictors read."""
    ctx.branch.fresh.append((ctx.k, ctx.t, psi.detach().clone()))  # clone: the pipeline owns what it got


ACTION = Action("F", "fresh", record=record_fresh)
