"""D, a fresh step at reduced resolution: the denoiser runs on a smaller latent (side x
``predictor.reduced``, 0.5 or 0.75), the sampler never leaves full resolution.

The math, for flow matching (``x_t = (1 - s) x0 + s eps``, the model predicts ``v = eps - x0``,
``s`` the step's sigma):

1. Split the noisy latent with the branch's last fresh output v': ``x0' = x_t - s v'`` and
   ``eps' = x_t + (1 - s) v'``. With no history the latent is taken as noise (``x0' = 0``,
   ``eps' = x_t``): a first step has ``s`` near 1.
2. Downsample both by area averaging to the reduced side. Averaging shrinks white noise's standard
   deviation (by 2 for 2x2 cells), so ``eps'`` is rescaled back to its own full-resolution std:
   ``x_small = (1 - s) down(x0') + s c down(eps')``, ``c = std(eps') / std(down(eps'))``. The model
   then sees a latent with the noise level of its timestep, as at any resolution.
3. The denoiser gives ``v_small``; its clean estimate ``x0_small = x_small - s v_small`` is upsampled
   (bilinear) to ``x0_hat``.
4. The output at full resolution is the velocity consistent with the current latent:
   ``v = (x_t - x0_hat) / s``, so ``x_t - s v = x0_hat`` exactly: the sampler's step moves towards the
   upsampled clean estimate, and its noise part is the latent's own. ``s`` below 1e-3 is refused
   (the division; such a step is better fresh).

The output is recorded like a fresh one (the predictors extrapolate from it). FLUX packs 2x2 latent
patches into tokens (:mod:`..latents`): the smaller grid gets its own ``img_ids``, which RoPE reads,
so the model sees the positions of a smaller image. Only flow-matching transformers with packed
latents (FLUX) run D today; other families are refused by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import latents
from . import Action, StepContext
from .fresh import record_fresh

FACTORS = (0.5, 0.75)
MIN_SIGMA = 1e-3


class ReducedStepError(ValueError):
    pass


def _down(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, size)  # area averaging, exact 2x2 means at factor 0.5


def reduced_latent(x_t: torch.Tensor, v_last: torch.Tensor | None, sigma: float, size: tuple[int, int]) -> torch.Tensor:
    """Steps 1-2: the noisy latent (B, C, H, W) at ``size``, with the noise level of ``sigma``."""
    x = x_t.float()
    if v_last is None:
        x0, eps = torch.zeros_like(x), x
    else:
        v = v_last.float()
        x0, eps = x - sigma * v, x + (1 - sigma) * v
    eps_small = _down(eps, size)
    c = eps.std() / eps_small.std().clamp_min(1e-12)
    return ((1 - sigma) * _down(x0, size) + sigma * c * eps_small).to(x_t.dtype)


def full_velocity(x_t: torch.Tensor, x_small: torch.Tensor, v_small: torch.Tensor, sigma: float) -> torch.Tensor:
    """Steps 3-4: the reduced call's clean estimate, upsampled, as a velocity at full resolution."""
    x0_small = x_small.float() - sigma * v_small.float()
    x0_hat = F.interpolate(x0_small, size=x_t.shape[-2:], mode="bilinear", align_corners=False)
    return ((x_t.float() - x0_hat) / sigma).to(x_t.dtype)


def reduced_size(h: int, w: int, factor: float) -> tuple[int, int]:
    """The reduced token grid (each token a 2x2 latent patch); at least 1 x 1."""
    return max(1, round(h * factor)), max(1, round(w * factor))


def reduced_call(ctx: StepContext) -> torch.Tensor:
    if ctx.family.name != "flux":
        raise ReducedStepError(f"plan letter D: family: got {ctx.family.name!r}, expected 'flux' "
                               "(reduced-resolution steps run on packed FLUX latents only, for now)")
    factor = ctx.predictor.reduced
    if ctx.sigmas is None:
        raise ReducedStepError("plan letter D: scheduler: got one without sigmas, expected a flow-matching scheduler")
    sigma = float(ctx.sigmas[ctx.k])
    if sigma < MIN_SIGMA:
        raise ReducedStepError(f"plan letter D at step {ctx.k}: sigma: got {sigma:g}, expected >= {MIN_SIGMA:g} "
                               "(v = (x_t - x0_hat) / sigma); make the last steps fresh")
    kwargs = dict(ctx.kwargs)
    tokens, ids = kwargs["hidden_states"], kwargs["img_ids"]
    h, w = latents.grid_of(ids)
    x_t = latents.unpack(tokens, h, w)
    hs, ws = reduced_size(h, w, factor)
    v_last = latents.unpack(ctx.branch.last, h, w) if ctx.branch.fresh else None
    x_small = reduced_latent(x_t, v_last, sigma, (2 * hs, 2 * ws))
    kwargs["hidden_states"], kwargs["img_ids"] = latents.pack(x_small), latents.ids(hs, ws, ids)
    out = ctx.denoise(*ctx.args, **kwargs)
    v_small = out if torch.is_tensor(out) else out[0]
    v_small = latents.unpack(v_small, hs, ws)
    psi = latents.pack(full_velocity(x_t, x_small, v_small, sigma))
    record_fresh(ctx, psi)
    return psi


ACTION = Action("D", "fraction", output=reduced_call)
