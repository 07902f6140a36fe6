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

The same steps hold for the VP families (SD, SDXL: ``x_t = a x0 + b eps`` with ``a = sqrt(abar_t)``,
``b = sqrt(1 - abar_t)`` read from the scheduler at the step's timestep): the output is split into
``(x0', eps')`` by the model's parameterisation (epsilon, v or sample prediction), the small latent is
``a down(x0') + b c down(eps')``, and the full-resolution output is the parameterisation of
``x0_hat`` against ``x_t`` (epsilon: ``(x_t - a x0_hat) / b``). Flow matching is the case ``a = 1 - s``,
``b = s``, ``v = eps - x0``.

The output is recorded like a fresh one (the predictors extrapolate from it). FLUX packs 2x2 latent
patches into tokens (:mod:`..latents`): the smaller grid gets its own ``img_ids``, which RoPE reads,
so the model sees the positions of a smaller image. SD3, Wan and the UNets take the smaller latent
as it is; its side is rounded to what the model divides by (the patch size, or the UNet's
downsampling).

On video (Wan, latents ``(B, C, F, H, W)``) ``predictor.reduced_axes`` says what shrinks: the side
(per frame), the latent frames (``F x reduced``, at least 1; averaged in time, upsampled linearly)
or both. The steps above hold unchanged with the pooling over the chosen axes. The model's RoPE
then reads frame positions 0..f-1: the clip it sees is shorter, its motion faster per frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import latents
from .base import Action, StepContext
from .fresh import record_fresh

FACTORS = (0.5, 0.75)
MIN_SIGMA = 1e-3


class ReducedStepError(ValueError):
    pass


def reduced_latent(x_t: torch.Tensor, v_last: torch.Tensor | None, sigma: float, size: tuple[int, int]) -> torch.Tensor:
    """Steps 1-2 for flow matching: the noisy latent (B, C, H, W) at ``size``, with the noise level of ``sigma``."""
    x = x_t.float()
    x0, eps = _history(x, None if v_last is None else v_last.float(), "flow", 1 - sigma, sigma)
    return small_latent(x0, eps, 1 - sigma, sigma, size).to(x_t.dtype)


def full_velocity(x_t: torch.Tensor, x_small: torch.Tensor, v_small: torch.Tensor, sigma: float) -> torch.Tensor:
    """Steps 3-4 for flow matching: the reduced call's clean estimate, upsampled, as a velocity at full resolution."""
    x0_small, _ = split(x_small.float(), v_small.float(), "flow", 1 - sigma, sigma)
    return join(x_t.float(), _resize(x0_small, tuple(x_t.shape[-2:]), up=True), "flow", 1 - sigma, sigma).to(x_t.dtype)


def small_latent(x0: torch.Tensor, eps: torch.Tensor, a: float, b: float, size: tuple[int, int]) -> torch.Tensor:
    """``a down(x0) + b c down(eps)``: the noise rescaled to its full-resolution std (averaging shrinks it)."""
    eps_small = _resize(eps, size, up=False)
    c = eps.std() / eps_small.std().clamp_min(1e-12)
    return a * _resize(x0, size, up=False) + b * c * eps_small


def _history(x: torch.Tensor, last: torch.Tensor | None, kind: str, a: float, b: float):
    """(x0', eps') of the latent from the branch's last output; without one, the latent is taken as noise."""
    if last is None:
        return torch.zeros_like(x), x / b
    return split(x, last, kind, a, b)


def reduced_size(h: int, w: int, factor: float) -> tuple[int, int]:
    """The reduced token grid (each token a 2x2 latent patch); at least 1 x 1."""
    return max(1, round(h * factor)), max(1, round(w * factor))


def split(x: torch.Tensor, out: torch.Tensor, kind: str, a: float, b: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) of the latent ``x = a x0 + b eps`` given the model's output in its parameterisation."""
    if kind == "flow":  # v = eps - x0, a = 1 - s, b = s
        return x - b * out, x + a * out
    if kind == "epsilon":
        return (x - b * out) / a, out
    if kind == "v_prediction":  # v = a eps - b x0
        return a * x - b * out, b * x + a * out
    if kind == "sample":
        return out, (x - a * out) / b
    raise ReducedStepError(f"plan letter D: prediction type: got {kind!r}, expected flow, epsilon, v_prediction or sample")


def join(x: torch.Tensor, x0: torch.Tensor, kind: str, a: float, b: float) -> torch.Tensor:
    """The model output, in its parameterisation, whose clean estimate against ``x`` is ``x0``."""
    if kind == "flow":
        return (x - x0) / b
    if kind == "epsilon":
        return (x - a * x0) / b
    if kind == "v_prediction":
        return (a * x - x0) / b
    return x0  # sample prediction


def _resize(x: torch.Tensor, size: tuple[int, ...], up: bool) -> torch.Tensor:
    """Area-average down / (bi,tri)linear up over the last two axes, or on video the last three when
    ``size`` is (frames, height, width) (a 2-tuple keeps the frames)."""
    if x.ndim == 5:
        full = tuple(size) if len(size) == 3 else (x.shape[2], *size)
        return F.interpolate(x, size=full, mode="trilinear", align_corners=False) if up else F.adaptive_avg_pool3d(x, full)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False) if up else F.adaptive_avg_pool2d(x, size)


def _multiple(module) -> int:
    """What the model's latent sides must divide by: its patch size, or a UNet's downsampling."""
    cfg = getattr(module, "config", {})
    if "down_block_types" in cfg:
        return 2 ** (len(cfg["down_block_types"]) - 1)
    patch = cfg.get("patch_size", 1) if hasattr(cfg, "get") else 1
    return int(patch[-1] if isinstance(patch, (tuple, list)) else patch or 1)


def _coefficients(ctx: StepContext) -> tuple[str, float, float]:
    """(parameterisation, a, b) of the step: ``x_t = a x0 + b eps`` as the model sees it."""
    if ctx.family.flow:
        if ctx.sigmas is None:
            raise ReducedStepError("plan letter D: scheduler: got one without sigmas, expected a flow-matching scheduler")
        s = float(ctx.sigmas[ctx.k])
        return "flow", 1.0 - s, s
    alphas = getattr(ctx.scheduler, "alphas_cumprod", None)
    t = ctx.timestep
    if alphas is None or t is None:
        raise ReducedStepError(f"plan letter D: scheduler: got {type(ctx.scheduler).__name__} without alphas_cumprod, "
                               "expected a DDPM-family scheduler")
    t = float(t.flatten()[0]) if torch.is_tensor(t) else float(t)
    abar = float(alphas[min(max(round(t), 0), len(alphas) - 1)])
    return ctx.scheduler.config.get("prediction_type", "epsilon"), abar ** 0.5, (1 - abar) ** 0.5


def _small_side(n: int, factor: float, m: int) -> int:
    return max(m, round(n * factor / m) * m)


def small_shape(shape: tuple[int, ...], factor: float, axes: str, m: int) -> tuple[int, ...]:
    """The reduced latent's last axes: (height, width), or on video (frames, height, width) with
    the frames (``axes`` "frames" or "both") and the sides ("side" or "both") at ``factor``."""
    side = axes in ("side", "both")
    h, w = (_small_side(n, factor, m) if side else n for n in shape[-2:])
    if len(shape) < 5:
        if axes != "side":
            raise ReducedStepError(f"plan letter D: predictor.reduced_axes: got {axes!r} on a latent of shape "
                                   f"{tuple(shape)}, expected 'side' (only video latents have frames)")
        return h, w
    frames = max(1, round(shape[2] * factor)) if axes in ("frames", "both") else shape[2]
    return frames, h, w


def reduced_call(ctx: StepContext) -> torch.Tensor:
    factor, axes = ctx.predictor.reduced, ctx.predictor.reduced_axes
    kind, a, b = _coefficients(ctx)
    if b < MIN_SIGMA:
        raise ReducedStepError(f"plan letter D at step {ctx.k}: noise level: got {b:g}, expected >= {MIN_SIGMA:g} "
                               "(the output divides by it); make the last steps fresh")
    kwargs, args = dict(ctx.kwargs), tuple(ctx.args)
    if ctx.family.name == "flux":  # packed tokens on an img_ids grid
        if axes != "side":
            raise ReducedStepError(f"plan letter D: predictor.reduced_axes: got {axes!r} on FLUX, expected 'side' "
                                   "(only video latents have frames)")
        tokens, ids = kwargs["hidden_states"], kwargs["img_ids"]
        h, w = latents.grid_of(ids)
        hs, ws = reduced_size(h, w, factor)
        x_t = latents.unpack(tokens, h, w)
        last = latents.unpack(ctx.branch.last, h, w) if ctx.branch.fresh else None
        small = (2 * hs, 2 * ws)
    else:
        x_t = ctx.sample
        small = small_shape(tuple(x_t.shape), factor, axes, _multiple(ctx.denoiser))
        last = ctx.branch.last if ctx.branch.fresh else None
    x = x_t.float()
    x0, eps = _history(x, None if last is None else last.float(), kind, a, b)  # a first step: nearly pure noise
    x_small = small_latent(x0, eps, a, b, small)
    if ctx.family.name == "flux":
        kwargs["hidden_states"], kwargs["img_ids"] = latents.pack(x_small.to(x_t.dtype)), latents.ids(hs, ws, ids)
    elif ctx.family.sample in kwargs:
        kwargs[ctx.family.sample] = x_small.to(x_t.dtype)
    else:
        args = (x_small.to(x_t.dtype), *args[1:])
    out = ctx.denoise(*args, **kwargs)
    out_small = out if torch.is_tensor(out) else out[0]
    if ctx.family.name == "flux":
        out_small = latents.unpack(out_small, hs, ws)
    x0_small, _ = split(x_small, out_small.float(), kind, a, b)
    psi = join(x, _resize(x0_small, tuple(x.shape[-len(small):]), up=True), kind, a, b).to(x_t.dtype)
    if ctx.family.name == "flux":
        psi = latents.pack(psi)
    record_fresh(ctx, psi)
    return psi


ACTION = Action("D", "fraction", output=reduced_call)
