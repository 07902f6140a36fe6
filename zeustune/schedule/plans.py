"""Plans: one action letter per sampling step, and the pure functions that generate them.

A plan is the portable heart of a schedule. It says, for every step of a run, whether the denoiser
is called (``F``) or its output is predicted, and with which predictor. Generators here are small
pure functions (no torch) so the search can call them thousands of times and tests can pin them.

Letters:

====  =====================================================================================
F     fresh: call the denoiser
E     extrapolate: ``2 * psi_last - psi_prev`` over the two most recent fresh outputs (ZEUS)
R     reuse: ``psi_last``
S     scaled extrapolation: ``psi_last + gamma * gap_ratio * (psi_last - psi_prev)``
L     tail skip: Lagrange x0 extrapolation on UNet pipelines; on flow-matching pipelines the
      same E/R rule as other skips (ZEUS's behaviour), see :meth:`Plan.resolved`
C     Chebyshev forecast (Spectrum): ridge fit over every fresh output, blended with S
A     adaptive: called or predicted, decided per run from the branch's recent outputs (SADA's
      criterion or an accumulated relative change); predicted with the gates of its run position
D     fresh at reduced resolution (PostDiff): the denoiser on a smaller latent, its clean
      estimate upsampled; a call at a fraction of the cost, recorded like a fresh output
P     low-resolution stage (PostDiff / ProRes): the plan's first steps sample a smaller latent
      of their own, then switch to full resolution (re-noised); only as a prefix, then F
====  =====================================================================================

``nfe`` counts the F letters (``reduced`` the D and P letters, calls at a fraction of the cost); a plan with A letters calls the denoiser between ``nfe`` and
``max_nfe`` times per branch, and its real count is measured (``summary``, the search).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .messages import shown

ACTIONS: dict[str, str] = {
    "F": "fresh denoiser call",
    "E": "ZEUS extrapolation 2*psi_last - psi_prev",
    "R": "reuse psi_last",
    "S": "gap-scaled, damped extrapolation",
    "L": "tail skip (Lagrange x0 on UNets, E/R rule on flow models)",
    "C": "Chebyshev forecast over all fresh outputs, blended with S (Spectrum)",
    "A": "adaptive: fresh or predicted, decided at run time",
    "D": "fresh at reduced resolution (the clean estimate upsampled)",
    "P": "low-resolution stage step (a prefix; switches to full resolution after it)",
    "G": "probe-gated: the first block looks at the step, then fresh or predicted",
}
FRESH = "F"
#: Letters that call the denoiser and give the predictors an output (D at reduced resolution).
CALLS = frozenset("FD")
#: Letters of calls at reduced resolution (D inside the trajectory, P a stage before it).
REDUCED = frozenset("DP")
#: Letters that need two fresh outputs in the history before they can be used.
NEEDS_TWO = frozenset("ESLC")
#: Letters decided at run time (they may call the denoiser).
DECIDED = frozenset("AG")
#: Skips of a run take gate j at position j <= GATE_POSITIONS; later ones cycle the last two
#: gates, so ZEUS's three caching modes are all expressible (E R E R.., E R R R.., E E E E..).
GATE_POSITIONS = 3
CACHING_MODES = ("reuse_interp", "reuse_all", "interp_all")


class PlanError(ValueError):
    """A plan or generator argument that cannot make a valid plan; ``field``, ``value`` and
    ``expected`` let a file's reader report it under its own field without repeating it."""

    def __init__(self, message: str, field: str | None = None, value=None, expected: str | None = None):
        super().__init__(message)
        self.field, self.value, self.expected = field, value, expected


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check(cond: bool, field: str, value, expected: str) -> None:
    if not cond:
        raise PlanError(f"{field}: got {shown(value)}, expected {expected}", field, value, expected)


@dataclass(frozen=True)
class Plan:
    """An immutable per-step plan, validated on construction.

    >>> p = Plan("FFFERF")
    >>> p.nfe, len(p), p.max_run
    (4, 6, 2)
    """

    steps: str

    def __post_init__(self):
        s = self.steps
        _check(isinstance(s, str) and len(s) > 0, "plan", s, "a non-empty string of step letters")
        bad = sorted({c for c in s if c not in ACTIONS})
        _check(not bad, "plan", s, f"only the letters {''.join(ACTIONS)} (found {''.join(bad)})")
        _check(s[0] in CALLS | {"P"}, "plan[0]", s[0], "'F', 'D' or 'P': the first step has no history to predict from")
        stage = len(s) - len(s.lstrip("P"))
        _check("P" not in s[stage:], "plan", s, "P only as a prefix (a low-resolution stage, then full resolution)")
        if stage:
            _check(stage < len(s) and s[stage] == FRESH, f"plan[{min(stage, len(s) - 1)}]", s[stage] if stage < len(s) else s,
                   "'F' after a P stage (the switch leaves no history to predict from)")
        fresh_seen = 0
        for k, c in enumerate(s):
            if c in CALLS:
                fresh_seen += 1
            elif c in NEEDS_TWO and fresh_seen < 2:
                _check(False, f"plan[{k}]", c,
                       f"F or R: {c} needs two fresh steps before it and only {fresh_seen} precede step {k}")

    def __str__(self) -> str:
        return self.steps

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def nfe(self) -> int:
        """Denoiser evaluations per CFG branch."""
        return self.steps.count(FRESH)

    @property
    def reduced(self) -> int:
        """Denoiser evaluations per branch at reduced resolution (D and P)."""
        return sum(self.steps.count(c) for c in REDUCED)

    @property
    def max_nfe(self) -> int:
        """Denoiser evaluations per branch if every adaptive step calls it."""
        return self.nfe + sum(self.steps.count(c) for c in DECIDED)

    @property
    def adaptive(self) -> bool:
        """Whether the call count is decided at run time (A and G letters)."""
        return any(c in DECIDED for c in self.steps)

    @property
    def fresh_mask(self) -> tuple[bool, ...]:
        return tuple(c == FRESH for c in self.steps)

    @property
    def speedup_bound(self) -> float:
        """The call-count bound N/NFE that no measured speedup can exceed."""
        return len(self.steps) / self.nfe

    @property
    def max_run(self) -> int:
        """Longest run of consecutive predicted steps (D and P steps call the denoiser: no part of a run)."""
        run = best = 0
        for c in self.steps:
            run = 0 if c in _CALL_KINDS else run + 1
            best = max(best, run)
        return best

    def resolved(self, caching_mode: str = "reuse_interp", lagrange: bool = False) -> Plan:
        """The plan a pipeline actually executes: ``L`` stays for Lagrange-capable (UNet) pipelines,
        elsewhere it becomes E or R by its position in the run of skips (``caching_mode``)."""
        _check_mode(caching_mode)
        if lagrange or "L" not in self.steps:
            return self
        out, j = [], 0
        for c in self.steps:
            j = 0 if c in _CALL_KINDS else j + 1
            out.append(_run_letter(j, caching_mode) if c == "L" else c)
        return Plan("".join(out))


def _check_mode(caching_mode: str) -> None:
    _check(caching_mode in CACHING_MODES, "caching_mode", caching_mode, f"one of {', '.join(CACHING_MODES)}")


def _run_letter(j: int, caching_mode: str) -> str:
    """Letter of the j-th (1-based) consecutive skip under a ZEUS caching mode."""
    if caching_mode == "reuse_interp":  # no back-to-back extrapolation: E R E R ...
        return "E" if j % 2 == 1 else "R"
    if caching_mode == "reuse_all":  # E R R R ...
        return "E" if j == 1 else "R"
    return "E"  # interp_all: E E E ...


def gate_for(j: int, gates: Sequence[str]) -> str:
    """The gate of the j-th (1-based) skip of a run: ``gates[j-1]`` up to GATE_POSITIONS, then the
    last two alternate.

    >>> ["".join(gate_for(j, g) for j in range(1, 7)) for g in ("ERR", "ERE", "SRC")]
    ['ERRRRR', 'ERERER', 'SRCRCR']
    """
    n = len(gates)
    if j <= n:
        return gates[j - 1]
    return gates[n - 2 + (j - n - 1) % 2] if n >= 2 else gates[-1]


def letter_skips(fresh: Sequence[bool], caching_mode: str = "reuse_interp") -> str:
    """Letters for a fresh/skip mask, skips lettered E/R by their position in each run (R where
    fewer than two fresh steps precede, as extrapolation needs two)."""
    _check_mode(caching_mode)
    out, j, seen = [], 0, 0
    for is_fresh in fresh:
        j = 0 if is_fresh else j + 1
        seen += bool(is_fresh)
        out.append(FRESH if is_fresh else (_run_letter(j, caching_mode) if seen >= 2 else "R"))
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------------


def zeus(
    steps: int,
    *,
    acc_start: int,
    acc_end: int,
    denominator: int,
    modular: Iterable[int],
    max_interval: int,
    lagrange_term: int = 0,
    lagrange_step: int | None = None,
    lagrange_int: int | None = None,
    caching_mode: str = "reuse_interp",
) -> Plan:
    """ZEUS's skip rule, reproduced exactly: the decision at step index k applies to step k+1.

    Head skips (``k % denominator in modular``) are lettered E/R by ``caching_mode``; tail skips
    (``lagrange_step <= k < acc_end``, ``k % lagrange_int != 0``) are lettered ``L``.

    >>> str(zeus(20, acc_start=4, acc_end=16, denominator=3, modular=(0, 1), max_interval=4))
    'FFFFFEFERFERFERFEFFF'
    """
    modular = tuple(modular)
    _check(isinstance(steps, int) and steps >= 3, "steps", steps, "an integer >= 3")
    _check(isinstance(denominator, int) and denominator >= 1, "denominator", denominator, "an integer >= 1")
    _check(
        all(isinstance(m, int) and 0 <= m < denominator for m in modular),
        "modular",
        modular,
        f"residues in [0, {denominator})",
    )
    _check(isinstance(max_interval, int) and max_interval >= 1, "max_interval", max_interval, "an integer >= 1")
    _check(isinstance(lagrange_term, int) and lagrange_term >= 0, "lagrange_term", lagrange_term, "an integer >= 0")
    if lagrange_term > 0:
        _check(isinstance(lagrange_step, int), "lagrange_step", lagrange_step, "an integer when lagrange_term > 0")
        _check(
            isinstance(lagrange_int, int) and lagrange_int >= 1,
            "lagrange_int",
            lagrange_int,
            "an integer >= 1 when lagrange_term > 0",
        )
    _check_mode(caching_mode)

    acc_start = max(acc_start, 3)  # ZEUS clamps the warm-up
    kinds = [FRESH] * steps  # F, "H" (head skip) or "L" (tail skip)
    cons = 0
    for k in range(2, steps - 1):
        in_mod = k % denominator in modular
        if cons >= max_interval:
            skip = None
        elif lagrange_term == 0 and in_mod and acc_start <= k < acc_end:
            skip = "H"
        elif lagrange_term > 0 and in_mod and acc_start <= k < lagrange_step:
            skip = "H"
        elif lagrange_term > 0 and k % lagrange_int != 0 and lagrange_step <= k < acc_end:
            skip = "L"
        else:
            skip = None
        if skip is None:
            cons = 0
        else:
            kinds[k + 1] = skip
            cons += 1
    letters = letter_skips([c == FRESH for c in kinds], caching_mode)
    return Plan("".join("L" if kd == "L" else c for kd, c in zip(kinds, letters)))


@dataclass(frozen=True)
class Segment:
    """Steps ``start <= k < end`` follow ``pattern`` repeated from ``start`` (its period is its length)."""

    start: int
    end: int
    pattern: str


def periodic(steps: int, segments: Iterable[Segment | dict | tuple]) -> Plan:
    """Periodic segments between boundaries; steps outside every segment are fresh.

    >>> str(periodic(12, [Segment(3, 9, "FER")]))
    'FFFFERFERFFF'
    """
    _check(isinstance(steps, int) and steps >= 1, "steps", steps, "an integer >= 1")
    out = [FRESH] * steps
    prev_end = 0
    for i, seg in enumerate(segments):
        if isinstance(seg, dict):
            seg = Segment(**seg)
        elif isinstance(seg, tuple):
            seg = Segment(*seg)
        name = f"segments[{i}]"
        _check(0 <= seg.start < seg.end <= steps, f"{name}.start/end", (seg.start, seg.end), f"0 <= start < end <= {steps}")
        _check(seg.start >= prev_end, f"{name}.start", seg.start, f"segments in order, not overlapping (previous ends at {prev_end})")
        _check(
            isinstance(seg.pattern, str) and FRESH in seg.pattern and set(seg.pattern) <= set(ACTIONS),
            f"{name}.pattern",
            seg.pattern,
            f"letters of {''.join(ACTIONS)} with at least one F",
        )
        for k in range(seg.start, seg.end):
            out[k] = seg.pattern[(k - seg.start) % len(seg.pattern)]
        prev_end = seg.end
    return Plan("".join(out))


def growing_gaps(
    steps: int,
    *,
    warmup: int = 5,
    window: float = 2.0,
    alpha: float = 0.75,
    tail: int = 0,
    caching_mode: str = "reuse_interp",
) -> Plan:
    """Spectrum's fresh-step placement: ``warmup`` fresh steps, then a fresh step whenever
    ``floor(window)`` steps have passed since the last one, the window growing by ``alpha`` after
    each fresh call. ``tail`` forces the last steps fresh (Spectrum itself uses 0).

    >>> growing_gaps(50, alpha=0.75).nfe, growing_gaps(50, alpha=3.0).nfe
    (14, 10)
    """
    _check(isinstance(steps, int) and steps >= 1, "steps", steps, "an integer >= 1")
    _check(isinstance(warmup, int) and 2 <= warmup <= steps, "warmup", warmup, f"an integer in [2, {steps}]")
    _check(_is_number(window) and window >= 1, "window", window, "a number >= 1")
    _check(_is_number(alpha) and alpha >= 0, "alpha", alpha, "a number >= 0")
    _check(isinstance(tail, int) and 0 <= tail <= steps, "tail", tail, f"an integer in [0, {steps}]")
    fresh = [k < warmup or k >= steps - tail for k in range(steps)]
    last = warmup - 1
    for k in range(warmup, steps):
        if k - last >= int(window):
            fresh[k] = True
        if fresh[k]:
            last = k
            window += alpha
    return Plan(letter_skips(fresh, caching_mode))


#: Published static step lists at 50 steps (0-based fresh steps): LeMiCa's searched lists for
#: FLUX.1-dev (FACTS §2b), named by their fresh count. Skipped steps reuse the last output.
LISTED_50 = {
    "lemica-26": (*range(0, 11), 12, 15, 18, 20, 25, 30, 35, 39, 42, 44, 45, 46, 47, 48, 49),
    "lemica-20": (*range(0, 8), 9, 12, 15, 19, 24, 31, 38, 43, 46, 47, 48, 49),
    "lemica-15": (*range(0, 6), 7, 10, 15, 20, 27, 34, 41, 47, 49),
    "lemica-10": (0, 1, 3, 7, 14, 21, 28, 35, 42, 49),
}


def listed(name: str, steps: int) -> Plan:
    """A published step list (:data:`LISTED_50`) as a zero-order plan (every skip R), resampled
    by position from 50 steps to ``steps`` (:func:`resample` keeps the fresh share and where it sits).

    >>> listed("lemica-10", 50).nfe, listed("lemica-10", 28).nfe
    (10, 6)
    """
    _check(name in LISTED_50, "name", name, f"one of {', '.join(LISTED_50)}")
    _check(isinstance(steps, int) and steps >= 2, "steps", steps, "an integer >= 2")
    keep = set(LISTED_50[name])
    plan = Plan("".join(FRESH if k in keep else "R" for k in range(50)))
    if steps != 50:  # resample letters the first skip of a run E (ZEUS's modes): back to zero order
        plan = Plan(str(resample(plan, steps, caching_mode="reuse_all")).replace("E", "R"))
    return plan


def from_mask(mask: Iterable[bool | int] | str, caching_mode: str = "reuse_interp") -> Plan:
    """An explicit fresh mask (truthy or '1' = fresh, as cache-dit's steps_computation_mask),
    skips lettered E/R by ``caching_mode``.

    >>> str(from_mask("1101001"))
    'FFEFERF'
    """
    if isinstance(mask, str):
        _check(set(mask) <= {"0", "1"}, "mask", mask, "a string of 0 and 1")
        fresh = [c == "1" for c in mask]
    else:
        fresh = [bool(m) for m in mask]
    return Plan(letter_skips(fresh, caching_mode))


def resample(
    plan: Plan,
    steps: int,
    *,
    source_sigmas: Sequence[float] | None = None,
    target_sigmas: Sequence[float] | None = None,
    caching_mode: str = "reuse_interp",
) -> Plan:
    """Map a plan to another step count by position on the sigma grid.

    Each target step covers a stretch of the source steps (between the midpoints to its
    neighbours, located by sigma when both grids are given, one sigma per step and decreasing,
    else by relative position). Its fresh density is the fresh share of that stretch, and fresh
    steps are placed by error diffusion on those densities, so the fresh fraction and where it
    sits are kept (picking the nearest step instead aliases: a period-2 plan halved would come out
    all fresh or all skipped). Skips keep an S or L kind found in their stretch, E/R are
    re-derived by ``caching_mode``; skips before two fresh steps become fresh and runs are capped
    at the source's longest run, so the result is always valid.

    >>> str(resample(Plan("FF" + "FE" * 24), 25))
    'FFEFEFEFEFEFEFEFEFEFEFEFE'
    """
    _check(isinstance(steps, int) and steps >= 1, "steps", steps, "an integer >= 1")
    _check_mode(caching_mode)
    n = len(plan)
    if source_sigmas is not None or target_sigmas is not None:
        _check(source_sigmas is not None and len(source_sigmas) == n, "source_sigmas", source_sigmas, f"{n} values")
        _check(target_sigmas is not None and len(target_sigmas) == steps, "target_sigmas", target_sigmas, f"{steps} values")
        src = [-float(s) for s in source_sigmas]  # increasing, for bisect
        _check(all(a < b for a, b in zip(src, src[1:])), "source_sigmas", source_sigmas, "strictly decreasing values")
        pos = [_fractional_index(src, -float(t)) for t in target_sigmas]
    else:
        pos = [j * (n - 1) / (steps - 1) if steps > 1 else 0.0 for j in range(steps)]
    mids = [(a + b) / 2 for a, b in zip(pos, pos[1:])]
    first = pos[0] - (mids[0] - pos[0]) if mids else -0.5  # the end steps' stretches are symmetric
    last = pos[-1] + (pos[-1] - mids[-1]) if mids else n - 0.5
    edges = [max(-0.5, first), *mids, min(n - 0.5, last)]

    out, acc, fresh_seen, run, cap = [], 0.0, 0, 0, plan.max_run
    for j in range(steps):
        lo, hi = edges[j], max(edges[j + 1], edges[j] + 1e-9)
        covered = range(max(0, round(lo)), min(n, round(hi) + 1))
        share: dict[str, float] = {}  # the stretch's calls by kind (F, D, P), overlap-weighted
        for i in covered:
            if plan.steps[i] in _CALL_KINDS:
                share[plan.steps[i]] = share.get(plan.steps[i], 0.0) + max(0.0, min(hi, i + 0.5) - max(lo, i - 0.5))
        acc += sum(share.values()) / (hi - lo)
        stage = all(c == "P" for c in out)  # P only as a prefix, and an F right after it
        if acc >= 0.5 or fresh_seen < 2 or run >= cap or (out and out[-1] == "P"):
            acc -= 1.0
            kind = max(share, key=lambda c: (share[c], c == FRESH)) if share else FRESH
            kind = kind if kind != "P" or stage else FRESH
            fresh_seen, run = fresh_seen + (kind != "P"), 0  # a stage step is no history
            out.append(kind)
        else:
            run += 1
            kinds = [plan.steps[i] for i in covered if plan.steps[i] in _KEPT]
            out.append(kinds[0] if kinds else "E")
    relettered = letter_skips([c in CALLS for c in out], caching_mode)
    return Plan("".join(c if c in _KEPT or c in _CALL_KINDS else r for c, r in zip(out, relettered)))


#: Non-fresh letters a resampled plan keeps (E/R are re-derived from the caching mode; the decided
#: A and G stay decided).
_KEPT = "SLCAG"
#: Letters that call the denoiser, at full or reduced resolution; a resampled call keeps its kind.
_CALL_KINDS = "FDP"


def _fractional_index(increasing: list[float], x: float) -> float:
    """Where x falls on a grid of increasing values, as a fractional index (clamped to the grid)."""
    i = bisect.bisect_left(increasing, x)
    if i <= 0:
        return 0.0
    if i >= len(increasing):
        return float(len(increasing) - 1)
    a, b = increasing[i - 1], increasing[i]
    return i - 1 + (x - a) / (b - a)
