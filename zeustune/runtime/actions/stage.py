"""P, a low-resolution stage (PostDiff; ProRes's recipe for DiTs): the plan's first steps sample a
smaller latent (side x ``predictor.reduced``), then one switch moves the sample to full resolution.

Unlike D, which runs one call at reduced resolution inside a full-resolution trajectory, the stage
is its own trajectory at the small size, on the sigmas of the small token count, and leaves it once.
For flow matching (``x = (1 - s) x0 + s eps``, the model predicts ``v = eps - x0``):

1. The first P step downsamples the initial noise (area averaging, rescaled to unit std: averaging
   shrinks white noise) to ``y``, the stage's latent.
2. A stage step calls the denoiser on ``y`` with the small grid's ``img_ids`` at the small
   schedule's sigma ``s_lo``: the pipeline's sigma un-shifted with the full token count's ``mu``
   and shifted again with the small one's (FLUX's dynamic shifting; equal where it is off).
3. The stage advances ``y`` by Euler with the guided velocity: ``y += (s_lo' - s_lo) v_cfg``. The
   branches are called separately and the pipeline mixes them, so each branch returns a
   full-resolution lift ``U v`` of its own small velocity (``U`` a bilinear upsampling matrix per
   axis). Mixing is linear, so the pipeline's latent moves by ``(s' - s) U v_cfg``, and the next P
   step reads ``v_cfg = U+ (x_next - x) / (s' - s)`` back from it (``U+`` the pseudo-inverse, exact as
   ``U`` has full column rank). Every branch advances its own copy of ``y`` identically: no state is
   shared between branches.
4. The last P step is the switch: the clean estimate one Euler jump away,
   ``x0_hat = y - s_lo v``, is upsampled (bilinear) and re-noised at the next step's sigma ``s'``:
   ``x_target = (1 - s') up(x0_hat) + s' eps``, and the branch returns ``(x_target - x) / (s' - s)``,
   so the pipeline's Euler step lands on ``x_target`` (the CFG mix of such returns is the target of
   the mixed ``x0_hat``: its weights sum to 1). ``eps`` is the run's initial noise rather than fresh
   noise, so the image stays a function of the seed; on a rectified-flow path the trajectory's noise
   stays close to it.

The stage's outputs are not kept as fresh outputs: the first step after it must be F (plans check).
FLUX only, like D. The read-back in step 3 subtracts two latents; in bf16 that costs precision
where ``s' - s`` is small (a stage spans the early, large steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import latents
from .base import Action, StepContext
from .reduced import ReducedStepError, reduced_size


@dataclass
class StageState:
    """One branch's copy of the stage trajectory."""

    y: torch.Tensor | None = None  # the stage's latent (B, C, h, w)
    x_prev: torch.Tensor | None = None  # the full-resolution latent the last P step saw
    sigma_prev: float = 1.0  # its sigma (full schedule) ...
    sigma_lo_prev: float = 1.0  # ... and the small schedule's
    eps: torch.Tensor | None = None  # the initial noise, for the switch's re-noise
    lifts: dict = field(default_factory=dict)  # (size, full size) -> (U_h, U_w, pinv U_h, pinv U_w)


def upsampling_matrix(n_small: int, n_full: int) -> torch.Tensor:
    """(n_full, n_small): bilinear upsampling along one axis, as a matrix (full column rank)."""
    eye = torch.eye(n_small, dtype=torch.float64)[None]  # each column an impulse
    up = F.interpolate(eye, size=n_full, mode="linear", align_corners=False)[0]
    return up.T.contiguous()


def shifted_sigma(sigma: float, mu_from: float, mu_to: float) -> float:
    """The sigma of the same schedule position under another ``mu`` (FLUX's exponential time shift
    ``s = e^mu / (e^mu + 1/t - 1)``)."""
    if sigma >= 1.0 or sigma <= 0.0:
        return sigma
    return math.exp(mu_to) / (math.exp(mu_to) + math.exp(mu_from) * (1 / sigma - 1))


def _mu(scheduler, tokens: int) -> float | None:
    cfg = scheduler.config
    if not cfg.get("use_dynamic_shifting", False):
        return None
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    return calculate_shift(tokens, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                           cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))


def _lift(st: StageState, small: tuple[int, int], full: tuple[int, int], like: torch.Tensor):
    key = (small, full)
    if key not in st.lifts:
        uh, uw = upsampling_matrix(small[0], full[0]), upsampling_matrix(small[1], full[1])
        st.lifts[key] = tuple(m.to(like.device, torch.float32) for m in (uh, uw, torch.linalg.pinv(uh), torch.linalg.pinv(uw)))
    return st.lifts[key]


def stage_call(ctx: StepContext) -> torch.Tensor:
    if ctx.family.name != "flux":
        raise ReducedStepError(f"plan letter P: family: got {ctx.family.name!r}, expected 'flux' "
                               "(low-resolution stages run on packed FLUX latents only, for now)")
    if ctx.sigmas is None:
        raise ReducedStepError("plan letter P: scheduler: got one without sigmas, expected a flow-matching scheduler")
    ctx.fresh = False  # a stage output is no history for the predictors
    st: StageState = ctx.state("P")
    kwargs = dict(ctx.kwargs)
    tokens, ids = kwargs["hidden_states"], kwargs["img_ids"]
    h, w = latents.grid_of(ids)
    hs, ws = reduced_size(h, w, ctx.predictor.reduced)
    x = latents.unpack(tokens, h, w).float()
    small, full = (2 * hs, 2 * ws), (2 * h, 2 * w)
    uh, uw, ph, pw = _lift(st, small, full, x)
    sigma = float(ctx.sigmas[ctx.k])
    mu_full, mu_small = _mu(ctx.scheduler, h * w), _mu(ctx.scheduler, hs * ws)
    sigma_lo = sigma if mu_full is None else shifted_sigma(sigma, mu_full, mu_small)
    if st.y is None:  # step 1: the stage starts from the initial noise, downsampled
        st.eps = x.clone()
        y = F.adaptive_avg_pool2d(x, small)
        st.y = y * (x.std() / y.std().clamp_min(1e-12))
    else:  # step 3: advance by the guided velocity the pipeline applied at the last P step
        v_cfg = ph @ ((x - st.x_prev) / (sigma - st.sigma_prev)) @ pw.T
        st.y = st.y + (sigma_lo - st.sigma_lo_prev) * v_cfg
    st.x_prev, st.sigma_prev, st.sigma_lo_prev = x, sigma, sigma_lo
    kwargs["hidden_states"] = latents.pack(st.y.to(tokens.dtype))
    kwargs["img_ids"] = latents.ids(hs, ws, ids)
    if "timestep" in kwargs and torch.is_tensor(kwargs["timestep"]):
        kwargs["timestep"] = torch.full_like(kwargs["timestep"], sigma_lo)  # FluxPipeline passes sigma
    out = ctx.denoise(*ctx.args, **kwargs)
    v = latents.unpack(out if torch.is_tensor(out) else out[0], hs, ws).float()
    last = ctx.k + 1 >= len(ctx.plan.steps) or ctx.plan.steps[ctx.k + 1] != "P"
    if not last:
        return latents.pack((uh @ v @ uw.T).to(tokens.dtype))
    # step 4, the switch: land the pipeline's step on the re-noised, upsampled clean estimate
    sigma_next = float(ctx.sigmas[ctx.k + 1]) if ctx.k + 1 < len(ctx.sigmas) else 0.0
    x0_hat = F.interpolate(st.y - sigma_lo * v, size=full, mode="bilinear", align_corners=False)
    target = (1 - sigma_next) * x0_hat + sigma_next * st.eps
    return latents.pack(((target - x) / (sigma_next - sigma)).to(tokens.dtype))


ACTION = Action("P", "fraction", output=stage_call, state=lambda predictor: StageState())
