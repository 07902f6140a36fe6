"""The latency cost model a budget is checked against, fitted by timing on the search device.

One image end to end (text encoding, sampling, decoding) takes

    latency(S steps, F fresh, D reduced) = fixed + F * call + D * reduced[f] + (S - F - D) * skip

``fixed`` is what does not scale with steps (encoders, VAE, pipeline set-up), ``call`` a step
with denoiser calls (all CFG branches), ``skip`` a predicted step (prediction, scheduler update,
hook), ``reduced[f]`` a step whose calls run at reduced resolution (D, latent side x f; measured,
since attention and the text tokens make it more than f^2 of a call). The speedup of a plan is ``latency(N, N) / latency(N, NFE)``: the fixed share caps it
(FACTS.md §3), which is why ``--budget`` is refused above :meth:`CostModel.ceiling`.

Three unknowns need steps to vary independently of fresh calls, so the fit times full runs at N
and N/2 steps and plans with few fresh steps at N, interleaved round by round (drift on a shared
machine then hits every design point alike), and solves least squares on the medians.
"""

from __future__ import annotations

import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass, field

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

    def equivalent(self, nfe: float, reduced: float = 0.0, factor: float | None = None) -> float:
        """Fresh-step equivalents of a plan with ``nfe`` fresh and ``reduced`` D steps at ``factor``:
        the count whose :meth:`latency` is the plan's (D costs ``reduced[f]`` instead of a skip)."""
        if not reduced:
            return nfe
        key = f"{factor:g}"
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
        return (f"fixed {self.fixed * 1e3:.1f} ms, {self.call * 1e3:.2f} ms per fresh step, {self.skip * 1e3:.3f} ms per "
                f"predicted step{reduced}; full run {self.full * 1e3:.1f} ms; ceiling {self.ceiling:.2f}x ({self.device})")


def device_name(device: str = "cpu") -> str:
    """A short description of the device the timings were taken on."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    import os

    import torch

    # Threads, not cores: a worker given 1 of 16 cores times very differently from the whole CPU.
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} of {os.cpu_count()} threads"


def fit(time_run, steps: int, runs: int = 5, device: str = "", factors=()) -> CostModel:
    """Fit the model from ``time_run(steps, fresh) -> seconds``, which runs one image with
    ``fresh`` fresh steps (the rest predicted) of ``steps``. Design points: (N, N), (N/2, N/2),
    (N, N/4), (N, 2), repeated ``runs`` times in rotation after one untimed warm-up of each.
    With ``factors``, also ``time_run(N, 1, factor)``: one fresh step, the rest D at that factor,
    from which each D step's cost follows given the fitted fixed and call costs."""
    half = max(steps // 2, 2)
    design = [(steps, steps), (half, half), (steps, max(steps // 4, 3)), (steps, 2)]
    design += [(steps, 1, float(f)) for f in factors]
    for d in design:  # warm-up: first calls allocate
        time_run(*d)
    samples: dict[tuple, list[float]] = {d: [] for d in design}
    for _ in range(runs):
        for d in design:
            samples[d].append(time_run(*d))
    plain = [d for d in design if len(d) == 2]
    rows = [(1.0, f, s - f) for s, f in plain]
    ys = [statistics.median(samples[d]) for d in plain]
    fixed, call, skip = _lstsq(rows, ys)
    # The fit is noisy where costs are tiny; clamp to what can be true.
    skip = max(skip, 0.0)
    fixed = max(fixed, 0.0)
    reduced = {f"{d[2]:g}": max((statistics.median(samples[d]) - fixed - call) / (steps - 1), skip)
               for d in design if len(d) == 3}
    return CostModel(fixed=fixed, call=call, skip=skip, steps=steps, device=device, runs=runs, reduced=reduced)


def _lstsq(rows: list[tuple[float, ...]], ys: list[float]) -> tuple[float, ...]:
    import numpy as np

    sol, *_ = np.linalg.lstsq(np.array(rows, dtype=float), np.array(ys, dtype=float), rcond=None)
    return tuple(float(v) for v in sol)


def timer(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
