"""The settings a model is sampled at: the user's, not only the registry's.

A schedule is right only for the settings it was tuned at, so ``search``, ``eval``, ``bench`` and
``generate`` take the same flags (:func:`add_arguments`) and turn them into a
:class:`~zeustune.models.ModelSpec` (:func:`spec_from_args`): steps, size, frames, guidance (the
family's own kind: FLUX's distilled scale, CFG, Wan's two-call CFG), FLUX true CFG with a negative
prompt, dtype, prompt files and LoRAs. Flags override the model folder's ``zeustune.yaml``, which
overrides the registry. :func:`identity` is what a schedule records of them and
:func:`mismatches` compares a schedule with the settings it is applied at.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from dataclasses import replace
from typing import Any

from .calling import guidance_kwargs
from .errors import ModelError
from .lookup import resolve
from .spec import DTYPES, ModelSpec, parse_lora
from .prompts import read_prompt_file
from ..schedule.format import MAX_SIDE, MAX_STEPS, LoraRef, Schedule

__all__ = ["add_arguments", "apply", "identity", "mismatches", "settings_digest", "spec_from_args"]


def add_arguments(parser: argparse.ArgumentParser, *, prompt_files: bool = True, several: bool = False) -> None:
    """The settings flags; every default is None: the model's own value. ``several``: ``--steps``
    and ``--size`` take lists (a search for a pack: one study per setting), parsed to lists."""
    g = parser.add_argument_group("settings (default: the model's; see docs/models.md)")
    if several:
        g.add_argument("--steps", type=_counts, metavar="N[,N...]", help="sampling steps; several (20,28,50): a study each, "
                       "written into a pack (docs/packs.md)")
        g.add_argument("--size", type=_sizes, metavar="HxW[,HxW...]", help="image sizes in pixels, e.g. 768x768,1024x1024 "
                       "(instead of --height and --width); several: a study each, written into a pack")
    else:
        g.add_argument("--steps", type=int, help="sampling steps")
    g.add_argument("--height", type=int, help="image height in pixels")
    g.add_argument("--width", type=int, help="image width in pixels")
    g.add_argument("--frames", type=int, help="video frames (Wan)")
    g.add_argument("--guidance", type=float, metavar="SCALE",
                   help="guidance scale as the family has it: FLUX distilled guidance, CFG for SD/SDXL/SD3, Wan's CFG")
    g.add_argument("--true-cfg", type=float, metavar="SCALE", help="FLUX true CFG scale (a second call per step; > 1 turns it on)")
    g.add_argument("--negative-prompt", metavar="TEXT", help="negative prompt (FLUX: with --true-cfg)")
    g.add_argument("--dtype", help=f"model dtype: {', '.join(DTYPES)}")
    g.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]",
                   help="LoRA weights (file or folder) loaded with diffusers' loader; repeatable")
    if prompt_files:
        g.add_argument("--prompts", dest="calib_prompts_file", metavar="FILE", help="calibration prompts, one per line")
        g.add_argument("--heldout-prompts", dest="heldout_prompts_file", metavar="FILE", help="held-out prompts, one per line")


def _counts(text: str) -> list[int]:
    """``"20,28,50"`` -> [20, 28, 50]: integers, each once (their range is apply()'s to check)."""
    try:
        values = [int(p) for p in text.split(",")]
    except ValueError:
        values = []
    if not values or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"got {text!r}, expected step counts separated by commas, each once, like 20,28,50")
    return values


def _sizes(text: str) -> list[tuple[int, int]]:
    """``"768x768,1024x1024"`` -> [(768, 768), (1024, 1024)]: height x width in pixels, each once."""
    try:
        values = [tuple(int(v) for v in p.lower().split("x")) for p in text.split(",")]
    except ValueError:
        values = []
    if not values or any(len(v) != 2 or min(v) <= 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"got {text!r}, expected HEIGHTxWIDTH sizes separated by commas, each once, like "
                                         "768x768,1024x1024")
    return values


def spec_from_args(args: argparse.Namespace) -> ModelSpec:
    """The model's spec at the flags' settings (flags not given keep the model's values). A search's
    ``--steps`` and ``--size`` lists must hold one setting here (several: a pack search, a spec each)."""
    steps, height, width = args.steps, args.height, args.width
    if isinstance(steps, list):
        if len(steps) != 1:
            _fail("--steps", ",".join(map(str, steps)), "one step count here (several: a pack search, a study each)")
        steps = steps[0]
    sizes = getattr(args, "size", None)
    if sizes:
        if len(sizes) != 1 or height is not None or width is not None:
            _fail("--size", ",".join(f"{h}x{w}" for h, w in sizes), "one size, without --height or --width")
        height, width = sizes[0]
    return apply(
        resolve(args.model),
        steps=steps, height=height, width=width, frames=getattr(args, "frames", None),
        guidance=args.guidance, true_cfg=args.true_cfg, negative_prompt=args.negative_prompt, dtype=args.dtype,
        prompts=getattr(args, "calib_prompts_file", None), heldout_prompts=getattr(args, "heldout_prompts_file", None),
        loras=args.lora or (),
    )


def _fail(flag: str, value: Any, expected: str):
    raise ModelError("settings", flag, value, expected)


def apply(spec: ModelSpec, *, steps=None, height=None, width=None, frames=None, guidance=None, true_cfg=None,
          negative_prompt=None, dtype=None, prompts=None, heldout_prompts=None, loras=()) -> ModelSpec:
    """``spec`` with the given settings; None keeps the spec's. Each bad value raises a
    ModelError naming the flag. Sizes are checked against the pipeline when it is loaded."""
    changes: dict[str, Any] = {}
    for flag, key, v in (("--steps", "steps", steps), ("--height", "height", height), ("--width", "width", width)):
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                _fail(flag, v, "a positive integer")
            if key == "steps" and v > MAX_STEPS:
                _fail(flag, v, f"an integer in [1, {MAX_STEPS}]")
            if key in ("height", "width") and v > MAX_SIDE:
                _fail(flag, v, f"an integer in [1, {MAX_SIDE}] pixels")
            changes[key] = v
    if frames is not None:
        if spec.family != "wan":
            _fail("--frames", frames, f"no value: {spec.name} ({spec.family}) generates images")
        if isinstance(frames, bool) or not isinstance(frames, int) or frames <= 0:
            _fail("--frames", frames, "a positive integer")
        changes["frames"] = frames
    for flag, v in (("--guidance", guidance), ("--true-cfg", true_cfg)):
        if v is not None and (not math.isfinite(v) or v < 0):
            _fail(flag, v, "a non-negative number")
    if dtype is not None:
        if dtype not in DTYPES:
            _fail("--dtype", dtype, f"one of {', '.join(DTYPES)}")
        changes["dtype"] = dtype
    call = dict(spec.call_kwargs)
    if spec.family == "flux":
        if (guidance, true_cfg, negative_prompt) != (None, None, None):
            changes["guidance"] = _flux_guidance(spec, call, guidance, true_cfg, negative_prompt)
    else:
        if true_cfg is not None:
            _fail("--true-cfg", true_cfg, f"no value: true CFG is FLUX's; {spec.family} takes its CFG scale as --guidance")
        if guidance is not None:
            mode = ("true_cfg" if spec.family == "wan" else "cfg") if guidance > 1 else "none"
            changes["guidance"] = {"mode": mode, "scale": guidance}
        if negative_prompt is not None:
            call["negative_prompt"] = negative_prompt
    changes["call_kwargs"] = call
    for flag, key, v in (("--prompts", "calib_prompts", prompts), ("--heldout-prompts", "heldout_prompts", heldout_prompts)):
        if v is not None:
            read_prompt_file(v)  # a named error for a missing, empty or unreadable file
            changes[key] = str(v)
    if loras:
        changes["loras"] = tuple(x if not isinstance(x, str) else parse_lora(x) for x in loras)
    return replace(spec, **changes)


def _flux_guidance(spec: ModelSpec, call: dict, guidance, true_cfg, negative_prompt) -> dict:
    """FLUX has two guidances: the distilled scale (a transformer input) and true CFG (a second
    call with the negative prompt). The spec's guidance holds the one that costs calls; under
    true CFG the distilled scale rides in call_kwargs. Updates ``call`` in place."""
    g = spec.guidance
    distilled = g["scale"] if g["mode"] in ("distilled", "none") else call.get("guidance_scale")
    true = g["scale"] if g["mode"] == "true_cfg" else None
    distilled = distilled if guidance is None else guidance
    true = true if true_cfg is None else true_cfg
    call.pop("true_cfg_scale", None)  # the guidance sets it; a copy here would override the flag
    if true is not None and true > 1:
        if distilled is not None:
            call["guidance_scale"] = distilled
        if negative_prompt is not None:
            call["negative_prompt"] = negative_prompt
        return {"mode": "true_cfg", "scale": true}
    if negative_prompt is not None:
        _fail("--negative-prompt", negative_prompt, "no value without true CFG: FLUX uses a negative prompt only with "
              "--true-cfg SCALE above 1")
    call.pop("guidance_scale", None)
    call.pop("negative_prompt", None)
    if distilled is None:
        return {"mode": "none", "scale": None}
    return {"mode": "distilled" if distilled > 0 else "none", "scale": distilled}


# --------------------------------------------------------------------------------------------
# What a schedule records, and what it is compared on
# --------------------------------------------------------------------------------------------


def _call(spec: ModelSpec) -> dict:
    """The pipe(...) arguments besides prompt, steps, size and seed that change the output."""
    return {**guidance_kwargs(spec), **spec.call_kwargs}


def identity(spec: ModelSpec) -> dict:
    """Schedule fields recording the settings: for ``Model(loras=)`` and ``Sampler(dtype=, call=)``."""
    return {"loras": tuple(LoraRef(x.name, x.sha256, x.scale) for x in spec.loras),
            "dtype": spec.dtype, "call": _call(spec)}


def settings_digest(spec: ModelSpec) -> str:
    """A short hash of every setting beyond model, steps and size (for study names)."""
    blob = json.dumps({"guidance": spec.guidance, "dtype": spec.dtype, "call": _call(spec), "frames": spec.frames,
                       "loras": [(x.sha256, x.scale) for x in spec.loras]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def mismatches(schedule: Schedule, spec: ModelSpec) -> list[str]:
    """Each setting where ``spec`` differs from what the schedule was tuned at, as
    ``"field: tuned X, here Y"``. Fields a schedule does not record (older files) are not compared;
    steps are the runtime's business (it refuses them, or resamples)."""
    s, out = schedule.sampler, []

    def differ(name, tuned, here):
        if tuned is not None and tuned != here:
            out.append(f"{name}: tuned {tuned!r}, here {here!r}")

    differ("sampler.height", s.height, spec.height)
    differ("sampler.width", s.width, spec.width)
    differ("sampler.frames", s.frames, spec.frames)
    tuned, here = (s.guidance.mode, s.guidance.scale), (spec.guidance["mode"], spec.guidance["scale"])
    if tuned != ("none", None) and tuned != here:  # ("none", None): not recorded
        out.append(f"sampler.guidance: tuned {' '.join(map(str, tuned))}, here {' '.join(map(str, here))}")
    differ("sampler.dtype", s.dtype, spec.dtype)
    differ("sampler.call", s.call, _call(spec) if s.call is not None else None)
    if schedule.schema_version >= 2:
        tuned = [(x.sha256, x.scale) for x in schedule.model.loras]
        if tuned != [(x.sha256, x.scale) for x in spec.loras]:
            out.append(f"model.loras: tuned {_loras(schedule.model.loras)}, here {_loras(spec.loras)}")
    return out


def _loras(loras) -> str:
    return "[" + ", ".join(f"{x.name} {x.sha256[:8]} x{x.scale:g}" for x in loras) + "]" if loras else "none"


def model_slug(spec: ModelSpec) -> str:
    """A file- and study-name-safe name: the short name, or a folder's or hub id's last part."""
    from pathlib import Path

    from .known import MODELS

    if spec.name in MODELS:
        return spec.name
    return Path(spec.source).name if spec.local else spec.source.replace("/", "--")
