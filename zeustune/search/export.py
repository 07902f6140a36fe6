"""From study trials to portable files: zeustune schedules, and cache-dit step masks."""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path

import optuna
import yaml

from ..schedule.format import Schedule
from .space import Decoded


def decoded_of(trial: optuna.trial.FrozenTrial) -> Decoded:
    return Decoded.from_wire(trial.user_attrs)


def versions() -> dict:
    import diffusers
    import torch

    from .. import __version__

    return {"zeustune": __version__, "diffusers": diffusers.__version__, "torch": str(torch.__version__),
            "optuna": optuna.__version__, "python": platform.python_version()}


def tag_for(budget: float) -> str:
    return f"tuned-{budget:g}x"


def build(template: dict, trial: optuna.trial.FrozenTrial, tag: str, metrics: dict, provenance: dict) -> Schedule:
    """The schedule of a trial, on the study's template (model, sampler), with metrics and provenance."""
    from .evaluator import schedule_of

    base = Schedule.from_dict(template, source="study template")
    d = decoded_of(trial)
    return schedule_of(base, d, tag, description=f"zeustune search: {provenance.get('study', '')} trial {trial.number}",
                       metrics=metrics, provenance=provenance)


def provenance(study: optuna.Study, trial: optuna.trial.FrozenTrial, storage: str) -> dict:
    ua = study.user_attrs
    return {
        **versions(),
        "study": study.study_name,
        "storage": _redact(storage),
        "trial": trial.number,
        "stage": trial.user_attrs.get("stage"),
        "generator": trial.params.get("generator", trial.user_attrs.get("stage")),
        "params": dict(trial.params),
        **({"refined_from_trial": trial.user_attrs["parent"]} if "parent" in trial.user_attrs else {}),
        "space": ua.get("space"),
        "space_sha256": ua.get("space_sha256"),
        "prompts": ua.get("prompts"),
        "prompts_sha256": ua.get("prompts_sha256"),
        "seed": ua.get("seed"),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _redact(url: str) -> str:
    """Drop a password from a database URL before it goes into a shipped file."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def to_cache_dit(schedule: Schedule) -> dict:
    """A cache-dit config (``cache_dit.load_configs``) with the plan's fresh mask as a static
    steps_computation_mask (1 = compute). cache-dit reuses cached block residuals on masked
    steps: it has no E/S extrapolation, so its quality differs from the zeustune runtime's."""
    if schedule.plan.adaptive or schedule.branch_plans:
        what = "steps decided at run time (A, G)" if schedule.plan.adaptive else "a plan of its own for a CFG branch"
        raise ValueError(f"--to cache-dit: schedule {schedule.tag!r} has {what}, which one static cache-dit mask cannot "
                         "express; expected fixed fresh steps shared by every branch")
    mask = [1 if f else 0 for f in schedule.plan.fresh_mask]
    return {
        "cache_config": {
            "num_inference_steps": schedule.steps,
            "max_warmup_steps": 0,
            "max_cached_steps": -1,
            "max_continuous_cached_steps": schedule.plan.max_run,
            "steps_computation_mask": mask,
            "steps_computation_policy": "static",
        }
    }


def write_cache_dit(schedule: Schedule, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    head = (f"# cache-dit config exported by zeustune from schedule {schedule.tag!r}: {schedule.nfe}/{schedule.steps} "
            f"steps computed.\n# Plan: {schedule.plan}\n# Use: cache_dit.enable_cache(pipe, **cache_dit.load_configs(path))\n")
    path.write_text(head + yaml.safe_dump(to_cache_dit(schedule), sort_keys=False, default_flow_style=None, width=200))
    return path
