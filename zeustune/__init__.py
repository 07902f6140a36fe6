"""zeustune: auto-tuned ZEUS skip schedules for diffusion pipelines."""

from .schedule import Pack, PackError, Plan, PlanError, Schedule, ScheduleError, load

__version__ = "0.1.0"

load_preset = Schedule.from_preset

_RUNTIME = {"enable", "disable", "speed", "summary", "PackFallbackWarning", "ScheduleMismatchError", "UnsupportedPipelineError"}


def __getattr__(name):
    # The runtime imports diffusers; load it on first use so schedule tooling stays quick.
    if name in _RUNTIME:
        from . import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'zeustune' has no attribute {name!r}")


__all__ = [
    "Pack",
    "PackError",
    "PackFallbackWarning",
    "Plan",
    "PlanError",
    "Schedule",
    "ScheduleError",
    "ScheduleMismatchError",
    "UnsupportedPipelineError",
    "disable",
    "enable",
    "load",
    "load_preset",
    "speed",
    "summary",
]
