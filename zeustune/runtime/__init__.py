"""The runtime sampler: apply a schedule to a diffusers pipeline.

Imports torch, diffusers and pyyaml only (never the search), so deployments stay light.

>>> import zeustune
>>> zeustune.enable(pipe, "flux/zeus-flux-demo")      # doctest: +SKIP
>>> image = pipe(prompt, num_inference_steps=50).images[0]  # doctest: +SKIP
>>> print(zeustune.summary(pipe))                     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import warnings

from diffusers.hooks import HookRegistry

from ..schedule.format import Schedule, load
from .families import FAMILIES, UnsupportedPipelineError, detect
from .hook import HOOK_NAME, RunSummary, ScheduleMismatchError, ZeusHook

__all__ = [
    "FAMILIES",
    "AdapterMismatchWarning",
    "RunSummary",
    "ScheduleMismatchError",
    "UnsupportedPipelineError",
    "ZeusHook",
    "disable",
    "enable",
    "summary",
]


@contextlib.contextmanager
def _offload_preserved(pipe):
    """Take accelerate's model-offload hooks off while our hook is added or removed.

    accelerate restores a module's original forward when it removes its hooks (which diffusers
    does on every pipeline call), dropping any wrapper added after it; with our hook installed
    first, accelerate wraps it and both survive.
    """
    device = getattr(pipe, "_offload_device", None)
    if not getattr(pipe, "_all_hooks", None):
        yield
        return
    pipe.remove_all_hooks()
    try:
        yield
    finally:
        pipe.enable_model_cpu_offload(device=device)


def _registry(pipe):
    return HookRegistry.check_if_exists_or_initialize(getattr(pipe, detect(pipe).denoiser))


def enable(pipe, schedule: Schedule | str | os.PathLike, *, resample: bool = False) -> ZeusHook:
    """Apply a schedule (object, YAML path or preset name) to a pipeline's denoiser.

    The schedule must be tuned for the pipeline's family; a different scheduler or step count is
    refused unless ``resample=True``, which maps the plan to the call's steps by sigma position.
    Enabling again replaces the previous schedule.
    """
    schedule = load(schedule)
    family = detect(pipe)
    source = f"schedule {schedule.tag}"
    if schedule.model.family != family.name:
        raise ScheduleMismatchError(
            source, "model.family", schedule.model.family, f"{family.name}, the family of {type(pipe).__name__}"
        )
    scheduler = type(pipe.scheduler).__name__
    if scheduler != schedule.sampler.scheduler and not resample:
        raise ScheduleMismatchError(
            source,
            "sampler.scheduler",
            schedule.sampler.scheduler,
            f"{scheduler}, the pipeline's scheduler; pass resample=True to apply it anyway",
        )
    _warn_adapters(pipe, schedule)
    with _offload_preserved(pipe):
        registry = _registry(pipe)
        if registry.get_hook(HOOK_NAME) is not None:
            registry.get_hook(HOOK_NAME).detach()
            registry.remove_hook(HOOK_NAME, recurse=False)
        hook = ZeusHook(schedule, family, pipe, resample=resample)
        registry.register_hook(hook, HOOK_NAME)
    return hook


class AdapterMismatchWarning(UserWarning):
    """The pipeline's active LoRA adapters differ from the ones the schedule was tuned with."""


def _warn_adapters(pipe, schedule: Schedule) -> None:
    # A LoRA changes the trajectory a plan was tuned on; a schedule still runs, but says so.
    # zeustune loads LoRAs under "<name>-<sha8>" adapter names, which is what is compared.
    tuned = sorted(x.adapter for x in schedule.model.loras)
    active = sorted(pipe.get_active_adapters()) if hasattr(pipe, "get_active_adapters") and _has_peft(pipe) else []
    if tuned != active:
        said = ", ".join(f"{x.name} ({x.sha256[:8]}, scale {x.scale:g})" for x in schedule.model.loras) or "none"
        warnings.warn(f"schedule {schedule.tag} was tuned with LoRAs [{said}]; this pipeline's active adapters are "
                      f"[{', '.join(active) or 'none'}]: the plan may not fit it (retune with --lora)",
                      AdapterMismatchWarning, stacklevel=3)


def _has_peft(pipe) -> bool:
    den = getattr(pipe, detect(pipe).denoiser, None)
    return bool(getattr(den, "peft_config", None))


def disable(pipe) -> bool:
    """Remove the schedule; the pipeline computes every step again. False if none was enabled."""
    registry = _registry(pipe)
    if registry.get_hook(HOOK_NAME) is None:
        return False
    with _offload_preserved(pipe):
        registry.get_hook(HOOK_NAME).detach()
        registry.remove_hook(HOOK_NAME, recurse=False)
    return True


def summary(pipe) -> RunSummary | None:
    """Fresh and predicted calls per CFG branch in the pipeline's last run (None before any run)."""
    hook = _registry(pipe).get_hook(HOOK_NAME)
    return None if hook is None else hook.last_run
