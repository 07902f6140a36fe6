"""C, the Chebyshev forecast (Spectrum, FACTS §2b): a ridge fit over every fresh output of the branch.

The predictors' time t (step index or sigma) is mapped to tau in [-1, 1] over the run (first step
-1, last +1). Fresh outputs h_i at tau_i are fitted by ``h(tau) = sum_j T_j(tau) c_j`` (Chebyshev
T_0..T_d) with ridge lambda: ``C = (Phi^T Phi + lambda I)^-1 Phi^T H``. The forecast is then blended
with S's gap-scaled linear step (gamma 1): ``(1 - w) * linear + w * Phi(tau) C``.

Memory stays d+1 tensors whatever the history length: the state keeps the running normal
equations, the Gram matrix ``G = sum phi_i phi_i^T`` ((d+1)x(d+1), float64) and the moments
``M_j = sum_i T_j(tau_i) h_i`` (d+1 tensors, float32 at least, so bf16 models accumulate in
float32). As ``Phi(tau) C = (G + lambda I)^-1 phi(tau) . M``, a forecast is one weighted sum of the
moments. Fresh outputs are added as they are recorded (``observe`` on fresh steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import Action, StepContext
from .reuse import reuse_last
from .scaled import scaled_extrapolate


def chebyshev(tau: float, degree: int) -> torch.Tensor:
    """``[T_0(tau), .., T_degree(tau)]`` in float64."""
    out = [1.0, tau][: degree + 1]
    while len(out) < degree + 1:
        out.append(2 * tau * out[-1] - out[-2])
    return torch.tensor(out, dtype=torch.float64)


@dataclass
class ForecastState:
    """The running normal equations of one branch's fit."""

    degree: int
    gram: torch.Tensor = field(init=False)
    moments: list[torch.Tensor] = field(default_factory=list)  # empty until the first fresh output
    count: int = 0

    def __post_init__(self):
        self.gram = torch.zeros(self.degree + 1, self.degree + 1, dtype=torch.float64)

    def add(self, tau: float, h: torch.Tensor) -> None:
        phi = chebyshev(tau, self.degree)
        self.gram += torch.outer(phi, phi)
        acc = h.detach().to(torch.promote_types(h.dtype, torch.float32))
        if not self.moments:
            self.moments = [acc * float(p) for p in phi]
        else:
            for m, p in zip(self.moments, phi):
                m.add_(acc, alpha=float(p))
        self.count += 1

    def weights(self, tau: float, ridge: float) -> torch.Tensor:
        """w with ``forecast(tau) = sum_j w_j M_j`` (a pseudo-inverse: lambda 0 with fewer fresh
        outputs than coefficients is underdetermined and takes the minimum-norm fit)."""
        a = self.gram + ridge * torch.eye(self.degree + 1, dtype=torch.float64)
        return torch.linalg.pinv(a, hermitian=True) @ chebyshev(tau, self.degree)

    def forecast(self, tau: float, ridge: float) -> torch.Tensor:
        w = self.weights(tau, ridge)
        out = self.moments[0] * float(w[0])
        for m, wj in zip(self.moments[1:], w[1:]):
            out.add_(m, alpha=float(wj))
        return out


def tau_of(ctx: StepContext) -> float:
    """The step's time mapped to [-1, 1] over the run (step index 0..N-1, or sigma first..last)."""
    n = len(ctx.plan)
    if ctx.predictor.time == "sigma" and ctx.sigmas is not None:
        first, last = ctx.sigmas[0], ctx.sigmas[-1]
    else:
        first, last = 0.0, float(n - 1)
    return -1.0 if last == first else -1.0 + 2.0 * (ctx.t - first) / (last - first)


def record(ctx: StepContext, psi: torch.Tensor) -> None:
    """Add each fresh output to the branch's fit (predicted outputs never enter it)."""
    if ctx.fresh:
        ctx.state("C").add(tau_of(ctx), psi)


def forecast(ctx: StepContext) -> torch.Tensor:
    """The blended forecast (the last fresh output while only one exists)."""
    branch, pred = ctx.branch, ctx.predictor
    if len(branch.fresh) < 2:
        return reuse_last(ctx)
    (_, t_prev, prev), (_, t_last, last) = branch.fresh
    linear = scaled_extrapolate(last, prev, ctx.t, t_last, t_prev, 1.0)
    if pred.blend == 0:
        return linear
    cheb = ctx.state("C").forecast(tau_of(ctx), pred.ridge)
    return torch.lerp(linear.to(cheb.dtype), cheb, pred.blend).to(last.dtype)


ACTION = Action("C", "predicted", output=forecast, observe=record, state=lambda predictor: ForecastState(predictor.degree))
