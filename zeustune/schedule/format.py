"""The schedule: the portable unit zeustune produces and deployments load.

A schedule names what it was tuned for (model family, scheduler, step count, resolution, guidance),
carries the per-step plan and the predictor settings, and optionally the metrics and provenance of
the search that produced it. It is stored as versioned YAML; loading validates every field and a
bad one is reported with the file, the field, the value and what was expected.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import warnings

import yaml

from . import safeyaml
from .messages import shown
from .plans import CACHING_MODES, FRESH, Plan, PlanError
from .shipped import shipped

SCHEMA_VERSION = 3
#: Versions this zeustune reads. A file is written with the lowest version whose fields it uses,
#: so older readers still take it: 2 added model.loras, sampler.dtype and sampler.call; 3 the C
#: and A letters and their predictor settings; 4 D and P; 5 G; 6 D on a video's frames.
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)
CRITERIA = ("sada", "change")
#: Pipeline families the runtime knows; see zeustune.runtime.families for the pipelines behind them.
FAMILIES = ("flux", "sd3", "sdxl", "sd", "wan")
GUIDANCE_MODES = ("none", "distilled", "cfg", "true_cfg")
TIME_VARIABLES = ("step", "sigma")
CFG_BRANCHES = ("separate", "shared")
#: CFG branch names a schedule may give a plan of its own (the pipelines' cache_context names).
BRANCHES = ("cond", "uncond")
_GATES = re.compile(r"^[ERSC]{1,3}$")  # the predicted letters an adaptive step may use
_TAG = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # fullmatch: a tag becomes a file name
TAG_RULE = "lowercase letters, digits, '.', '_' or '-' (at most 64), starting with a letter or digit"
#: Bounds on what a file may ask of the runtime: steps (one plan letter each), the Chebyshev
#: degree (the C fit keeps degree + 1 latent-sized moments per branch) and the Lagrange anchors
#: (latent-sized, per branch). Far above what any model or method uses.
MAX_STEPS = 10_000
#: The largest image side zeustune takes, in pixels: far above any model's, below a latent that
#: would not fit in memory (a million-pixel side is found before the model loads, not by it).
MAX_SIDE = 16_384
MAX_DEGREE = 16
MAX_LAGRANGE_TERM = 16
#: Where presets are looked up, after any directories in $ZEUSTUNE_SCHEDULES.
BUILTIN_SCHEDULES = shipped("zeustune.schedule", "presets")


class ScheduleError(ValueError):
    """A schedule that is malformed, or does not fit the pipeline it is applied to."""

    def __init__(self, source: str, field: str, value: Any, expected: str):
        self.source, self.field, self.value, self.expected = source, field, value, expected
        super().__init__(f"{source}: {field}: got {shown(value)}, expected {expected}")


class PresetSkippedWarning(UserWarning):
    """A file in a preset directory that cannot be read: preset lookup goes on without it."""


def is_tag(value: Any, longest: int = 64) -> bool:
    """Whether ``value`` follows the tag rule (TAG_RULE), which keeps a name that becomes a file
    or folder name inside its folder; ``longest`` relaxes the length for longer names (studies)."""
    pattern = _TAG if longest == 64 else re.compile(rf"[a-z0-9][a-z0-9._-]{{0,{longest - 1}}}")
    return isinstance(value, str) and pattern.fullmatch(value) is not None


@dataclass(frozen=True)
class LoraRef:
    """A LoRA the schedule was tuned with: its name, the SHA-256 of its weights, its scale."""

    name: str
    sha256: str
    scale: float = 1.0

    @property
    def adapter(self) -> str:
        return adapter_name(self.name, self.sha256)


def adapter_name(name: str, sha256: str) -> str:
    """The adapter name zeustune loads a LoRA under: its name and hash, so a pipeline's adapters
    say which weights they are (compared when a schedule is enabled)."""
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', name)}-{sha256[:8]}"


@dataclass(frozen=True)
class Model:
    family: str
    id: str | None = None
    pipeline: str | None = None
    #: LoRAs loaded while tuning (version 2); () = the base weights.
    loras: tuple[LoraRef, ...] = ()


@dataclass(frozen=True)
class Guidance:
    mode: str = "none"
    scale: float | None = None


@dataclass(frozen=True)
class Sampler:
    scheduler: str
    steps: int
    height: int | None = None
    width: int | None = None
    frames: int | None = None
    guidance: Guidance = field(default_factory=Guidance)
    #: The sigma of each step as tuned, used to resample the plan by sigma position.
    sigmas: tuple[float, ...] | None = None
    #: Version 2: the dtype the model ran in, and the other pipe(...) arguments that change the
    #: output (negative prompt, max_sequence_length, FLUX's distilled scale under true CFG).
    dtype: str | None = None
    call: dict | None = None


@dataclass(frozen=True)
class Predictor:
    """Settings of the predicted steps.

    caching: how L (tail) skips are lettered on flow-matching pipelines (ZEUS caching_mode).
    gamma, time: the S predictor, ``psi_last + gamma * (t - t_last) / (t_last - t_prev) * delta``
        with t the step index or the sigma.
    lagrange_term, lagrange_int: L skips on UNet pipelines extrapolate x0 through the last
        ``lagrange_term`` anchors stored at steps with ``k % lagrange_int == 1``.
    """

    caching: str = "reuse_interp"
    gamma: float = 1.0
    time: str = "step"
    lagrange_term: int = 3
    lagrange_int: int = 6
    #: Version 3. C, the Chebyshev forecast (Spectrum): degree d of T0..Td over the predictors'
    #: time mapped to [-1, 1], ridge lambda, and the blend w of the forecast with S's linear step.
    degree: int = 4
    ridge: float = 0.1
    blend: float = 0.5
    #: A, adaptive steps: the criterion ("sada" or "change"), its threshold, the most consecutive
    #: predicted steps, and the gates of skip positions 1, 2, 3.. of a run (plans.gate_for).
    criterion: str = "sada"
    threshold: float = 0.0
    max_run: int = 4
    gates: str = "ERE"
    #: Version 4. D and P, steps at reduced resolution: the latent side's factor (0.5 or 0.75).
    reduced: float = 0.5
    #: Version 5. G, probe-gated steps: the signal ("residual": the first block's residual;
    #: "modulated": its modulated input), the relative-change threshold of each equal segment of
    #: the steps, and what a skip returns ("gate": the gate's psi; "tail": the step's head output
    #: plus the last tail residual, R, or its ZEUS extrapolation, E). max_run and gates as for A.
    probe: str = "residual"
    probe_thresholds: tuple = (0.1,)
    probe_output: str = "gate"
    #: Version 6. What a D step reduces on a video latent: "side" (height and width), "frames" or
    #: "both", each by ``reduced``.
    reduced_axes: str = "side"


#: Predictor fields added in version 3 (left out of older files).
_PREDICTOR_V3 = ("degree", "ridge", "blend", "criterion", "threshold", "max_run", "gates")
#: ... and in version 4.
_PREDICTOR_V4 = ("reduced",)
#: ... and in version 5.
_PREDICTOR_V5 = ("probe", "probe_thresholds", "probe_output")
#: ... and in version 6.
_PREDICTOR_V6 = ("reduced_axes",)
PROBES = ("residual", "modulated")
PROBE_OUTPUTS = ("gate", "tail")
#: Segments of probe thresholds a schedule may have (one per equal part of the steps).
MAX_PROBE_SEGMENTS = 8
#: The reduced-resolution factors a D step takes.
REDUCED_FACTORS = (0.5, 0.75)
#: What a D step may reduce: the latent's side, its frames (video) or both.
REDUCED_AXES = ("side", "frames", "both")


def reduced_key(factor: float, axes: str = "side") -> str:
    """A D step's name in cost models and benches: the factor for the side ("0.5"), else axes and
    factor ("frames:0.5", "both:0.75")."""
    return f"{factor:g}" if axes == "side" else f"{axes}:{factor:g}"


def parse_reduced_key(key: str | float) -> tuple[float, str]:
    """(factor, axes) of :func:`reduced_key`'s name (a bare number: the side)."""
    axes, _, factor = str(key).rpartition(":")
    return float(factor), axes or "side"


#: Every D step's name.
REDUCED_KEYS = tuple(reduced_key(f, a) for a in REDUCED_AXES for f in REDUCED_FACTORS)


@dataclass(frozen=True)
class Cfg:
    #: "separate": one history per CFG branch. "shared": one history for all calls, as ZEUS's
    #: reference code does (a known defect on two-call pipelines; kept only to compare against).
    branches: str = "separate"


@dataclass(frozen=True)
class Schedule:
    tag: str
    model: Model
    sampler: Sampler
    plan: Plan
    predictor: Predictor = field(default_factory=Predictor)
    cfg: Cfg = field(default_factory=Cfg)
    #: Version 3: plans of their own for CFG branches by name (``uncond``, ``cond``) on pipelines
    #: that call the denoiser once per branch; other branches follow ``plan``.
    branch_plans: dict = field(default_factory=dict)
    description: str = ""
    metrics: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    # -- derived ---------------------------------------------------------------------------
    @property
    def nfe(self) -> int:
        return self.plan.nfe

    @property
    def steps(self) -> int:
        return len(self.plan)

    def with_plan(self, plan: Plan | str, **changes) -> Schedule:
        """This schedule with another plan (and no branch plans unless given)."""
        plan = plan if isinstance(plan, Plan) else Plan(plan)
        sampler = replace(self.sampler, steps=len(plan), sigmas=changes.pop("sigmas", None))
        changes.setdefault("branch_plans", {})
        return replace(self, plan=plan, sampler=sampler, **changes)

    def plan_for(self, branch: str) -> Plan:
        """The plan a CFG branch follows."""
        return self.branch_plans.get(branch, self.plan)

    # -- serialisation ---------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        d = Predictor()
        letters = self.plan.steps + "".join(p.steps for p in self.branch_plans.values())
        if any(getattr(self.predictor, k) != getattr(d, k) for k in _PREDICTOR_V6):
            return 6
        if "G" in letters or any(getattr(self.predictor, k) != getattr(d, k) for k in _PREDICTOR_V5):
            return 5
        if "D" in letters or "P" in letters or self.predictor.reduced != d.reduced:
            return 4
        v3 = bool(self.branch_plans) or any(c in letters for c in "CA") or any(
            getattr(self.predictor, k) != getattr(d, k) for k in _PREDICTOR_V3)
        if v3:
            return 3
        v2 = self.model.loras or self.sampler.dtype is not None or self.sampler.call is not None
        return 2 if v2 else 1

    def to_dict(self) -> dict:
        sampler = {k: v for k, v in asdict(self.sampler).items() if v is not None}
        if self.sampler.sigmas is not None:
            sampler["sigmas"] = [float(s) for s in self.sampler.sigmas]
        sampler["guidance"] = {k: v for k, v in asdict(self.sampler.guidance).items() if v is not None}
        model = {k: v for k, v in asdict(self.model).items() if v is not None and k != "loras"}
        if self.model.loras:
            model["loras"] = [asdict(x) for x in self.model.loras]
        version = self.schema_version
        predictor = {k: v for k, v in asdict(self.predictor).items()
                     if (version >= 3 or k not in _PREDICTOR_V3) and (version >= 4 or k not in _PREDICTOR_V4)
                     and (version >= 5 or k not in _PREDICTOR_V5) and (version >= 6 or k not in _PREDICTOR_V6)}
        if "probe_thresholds" in predictor:
            predictor["probe_thresholds"] = [float(v) for v in self.predictor.probe_thresholds]
        out = {
            "zeustune_schedule": version,
            "tag": self.tag,
            "description": self.description,
            "model": model,
            "sampler": sampler,
            "plan": str(self.plan),
            "predictor": predictor,
            "cfg": asdict(self.cfg),
        }
        if self.branch_plans:
            out["branch_plans"] = {name: str(p) for name, p in self.branch_plans.items()}
        if self.metrics:
            out["metrics"] = self.metrics
        if self.provenance:
            out["provenance"] = self.provenance
        if not self.description:
            del out["description"]
        return out

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, width=200))
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written schedule
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Schedule:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ScheduleError(source, "file", source, "an existing schedule file")
        return cls.from_dict(safeyaml.read(path, ScheduleError), source=source)

    @classmethod
    def from_preset(cls, name: str, family: str | None = None) -> Schedule:
        """A schedule shipped in schedules/ (or in a directory of $ZEUSTUNE_SCHEDULES), by
        ``family/stem``, file stem or tag; ``family`` settles a name several families ship."""
        return cls.load(find_preset(name, family))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<schedule>") -> Schedule:
        return _parse(data, source)


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------


def user_dir() -> Path:
    """zeustune's own folder for what a user produces: ``$ZEUSTUNE_HOME``, else
    ``$XDG_DATA_HOME/zeustune``, else ``~/.local/share/zeustune``."""
    if os.environ.get("ZEUSTUNE_HOME"):
        return Path(os.environ["ZEUSTUNE_HOME"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data).expanduser() / "zeustune"


def user_schedules() -> Path:
    """Where ``zeustune search`` and ``zeustune export`` write schedules by default
    (``<user_dir>/schedules/<model>/<tag>.yaml``); preset lookup searches it before the shipped ones."""
    return user_dir() / "schedules"


def preset_dirs() -> list[Path]:
    """Preset directories, first wins: $ZEUSTUNE_SCHEDULES, the user's schedules, the shipped ones."""
    extra = [Path(p) for p in os.environ.get("ZEUSTUNE_SCHEDULES", "").split(os.pathsep) if p]
    return [*extra, user_schedules(), BUILTIN_SCHEDULES]


def list_presets() -> dict[str, Path]:
    """Preset name (``family/stem``) -> file, first directory wins."""
    found: dict[str, Path] = {}
    for d in preset_dirs():
        for p in sorted(d.glob("*/*.yaml")):
            found.setdefault(f"{p.parent.name}/{p.stem}", p)
    return found


def find_preset(name: str, family: str | None = None) -> Path:
    """A preset by ``family/stem``, stem or tag. A bare stem or tag that several directories
    hold resolves to the first directory's (a just-tuned ``tuned-3x`` wins over the shipped one);
    several matches within that directory are ambiguous. ``family`` (the pipeline's, when a preset
    is enabled on one) looks only at presets of that family, where any directory has one."""
    presets = list_presets()
    if name in presets:
        return presets[name]
    found: list[list[Path]] = []  # per directory, in order, where the name matches
    for d in preset_dirs():
        here = [p for p in presets.values() if p.parent.parent == d]
        matches = [p for p in here if p.stem == name]
        if not matches:  # files are named by tag, but a hand-written one need not be
            matches = [p for p in here if _tag_of(p) == name]
        if matches:
            found.append(matches)
    ours = [m for ms in found for m in ms if family is not None and _model_family(m) == family]
    if ours:  # the first directory holding one of the pipeline's family
        matches = [m for m in next(ms for ms in found if ours[0] in ms) if m in ours]
    else:
        matches = found[0] if found else []
    if len(matches) == 1:
        return matches[0]
    expected = (
        f"one of: {', '.join(sorted(presets))}" if presets else f"a preset in {', '.join(map(str, preset_dirs()))}"
    )
    if len(matches) > 1:
        expected = f"a unique name; qualify it with its family: {', '.join(str(m) for m in matches)}"
    raise ScheduleError("presets", "name", name, expected)


def _model_family(path: Path) -> str | None:
    try:
        data = safeyaml.read(path, ScheduleError)
    except ScheduleError:
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model.get("family") if isinstance(model, dict) else None


def _tag_of(path: Path) -> str | None:
    try:
        data = safeyaml.read(path, ScheduleError)
    except ScheduleError as e:  # one bad file must not hide every other preset
        warnings.warn(f"{e}; skipped", PresetSkippedWarning, stacklevel=2)
        return None
    return data.get("tag") if isinstance(data, dict) else None


def load(spec: str | os.PathLike | Schedule, family: str | None = None) -> Schedule:
    """A Schedule, a path to a YAML file, or a preset name (``family``: see :func:`find_preset`)."""
    if isinstance(spec, Schedule):
        return spec
    p = Path(spec)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return Schedule.load(p)
    return Schedule.from_preset(str(spec), family)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


class _Reader:
    """Walks a mapping, checking each field and naming it (dotted) when it is wrong."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, field: str, value: Any, expected: str):
        raise ScheduleError(self.source, field, value, expected)

    def mapping(self, data: Any, name: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(data, dict):
            self.fail(name or "document", data, "a mapping")
        for key in data:
            if key not in allowed:
                self.fail(f"{name}.{key}" if name else str(key), key, f"one of the keys {', '.join(allowed)}")
        for key in required:
            if key not in data:
                self.fail(f"{name}.{key}" if name else key, None, "a value: this field is required")
        return data

    def _field(self, data: dict, key: str, prefix: str, optional: bool) -> tuple[str, Any]:
        """The field's dotted name and value; None for a missing (or null) optional one, a missing
        required one fails."""
        name = f"{prefix}.{key}" if prefix else key
        if key not in data or data[key] is None:
            if not optional:
                self.fail(name, None, "a value: this field is required")
            return name, None
        return name, data[key]

    def string(self, data: dict, key: str, prefix: str, choices=None, pattern=None, optional=False):
        name, v = self._field(data, key, prefix, optional)
        if v is None:
            return None
        if not isinstance(v, str):
            self.fail(name, v, "a string")
        if choices is not None and v not in choices:
            self.fail(name, v, f"one of {', '.join(choices)}")
        if pattern is not None and not pattern.fullmatch(v):
            self.fail(name, v, TAG_RULE)
        return v

    def integer(self, data: dict, key: str, prefix: str, minimum: int, optional=False, default=None, maximum=None):
        name, v = self._field(data, key, prefix, optional)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum or (maximum is not None and v > maximum):
            self.fail(name, v, f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else ""))
        return v

    def number(self, data: dict, key: str, prefix: str, positive=True, optional=False, default=None):
        name, v = self._field(data, key, prefix, optional)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
            self.fail(name, v, "a positive finite number" if positive else "a finite number")
        return float(v)


def _call_args(r: _Reader, call: Any) -> dict | None:
    """sampler.call: pipe(...) argument names to plain values (strings, numbers, booleans)."""
    if call is None:
        return None
    r.mapping(call, "sampler.call", tuple(call) if isinstance(call, dict) else ())
    for key, value in call.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, (str, int, float, bool))):
            r.fail(f"sampler.call.{key}", value, "a string, number or boolean")
    return dict(call)


def _section(data: dict, key: str):
    """An optional section: absent or null means defaults; anything else must be a mapping."""
    value = data.get(key)
    return {} if value is None else value


def _thresholds(r: _Reader, value) -> tuple:
    """predictor.probe_thresholds: 1 to MAX_PROBE_SEGMENTS finite numbers >= 0."""
    ok = (isinstance(value, (list, tuple)) and 1 <= len(value) <= MAX_PROBE_SEGMENTS
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in value))
    if not ok:
        r.fail("predictor.probe_thresholds", value,
               f"a list of 1 to {MAX_PROBE_SEGMENTS} finite numbers >= 0 (one per equal segment of the steps)")
    return tuple(float(v) for v in value)


def _keys(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _plan(r: _Reader, where: str, text: str, steps: int) -> Plan:
    """The plan of field ``where``: valid letters, one per step, and at least one fresh step (the
    speed and error figures are per fresh call; a plan without one has nothing to predict from)."""
    try:
        plan = Plan(text)
    except PlanError as e:  # its reason, not its whole message again (which repeats the plan)
        if e.field == "plan":
            r.fail(where, text, e.expected)
        position = where + e.field[len("plan"):] if e.field and e.field.startswith("plan[") else e.field
        r.fail(where, text, f"{position}: got {shown(e.value)}, expected {e.expected}" if e.field else str(e))
    if len(plan) != steps:
        r.fail(where, text, f"one letter per step: {steps} letters (sampler.steps), not {len(plan)}")
    if FRESH not in plan.steps:
        r.fail(where, text, "at least one F step (a full denoiser call)")
    return plan


def _parse(data: Any, source: str) -> Schedule:
    r = _Reader(source)
    top = ("zeustune_schedule", *_keys(Schedule))
    r.mapping(data, "", top, required=("zeustune_schedule", "tag", "model", "sampler", "plan"))
    version = data["zeustune_schedule"]
    if isinstance(version, bool) or not isinstance(version, int) or version not in READABLE_VERSIONS:
        r.fail("zeustune_schedule", data["zeustune_schedule"],
               f"{' or '.join(map(str, READABLE_VERSIONS))} (the schema versions this zeustune reads)")
    tag = r.string(data, "tag", "", pattern=_TAG)
    description = data.get("description") or ""
    if not isinstance(description, str):
        r.fail("description", description, "a string")

    m = r.mapping(data["model"], "model", _keys(Model), required=("family",))
    v2 = version >= 2
    loras = m.get("loras") or []
    if loras and not v2:
        r.fail("model.loras", loras, "zeustune_schedule: 2 or later for this field")
    if not isinstance(loras, list):
        r.fail("model.loras", loras, "a list of {name, sha256, scale}")
    refs = []
    for i, entry in enumerate(loras):
        where = f"model.loras[{i}]"
        e = r.mapping(entry, where, _keys(LoraRef), required=("name", "sha256"))
        sha = r.string(e, "sha256", where)
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            r.fail(f"{where}.sha256", sha, "64 lowercase hex digits (the SHA-256 of the LoRA's weights)")
        refs.append(LoraRef(r.string(e, "name", where), sha, r.number(e, "scale", where, positive=False, optional=True, default=1.0)))
    model = Model(
        family=r.string(m, "family", "model", choices=FAMILIES),
        id=r.string(m, "id", "model", optional=True),
        pipeline=r.string(m, "pipeline", "model", optional=True),
        loras=tuple(refs),
    )

    s = r.mapping(data["sampler"], "sampler", _keys(Sampler), required=("scheduler", "steps"))
    g = r.mapping(_section(s, "guidance"), "sampler.guidance", _keys(Guidance))
    guidance = Guidance(
        mode=r.string(g, "mode", "sampler.guidance", choices=GUIDANCE_MODES, optional=True) or "none",
        scale=r.number(g, "scale", "sampler.guidance", optional=True),
    )
    steps = r.integer(s, "steps", "sampler", minimum=1, maximum=MAX_STEPS)
    sigmas = s.get("sigmas")
    if sigmas is not None:
        ok = (
            isinstance(sigmas, list)
            and len(sigmas) == steps
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in sigmas)
        )
        if not ok:
            r.fail("sampler.sigmas", sigmas, f"a list of {steps} finite numbers, one per step")
        sigmas = tuple(float(x) for x in sigmas)
    sampler = Sampler(
        scheduler=r.string(s, "scheduler", "sampler"),
        steps=steps,
        height=r.integer(s, "height", "sampler", minimum=1, optional=True),
        width=r.integer(s, "width", "sampler", minimum=1, optional=True),
        frames=r.integer(s, "frames", "sampler", minimum=1, optional=True),
        guidance=guidance,
        sigmas=sigmas,
        dtype=r.string(s, "dtype", "sampler", choices=("bfloat16", "float16", "float32"), optional=True),
        call=_call_args(r, s.get("call")),
    )
    if not v2:
        for key in ("dtype", "call"):
            if s.get(key) is not None:
                r.fail(f"sampler.{key}", s[key], "zeustune_schedule: 2 or later for this field")

    if not isinstance(data["plan"], str):
        r.fail("plan", data["plan"], "a string of step letters")
    plan_text = "".join(data["plan"].split())  # long plans may be wrapped in the file
    plan = _plan(r, "plan", plan_text, steps)

    p = r.mapping(_section(data, "predictor"), "predictor", _keys(Predictor))
    d = Predictor()
    predictor = Predictor(
        caching=r.string(p, "caching", "predictor", choices=CACHING_MODES, optional=True) or d.caching,
        gamma=r.number(p, "gamma", "predictor", optional=True, default=d.gamma),
        time=r.string(p, "time", "predictor", choices=TIME_VARIABLES, optional=True) or d.time,
        lagrange_term=r.integer(p, "lagrange_term", "predictor", minimum=1, optional=True, default=d.lagrange_term,
                                maximum=MAX_LAGRANGE_TERM),
        lagrange_int=r.integer(p, "lagrange_int", "predictor", minimum=1, optional=True, default=d.lagrange_int),
        degree=r.integer(p, "degree", "predictor", minimum=0, optional=True, default=d.degree, maximum=MAX_DEGREE),
        ridge=r.number(p, "ridge", "predictor", positive=False, optional=True, default=d.ridge),
        blend=r.number(p, "blend", "predictor", positive=False, optional=True, default=d.blend),
        criterion=r.string(p, "criterion", "predictor", choices=CRITERIA, optional=True) or d.criterion,
        threshold=r.number(p, "threshold", "predictor", positive=False, optional=True, default=d.threshold),
        max_run=r.integer(p, "max_run", "predictor", minimum=1, optional=True, default=d.max_run),
        gates=r.string(p, "gates", "predictor", optional=True) or d.gates,
        reduced=r.number(p, "reduced", "predictor", optional=True, default=d.reduced),
        probe=r.string(p, "probe", "predictor", choices=PROBES, optional=True) or d.probe,
        probe_thresholds=_thresholds(r, p.get("probe_thresholds", d.probe_thresholds)),
        probe_output=r.string(p, "probe_output", "predictor", choices=PROBE_OUTPUTS, optional=True) or d.probe_output,
        reduced_axes=r.string(p, "reduced_axes", "predictor", choices=REDUCED_AXES, optional=True) or d.reduced_axes,
    )
    if not _GATES.match(predictor.gates):
        r.fail("predictor.gates", predictor.gates, "1 to 3 letters of E, R, S, C (the gates of skip positions 1, 2, 3)")
    if version < 3:
        for key in _PREDICTOR_V3:
            if key in p:
                r.fail(f"predictor.{key}", p[key], "zeustune_schedule: 3 or later for this field")
        for c in "CA":
            if c in plan.steps:
                r.fail("plan", plan_text, f"zeustune_schedule: 3 or later for the letter {c}")
    if version < 4:
        if "reduced" in p:
            r.fail("predictor.reduced", p["reduced"], "zeustune_schedule: 4 or later for this field")
        for c in "DP":
            if c in plan.steps:
                r.fail("plan", plan_text, f"zeustune_schedule: 4 or later for the letter {c}")
    if version < 5:
        for key in _PREDICTOR_V5:
            if key in p:
                r.fail(f"predictor.{key}", p[key], "zeustune_schedule: 5 or later for this field")
        if "G" in plan.steps:
            r.fail("plan", plan_text, "zeustune_schedule: 5 or later for the letter G")
    if version < 6:
        for key in _PREDICTOR_V6:
            if key in p:
                r.fail(f"predictor.{key}", p[key], "zeustune_schedule: 6 or later for this field")
    if predictor.probe_output == "tail" and not set(predictor.gates) <= set("ER"):
        r.fail("predictor.gates", predictor.gates, "letters of E and R with probe_output: tail (the tail residual is "
               "reused or extrapolated)")
    if predictor.reduced not in REDUCED_FACTORS:
        r.fail("predictor.reduced", predictor.reduced, f"one of {', '.join(map(str, REDUCED_FACTORS))}")
    if predictor.ridge < 0:
        r.fail("predictor.ridge", predictor.ridge, "a number >= 0")
    if not 0 <= predictor.blend <= 1:
        r.fail("predictor.blend", predictor.blend, "a number in [0, 1]")
    branch_plans = {}
    bp = r.mapping(_section(data, "branch_plans"), "branch_plans", BRANCHES)
    if bp and version < 3:
        r.fail("branch_plans", bp, "zeustune_schedule: 3 or later for this field")
    for name, text in bp.items():
        where = f"branch_plans.{name}"
        if not isinstance(text, str):
            r.fail(where, text, "a string of step letters")
        branch_plans[name] = _plan(r, where, "".join(text.split()), steps)
    c = r.mapping(_section(data, "cfg"), "cfg", _keys(Cfg))
    cfg = Cfg(branches=r.string(c, "branches", "cfg", choices=CFG_BRANCHES, optional=True) or Cfg.branches)

    for key in ("metrics", "provenance"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            r.fail(key, data[key], "a mapping")
    return Schedule(
        tag=tag,
        model=model,
        sampler=sampler,
        plan=plan,
        predictor=predictor,
        cfg=cfg,
        branch_plans=branch_plans,
        description=description,
        metrics=data.get("metrics") or {},
        provenance=data.get("provenance") or {},
    )
