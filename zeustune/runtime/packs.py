"""Packs at run time: what a pipeline call is (its :class:`~zeustune.schedule.pack.Setting`), read at
its first denoiser call, and the speed each request asks for.

The speed lives in a :class:`contextvars.ContextVar`: ``with zeustune.speed(pipe, "4x")`` changes it
for the calls made inside the block by this thread (or asyncio task) only, so requests served by
several threads, one call at a time, each run at their own speed.
"""

from __future__ import annotations

import contextlib
import contextvars
from types import MappingProxyType

from ..schedule.pack import Setting
from . import latents
from .families import Family

#: hook -> the speed asked for by the enclosing ``zeustune.speed`` blocks of this context.
_SPEEDS: contextvars.ContextVar = contextvars.ContextVar("zeustune_speeds", default=MappingProxyType({}))


def asked(hook, default: float | None) -> float | None:
    """The speed this context asks of ``hook``'s pack (its innermost ``speed`` block), else ``default``."""
    return _SPEEDS.get().get(hook, default)


@contextlib.contextmanager
def asking(hook, value: float):
    token = _SPEEDS.set(MappingProxyType({**_SPEEDS.get(), hook: value}))
    try:
        yield
    finally:
        _SPEEDS.reset(token)


def call_setting(pipe, family: Family, sched, steps: int, args: tuple, kwargs: dict) -> Setting:
    """The setting of the call whose first denoiser call this is: scheduler and steps from the
    scheduler, the size from the latent the denoiser gets (FLUX: its token grid), the guidance scale
    the pipeline records, the active LoRA adapters."""
    x = kwargs[family.sample] if family.sample in kwargs else args[0]
    spatial = getattr(pipe, "vae_scale_factor_spatial", None) or getattr(pipe, "vae_scale_factor", None)
    frames = None
    if family.name == "flux":  # packed 2x2 patches: the grid of img_ids
        rows, cols = latents.grid_of(kwargs["img_ids"])
        side = (2 * rows, 2 * cols)
    elif x.ndim == 5:  # video: (B, C, F, H, W)
        side = tuple(x.shape[-2:])
        temporal = getattr(pipe, "vae_scale_factor_temporal", None)
        frames = (x.shape[2] - 1) * temporal + 1 if temporal else None
    else:
        side = tuple(x.shape[-2:])
    height, width = (s * spatial for s in side) if spatial else (None, None)
    guidance = getattr(pipe, "_guidance_scale", None)
    return Setting(type(sched).__name__, steps, height, width, frames,
                   float(guidance) if isinstance(guidance, (int, float)) else None, _adapters(pipe, family))


def _adapters(pipe, family: Family) -> tuple[str, ...]:
    den = getattr(pipe, family.denoiser, None)
    if not getattr(den, "peft_config", None) or not hasattr(pipe, "get_active_adapters"):
        return ()
    return tuple(sorted(pipe.get_active_adapters()))
