"""The latency cost model a budget is checked against, fitted by timing on the search device.

One image end to end (text encoding, sampling, decoding) takes

    latency(S steps, F fresh, D reduced) = fixed + F * call + D * reduced[f] + (S - F - D) * skip

``fixed`` is what does not scale with steps (encoders, VAE, pipeline set-up), ``call`` a step
with denoiser calls (all CFG branches), ``skip`` a predicted step (prediction, scheduler update,
hook), ``reduced[f]`` a step whose calls run at reduced resolution (D, latent side x f; measured,
since attention and the text tokens make it more than f^2 of a call). The speedup of a plan is ``latency(N, N) / latency(N, NFE)``: the fixed share caps it
(FACTS.md §3), which is why ``--budget`` is refused above :meth:`CostModel.ceiling`.

:func:`fit` times each part directly (per-step timings, :class:`Timing`) and checks the model on
held-back runs, all interleaved round by round (drift on a shared machine then hits every design
point alike).
"""

from __future__ import annotations

import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*x?\s*$")


def parse_budget(text: str | float) -> float:
    """``"3x"``, ``"2.5x"``, ``"3"`` or 3.0 -> 3.0; the speedup a schedule must reach."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = BUDGET.match(str(text))
        if not m:
            raise ValueError(f"--budget: got {text!r}, expected a speedup like 3x or 2.5x")
        value = float(m.group(1))
    if not value > 1.0:
        raise ValueError(f"--budget: got {text!r}, expected a speedup above 1x")
    return value


def parse_budgets(text: str | float) -> list[float]:
    """``"3x"`` -> [3.0]; ``"2x,3x,4x"`` -> [2.0, 3.0, 4.0], a ladder (ascending, each once)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return [parse_budget(text)]
    parts = [p for p in str(text).split(",")]
    if len(parts) > 1 and any(not p.strip() for p in parts):
        raise ValueError(f"--budget: got {text!r}, expected speedups separated by commas, like 2x,3x,4x")
    values = [parse_budget(p) for p in parts]
    if len(set(values)) != len(values):
        raise ValueError(f"--budget: got {text!r}, expected each speedup once")
    return sorted(values)


class BudgetError(ValueError):
    """A budget the model cannot reach on this device."""


@dataclass(frozen=True)
class CostModel:
    fixed: float
    call: float
    skip: float
    steps: int
    device: str = ""
    runs: int = 0
    #: Seconds of a D step per reduced-resolution factor ("0.5", "0.75"); empty if not measured.
    reduced: dict = field(default_factory=dict)
    #: Seconds of a predicted probe step (G: the denoiser's first block ran); 0 if not measured.
    probe: float = 0.0
    #: The fit's largest relative miss on held-back timings (None: not fitted here, e.g. a projection).
    error: float | None = None

    @property
    def probe_share(self) -> float:
        """A predicted G step's extra work over a plain predicted step, in fresh-step equivalents:
        a plan's calls count each such step at this share (its latency then follows)."""
        return max(self.probe - self.skip, 0.0) / (self.call - self.skip) if self.call > self.skip else 0.0

    def equivalent(self, nfe: float, reduced: float = 0.0, factor: float | str | None = None) -> float:
        """Fresh-step equivalents of a plan with ``nfe`` fresh and ``reduced`` D steps at ``factor``
        (a side factor, or a name of schedule.format.reduced_key): the count whose :meth:`latency` is
        the plan's (D costs ``reduced[f]`` instead of a skip)."""
        if not reduced:
            return nfe
        key = factor if isinstance(factor, str) else f"{factor:g}"
        if key not in self.reduced:
            raise ValueError(f"cost model: reduced: got factors {sorted(self.reduced) or 'none'}, expected {key!r} "
                             f"(D steps at {key} need their measured cost; fit the cost model with that factor)")
        return nfe + reduced * (self.reduced[key] - self.skip) / (self.call - self.skip)

    def latency(self, nfe: float, steps: int | None = None) -> float:
        s = self.steps if steps is None else steps
        return self.fixed + nfe * self.call + (s - nfe) * self.skip

    @property
    def full(self) -> float:
        return self.latency(self.steps)

    def speedup(self, nfe: int) -> float:
        return self.full / self.latency(nfe)

    @property
    def ceiling(self) -> float:
        """The best speedup any plan can have: one fresh step (the first), every other predicted."""
        return self.speedup(1)

    def max_fresh(self, budget: float) -> int:
        """The most fresh steps a plan may keep and still reach ``budget`` (0 if none can)."""
        return max((f for f in range(1, self.steps + 1) if self.speedup(f) >= budget), default=0)

    def check(self, budget: float) -> int:
        """``max_fresh(budget)``, or a BudgetError that gives the ceiling and why."""
        f = self.max_fresh(budget)
        if f < 2:
            raise BudgetError(
                f"--budget {budget:g}x cannot be reached on {self.device or 'this device'}: the cost model "
                f"(fixed {self.fixed * 1e3:.1f} ms + {self.call * 1e3:.2f} ms per fresh step + {self.skip * 1e3:.2f} ms per "
                f"predicted step, {self.steps} steps) caps the speedup at {self.ceiling:.2f}x with a single fresh step, "
                f"and a useful plan needs two; the largest reachable budget is {self.speedup(2):.2f}x"
            )
        return f

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        reduced = "".join(f", {v * 1e3:.2f} ms per D step at {k}" for k, v in sorted(self.reduced.items()))
        reduced += f", {self.probe * 1e3:.3f} ms per predicted probe step" if self.probe else ""
        held = f"; held-back runs within {self.error:.1%}" if self.error is not None else ""
        return (f"fixed {self.fixed * 1e3:.1f} ms, {self.call * 1e3:.2f} ms per fresh step, {self.skip * 1e3:.3f} ms per "
                f"predicted step{reduced}; full run {self.full * 1e3:.1f} ms; ceiling {self.ceiling:.2f}x{held} ({self.device})")


def device_name(device: str = "cpu") -> str:
    """A short description of the device the timings were taken on."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    import os

    import torch

    # Threads, not cores: a worker given 1 of 16 cores times very differently from the whole CPU.
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} of {os.cpu_count()} threads"


@dataclass(frozen=True)
class Timing:
    """One timed image: seconds end to end, seconds of each sampling step, and what each step
    was (its plan letter: F fresh, G probe-gated, D reduced, any other letter predicted)."""

    total: float
    steps: tuple[float, ...]
    letters: str


#: Held-back design points may miss the model by this share before the fit is repeated.
TOLERANCE = 0.05


def fit(time_run, steps: int, runs: int = 5, device: str = "", factors=(), probe: bool = False,
        tolerance: float = TOLERANCE) -> CostModel:
    """Measure the model's parts from ``time_run(steps, fresh, factor=None, probe=False) -> Timing``,
    which runs one image with ``fresh`` fresh steps of ``steps`` (the rest predicted; with
    ``factor``, a D step's name as schedule.format.reduced_key, D steps of that kind; with ``probe``
    G steps that all predict).

    Each part is timed directly, not solved for: a fresh step's seconds are the median over the
    full runs' steps, a predicted step's over a plan with 2 fresh steps, ``fixed`` the median of
    what a run spends outside its steps (text encoding, set-up, decoding), D and G steps from a run
    of them. Medians over dozens of steps hold where least squares on four run totals did not
    (three fits of one model gave fixed costs of 0.2, 37.1 and 8.7 ms). Two design points are held
    back, N/2 steps in full and N with N/2 fresh: the model predicts their speedups over the full
    run, and a miss above ``tolerance`` (a busy machine) times every point ``runs`` more times,
    once; the miss left is kept in ``CostModel.error``. All points in rotation, after one untimed warm-up each."""
    half = max(steps // 2, 2)
    from ..schedule.format import reduced_key

    names = [f if isinstance(f, str) else reduced_key(float(f)) for f in factors]
    design = [(steps, steps), (steps, 2)] + [(steps, 1, f) for f in names] + ([(steps, 2, "probe")] if probe else [])
    held = [(half, half), (steps, half)]

    def timed(d):
        return time_run(d[0], d[1], probe=True) if d[2:] == ("probe",) else time_run(*d)

    for d in design + held:  # warm-up: first calls allocate
        timed(d)
    samples: dict[tuple, list[Timing]] = {d: [] for d in design + held}

    def rounds(n):
        for _ in range(n):
            for d in design + held:
                t = timed(d)
                if len(t.steps) != len(t.letters):
                    raise ValueError(f"cost model: timed {len(t.steps)} steps of a {len(t.letters)}-step plan "
                                     f"{t.letters!r}: the denoiser's calls could not be told apart by their timestep")
                samples[d].append(t)

    rounds(runs)
    model = _parts(samples, design, steps, device, runs)
    error = _miss(model, samples, held)
    if error > tolerance:
        rounds(runs)
        model = _parts(samples, design, steps, device, 2 * runs)
        error = _miss(model, samples, held)
    return replace(model, error=round(error, 4))


def _parts(samples: dict, design: list, steps: int, device: str, runs: int) -> CostModel:
    def durations(points, keep):
        return [s for d in points for t in samples[d] for s, c in zip(t.steps, t.letters) if keep(c)]

    plain = [d for d in design if len(d) == 2]
    call = statistics.median(durations(plain, lambda c: c == "F"))
    predicted = durations(plain, lambda c: c not in "FGD")
    skip = statistics.median(predicted) if predicted else 0.0
    fixed = max(statistics.median(t.total - sum(t.steps) for d in design for t in samples[d]), 0.0)
    reduced = {d[2]: max(statistics.median(durations([d], lambda c: c == "D")), skip)
               for d in design if len(d) == 3 and d[2] != "probe"}
    probes = [d for d in design if d[2:] == ("probe",)]
    probe = max(statistics.median(durations(probes, lambda c: c == "G")), skip) if probes else 0.0
    return CostModel(fixed=fixed, call=call, skip=skip, steps=steps, device=device, runs=runs, reduced=reduced, probe=probe)


def _miss(model: CostModel, samples: dict, held: list) -> float:
    """The largest relative miss of the model's speedups on the held-back points: each against
    the median of its totals' ratios to the full run of the same round (a machine that drifts
    between rounds moves both alike)."""
    steps = model.steps
    out = 0.0
    for s, f in held:
        measured = statistics.median(a.total / b.total for a, b in zip(samples[(steps, steps)], samples[(s, f)]))
        out = max(out, abs(model.full / model.latency(f, steps=s) - measured) / measured)
    return out


def timer(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def read(path, steps: int, probe: bool = False) -> CostModel:
    """The CostModel of a JSON file (``CostModel.to_dict``), for a search at ``steps`` steps (``probe``:
    whose space has G steps, so the file must price them; an explicit 0 prices them as free, as the
    bench's equal-calls view does). Its
    fields are checked here, before any work: typed, finite and plausible (a fresh step costs more
    than a predicted one, nothing costs less than nothing), since a zero or negative cost turns
    every speedup into a division by zero or a budget any plan meets."""
    import json
    import math

    from ..schedule.format import MAX_STEPS, REDUCED_KEYS
    from ..schedule.messages import shown

    source = f"--cost-model {path}"

    def fail(field, value, expected):
        raise ValueError(f"{source}: {field}: got {shown(value)}, expected {expected}")

    def once(pairs):  # a key given twice: the later one would win silently
        keys = [k for k, _ in pairs]
        for k in keys:
            if keys.count(k) > 1:
                fail(k, k, "each key once")
        return dict(pairs)

    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        fail("file", e.strerror or type(e).__name__, "a readable JSON file (CostModel fields, as stored with a study)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        fail("encoding", f"byte 0x{raw[e.start]:02x} at offset {e.start}", "UTF-8 JSON text")
    try:
        data = json.loads(text, object_pairs_hook=once)
    except json.JSONDecodeError as e:
        fail("json", f"{e.msg} (line {e.lineno}, column {e.colno})", "valid JSON")
    names = [f.name for f in fields(CostModel)]
    if not isinstance(data, dict):
        fail("document", data, "a JSON object with the fields " + ", ".join(names))
    for key in data:
        if key not in names:
            fail(key, data[key], "one of the fields " + ", ".join(names))
    for key in ("fixed", "call", "skip", "steps"):
        if key not in data:
            fail(key, None, "a value: this field is required")

    def seconds(key, value, at_least=0.0):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < at_least:
            fail(key, value, f"a finite number of seconds >= {at_least:g}")
        return float(value)

    fixed, skip = seconds("fixed", data["fixed"]), seconds("skip", data["skip"])
    call = seconds("call", data["call"])
    if not call > skip:
        fail("call", data["call"], f"seconds per fresh step above skip ({skip:g} s per predicted step)")
    n = data["steps"]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_STEPS:
        fail("steps", n, f"an integer in [1, {MAX_STEPS}]")
    if n != steps:
        fail("steps", n, f"{steps} (this search's steps): a model fitted at other steps budgets another run")
    device, runs = data.get("device", ""), data.get("runs", 0)
    if not isinstance(device, str):
        fail("device", device, "a string (the device it was timed on)")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 0:
        fail("runs", runs, "an integer >= 0")
    if probe and "probe" not in data:
        fail("probe", None, "seconds of a predicted G step, which the space's probe generator needs: fit a model "
             "with them (omit --cost-model, or `scripts/fit_cost_model.py --probe`)")
    probe = seconds("probe", data.get("probe", 0.0))
    error = data.get("error")
    if error is not None and (isinstance(error, bool) or not isinstance(error, (int, float)) or not math.isfinite(error)
                              or error < 0):
        fail("error", error, "null or a share >= 0 (the fit's miss on held-back timings)")
    reduced = data.get("reduced", {})
    if not isinstance(reduced, dict):
        fail("reduced", reduced, "a mapping of reduced-resolution factors to seconds per D step")
    for key, value in reduced.items():
        if key not in REDUCED_KEYS:
            fail(f"reduced.{key}", value, f"a D step among {', '.join(REDUCED_KEYS)} (a side factor, or axes:factor)")
        seconds(f"reduced.{key}", value, at_least=skip)
    return CostModel(fixed=fixed, call=call, skip=skip, steps=n, device=device, runs=runs,
                     reduced={k: float(v) for k, v in reduced.items()}, probe=probe, error=error)
