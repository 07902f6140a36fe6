"""The bench's rows: every method a user would pick instead of a tuned schedule, built to run on
one loaded pipeline. One builder per method family, each ``(pipe, spec, base, targets) -> rows``,
with ``targets`` the call counts per branch the rows are matched to ({budget: calls}).

Methods re-implemented as plans in zeustune's runtime (their rules in ``FACTS.md`` §2/§2b, the
published settings; never their code): SADA, Spectrum, LeMiCa's step lists, an EasyCache-style
criterion, ZEUS's published configurations, cache-dit's step masks. Methods run as their own
implementation: diffusers' caches (``peers``) and the cache-dit package.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from tqdm import tqdm

from ..schedule import plans as P
from .. import runtime
from ..quality.evaluate import sample
from ..schedule.format import Predictor, Schedule
from . import peers


@dataclass
class Method:
    name: str
    family: str
    setup: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    call: dict = field(default_factory=dict)  # pipeline call overrides (num_inference_steps)
    budget: float | None = None  # the budget this row was matched to, if any
    pipe: object = None  # a pipeline of its own (default: the shared one)
    #: What a skipped step costs (compute.skip_share): "zeustune" (the plan's letters), a diffusers
    #: peer's name, "cache-dit", or None (a row that skips nothing).
    work: str | None = None
    schedule: Schedule | None = None  # rows run by zeustune's runtime
    steps: int | None = None  # the run's step count (fewer steps rows: their own)
    calls: float | None = None  # full denoiser calls per branch, mean over the held-out images
    calls_p90: float | None = None
    cost: float | None = None  # full-call equivalents on the projection target per branch (compute.cost)
    projected: float | None = None  # projected end-to-end speedup there (compute.projected_speedup)
    latency: float | None = None
    speedup: float | None = None  # measured here, end to end
    loss: float | None = None
    loss_p90: float | None = None
    scores: dict = field(default_factory=dict)  # every metric's mean over the prompts (report.RANKED)
    #: Whether the row calls the denoiser at reduced resolution (D or P letters); kept in results.json
    #: so the equal-calls view can leave such rows out without the schedule.
    reduced: bool | None = None

    @property
    def per_prompt(self) -> bool:
        """Whether the row decides at run time from the images being made (a peer cache, or a plan
        with A or G steps): such decisions are per batch, so the bench renders these rows one
        prompt per call, as the search scores adaptive plans and as a one-image request runs."""
        if self.work not in (None, "zeustune"):
            return True
        plans = [self.schedule.plan, *self.schedule.branch_plans.values()] if self.schedule is not None else []
        return any(P.Plan(str(p)).adaptive for p in plans)

    def __post_init__(self):
        if self.reduced is None:  # peers without a schedule run at full resolution
            plans = [self.schedule.plan, *self.schedule.branch_plans.values()] if self.schedule is not None else []
            self.reduced = any(c in "DP" for p in plans for c in str(p))


def schedule_row(pipe, sched: Schedule, family: str, budget: float | None = None, name: str | None = None) -> Method:
    @contextlib.contextmanager
    def ctx():
        runtime.enable(pipe, sched)
        try:
            yield
        finally:
            runtime.disable(pipe)

    return Method(name or sched.tag, family, ctx, budget=budget, work="zeustune", schedule=sched)


def count_calls(pipe, spec, m: Method, prompt: str, seed: int) -> int:
    """Full denoiser calls of one image, all CFG branches together."""
    pipe = m.pipe or pipe
    with m.setup():
        return peers.count_full_calls(pipe, lambda: sample(pipe, spec, prompt, seed, **m.call))


def nearest(targets: dict[float, int], counted: list[tuple[float, Method]]) -> list[Method]:
    """From ``(calls per branch, row)`` pairs, the two rows around each target: the nearest at or
    under its calls and the nearest over them (each row once; the matched one named by the
    budget). One row near the target would often miss the speed by a little or overshoot it: with
    both, a peer's best row reaching a speed is one of its nearest knobs, whichever side it is on."""
    out = []
    for b, calls in targets.items():
        under = [c for c in counted if c[0] <= calls]
        over = [c for c in counted if c[0] > calls]
        sides = [max(under, key=lambda c: c[0])] if under else []
        sides += [min(over, key=lambda c: c[0])] if over else []
        for c, m in sorted(sides, key=lambda c: abs(c[0] - calls)):
            if all(x is not m for x in out):
                m.budget = m.budget if m.budget is not None else b
                out.append(m)
    return out


# -- re-implemented as plans ------------------------------------------------------------------


def fewer_steps(pipe, spec, base, targets) -> list[Method]:
    """Plain fewer steps over the whole range of matched call counts: its front, not just points."""
    match = {c: b for b, c in targets.items()}
    return [Method(f"{k} steps", "fewer steps", call={"num_inference_steps": k}, budget=match.get(k), steps=k)
            for k in range(max(2, min(targets.values()) - 1), max(targets.values()) + 2)]


def zeus_published(pipe, spec, base, targets) -> list[Method]:
    from ..search import space as SP
    from ..search.evaluator import schedule_of

    n = spec.steps
    space = SP.load(spec.name) if (SP.BUILTIN_SPACES / f"{spec.name}.yaml").is_file() else SP.load(spec.family)
    return [schedule_row(pipe, schedule_of(base, SP.decode(SP.zeus_seed(name, n), space, n), name), "ZEUS published")
            for name in SP.ZEUS_PUBLISHED]


#: SADA's published configuration (its README, 50 steps): acceleration range, Lagrange tail step
#: and interval, and at most max_interval - 1 consecutive skips.
SADA_50 = dict(acc=(10, 47), lagrange_step=24, lagrange_int=4, max_interval=4)


def sada_plan(steps: int) -> P.Plan:
    """SADA on flow matching as a plan: positions scaled from 50 steps. Fresh before the
    acceleration range; A steps (SADA's criterion, decided at run time) up to the Lagrange step;
    from there to the range's end a step is skipped iff its index is not a multiple of
    ``lagrange_int`` (L: the tail rule); fresh after the range."""
    c, s = SADA_50, steps / 50
    start, end, lag = max(3, round(c["acc"][0] * s)), round(c["acc"][1] * s), round(c["lagrange_step"] * s)
    letters = []
    for k in range(steps):
        if k <= start or k >= end:
            letters.append("F")
        elif k <= lag:
            letters.append("A")
        else:
            letters.append("L" if k % c["lagrange_int"] else "F")
    return P.Plan("".join(letters))


def sada(pipe, spec, base, targets) -> list[Method]:
    """SADA's rule: an A step is predicted iff the mean second difference of the velocity says
    stable (threshold 0); the first skip of a run extrapolates, the rest reuse (gates E R R)."""
    pred = Predictor(caching="reuse_interp", criterion="sada", threshold=0.0,
                     max_run=SADA_50["max_interval"] - 1, gates="ERR", lagrange_int=SADA_50["lagrange_int"])
    sched = base.with_plan(sada_plan(spec.steps), tag="sada (published)", predictor=pred)
    return [schedule_row(pipe, sched, "SADA")]


#: Spectrum's published settings: forecaster degree 4, ridge 0.1, blend w 0.5 (its scripts) and
#: 1.0 (its config default); 5 warm-up steps, windows from 2 growing by alpha (0.75 and 3.0).
SPECTRUM_ALPHAS = (0.75, 3.0)
SPECTRUM_BLENDS = (0.5, 1.0)


def spectrum(pipe, spec, base, targets) -> list[Method]:
    """Spectrum's forecaster on its own growing-gap schedule: the published alphas at both blends,
    and at blend 0.5 the smallest alpha that lands on each target's call count."""
    n = spec.steps

    def row(alpha, w, budget=None):
        plan = P.Plan("".join("C" if c != "F" else c for c in str(P.growing_gaps(n, warmup=5, alpha=alpha))))
        pred = Predictor(caching="reuse_interp", degree=4, ridge=0.1, blend=w, time="step")
        return schedule_row(pipe, base.with_plan(plan, tag=f"spectrum a={alpha:g} w={w:g}", predictor=pred),
                            "Spectrum", budget=budget)

    out = [row(a, w) for a in SPECTRUM_ALPHAS for w in SPECTRUM_BLENDS]
    for b, calls in targets.items():
        alpha = next((a / 20 for a in range(0, 400) if P.growing_gaps(n, warmup=5, alpha=a / 20).nfe <= calls), None)
        if alpha is not None and alpha not in SPECTRUM_ALPHAS:
            out.append(row(alpha, 0.5, b))
    return out


#: LeMiCa's searched step lists for FLUX.1-dev at 50 steps, by fresh count (FACTS §2b).
LEMICA_50 = {int(name.split("-")[1]): steps for name, steps in P.LISTED_50.items() if name.startswith("lemica-")}


def lemica_plan(fresh: int, steps: int) -> P.Plan:
    """A LeMiCa list as a zero-order plan at ``steps`` (:func:`plans.listed`)."""
    return P.listed(f"lemica-{fresh}", steps)


def lemica(pipe, spec, base, targets) -> list[Method]:
    pred = Predictor(caching="reuse_all")
    return [schedule_row(pipe, base.with_plan(lemica_plan(k, spec.steps), tag=f"lemica {k}/50", predictor=pred), "LeMiCa")
            for k in LEMICA_50]


#: PostDiff's published settings (FACTS §2): the first 1/2 or 1/5 of the steps at 1/2 or 3/4 of
#: the resolution, the rest at full resolution.
POSTDIFF = ((0.5, 0.5), (0.5, 0.75), (0.2, 0.5), (0.2, 0.75))


def postdiff_plan(steps: int, share: float) -> P.Plan:
    """The first ``share`` of the steps as a low-resolution stage (P), the rest fresh."""
    k = min(max(1, round(share * steps)), steps - 1)
    return P.Plan("P" * k + "F" * (steps - k))


def postdiff(pipe, spec, base, targets) -> list[Method]:
    """PostDiff-style reduced-resolution starts at its published fractions, as zeustune's P stage
    (ProRes's recipe for DiTs: a small trajectory on the small token count's sigmas, one re-noised
    switch). No PostDiff code is public; its module caching is left out (the other rows cover it)."""
    if spec.family != "flux":  # a P stage runs on packed FLUX latents only (runtime.actions.stage refuses others)
        return []
    return [schedule_row(pipe, base.with_plan(postdiff_plan(spec.steps, share), tag=f"postdiff {share:g} at {f:g}x",
                                              predictor=replace(base.predictor, reduced=f)), "PostDiff-style")
            for share, f in POSTDIFF]


EASYCACHE_THRESHOLDS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.2)


def easycache_plan(steps: int) -> P.Plan:
    """Fresh warm-up (a tenth of the run, at least 2: the rate needs two fresh steps), A steps, a
    fresh last step."""
    warm = max(2, round(steps / 10))
    return P.Plan("F" * warm + "A" * (steps - warm - 1) + "F")


def easycache(pipe, spec, base, targets, prompt: str, seed: int, progress: bool = True) -> list[Method]:
    """An EasyCache-style criterion (transformation rate x input change, accumulated; recompute at
    the threshold), skips reusing the last output; thresholds landing nearest each target."""
    counted = []
    for th in tqdm(EASYCACHE_THRESHOLDS, desc="easycache knobs", disable=not progress, leave=False):
        pred = Predictor(caching="reuse_all", criterion="change", threshold=th, max_run=spec.steps, gates="R")
        m = schedule_row(pipe, base.with_plan(easycache_plan(spec.steps), tag=f"easycache {th:g}", predictor=pred),
                         "EasyCache-style")
        counted.append((spec.steps * count_calls(pipe, spec, m, prompt, seed) / _full_calls(pipe, spec, prompt, seed), m))
    return nearest(targets, counted)


# -- cache-dit ----------------------------------------------------------------------------------

# cache-dit's hand-made step masks (FACTS.md §4: fast = 11 of 28, ultra = 8); cache_dit.steps_mask()
# gives the positions where the package installs.
CACHE_DIT_POLICIES = ("slow", "medium", "fast", "ultra")


def cache_dit_masks(steps: int) -> dict[str, list[int]]:
    """cache-dit's step masks from the package itself; {} where it does not install."""
    try:
        import cache_dit
    except Exception:
        return {}
    return {policy: [int(bool(v)) for v in cache_dit.steps_mask(mask_policy=policy, total_steps=steps)]
            for policy in CACHE_DIT_POLICIES}


def cache_dit_in_runtime(pipe, spec, base, targets) -> list[Method]:
    pred = Predictor(caching="reuse_interp")
    return [schedule_row(pipe, base.with_plan(P.from_mask(mask), tag=f"cache-dit {policy}", predictor=pred),
                         "cache-dit masks (our runtime)") for policy, mask in cache_dit_masks(spec.steps).items()]


def cache_dit_package(pipe, spec, base, targets) -> list[Method]:
    """cache-dit itself: DBCache F1B0 (the first block always runs, as in its published configs),
    the mask applied statically, one cache per CFG branch (true CFG calls the model twice a step).
    It patches the transformer's forward for good (disable_cache leaves the patch, which then
    breaks diffusers' own caches), so it gets a pipeline of its own with the same weights."""
    masks = cache_dit_masks(spec.steps)
    if not masks:
        return []
    from ..models.loading import load as load_model

    own, _ = load_model(spec, progress=False)

    def ctx(mask):
        @contextlib.contextmanager
        def run():
            import cache_dit

            cache_dit.enable_cache(own, cache_config=cache_dit.DBCacheConfig(
                Fn_compute_blocks=1, Bn_compute_blocks=0, steps_computation_mask=mask, steps_computation_policy="static",
                enable_separate_cfg=True, num_inference_steps=len(mask)))
            try:
                yield
            finally:
                cache_dit.disable_cache(own)

        return run

    return [Method(f"cache-dit {p} (package)", "cache-dit package", ctx(mask), pipe=own, work="cache-dit")
            for p, mask in masks.items()]


# -- diffusers' caches --------------------------------------------------------------------------

KNOBS = {  # candidate knobs per diffusers cache; the one nearest each target's call count is used
    "fbcache": [0.06, 0.08, 0.1, 0.12, 0.15, 0.18, 0.2, 0.22, 0.25, 0.3, 0.4],
    "taylorseer": [2, 3, 4, 5, 6],
    "magcache": [0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5],
    "seacache": [0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.2, 1.6],
}


def _full_calls(pipe, spec, prompt, seed) -> int:
    return count_calls(pipe, spec, Method("full", "full"), prompt, seed)


def diffusers_caches(pipe, spec, base, targets, prompt: str, seed: int, calib_run, progress: bool = True) -> list[Method]:
    """Each diffusers cache at the knobs whose counted calls land nearest each target."""
    full = _full_calls(pipe, spec, prompt, seed)  # CFG: 2 calls per step
    ratios = peers.calibrate_magcache(pipe, calib_run)
    out = []
    for name, knobs in KNOBS.items():
        # MagCache's defaults (max 3 skips in a row, 20% retention) and SeaCache's (2 in a row) cap
        # them near 2.5x at 28 steps: loosened so they can reach 3x and 4x too
        opts = {"magcache": {"mag_ratios": ratios, "max_skip_steps": 10, "retention_ratio": 0.1},
                "seacache": {"max_consecutive_cached": 6}}.get(name, {})
        counted = []
        for k in tqdm(knobs, desc=f"{name} knobs", disable=not progress, leave=False):
            m = Method(f"{name} {k:g}", f"diffusers {name}", _peer_ctx(pipe, name, k, opts), work=name)
            counted.append((spec.steps * count_calls(pipe, spec, m, prompt, seed) / full, m))
        out += nearest(targets, counted)
    return out


def _peer_ctx(pipe, name, knob, opts):
    return lambda: peers.apply(pipe, name, knob, **{k: (v.clone() if torch.is_tensor(v) else v) for k, v in opts.items()})
