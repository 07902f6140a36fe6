"""The schedule layer: what a deployment ships, in plain Python (no torch, no diffusers).

- ``plans``: the per-step letter language (F fresh, E/R/S/L predicted, C forecast, A adaptive,
  D/P reduced resolution), its rules and the plan generators;
- ``format``: the portable schedule file: dataclasses, YAML, versions, validation, presets;
- ``pack``: a model's schedules for several settings and speeds, as a folder, and the choice among them;
- ``shipped``: the folders shipped in the package (presets, spaces, embedded models).

The runtime applies schedules and the search writes them; this layer imports neither.
"""

from .format import (
    Cfg,
    Guidance,
    LoraRef,
    Model,
    Predictor,
    Sampler,
    Schedule,
    ScheduleError,
    find_preset,
    list_presets,
    load,
    preset_dirs,
    user_schedules,
)
from .pack import Pack, PackError
from .plans import Plan, PlanError

__all__ = ["Cfg", "Guidance", "LoraRef", "Model", "Pack", "PackError", "Plan", "PlanError", "Predictor", "Sampler", "Schedule", "ScheduleError",
           "find_preset", "list_presets", "load", "preset_dirs", "user_schedules"]
