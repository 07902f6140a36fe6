"""L, the Lagrange tail of VP (UNet) pipelines: extrapolate the clean sample x0 through anchors.

Anchors are x0 estimates kept at steps with ``k % lagrange_int == 1``, fresh or predicted, so this
action observes every step of a plan that uses it. On flow pipelines plans resolve L to E/R before
the run (:meth:`zeustune.plans.Plan.resolved`), so it never runs there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Action, StepContext
from .extrapolate import extrapolate
from .reuse import reuse_last


def lagrange(ts: Sequence[float], values: Sequence[torch.Tensor], t: float) -> torch.Tensor:
    """The Lagrange polynomial through ``(ts[i], values[i])`` evaluated at t."""
    out = None
    for i, (ti, vi) in enumerate(zip(ts, values)):
        w = 1.0
        for j, tj in enumerate(ts):
            if j != i:
                w *= (t - tj) / (ti - tj)
        out = vi * w if out is None else out.add_(vi, alpha=w)
    return out


# -- x0 parameterisation for VP (UNet) pipelines: x_t = a * x0 + s * eps, a^2 + s^2 = 1 ---------


def x0_from_output(psi: torch.Tensor, x: torch.Tensor, a: float, s: float, prediction_type: str) -> torch.Tensor:
    """The clean-sample estimate implied by a denoiser output at x_t."""
    if prediction_type == "epsilon":
        return (x - s * psi) / a
    if prediction_type == "v_prediction":
        return a * x - s * psi
    if prediction_type == "sample":
        return psi
    raise ValueError(f"prediction_type: got {prediction_type!r}, expected epsilon, v_prediction or sample")


def output_from_x0(x0: torch.Tensor, x: torch.Tensor, a: float, s: float, prediction_type: str) -> torch.Tensor:
    """The denoiser output that implies clean sample x0 at x_t (inverse of x0_from_output)."""
    if prediction_type == "epsilon":
        return (x - a * x0) / s
    if prediction_type == "v_prediction":
        return (a * x - x0) / s
    if prediction_type == "sample":
        return x0
    raise ValueError(f"prediction_type: got {prediction_type!r}, expected epsilon, v_prediction or sample")


def vp_coefficients(ctx: StepContext) -> tuple[float, float]:
    """(a, s) with x_t = a * x0 + s * eps at step k; the UNet sees the VP-scaled sample."""
    if ctx.sigmas is not None:
        s2 = ctx.sigmas[ctx.k] ** 2
        return (1 / (1 + s2)) ** 0.5, (s2 / (1 + s2)) ** 0.5
    t = ctx.timestep  # schedulers without sigmas (DDIM): alphas_cumprod at the call's timestep
    t0 = int(t.flatten()[0]) if isinstance(t, torch.Tensor) else int(t)
    abar = float(ctx.scheduler.alphas_cumprod[t0])
    return abar**0.5, (1 - abar) ** 0.5


def store_anchor(ctx: StepContext, psi: torch.Tensor) -> None:
    """Keep the x0 implied by this step's output as an anchor, at steps ``k % lagrange_int == 1``."""
    if ctx.family.flow or ctx.k % ctx.predictor.lagrange_int != 1:
        return
    a, s = vp_coefficients(ctx)
    ctx.branch.anchors.append((ctx.k, x0_from_output(psi, ctx.sample, a, s, ctx.scheduler.config.prediction_type)))


def lagrange_tail(ctx: StepContext) -> torch.Tensor:
    """Lagrange extrapolation of x0 through the last anchors, turned back into the model's output
    (ZEUS extrapolation until two anchors exist)."""
    branch = ctx.branch
    if len(branch.fresh) < 2:
        return reuse_last(ctx)
    if len(branch.anchors) < 2:
        return extrapolate(ctx)
    ks, x0s = zip(*branch.anchors)
    x0 = lagrange([float(v) for v in ks], list(x0s), float(ctx.k))
    a, s = vp_coefficients(ctx)
    return output_from_x0(x0, ctx.sample, a, s, ctx.scheduler.config.prediction_type).to(branch.last.dtype)


ACTION = Action("L", "predicted", output=lagrange_tail, observe=store_anchor)
