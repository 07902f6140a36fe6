"""Search spaces: declarative YAML files that say which plans a search may try, and the decoder
that turns one sampled configuration into a plan.

A space names structured generators (ZEUS's rule and its knobs, periodic segments, Spectrum's
growing gaps, power-spaced fresh steps), the predictor gates per position in a run of skips,
warm-up and tail bounds, and the constraints. Step positions are fractions of the step count so
one file serves 28 and 50 steps; counts are integers. Every configuration a space can produce
decodes into a valid :class:`~zeustune.plans.Plan` by construction: runs longer than
``max_run`` are broken by a fresh step and a skip with fewer than two fresh steps before it
becomes a reuse.

The decoder is pure Python and knows no Optuna: :func:`suggest` draws a configuration through
any object with Optuna's ``suggest_int / suggest_float / suggest_categorical`` methods.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..schedule.plans import FRESH, GATE_POSITIONS, Plan, growing_gaps, listed, zeus
from ..schedule import safeyaml
from ..schedule.format import CRITERIA, FAMILIES, MAX_DEGREE
from ..schedule.messages import shown
from ..schedule.shipped import shipped

SCHEMA_VERSION = 1
GENERATORS = ("zeus", "periodic", "growing_gaps", "spaced", "listed", "adaptive", "probe")
#: Gates per run position (plans.gate_for): skip j of a run uses gate j for j <= 3, later skips
#: cycle gates 2 and 3, so ZEUS's three caching modes are all expressible.
GATES = ("E", "R", "S", "C")
#: Where ``--space NAME`` is looked up, after the current directory.
BUILTIN_SPACES = shipped("zeustune.search", "spaces")
_LAGRANGE_FAMILIES = ("sdxl", "sd")


class SpaceError(ValueError):
    """A search space file that is malformed; names the file, field, value and expectation."""

    def __init__(self, source: str, field: str, value: Any, expected: str):
        self.source, self.field, self.value, self.expected = source, field, value, expected
        super().__init__(f"{source}: {field}: got {shown(value)}, expected {expected}")


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int


@dataclass(frozen=True)
class FracRange:
    """A range of step positions as fractions of the step count."""

    low: float
    high: float

    def steps(self, n: int) -> IntRange:
        return IntRange(round(self.low * n), round(self.high * n))


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float


@dataclass(frozen=True)
class Space:
    """A validated search space; see search_spaces/README.md for the file format."""

    name: str
    family: str
    generators: tuple[str, ...]
    warmup: IntRange
    tail: IntRange
    max_run: int
    gates: tuple[str, ...]
    gamma: FloatRange
    zeus: dict = field(default_factory=dict)
    periodic: dict = field(default_factory=dict)
    growing_gaps: dict = field(default_factory=dict)
    spaced: dict = field(default_factory=dict)
    #: Published step lists (``plans.LISTED_50``) the ``listed`` generator draws from.
    listed: dict = field(default_factory=dict)
    adaptive: dict = field(default_factory=dict)
    #: Probe-gated steps (G): signals, outputs, threshold segments and range, max_run.
    probe: dict = field(default_factory=dict)
    #: The C gate's knobs (drawn when a gate is C): degree, ridge, blend ranges.
    forecast: dict = field(default_factory=dict)
    #: Per-branch plans on two-call CFG pipelines: the unconditional branch drops every m-th fresh
    #: step of the conditional plan, m drawn from this list (0: the same plan). Empty: off.
    uncond_drop: tuple[int, ...] = ()
    #: Reduced-resolution calls (D): ``factors`` to draw from, ``axes`` (what shrinks on video:
    #: side, frames, both) and ``calls``, the range of how many of the plan's first calls run
    #: reduced (refinement then moves them step by step). Empty: off.
    reduced: dict = field(default_factory=dict)
    description: str = ""
    source: str = "<space>"

    @property
    def reduced_keys(self) -> tuple[str, ...]:
        """The D steps this space may draw, by name (schedule.format.reduced_key): what its cost
        model must price."""
        from ..schedule.format import reduced_key

        r = self.reduced
        return tuple(reduced_key(f, a) for a in r.get("axes", ("side",)) for f in r.get("factors", ()))

    @property
    def sha256(self) -> str:
        """Content hash, recorded with each study so a resumed study is known to use the same space."""
        data = {k: v for k, v in self.__dict__.items() if k not in ("source", "description")}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=lambda o: o.__dict__).encode()).hexdigest()

    @property
    def lagrange(self) -> bool:
        """Whether ZEUS tail skips use Lagrange x0 extrapolation (UNet families)."""
        return self.family in _LAGRANGE_FAMILIES and self.zeus.get("lagrange_tail", False)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def find(name: str | os.PathLike) -> Path:
    """A space file by path, or by name in search_spaces/ (``tiny-flux`` -> search_spaces/tiny-flux.yaml)."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (BUILTIN_SPACES / f"{name}.yaml", BUILTIN_SPACES / str(name)):
        if cand.is_file():
            return cand
    known = sorted(q.stem for q in BUILTIN_SPACES.glob("*.yaml"))
    raise FileNotFoundError(f"search space {str(name)!r}: no such file, and not one of the built-in spaces {known} in {BUILTIN_SPACES}")


def load(name: str | os.PathLike) -> Space:
    path = find(name)
    return from_dict(safeyaml.read(path, SpaceError), source=str(path), name=path.stem)


def from_dict(data: Any, source: str = "<space>", name: str = "space") -> Space:
    r = _Reader(source)
    top = r.mapping(data, "", ("zeustune_space", "family", "description", "generators", "warmup", "tail", "max_run",
                               "gates", "gamma", "forecast", "uncond_drop", "reduced", *GENERATORS),
                    required=("zeustune_space", "family", "generators"))
    if top["zeustune_space"] != SCHEMA_VERSION:
        r.fail("zeustune_space", top["zeustune_space"], f"{SCHEMA_VERSION} (the schema version this zeustune reads)")
    family = top["family"]
    if family not in FAMILIES:
        r.fail("family", family, f"one of {', '.join(FAMILIES)}")
    gens = top["generators"]
    if not (isinstance(gens, list) and gens and all(g in GENERATORS for g in gens) and len(set(gens)) == len(gens)):
        r.fail("generators", gens, f"a non-empty list of distinct names from {', '.join(GENERATORS)}")
    gates = top.get("gates", list(GATES))
    if not (isinstance(gates, list) and gates and all(g in GATES for g in gates) and len(set(gates)) == len(gates)):
        r.fail("gates", gates, f"a non-empty list of distinct letters from {', '.join(GATES)}")
    sections = {}
    for g in GENERATORS:
        sec = top.get(g)
        if g in gens and sec is None:
            r.fail(g, None, f"a '{g}:' section, since generators lists {g}")
        # periodic is read even when not listed: the uniform seeds are periodic configurations (then
        # reported as outside the space and skipped, not a KeyError)
        sections[g] = _GENERATOR_FIELDS[g](r, sec, g) if g in gens or g == "periodic" else {}
    drop = top.get("uncond_drop", [])
    if not (isinstance(drop, list) and all(isinstance(m, int) and not isinstance(m, bool) and (m == 0 or m >= 2) for m in drop)):
        r.fail("uncond_drop", drop, "a list of integers, each 0 (same plan) or >= 2 (drop every m-th fresh step)")
    space = Space(
        name=name,
        family=family,
        generators=tuple(gens),
        warmup=r.int_range(top, "warmup", (2, 6), minimum=1),
        tail=r.int_range(top, "tail", (0, 2), minimum=0),
        max_run=r.integer(top, "max_run", 6, minimum=1),
        gates=tuple(gates),
        gamma=r.float_range(top, "gamma", (0.5, 1.0), minimum=0.0),
        description=str(top.get("description", "")),
        source=source,
        forecast=_forecast_fields(r, top.get("forecast"), "forecast"),
        uncond_drop=tuple(drop),
        reduced=_reduced_fields(r, top.get("reduced")),
        **sections,
    )
    return space


def _reduced_fields(r, sec) -> dict:
    from ..schedule.format import REDUCED_AXES, REDUCED_FACTORS

    if sec is None:
        return {}
    d = r.mapping(sec, "reduced", ("factors", "axes", "calls"), required=("factors",))
    factors = d["factors"]
    if not (isinstance(factors, list) and factors and all(f in REDUCED_FACTORS for f in factors) and len(set(factors)) == len(factors)):
        r.fail("reduced.factors", factors, f"a non-empty list of distinct factors from {', '.join(map(str, REDUCED_FACTORS))}")
    axes = d.get("axes", ["side"])
    if not (isinstance(axes, list) and axes and all(a in REDUCED_AXES for a in axes) and len(set(axes)) == len(axes)):
        r.fail("reduced.axes", axes, f"a non-empty list of distinct names from {', '.join(REDUCED_AXES)}")
    out = {"factors": tuple(float(f) for f in factors), "calls": r.int_range(d, "calls", (0, 4), minimum=0, prefix="reduced")}
    if axes != ["side"]:  # left out otherwise: older spaces keep their hash
        out["axes"] = tuple(axes)
    return out


def _zeus_fields(r: _Reader, sec, prefix) -> dict:
    sec = r.mapping(sec, prefix, ("acc_start", "acc_end", "patterns", "max_interval", "lagrange_step", "lagrange_int",
                                  "lagrange_term", "tail", "lagrange_tail"))
    patterns = sec.get("patterns", ["3:01"])
    if not (isinstance(patterns, list) and patterns):
        r.fail(f"{prefix}.patterns", patterns, "a non-empty list like ['3:01', '4:012'] (denominator:residues)")
    for i, p in enumerate(patterns):
        parse_pattern(p, r, f"{prefix}.patterns[{i}]")
    tail = sec.get("tail", [True, False])
    if not (isinstance(tail, list) and tail and all(isinstance(t, bool) for t in tail)):
        r.fail(f"{prefix}.tail", tail, "a non-empty list of true/false (whether the ZEUS tail phase is on)")
    return {
        "acc_start": r.frac_range(sec, "acc_start", (0.06, 0.4), prefix),
        "acc_end": r.frac_range(sec, "acc_end", (0.6, 1.0), prefix),
        "patterns": list(patterns),
        "max_interval": r.int_range(sec, "max_interval", (1, 6), minimum=1, prefix=prefix),
        "tail": list(tail),
        "lagrange_step": r.frac_range(sec, "lagrange_step", (0.3, 0.7), prefix),
        "lagrange_int": r.int_range(sec, "lagrange_int", (2, 8), minimum=2, prefix=prefix),
        "lagrange_term": r.int_range(sec, "lagrange_term", (3, 4), minimum=2, prefix=prefix),
        "lagrange_tail": bool(sec.get("lagrange_tail", True)),
    }


def _periodic_fields(r: _Reader, sec, prefix) -> dict:
    sec = r.mapping(sec, prefix, ("boundary", "skips"))
    return {"boundary": r.frac_range(sec, "boundary", (0.2, 0.8), prefix),
            "skips": r.int_range(sec, "skips", (0, 4), minimum=0, prefix=prefix)}


def _growing_fields(r: _Reader, sec, prefix) -> dict:
    sec = r.mapping(sec, prefix, ("window", "alpha"))
    return {"window": r.float_range(sec, "window", (1.0, 4.0), minimum=1.0, prefix=prefix),
            "alpha": r.float_range(sec, "alpha", (0.0, 3.0), minimum=0.0, prefix=prefix)}


def _spaced_fields(r: _Reader, sec, prefix) -> dict:
    sec = r.mapping(sec, prefix, ("fresh", "rho"))
    return {"fresh": r.frac_range(sec, "fresh", (0.1, 0.7), prefix),
            "rho": r.float_range(sec, "rho", (0.5, 2.5), minimum=0.05, prefix=prefix)}


def _listed_fields(r: _Reader, sec, prefix) -> dict:
    from ..schedule.plans import LISTED_50

    sec = r.mapping(sec, prefix, ("lists",))
    names = sec.get("lists", list(LISTED_50))
    if not (isinstance(names, list) and names and all(n in LISTED_50 for n in names) and len(set(names)) == len(names)):
        r.fail(f"{prefix}.lists", names, f"a non-empty list of distinct names from {', '.join(LISTED_50)}")
    return {"lists": list(names)}


def _adaptive_fields(r: _Reader, sec, prefix) -> dict:
    sec = r.mapping(sec, prefix, ("criteria", "sada_threshold", "change_threshold", "max_run"))
    crit = sec.get("criteria", list(CRITERIA))
    if not (isinstance(crit, list) and crit and all(c in CRITERIA for c in crit) and len(set(crit)) == len(crit)):
        r.fail(f"{prefix}.criteria", crit, f"a non-empty list of distinct names from {', '.join(CRITERIA)}")
    return {"criteria": list(crit),
            "sada_threshold": r.float_range(sec, "sada_threshold", (-0.005, 0.05), minimum=-1.0, prefix=prefix),
            "change_threshold": r.float_range(sec, "change_threshold", (0.03, 0.8), minimum=0.0, prefix=prefix),
            "max_run": r.int_range(sec, "max_run", (1, 8), minimum=1, prefix=prefix)}


def _forecast_fields(r: _Reader, sec, prefix) -> dict:
    sec = r.mapping(sec, prefix, ("degree", "ridge", "blend"))
    out = {"degree": r.int_range(sec, "degree", (1, 4), minimum=0, prefix=prefix, maximum=MAX_DEGREE),
           "ridge": r.float_range(sec, "ridge", (0.01, 1.0), minimum=0.0, prefix=prefix),
           "blend": r.float_range(sec, "blend", (0.0, 1.0), minimum=0.0, prefix=prefix)}
    if out["blend"].high > 1:
        r.fail(f"{prefix}.blend", [out["blend"].low, out["blend"].high], "[low, high] within [0, 1]")
    if out["ridge"].low <= 0:
        r.fail(f"{prefix}.ridge", [out["ridge"].low, out["ridge"].high], "[low, high] with 0 < low (drawn on a log scale)")
    return out


def _probe_fields(r: _Reader, sec, prefix) -> dict:
    from ..schedule.format import MAX_PROBE_SEGMENTS, PROBE_OUTPUTS, PROBES

    sec = r.mapping(sec, prefix, ("probes", "outputs", "segments", "threshold", "max_run"))
    out = {}
    for key, allowed in (("probes", PROBES), ("outputs", PROBE_OUTPUTS)):
        v = sec.get(key, list(allowed))
        if not (isinstance(v, list) and v and all(x in allowed for x in v) and len(set(v)) == len(v)):
            r.fail(f"{prefix}.{key}", v, f"a non-empty list of distinct names from {', '.join(allowed)}")
        out[key] = list(v)
    seg = sec.get("segments", 3)
    if isinstance(seg, bool) or not isinstance(seg, int) or not 1 <= seg <= MAX_PROBE_SEGMENTS:
        r.fail(f"{prefix}.segments", seg, f"an integer in [1, {MAX_PROBE_SEGMENTS}] (thresholds per equal part of the steps)")
    out["segments"] = seg
    out["threshold"] = r.float_range(sec, "threshold", (0.05, 0.8), minimum=0.0, prefix=prefix)
    out["max_run"] = r.int_range(sec, "max_run", (1, 8), minimum=1, prefix=prefix)
    return out


_GENERATOR_FIELDS = {"zeus": _zeus_fields, "periodic": _periodic_fields, "growing_gaps": _growing_fields,
                     "spaced": _spaced_fields, "listed": _listed_fields, "adaptive": _adaptive_fields, "probe": _probe_fields}


def parse_pattern(p: Any, r: _Reader | None = None, fld: str = "pattern") -> tuple[int, tuple[int, ...]]:
    """``"3:01"`` -> (3, (0, 1)): ZEUS's denominator and the residues k % d that skip."""
    ok = isinstance(p, str) and ":" in p
    if ok:
        d, _, mods = p.partition(":")
        ok = d.isdigit() and int(d) >= 1 and mods.isdigit() and all(int(m) < int(d) for m in mods) and len(set(mods)) == len(mods)
    if not ok:
        (r or _Reader("<space>")).fail(fld, p, "'d:residues' with residues < d, e.g. '3:01' (ZEUS d=3, modular (0,1))")
    return int(d), tuple(int(m) for m in mods)


class _Reader:
    def __init__(self, source: str):
        self.source = source

    def fail(self, fld: str, value: Any, expected: str):
        raise SpaceError(self.source, fld, value, expected)

    def mapping(self, data, prefix, allowed, required=()) -> dict:
        where = prefix or "<top level>"
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail(where, data, "a mapping")
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            self.fail(f"{prefix + '.' if prefix else ''}{unknown[0]}", data[unknown[0]], f"one of the known keys {', '.join(allowed)}")
        for key in required:
            if key not in data:
                self.fail(f"{prefix + '.' if prefix else ''}{key}", None, "a value (required)")
        return data

    def _pair(self, data, key, default, prefix, kind):
        v = data.get(key, list(default))
        fld = f"{prefix + '.' if prefix else ''}{key}"
        if not (isinstance(v, list) and len(v) == 2 and all(kind(x) for x in v) and v[0] <= v[1]):
            return fld, None
        return fld, v

    def int_range(self, data, key, default, minimum, prefix="", maximum=None) -> IntRange:
        fld, v = self._pair(data, key, default, prefix, lambda x: isinstance(x, int) and not isinstance(x, bool))
        if v is None or v[0] < minimum or (maximum is not None and v[1] > maximum):
            self.fail(fld, data.get(key), f"[low, high] integers with {minimum} <= low <= high"
                      + (f" <= {maximum}" if maximum is not None else ""))
        return IntRange(*v)

    def frac_range(self, data, key, default, prefix="") -> FracRange:
        fld, v = self._pair(data, key, default, prefix, lambda x: isinstance(x, (int, float)) and not isinstance(x, bool))
        if v is None or not (0.0 <= v[0] <= v[1] <= 1.0):
            self.fail(fld, data.get(key), "[low, high] fractions of the step count with 0 <= low <= high <= 1")
        return FracRange(float(v[0]), float(v[1]))

    def float_range(self, data, key, default, minimum, prefix="") -> FloatRange:
        fld, v = self._pair(data, key, default, prefix, lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)
                            and math.isfinite(x))  # an infinite bound reached Optuna's sampler as inf
        if v is None or v[0] < minimum:
            self.fail(fld, data.get(key), f"[low, high] finite numbers with {minimum} <= low <= high")
        return FloatRange(float(v[0]), float(v[1]))

    def integer(self, data, key, default, minimum) -> int:
        v = data.get(key, default)
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= minimum):
            self.fail(key, v, f"an integer >= {minimum}")
        return v


# --------------------------------------------------------------------------------------------
# Sampling and decoding
# --------------------------------------------------------------------------------------------


def _int(trial, name: str, rng: IntRange, lo_clip: int = 0, hi_clip: int | None = None) -> int:
    lo, hi = max(rng.low, lo_clip), rng.high if hi_clip is None else min(rng.high, hi_clip)
    hi = max(hi, lo)
    return trial.suggest_int(name, lo, hi)


def suggest(trial, space: Space, steps: int, max_fresh: int | None = None) -> dict:
    """Draw one configuration through ``trial`` (an Optuna trial or anything with its suggest
    methods). Parameters are conditional on the generator; ``gamma`` only when an S gate is drawn.
    ``max_fresh`` caps the fresh count of the ``spaced`` generator (the budget's NFE ceiling)."""
    n = steps
    p: dict[str, Any] = {"generator": trial.suggest_categorical("generator", list(space.generators))}
    for j in range(1, GATE_POSITIONS + 1):
        p[f"gate_{j}"] = trial.suggest_categorical(f"gate_{j}", list(space.gates))
    gates = [p[f"gate_{j}"] for j in range(1, GATE_POSITIONS + 1)]
    if "S" in gates:
        p["gamma"] = trial.suggest_float("gamma", space.gamma.low, space.gamma.high)
    if "C" in gates:
        f = space.forecast
        p["forecast_degree"] = _int(trial, "forecast_degree", f["degree"])
        p["forecast_ridge"] = trial.suggest_float("forecast_ridge", f["ridge"].low, f["ridge"].high, log=True)
        p["forecast_blend"] = trial.suggest_float("forecast_blend", f["blend"].low, f["blend"].high)
    if space.uncond_drop:
        p["uncond_drop"] = trial.suggest_categorical("uncond_drop", list(space.uncond_drop))
    if space.reduced:
        p["reduced_calls"] = _int(trial, "reduced_calls", space.reduced["calls"])
        if p["reduced_calls"]:
            p["reduced_factor"] = trial.suggest_categorical("reduced_factor", list(space.reduced["factors"]))
            if len(axes := space.reduced.get("axes", ())) > 1:
                p["reduced_axes"] = trial.suggest_categorical("reduced_axes", list(axes))
            elif axes:
                p["reduced_axes"] = axes[0]
    g = p["generator"]
    if g == "zeus":
        z = space.zeus
        p["zeus_acc_start"] = _int(trial, "zeus_acc_start", z["acc_start"].steps(n), 0, n - 2)
        p["zeus_acc_end"] = _int(trial, "zeus_acc_end", z["acc_end"].steps(n), 1, n)
        p["zeus_pattern"] = trial.suggest_categorical("zeus_pattern", z["patterns"])
        p["zeus_max_interval"] = _int(trial, "zeus_max_interval", z["max_interval"], 1, space.max_run)
        p["zeus_tail"] = trial.suggest_categorical("zeus_tail", z["tail"])
        if p["zeus_tail"]:
            p["zeus_lagrange_step"] = _int(trial, "zeus_lagrange_step", z["lagrange_step"].steps(n), 1, n)
            p["zeus_lagrange_int"] = _int(trial, "zeus_lagrange_int", z["lagrange_int"])
            if space.lagrange:
                p["zeus_lagrange_term"] = _int(trial, "zeus_lagrange_term", z["lagrange_term"])
        return p
    if g == "listed":  # a published list's fresh steps; the space's gates, drops and D on top
        p["listed_name"] = trial.suggest_categorical("listed_name", space.listed["lists"])
        return p
    if g == "probe":  # its own names: the static generators' warm-up says nothing about a probe's
        s = space.probe
        cap = max(1, (max_fresh or n) - 1)  # forced fresh steps within the budget, one call left to decide
        p["probe_warmup"] = _int(trial, "probe_warmup", space.warmup, 1, min(n, cap))
        p["probe_tail"] = _int(trial, "probe_tail", space.tail, 0, max(0, min(n - p["probe_warmup"], cap - p["probe_warmup"])))
        p["probe_kind"] = trial.suggest_categorical("probe_kind", s["probes"])
        p["probe_output"] = trial.suggest_categorical("probe_output", s["outputs"])
        for i in range(s["segments"]):
            p[f"probe_threshold_{i + 1}"] = trial.suggest_float(f"probe_threshold_{i + 1}", s["threshold"].low,
                                                                s["threshold"].high)
        # not capped by the space's max_run: a probe skips only where the step barely moves, and at
        # 4x on 28 steps a cap of 8 alone forces 3 calls (FirstBlockCache has none)
        p["probe_max_run"] = _int(trial, "probe_max_run", s["max_run"], 1, n)
        return p
    p["warmup"] = _int(trial, "warmup", space.warmup, 1, n)
    p["tail"] = _int(trial, "tail", space.tail, 0, n - p["warmup"])
    if g == "periodic":
        s = space.periodic
        p["periodic_boundary"] = _int(trial, "periodic_boundary", s["boundary"].steps(n), 0, n)
        p["periodic_skips_1"] = _int(trial, "periodic_skips_1", s["skips"], 0, space.max_run)
        p["periodic_skips_2"] = _int(trial, "periodic_skips_2", s["skips"], 0, space.max_run)
    elif g == "growing_gaps":
        s = space.growing_gaps
        p["growing_window"] = trial.suggest_float("growing_window", s["window"].low, s["window"].high)
        p["growing_alpha"] = trial.suggest_float("growing_alpha", s["alpha"].low, s["alpha"].high)
    elif g == "spaced":
        s = space.spaced
        p["spaced_fresh"] = _int(trial, "spaced_fresh", s["fresh"].steps(n), 2, max_fresh)
        p["spaced_rho"] = trial.suggest_float("spaced_rho", s["rho"].low, s["rho"].high)
    elif g == "adaptive":
        s = space.adaptive
        p["adaptive_criterion"] = c = trial.suggest_categorical("adaptive_criterion", s["criteria"])
        rng = s[f"{c}_threshold"]
        p[f"adaptive_{c}_threshold"] = trial.suggest_float(f"adaptive_{c}_threshold", rng.low, rng.high)
        p["adaptive_max_run"] = _int(trial, "adaptive_max_run", s["max_run"], 1, space.max_run)
    return p


@dataclass(frozen=True)
class Decoded:
    """What a configuration runs: the plan, its predictor settings, and on two-call CFG pipelines
    the unconditional branch's own plan (None: the same plan)."""

    plan: Plan
    gamma: float = 1.0
    lagrange_term: int = 3
    lagrange_int: int = 6
    #: Further Predictor settings as sorted (name, value) pairs: the C gate's degree, ridge and
    #: blend; the A steps' criterion, threshold, max_run and gates.
    knobs: tuple = ()
    uncond: Plan | None = None

    @property
    def key(self) -> str:
        """The effective plan: configurations with equal keys produce the same images."""
        letters = self.plan.steps + (self.uncond.steps if self.uncond else "")
        gamma = f"@{self.gamma:.3g}" if "S" in letters or "S" in dict(self.knobs).get("gates", "") else ""
        lag = f"/L{self.lagrange_term},{self.lagrange_int}" if "L" in self.plan.steps else ""
        knobs = "".join(f"/{k}={v:.4g}" if isinstance(v, float) else f"/{k}={v}" for k, v in self.knobs)
        uncond = f"|{self.uncond.steps}" if self.uncond else ""
        return f"{self.plan.steps}{uncond}{gamma}{lag}{knobs}"

    @property
    def static_nfe(self) -> float:
        """Denoiser calls per branch known before running: the F letters, averaged over the two
        branches when the unconditional one has its own plan (adaptive steps add to this)."""
        return self.plan.nfe if self.uncond is None else (self.plan.nfe + self.uncond.nfe) / 2

    @property
    def reduced_calls(self) -> float:
        """D letters per branch (averaged over the branches, as :attr:`static_nfe`)."""
        return self.plan.reduced if self.uncond is None else (self.plan.reduced + self.uncond.reduced) / 2

    @property
    def factor(self) -> float | None:
        """The D steps' reduced-resolution factor (None: no D steps)."""
        return dict(self.knobs).get("reduced") if self.reduced_calls else None

    @property
    def reduction(self) -> str | None:
        """The D steps' name (schedule.format.reduced_key: factor, and axes on video); None: no D steps."""
        from ..schedule.format import reduced_key

        return None if self.factor is None else reduced_key(self.factor, dict(self.knobs).get("reduced_axes", "side"))

    def calls(self, cost) -> float:
        """Fresh-step equivalents under ``cost`` (a CostModel): F letters plus D at their measured cost."""
        return cost.equivalent(self.static_nfe, self.reduced_calls, self.reduction)

    @property
    def adaptive(self) -> bool:
        return self.plan.adaptive or (self.uncond is not None and self.uncond.adaptive)

    def wire(self) -> dict:
        """Plain values (for remote workers); :meth:`from_wire` inverts it."""
        return {"plan": self.plan.steps, "gamma": self.gamma, "lagrange_term": self.lagrange_term,
                "lagrange_int": self.lagrange_int, "knobs": dict(self.knobs),
                "uncond": self.uncond.steps if self.uncond else None}

    @classmethod
    def from_wire(cls, d: dict) -> Decoded:
        return cls(Plan(d["plan"]), float(d.get("gamma", 1.0)), int(d.get("lagrange_term", 3)),
                   int(d.get("lagrange_int", 6)), tuple(sorted((d.get("knobs") or {}).items())),
                   Plan(d["uncond"]) if d.get("uncond") else None)


def decode(params: dict, space: Space, steps: int) -> Decoded:
    """The plan of a configuration drawn by :func:`suggest` (or written by hand, as seeds are)."""
    n = steps
    g = params["generator"]
    lagrange_kind: list[bool] = [False] * n
    if g == "zeus":
        d, mods = parse_pattern(params["zeus_pattern"])
        tail = bool(params.get("zeus_tail"))
        knobs = dict(acc_start=params["zeus_acc_start"], acc_end=params["zeus_acc_end"], denominator=d, modular=mods,
                     max_interval=params["zeus_max_interval"])
        if tail:
            knobs.update(lagrange_term=params.get("zeus_lagrange_term", 3), lagrange_step=params["zeus_lagrange_step"],
                         lagrange_int=params["zeus_lagrange_int"])
        plan = zeus(n, **knobs)
        fresh = list(plan.fresh_mask)
        if space.lagrange:
            lagrange_kind = [c == "L" for c in plan.steps]
    elif g == "listed":
        fresh = list(listed(params["listed_name"], n).fresh_mask)
    else:
        w, t = (params["probe_warmup"], params["probe_tail"]) if g == "probe" else (params["warmup"], params["tail"])
        if g == "periodic":  # a fresh step every skips_i + 1 steps since the last one, i = segment
            b, last, fresh = params["periodic_boundary"], 0, []
            for k in range(n):
                every = params["periodic_skips_1" if k < b else "periodic_skips_2"] + 1
                fresh.append(k < w or k >= n - t or k - last >= every)
                last = k if fresh[-1] else last
        elif g == "growing_gaps":
            plan = growing_gaps(n, warmup=max(w, 2), window=params["growing_window"], alpha=params["growing_alpha"], tail=t)
            fresh = list(plan.fresh_mask)
        elif g == "spaced":
            fresh = spaced_mask(n, params["spaced_fresh"], w, t, params["spaced_rho"])
        elif g in ("adaptive", "probe"):  # fresh warm-up and tail, every step between decided at run time
            fresh = [k < max(w, 1) or k >= n - t for k in range(n)]
        else:
            raise ValueError(f"generator: got {g!r}, expected one of {', '.join(GENERATORS)}")
    gates = [params[f"gate_{j}"] for j in range(1, GATE_POSITIONS + 1)]
    knobs = {}
    if "C" in gates:
        knobs.update(degree=params["forecast_degree"], ridge=float(params["forecast_ridge"]),
                     blend=float(params["forecast_blend"]))
    if g == "adaptive":
        c = params["adaptive_criterion"]
        knobs.update(criterion=c, threshold=float(params[f"adaptive_{c}_threshold"]), max_run=params["adaptive_max_run"],
                     gates="".join(gates))
        letters = "".join(FRESH if f else "A" for f in fresh)
    elif g == "probe":
        out = params["probe_output"]
        # the tail residual is reused or extrapolated: S and C gates read psi, so R stands in for them there
        probe_gates = "".join(x if out == "gate" or x in "ER" else "R" for x in gates)
        segs = sorted(k for k in params if k.startswith("probe_threshold_"))
        knobs.update(probe=params["probe_kind"], probe_output=out, max_run=params["probe_max_run"], gates=probe_gates,
                     probe_thresholds=tuple(float(params[k]) for k in sorted(segs, key=lambda k: int(k.rsplit("_", 1)[1]))))
        letters = "".join(FRESH if f else "G" for f in fresh)
    else:
        fresh = cap_runs(fresh, space.max_run)
        letters = gate_letters(fresh, gates)
    if space.lagrange:
        letters = "".join("L" if lk and c != FRESH else c for c, lk in zip(letters, lagrange_kind))
    uncond = None
    m = params.get("uncond_drop", 0)
    if m:
        uncond = Plan(uncond_letters(letters, m, gates))
        uncond = None if uncond.steps == letters else uncond
    r = params.get("reduced_calls", 0)
    if r:  # the first r fresh steps of each branch at reduced resolution (refinement moves them)
        letters = reduce_first(letters, r)
        uncond = None if uncond is None else Plan(reduce_first(uncond.steps, r))
        if "D" in letters or (uncond is not None and "D" in uncond.steps):
            knobs["reduced"] = float(params["reduced_factor"])
            if params.get("reduced_axes", "side") != "side":
                knobs["reduced_axes"] = params["reduced_axes"]
    return Decoded(Plan(letters), float(params.get("gamma", 1.0)), int(params.get("zeus_lagrange_term", 3)),
                   int(params.get("zeus_lagrange_int", 6)), tuple(sorted(knobs.items())), uncond)


def reduce_first(letters: str, r: int) -> str:
    """The first ``r`` F letters as D (reduced-resolution calls); the last F always stays, so the
    image gets at least one full-resolution call.

    >>> reduce_first("FFEFRF", 2)
    'DDEFRF'
    >>> reduce_first("FFEFRF", 5)
    'DDEDRF'
    """
    r = min(r, letters.count(FRESH) - 1)
    out = []
    for c in letters:
        if c == FRESH and r > 0:
            c, r = "D", r - 1
        out.append(c)
    return "".join(out)


def uncond_letters(letters: str, every: int, gates: list[str]) -> str:
    """The unconditional branch's plan: the conditional one with every ``every``-th fresh step
    after the first two predicted instead (the guidance difference changes slowly, so the
    unconditional output can be predicted more often); adaptive steps stay as they are.

    >>> uncond_letters("FFFEFFFEFF", 2, ["E", "R", "E"])
    'FFFERFERFF'
    >>> uncond_letters("FFFAAAFFF", 2, ["E", "R", "E"])
    'FFFAAAAFF'
    """
    fresh, seen = [], 0
    for k, c in enumerate(letters):
        seen += c == FRESH
        fresh.append(c == FRESH and not (seen > 2 and (seen - 2) % every == 0 and k < len(letters) - 1))
    decided = next((c for c in "AG" if c in letters), None)
    if decided:  # adaptive and probe plans: a dropped fresh step is decided at run time too
        return "".join(c if f or c != FRESH else decided for c, f in zip(letters, fresh))
    return gate_letters(fresh, gates)


def spaced_mask(n: int, fresh: int, warmup: int, tail: int, rho: float) -> list[bool]:
    """``fresh`` fresh steps: the first ``warmup`` and last ``tail`` steps, the rest placed in
    between at positions ``(i / m) ** rho`` of the stretch (rho > 1: denser early, where the
    trajectory bends most; rho = 1: evenly). Collisions move to the next free step.

    >>> "".join("F" if f else "." for f in spaced_mask(12, 5, 2, 0, 1.0))
    'FF..F..F.F..'
    >>> "".join("F" if f else "." for f in spaced_mask(12, 5, 2, 0, 2.0))
    'FFF.F..F....'
    """
    fresh = max(min(fresh, n), 1)
    warmup = min(warmup, fresh)
    tail = min(tail, fresh - warmup, n - warmup)
    mask = [k < warmup or k >= n - tail for k in range(n)]
    m = fresh - warmup - tail
    lo, hi = warmup, n - tail  # free stretch [lo, hi)
    span = hi - lo
    for i in range(1, m + 1):
        pos = lo - 1 + round((span + (0 if tail else 1)) * (i / (m + (0 if tail else 1))) ** rho)
        pos = min(max(pos, lo), hi - 1)
        while pos < hi and mask[pos]:
            pos += 1
        if pos >= hi:  # no room after: take the nearest free step before
            pos = max(k for k in range(lo, hi) if not mask[k])
        mask[pos] = True
    return mask


def cap_runs(fresh: list[bool], max_run: int) -> list[bool]:
    """Break runs of more than ``max_run`` skips with a fresh step; the first step is always fresh."""
    out, run = [], 0
    for k, f in enumerate(fresh):
        if k == 0 or f or run >= max_run:
            out.append(True)
            run = 0
        else:
            out.append(False)
            run += 1
    return out


def gate_letters(fresh: list[bool], gates: list[str]) -> str:
    """Letters for a fresh mask: skip j of a run takes gate j (j <= 3), later skips cycle gates 2
    and 3; E and S need two fresh steps before them and become R where fewer precede."""
    out, j, seen = [], 0, 0
    for f in fresh:
        if f:
            out.append(FRESH)
            j, seen = 0, seen + 1
            continue
        j += 1
        idx = j if j <= GATE_POSITIONS else GATE_POSITIONS - 1 + (j - GATE_POSITIONS + 1) % 2
        letter = gates[idx - 1]
        out.append(letter if letter == "R" or seen >= 2 else "R")
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Seeds: what users have today, as configurations of this space
# --------------------------------------------------------------------------------------------

#: ZEUS's published configurations (FACTS.md §1) as knobs at 50 steps, positions scaled to N.
ZEUS_PUBLISHED = {
    "zeus-default": dict(acc=(10, 45), pattern="3:01", lagrange=(3, 24, 6), max_interval=6, mode="reuse_interp"),
    "zeus-flux-demo": dict(acc=(10, 45), pattern="3:01", lagrange=(3, 24, 6), max_interval=4, mode="reuse_interp"),
    "zeus-sd-demo": dict(acc=(10, 45), pattern="3:01", lagrange=(4, 24, 4), max_interval=6, mode="reuse_interp"),
    "zeus-wan2-demo": dict(acc=(8, 47), pattern="3:01", lagrange=(4, 24, 4), max_interval=6, mode="reuse_interp"),
    "zeus-cogvideo-demo": dict(acc=(8, 47), pattern="3:01", lagrange=(3, 24, 6), max_interval=6, mode="reuse_interp"),
    "zeus-generate-dit": dict(acc=(7, 47), pattern="4:012", lagrange=(3, 24, 6), max_interval=8, mode="reuse_all"),
}
_MODE_GATES = {"reuse_interp": ("E", "R", "E"), "reuse_all": ("E", "R", "R"), "interp_all": ("E", "E", "E")}


def zeus_seed(name: str, steps: int) -> dict:
    """A published ZEUS configuration with its step positions scaled from 50 steps to ``steps``."""
    c = ZEUS_PUBLISHED[name]
    s = steps / 50
    p = {"generator": "zeus", "zeus_acc_start": max(round(c["acc"][0] * s), 3), "zeus_acc_end": round(c["acc"][1] * s),
         "zeus_pattern": c["pattern"], "zeus_max_interval": c["max_interval"], "zeus_tail": True,
         "zeus_lagrange_step": round(c["lagrange"][1] * s), "zeus_lagrange_int": c["lagrange"][2],
         "zeus_lagrange_term": c["lagrange"][0]}
    p.update({f"gate_{j}": g for j, g in enumerate(_MODE_GATES[c["mode"]], start=1)})
    return p


def uniform_seed(space: Space, steps: int, every: int) -> dict:
    """Every ``every``-th step fresh from step 0 (ZEUS letters E R E ... in between)."""
    p = {"generator": "periodic", "warmup": 1, "tail": 0, "periodic_boundary": space.periodic["boundary"].steps(steps).low,
         "periodic_skips_1": every - 1, "periodic_skips_2": every - 1}
    p.update({f"gate_{j}": g for j, g in enumerate(_MODE_GATES["reuse_interp"], start=1)})
    return p


def taylor_seed(space: Space, steps: int, every: int, warmup: int = 3) -> dict | None:
    """TaylorSeer lite's form (diffusers' ``TaylorSeerCacheConfig(use_lite_mode=True)``): ``warmup``
    fresh steps, then a fresh step every ``every`` steps, every skip a first-order Taylor step of
    the output in the step index, which is S at gamma 1. None where the space has no S gate."""
    if "S" not in space.gates:
        return None
    p = {"generator": "periodic", "warmup": warmup, "tail": 0,
         "periodic_boundary": space.periodic["boundary"].steps(steps).low,
         "periodic_skips_1": every - 1, "periodic_skips_2": every - 1, "gamma": 1.0}
    p.update({f"gate_{j}": "S" for j in range(1, GATE_POSITIONS + 1)})
    return p


def listed_seed(name: str) -> dict:
    """A published step list as it ships: every skip reuses the last output (R)."""
    p = {"generator": "listed", "listed_name": name}
    p.update({f"gate_{j}": "R" for j in range(1, GATE_POSITIONS + 1)})
    return p


def probe_seeds(space: Space) -> dict[str, dict]:
    """FirstBlockCache's configuration as G steps, at a few thresholds: one fresh step, then every
    step probed by the first block's residual, a skip adding the last tail residual to the head
    output (R), so the probe stage's front covers what that one-knob cache does, before TPE. Then
    the same with the last step fresh (where a final correction pays off most on tiny-flux:
    docs/search/probe), after one or two fresh steps."""
    s = space.probe
    out = {}
    # thresholds from 2x to 4x at 28 steps on tiny-flux (FirstBlockCache: 7 calls at 0.25, 5 at
    # 0.4; 7.9 calls at 0.3 for the last shape): the budget's seeds are among them
    shapes = [("fbcache-like", 1, 0, (0.15, 0.25, 0.35, 0.45, 0.6)), ("fbcache-1-1", 1, 1, (0.3, 0.45, 0.6)),
              ("fbcache-2-1", 2, 1, (0.2, 0.3, 0.45, 0.6))]
    for name, warmup, tail, thresholds in shapes:
        warmup = min(max(warmup, space.warmup.low), space.warmup.high)
        tail = min(max(tail, space.tail.low), space.tail.high)
        for th in thresholds:
            p = {"generator": "probe", "probe_warmup": warmup, "probe_tail": tail, "probe_kind": "residual",
                 "probe_output": "tail", "probe_max_run": s["max_run"].high}
            p.update({f"gate_{j}": "R" for j in range(1, GATE_POSITIONS + 1)})
            th = min(max(th, s["threshold"].low), s["threshold"].high)
            p.update({f"probe_threshold_{i + 1}": th for i in range(s["segments"])})
            out[f"{name}-{th:g}"] = p
    return out


def fits(params: dict, space: Space, steps: int, max_fresh: int | None = None) -> str | None:
    """Why a hand-written configuration is outside the space (None if it fits). Optuna fails an
    enqueued trial whose categorical value is not among the choices, so seeds are checked first."""

    class Check:
        def suggest_categorical(self, name, choices):
            v = params.get(name)
            if v not in choices:
                raise _Misfit(name, v, f"one of {choices}")
            return v

        def suggest_int(self, name, lo, hi):
            v = params.get(name)
            if not (isinstance(v, int) and lo <= v <= hi):
                raise _Misfit(name, v, f"an integer in [{lo}, {hi}]")
            return v

        def suggest_float(self, name, lo, hi, log=False):
            v = params.get(name)
            if not (isinstance(v, (int, float)) and lo <= v <= hi):
                raise _Misfit(name, v, f"a number in [{lo}, {hi}]")
            return v

    try:
        suggest(Check(), space, steps, max_fresh)
    except _Misfit as e:
        return str(e)
    return None


class _Misfit(Exception):
    def __init__(self, name, value, expected):
        super().__init__(f"{name}: got {value!r}, expected {expected}")
