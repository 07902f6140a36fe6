"""Predictors of a skipped step's denoiser output: small pure functions on tensors.

psi is whatever the denoiser returns (epsilon, v or flow velocity). The history they read holds
fresh outputs only, so a prediction is never built on another prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def reuse(last: torch.Tensor) -> torch.Tensor:
    """Zeroth order: the last fresh output."""
    return last


def zeus_extrapolate(last: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """ZEUS's second-order predictor ``2 * psi_last - psi_prev``, unscaled by the step gap."""
    return last.mul(2).sub_(prev)


def scaled_extrapolate(
    last: torch.Tensor, prev: torch.Tensor, t: float, t_last: float, t_prev: float, gamma: float = 1.0
) -> torch.Tensor:
    """Linear extrapolation to time t, scaled by the gap and damped by gamma:
    ``psi_last + gamma * (t - t_last) / (t_last - t_prev) * (psi_last - psi_prev)``."""
    if t_last == t_prev:
        return last
    ratio = gamma * (t - t_last) / (t_last - t_prev)
    return torch.add(last, last - prev, alpha=ratio)


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
