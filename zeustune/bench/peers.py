"""Peer methods: diffusers' built-in caches, applied to a loaded pipeline for comparison.

A benchmark runs the same prompts and seeds with a peer cache as with a schedule, and compares
quality against the number of *full* denoiser calls (the effective NFE):

>>> with peers.apply(pipe, "fbcache", 0.2):                      # doctest: +SKIP
...     nfe = peers.count_full_calls(pipe, lambda: sample(pipe, spec, prompt, seed))

The caches live on the denoiser's transformer blocks (diffusers' CacheMixin on
``pipe.transformer``); they skip blocks inside a call, so the denoiser is still called every step.
A call counts as full when the last transformer block really computed its attention, which every
cache here skips when it reuses or predicts a call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import FluxTransformer2DModel
from diffusers.hooks import (
    FirstBlockCacheConfig,
    HookRegistry,
    MagCacheConfig,
    SeaCacheConfig,
    TaylorSeerCacheConfig,
)
from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK
from diffusers.models.cache_utils import CacheMixin

from ..runtime import latents
from ..runtime.hook import HOOK_NAME as _ZEUS_HOOK

__all__ = ["PEERS", "Peer", "PeerError", "apply", "calibrate_magcache", "count_full_calls", "disable", "enable", "flux_raw_vision"]

# MagCache's calibration resets its state (and drops the ratios) after num_inference_steps calls;
# with this many it never does, and the pipeline's own end-of-call reset clears it instead.
_NEVER = 2**62


class PeerError(ValueError):
    """A peer name, knob or option that is not valid; same style as ModelError and ScheduleError."""

    def __init__(self, source: str, field: str, value: Any, expected: str):
        self.source, self.field, self.value, self.expected = source, field, value, expected
        super().__init__(f"{source}: {field}: got {value!r}, expected {expected}")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Peer:
    name: str
    description: str
    knob: str  # the config field the knob sets
    expected: str  # what a valid knob is, for the error message
    valid: Callable[[Any], bool]
    build: Callable[..., Any]  # (model, knob, options) -> diffusers cache config
    config: type  # the diffusers config class (its fields are the allowed options)
    fixed: tuple[str, ...] = ()  # config fields this module sets itself

    def check(self, knob, options: dict) -> None:
        source = f"peer {self.name}"
        if not self.valid(knob):
            raise PeerError(source, self.knob, knob, self.expected)
        allowed = sorted({f.name for f in dataclasses.fields(self.config)} - {self.knob, *self.fixed})
        for key in options:
            if key not in allowed:
                raise PeerError(source, "option", key, f"one of {', '.join(allowed)} ({self.knob} is the knob)")


def _fbc(model, knob, options):
    return FirstBlockCacheConfig(threshold=float(knob), **options)


def _taylorseer(lite: bool):
    def build(model, knob, options):
        # diffusers stores the Taylor factors in bfloat16 by default: keep the model's precision,
        # so the peer is not penalised by a rounding our own predictors do not do.
        options = {"taylor_factors_dtype": model.dtype, **options}
        return TaylorSeerCacheConfig(cache_interval=knob, use_lite_mode=lite, **options)

    return build


def _magcache(model, knob, options):
    ratios = torch.as_tensor(options.pop("mag_ratios"), dtype=torch.float32)
    if ratios.ndim != 1 or len(ratios) == 0 or not bool(torch.isfinite(ratios).all() and (ratios > 0).all()):
        raise PeerError("peer magcache", "mag_ratios", ratios.tolist(), "one finite positive ratio per step")
    # num_inference_steps is where MagCache resets its step counter: it must be the run's steps,
    # which are the calibration's.
    return MagCacheConfig(threshold=float(knob), mag_ratios=ratios, num_inference_steps=len(ratios), **options)


def flux_raw_vision(module, args, kwargs) -> list[torch.Tensor] | None:
    """SeaCache's view of a FLUX call: each sample's latent as (C, 1, H, W), unpacked from the 2x2
    patch tokens on the grid their ``img_ids`` give. diffusers ships this adapter only for Wan and
    Cosmos; SeaCache's generic path asks the caller for it."""
    x, ids = kwargs.get("hidden_states"), kwargs.get("img_ids")
    if x is None and args:
        x = args[0]
    if not torch.is_tensor(x) or x.ndim != 3 or not torch.is_tensor(ids):
        return None
    h, w = latents.grid_of(ids)
    try:
        return list(latents.unpack(x, h, w).unsqueeze(2).unbind(0))
    except ValueError:
        return None


def _seacache(model, knob, options):
    # FLUX's latent view is ours; given none, diffusers picks its own for Wan (and Cosmos), where
    # flux_raw_vision sees 5-D hidden states, returns None, and SeaCache never skips
    if isinstance(model, FluxTransformer2DModel):
        options = {"raw_vision_callback": flux_raw_vision, **options}
    return SeaCacheConfig(threshold=float(knob), **options)


PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer(
            "fbcache",
            "First Block Cache: runs the first block every call and the rest only when the first block's "
            "residual changed by more than threshold (relative mean abs) since the last full call",
            "threshold", "a number >= 0 (larger skips more)", lambda v: _number(v) and v >= 0, _fbc,
            FirstBlockCacheConfig,
        ),
        Peer(
            "taylorseer",
            "TaylorSeer lite: a full call every cache_interval steps after the first disable_cache_before_step; "
            "between them every block is skipped and the final projection is predicted by a Taylor series in the step",
            "cache_interval", "an integer >= 1 (larger skips more)", lambda v: _integer(v) and v >= 1,
            _taylorseer(lite=True), TaylorSeerCacheConfig, ("use_lite_mode",),
        ),
        Peer(
            "taylorseer-attn",
            "TaylorSeer as diffusers applies it by default: only the attention modules are predicted between full "
            "calls, every block's MLP and norms still run, so a skipped call still costs part of a full one",
            "cache_interval", "an integer >= 1 (larger skips more)", lambda v: _integer(v) and v >= 1,
            _taylorseer(lite=False), TaylorSeerCacheConfig, ("use_lite_mode",),
        ),
        Peer(
            "magcache",
            "MagCache: skips the blocks (adding the last residual) while the error accumulated from the calibrated "
            "per-step residual magnitude ratios stays under threshold, at most max_skip_steps in a row",
            "threshold", "a number >= 0 (larger skips more)", lambda v: _number(v) and v >= 0, _magcache,
            MagCacheConfig, ("calibrate", "num_inference_steps"),
        ),
        Peer(
            "seacache",
            "SeaCache: skips the blocks (adding the last residual, extrapolated to first order) while the accumulated "
            "relative change of a spectrally filtered input latent stays under threshold, at most "
            "max_consecutive_cached in a row; first and last step always full",
            "threshold", "a number >= 0 (larger skips more)", lambda v: _number(v) and v >= 0, _seacache,
            SeaCacheConfig,
        ),
    )
}


# -- the denoiser ---------------------------------------------------------------------------------


def _model(pipe) -> CacheMixin:
    model = getattr(pipe, "transformer", None)
    if not isinstance(model, CacheMixin):
        raise PeerError(
            f"pipeline {type(pipe).__name__}", "transformer", type(model).__name__,
            "a diffusers transformer with CacheMixin (enable_cache / disable_cache)",
        )
    return model


def _last_block(model) -> torch.nn.Module:
    """The tail block, found as diffusers' block caches find it (the last block of the last block list)."""
    blocks = [
        b for name, child in model.named_children()
        if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(child, torch.nn.ModuleList) for b in child
    ]
    if not blocks:
        raise PeerError(f"model {type(model).__name__}", "blocks", None, "a list of transformer blocks")
    return blocks[-1]


def _probe(model) -> torch.nn.Module:
    """A leaf module inside the tail block's attention: it runs exactly when that attention is computed.

    A hook on the block itself would fire on skipped calls too (the caches skip inside its forward),
    and a leaf outside attention (an MLP) still runs on taylorseer-attn's predicted calls.
    """
    leaves = [(n, m) for n, m in _last_block(model).named_modules() if n and not any(True for _ in m.children())]
    attn = [m for n, m in leaves if n.split(".")[0].startswith("attn")]
    if not attn:
        raise PeerError(f"model {type(model).__name__}", "tail block", None, "an attention submodule named attn*")
    return attn[0]


def _refuse_busy(model, what: str) -> None:
    if model.is_cache_enabled:
        raise PeerError(what, "transformer cache", type(model._cache_config).__name__,
                        "none: disable the enabled cache first")
    # Both work, but a ZEUS-skipped step never reaches the blocks, so the caches count calls that are
    # not steps (MagCache's ratios and TaylorSeer's Taylor offsets go out of step): a confounded peer.
    if HookRegistry.check_if_exists_or_initialize(model).get_hook(_ZEUS_HOOK) is not None:
        raise PeerError(what, "zeustune schedule", "enabled", "none: zeustune.disable(pipe) first")


# -- enable / disable -----------------------------------------------------------------------------


def _peer(name: str) -> Peer:
    if name not in PEERS:
        raise PeerError("peer", "name", name, f"one of {', '.join(PEERS)}")
    return PEERS[name]


def enable(pipe, name: str, knob, **options):
    """Enable a peer cache on ``pipe.transformer``; returns the diffusers config it used.

    ``options`` are further fields of the peer's diffusers config (e.g. ``max_order=2`` for
    TaylorSeer, ``max_skip_steps=5`` for MagCache); MagCache needs ``mag_ratios`` (from
    :func:`calibrate_magcache`, at the run's step count).
    """
    peer = _peer(name)
    peer.check(knob, options)
    if name == "magcache" and options.get("mag_ratios") is None:
        raise PeerError(f"peer {name}", "mag_ratios", None, "the ratios from calibrate_magcache(pipe, run_once)")
    model = _model(pipe)
    _refuse_busy(model, f"peer {name}")
    config = peer.build(model, knob, dict(options))
    if name == "seacache":
        _add_step_context(pipe, model)
    model.enable_cache(config)
    return config


def _add_step_context(pipe, model) -> None:
    """SeaCache reads the step, sigma and step count from the pipeline's ``cache_context``; Wan's
    pipeline passes them, FLUX's does not, so they are added from the scheduler's position (its
    step index is None until the first step, and the same for both CFG calls of a step)."""
    sched, enter = pipe.scheduler, type(model).cache_context

    def cache_context(name, **kwargs):
        if "step_index" not in kwargs and getattr(sched, "sigmas", None) is not None:
            i = getattr(sched, "step_index", None) or 0
            kwargs.update(step_index=i, sigma=float(sched.sigmas[i]), num_inference_steps=len(sched.timesteps))
        return enter(model, name, **kwargs)

    model.cache_context = cache_context  # an instance attribute: disable() removes it


def _drop_step_context(model) -> None:
    model.__dict__.pop("cache_context", None)


def disable(pipe) -> bool:
    """Remove the transformer's cache: every call is full again. False if none was enabled."""
    model = _model(pipe)
    _drop_step_context(model)
    if not model.is_cache_enabled:
        return False
    model.disable_cache()
    return True


def apply(pipe, name: str, knob, calib_run: Callable[[], Any] | None = None, **options):
    """A context manager: the peer cache is enabled inside and removed on exit.

    Checks the name, knob and options now (ValueError), not on entry. For MagCache without
    ``mag_ratios``, ``calib_run()`` (one full sampling call) calibrates the ratios on entry.
    """
    peer = _peer(name)
    peer.check(knob, options)
    if name == "magcache" and options.get("mag_ratios") is None and calib_run is None:
        raise PeerError(f"peer {name}", "calib_run", None,
                        "a function running one sampling call (or mag_ratios=...): MagCache calibrates on the model")
    return _applied(pipe, name, knob, calib_run, options)


@contextlib.contextmanager
def _applied(pipe, name, knob, calib_run, options):
    if name == "magcache" and options.get("mag_ratios") is None:
        options = {**options, "mag_ratios": calibrate_magcache(pipe, calib_run)}
    config = enable(pipe, name, knob, **options)
    try:
        yield config
    finally:
        disable(pipe)


# -- measurements ---------------------------------------------------------------------------------


def calibrate_magcache(pipe, run_once: Callable[[], Any]) -> torch.Tensor:
    """Per-step residual magnitude ratios of the model, from MagCache's own calibration mode.

    Runs ``run_once()`` with ``MagCacheConfig(calibrate=True)`` (nothing is skipped). diffusers
    records one ratio per step and CFG branch (``mean(|r_k| / |r_{k-1}|)`` over tokens, 1.0 at
    step 0) but only prints them, and drops them at the end of the call; the tail hook's
    calibration step is wrapped here to keep them. Returns a float32 tensor of shape (steps,):
    the mean over branches (MagCacheConfig takes one sequence for all branches) and over the
    pipeline calls ``run_once`` makes, which must all have the same step count.
    """
    model = _model(pipe)
    _refuse_busy(model, "calibrate_magcache")
    model.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=_NEVER))
    series: dict[int, list[float]] = {}  # the state's own lists, by identity: one per branch and call
    try:
        tail = HookRegistry.check_if_exists_or_initialize(_last_block(model)).get_hook(_MAG_CACHE_BLOCK_HOOK)
        step = tail._perform_calibration_step

        def keep(state, residual):
            step(state, residual)
            series.setdefault(id(state.calibration_ratios), state.calibration_ratios)

        tail._perform_calibration_step = keep
        run_once()
    finally:
        model.disable_cache()
    lengths = sorted({len(s) for s in series.values()})
    if len(lengths) != 1:
        raise PeerError("calibrate_magcache", "steps per branch", lengths, "one step count for every branch and call")
    return torch.tensor(list(series.values()), dtype=torch.float32).mean(0)


def count_full_calls(pipe, run_once: Callable[[], Any]) -> int:
    """How many denoiser calls ``run_once()`` computed in full (all CFG branches together).

    A full-step run of tiny-flux (true CFG: two calls a step) gives 2 * steps. Comparable with
    zeustune's ``summary(pipe).denoiser_calls``; a schedule's ``metrics.nfe`` counts one branch.
    Calls at reduced resolution (zeustune's D and P steps: a smaller output) are not full calls;
    the bench prices them by their letters.
    """
    sizes: list[int] = []

    def count(module, args, out):
        sizes.append((out if torch.is_tensor(out) else out[0]).numel())

    handle = _probe(_model(pipe)).register_forward_hook(count)
    try:
        run_once()
    finally:
        handle.remove()
    return sum(1 for n in sizes if n == max(sizes))
