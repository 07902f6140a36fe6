"""The runtime sampler: apply a schedule to a diffusers pipeline.

Imports torch, diffusers and pyyaml only (never the search), so deployments stay light.

>>> import zeustune
>>> zeustune.enable(pipe, "flux/zeus-flux-demo")      # doctest: +SKIP
>>> image = pipe(prompt, num_inference_steps=50).images[0]  # doctest: +SKIP
>>> print(zeustune.summary(pipe))                     # doctest: +SKIP

A pack (the schedules of one model at several settings and speeds) chooses per call:

>>> zeustune.enable(pipe, "my-model/zeustune", speed="3x")  # doctest: +SKIP
>>> with zeustune.speed(pipe, "4x"):                         # doctest: +SKIP
...     image = pipe(prompt, num_inference_steps=20).images[0]
"""

from __future__ import annotations

import contextlib
import os
import warnings

from diffusers.hooks import HookRegistry

from ..schedule.format import Schedule, ScheduleError, load
from ..schedule.pack import FOLDER, Pack, PackError, is_pack, speed_label
from . import packs
from .families import FAMILIES, UnsupportedPipelineError, detect
from .hook import FALLBACKS, HOOK_NAME, PackFallbackWarning, RunSummary, ScheduleMismatchError, ZeusHook

__all__ = [
    "FAMILIES",
    "AdapterMismatchWarning",
    "PackFallbackWarning",
    "RunSummary",
    "ScheduleMismatchError",
    "UnsupportedPipelineError",
    "ZeusHook",
    "disable",
    "enable",
    "speed",
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


def enable(pipe, schedule: Schedule | Pack | str | os.PathLike | None = None, *, resample: bool = False,
           speed: str | float | None = None, fallback: str = "resample") -> ZeusHook:
    """Apply a schedule or a pack to a pipeline's denoiser.

    ``schedule``: a Schedule, a YAML path or a preset name; or a :class:`Pack`, a pack folder, or a
    model folder carrying one in ``zeustune/``; None: the pack of the folder the pipeline was loaded
    from. A schedule must be tuned for the pipeline's family; a different scheduler or step count is
    refused unless ``resample=True``, which maps the plan to the call's steps by sigma position.

    A pack chooses, at the start of every call, its entry at ``speed`` (default: the pack's
    ``default_speed``, or its one speed; per request: :func:`speed`) tuned for the call's scheduler,
    steps, size, guidance and LoRAs. A call no entry fits runs, with a :class:`PackFallbackWarning`,
    the nearest entry at that speed resampled to it (``fallback="resample"``) or full steps
    (``fallback="full"``); :func:`summary` says which entry each run used and why.
    Enabling again replaces the previous schedule or pack.
    """
    family = detect(pipe)
    pack = _pack_of(pipe, schedule)
    if pack is None:
        if speed is not None:
            raise ScheduleError("enable", "speed", speed, "None with a single schedule (speeds choose among a pack's entries)")
        schedule = load(schedule, family.name)  # a bare preset name several families ship: the pipeline's
        identity, source = schedule.model, f"schedule {schedule.tag}"
    else:
        if resample:
            raise ScheduleError(f"pack {pack.source}", "resample", resample,
                                f"False with a pack (it chooses per call; fallback= says what a call no entry fits runs: "
                                f"{', '.join(FALLBACKS)})")
        if fallback not in FALLBACKS:
            raise ScheduleError(f"pack {pack.source}", "fallback", fallback, f"one of {', '.join(FALLBACKS)}")
        speed = _default_speed(pack, speed)
        identity, source = pack.model, f"pack {pack.source}"
    if identity.family != family.name:
        raise ScheduleMismatchError(
            source, "model.family", identity.family, f"{family.name}, the family of {type(pipe).__name__}"
        )
    if pack is None:
        scheduler = type(pipe.scheduler).__name__
        if scheduler != schedule.sampler.scheduler and not resample:
            raise ScheduleMismatchError(
                source,
                "sampler.scheduler",
                schedule.sampler.scheduler,
                f"{scheduler}, the pipeline's scheduler; pass resample=True to apply it anyway",
            )
        _warn_adapters(pipe, schedule)
        if schedule.predictor.reduced_axes != "side" and family.name != "wan":  # else the first D step fails
            raise ScheduleMismatchError(source, "predictor.reduced_axes", schedule.predictor.reduced_axes,
                                        f"side on {family.name} (frames shrink on video pipelines only)")
    with _offload_preserved(pipe):
        registry = _registry(pipe)
        if registry.get_hook(HOOK_NAME) is not None:
            registry.get_hook(HOOK_NAME).detach()
            registry.remove_hook(HOOK_NAME, recurse=False)
        hook = ZeusHook(pack or schedule, family, pipe, resample=resample, speed=speed, fallback=fallback)
        registry.register_hook(hook, HOOK_NAME)
    return hook


def _pack_of(pipe, spec) -> Pack | None:
    """The pack ``spec`` names (None when it names a schedule); for None, the pipeline folder's."""
    if isinstance(spec, Pack):
        return spec
    if spec is None:
        folder = getattr(pipe, "name_or_path", None)
        if not folder or not is_pack(folder):
            raise ScheduleError("enable", "schedule", None, f"a schedule or a pack; the pipeline's folder ({folder}) "
                                f"has no pack ({FOLDER}/pack.yaml)")
        return Pack.load(folder)
    if isinstance(spec, Schedule) or not os.path.isdir(spec):
        return None
    return Pack.load(spec)


def _default_speed(pack: Pack, speed) -> float:
    if speed is not None:
        return pack.speed(speed)
    if pack.default_speed is not None:
        return pack.default_speed
    if len(pack.speeds) == 1:
        return pack.speeds[0]
    raise PackError(pack.source, "speed", None, f"one of {', '.join(map(speed_label, pack.speeds))} (the pack has no "
                    "default_speed): enable(pipe, pack, speed=...)")


@contextlib.contextmanager
def speed(pipe, value: str | float):
    """Run the calls made inside the block at ``value`` (e.g. ``"4x"``), on this thread or asyncio
    task only; the pipeline's pack stays enabled as it is.

    >>> with zeustune.speed(pipe, "4x"):  # doctest: +SKIP
    ...     image = pipe(prompt).images[0]
    """
    hook = _registry(pipe).get_hook(HOOK_NAME)
    if hook is None or hook.pack is None:
        what = "no schedule" if hook is None else f"the single schedule {hook.schedule.tag}"
        raise ScheduleError("speed", "pipe", type(pipe).__name__, f"a pipeline with a pack enabled (it has {what}): "
                            "zeustune.enable(pipe, pack)")
    with packs.asking(hook, hook.pack.speed(value)):
        yield


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
    """Fresh and predicted calls per CFG branch in the pipeline's last run (None before any run);
    with a pack, the entry it used and why. A pipeline shared by threads: read it before the next
    call starts (under the lock that serialises the calls)."""
    hook = _registry(pipe).get_hook(HOOK_NAME)
    return None if hook is None else hook.last_run
