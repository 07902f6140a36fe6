"""Scoring one candidate plan: images for the calibration prompts under the plan, their loss
against the cached full-step references, and timings for the cost model and the finalists.

The pipeline is loaded once and every trial reuses it (and its references): prompts go through
in batches, so the search is bound by the denoiser and not by Python. Common random numbers:
prompt i always uses seed ``seed + i``, for the references and for every trial.
"""

from __future__ import annotations

import functools
import hashlib
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..quality import metrics as M
from .. import runtime
from ..quality.evaluate import references, sample, sample_batch, time_interleaved, timed_steps
from ..quality.references import ReferenceCache, reference_key
from ..models.spec import ModelSpec
from ..schedule.plans import Plan
from ..schedule.format import Guidance, Model, Predictor, Sampler, Schedule, parse_reduced_key
from ..models.settings import identity
from . import prefix
from .embeds import EmbeddingMemo, memoized
from .prefix import PrefixCache
from .cost import Timing
from .space import Decoded, gate_letters, spaced_mask


class NonFiniteOutput(FloatingPointError):
    """A plan whose images contain NaN or inf."""


class Hopeless(Exception):
    """Early abort: the losses on the first prompts already rule the trial out of the front."""

    def __init__(self, done: int, running: float, bar: float, why: str = ""):
        self.done, self.running, self.bar = done, running, bar
        super().__init__(f"loss {running:.4f} after {done} prompts " + (why or f"> {bar:.4f}"))


@dataclass(frozen=True)
class Bar:
    """What a candidate's first prompts must show to be scored on the rest (multi-fidelity scoring).
    Plain data, so the rule travels to remote workers with the plan.

    - ``mean``: the running mean loss must stay at or below it (prune_ratio x the best loss of any
      trial at least as fast), checked after every batch but the last.
    - ``rival``, ``z``: at the rungs (each third of the prompts), the candidate is compared with the
      best trial at least as fast on the same prompts, ``rival`` being that trial's per-prompt
      losses. Paired, so the prompts' own difficulty cancels. It is stopped when it is worse with
      confidence: mean(d) - z * sd(d) / sqrt(k) > 0 for d = its losses minus the rival's over the k
      prompts so far. It could then not beat the rival on the full set, so not make the front.
      z = 1.5 cut 13-27% of the fully scored trials' prompts in seven recorded studies without
      cutting any front trial (docs/search/prefix-reuse.md).
    """

    mean: float | None = None
    rival: tuple[float, ...] | None = None
    z: float | None = None
    rival_trial: int | None = None

    def check(self, losses: list[float], rung: bool) -> None:
        """Raise :class:`Hopeless` if the losses of the first prompts rule the candidate out."""
        k = len(losses)
        running = sum(losses) / k
        if self.mean is not None and running > self.mean:
            raise Hopeless(k, running, self.mean)
        if rung and self.rival is not None and self.z is not None and 2 <= k <= len(self.rival):
            d = [a - b for a, b in zip(losses, self.rival)]
            m = sum(d) / k
            sd = math.sqrt(sum((x - m) ** 2 for x in d) / (k - 1))
            if m - self.z * sd / math.sqrt(k) > 0:
                rival = sum(self.rival[:k]) / k
                raise Hopeless(k, running, rival, f"vs {rival:.4f} for trial {self.rival_trial} on the same prompts "
                                                  f"(worse by {m:.4f} +- {sd / math.sqrt(k):.4f}, z {self.z:g})")


def as_bar(bar) -> Bar | None:
    """A :class:`Bar` from what callers pass: None, a Bar, or a plain running-mean bar (a number)."""
    return bar if bar is None or isinstance(bar, Bar) else Bar(mean=float(bar))


def template(pipe, spec: ModelSpec, tag: str = "candidate") -> Schedule:
    """An all-fresh schedule fitting ``pipe`` as ``spec`` samples it; candidates swap in a plan."""
    ident = identity(spec)
    return Schedule(
        tag=tag,
        model=Model(spec.family, spec.name, spec.pipeline, loras=ident["loras"]),
        sampler=Sampler(type(pipe.scheduler).__name__, spec.steps, spec.height, spec.width, spec.frames,
                        guidance=Guidance(spec.guidance["mode"], spec.guidance.get("scale")),
                        dtype=ident["dtype"], call=ident["call"]),
        plan=Plan("F" * spec.steps),
    )


def schedule_of(base: Schedule, decoded: Decoded, tag: str, **changes) -> Schedule:
    pred = Predictor(caching="reuse_interp", gamma=decoded.gamma, time="step",
                     lagrange_term=decoded.lagrange_term, lagrange_int=decoded.lagrange_int, **dict(decoded.knobs))
    branch_plans = {"uncond": decoded.uncond} if decoded.uncond is not None else {}
    return base.with_plan(decoded.plan, tag=tag, predictor=pred, branch_plans=branch_plans, **changes)


def calls_per_branch(pipe, probe_share: float = 0.0) -> float:
    """Denoiser calls per CFG branch in the pipeline's last run (the mean over its branches); a
    predicted probe step (G) counts ``probe_share`` of a call (its first block ran)."""
    summ = runtime.summary(pipe)
    return (summ.denoiser_calls + probe_share * summ.probe_skips) / max(len(summ.branches), 1)


class Evaluator:
    """Holds the pipeline, a prompt set and its references; scores plans on them."""

    def __init__(self, pipe, spec: ModelSpec, prompts: list[str], seed: int, metric: str, batch: int = 8,
                 prefix_bytes: int | None = 1 << 30):
        self.pipe, self.spec, self.prompts, self.seed, self.metric, self.batch = pipe, spec, prompts, seed, metric, batch
        #: recorded runs whose shared prefixes later candidates replay (None: every call is run)
        self.prefix = PrefixCache(prefix_bytes) if prefix_bytes else None
        # and the text encoders' outputs per batch (the same in every trial); off with the replay
        self.embeds = EmbeddingMemo(pipe.encode_prompt) if prefix_bytes and hasattr(pipe, "encode_prompt") else None
        self._ref_features: dict = {}  # st-lpips features of each reference slice, computed once
        self.base = template(pipe, spec)
        self._refs = None
        self.last_calls: list[float] = []  # per prompt of the last losses(): denoiser calls per branch
        #: what a predicted probe step costs in calls (the cost model's CostModel.probe_share)
        self.probe_share = 0.0

    @property
    def refs(self):
        return self._refs

    @refs.setter
    def refs(self, value) -> None:
        self._refs, self._ref_features = value, {}  # new references: their kept features go

    def prepare(self, cache, progress: bool = True, render=None):
        """Full-step references of the prompts (cached on disk); needed before :meth:`losses`.
        ``render``: where missing ones are computed, if not here (see ``evaluate.references``)."""
        self.refs = references(self.pipe, self.spec, self.prompts, self.seed, cache, progress=progress, batch=self.batch,
                               render=render)
        return self.refs

    def losses(self, decoded: Decoded, bar: Bar | float | None = None) -> torch.Tensor:
        """Per-prompt loss of the plan (lower is better). With ``bar`` (a :class:`Bar`, or a number:
        the running-mean bar), abort (:class:`Hopeless`) after a batch other than the last when the
        losses so far rule the plan out.

        Adaptive plans decide per batch, so they are rendered one prompt per call: their call
        counts (``last_calls``) and images are then those of a single-prompt deployment."""
        schedule = schedule_of(self.base, decoded, "candidate")
        out, self.last_calls = [], []
        bar = as_bar(bar)
        rung = max(1, -(-len(self.prompts) // 3))  # the paired test runs at each third, whatever the batch
        batch = 1 if decoded.adaptive else self.batch
        keys = prefix.step_keys(schedule, self.spec.steps)
        # probe steps read the blocks of every full call, which a replayed call skips: no replay
        probed = any("G" in k for k in keys)
        replay = prefix.install(self.pipe, self.prefix) if self.prefix is not None and not probed else None
        knobs = repr((schedule.predictor, schedule.cfg))
        runtime.enable(self.pipe, schedule)
        try:
            for start in range(0, len(self.prompts), batch):
                idx = range(start, min(start + batch, len(self.prompts)))
                if replay is not None:  # the calls of the longest prefix an earlier run of this batch shares
                    _, replay.serve = self.prefix.lookup((idx.start, idx.stop), keys, knobs)
                    replay.recorded = []
                with memoized(self.pipe, self.embeds):
                    images = sample_batch(self.pipe, self.spec, [self.prompts[i] for i in idx], [self.seed + i for i in idx])
                if replay is not None:
                    self.prefix.store((idx.start, idx.stop), keys, knobs, replay.recorded)
                self.last_calls += [calls_per_branch(self.pipe, self.probe_share)] * len(idx)
                if not torch.isfinite(images).all():
                    raise NonFiniteOutput(f"plan {decoded.plan}: non-finite output on prompts {idx.start}..{idx.stop - 1}")
                refs = self.refs.images[idx.start:idx.stop].to(images.device)  # references live on the CPU
                out.append(self._loss(images, refs, (idx.start, idx.stop)))
                done = idx.stop
                if bar is not None and done < len(self.prompts):
                    bar.check(torch.cat(out).tolist(), rung=done // rung > idx.start // rung)
        finally:
            runtime.disable(self.pipe)
            if replay is not None:
                prefix.remove(self.pipe)
        return torch.cat(out)

    def scored(self, decoded: Decoded, cache: ReferenceCache | None) -> tuple[torch.Tensor, bool]:
        """:meth:`losses` (and ``last_calls``) through ``cache``, beside the references: a plan's
        scores on fixed references are the same in every search at these settings, so the held-out
        rows of the baselines are computed once. Returns (losses, whether they came from the cache)."""
        key = self.score_key(decoded) if cache is not None and self.refs.keys else None
        found = cache.get(key) if key else None
        if found is not None:
            self.last_calls = found["calls"].tolist()
            return found["losses"], True
        out = self.losses(decoded)
        if key:
            try:
                cache.put(key, {"losses": out.cpu(), "calls": torch.tensor(self.last_calls, dtype=torch.float64)},
                          meta={"kind": "scores", "model": self.spec.name, "plan": str(decoded.plan),
                                "metric": self.metric, "prompts": len(self.prompts)})
            except OSError as e:  # a full or read-only cache costs the next search a recomputation, not this one
                warnings.warn(f"score cache {cache.root}: not stored ({e}); the scores are used all the same", stacklevel=2)
        return out, False

    def score_key(self, decoded: Decoded) -> str:
        """Everything a plan's per-prompt losses depend on: the references' keys (model, settings,
        prompts, seeds), the whole candidate schedule, the metric, how prompts are batched, the device
        and dtype, the library versions and zeustune's own source (a code change is a new key)."""
        import diffusers

        return reference_key(kind="scores", references=list(self.refs.keys), metric=self.metric,
                             schedule=schedule_of(self.base, decoded, "candidate").to_dict(),
                             batch=1 if decoded.adaptive else self.batch, device=str(getattr(self.pipe, "device", "cpu")),
                             dtype=str(getattr(self.pipe, "dtype", "")), torch=torch.__version__,
                             diffusers=diffusers.__version__, code=_code_digest())

    def _loss(self, images: torch.Tensor, refs: torch.Tensor, key) -> torch.Tensor:
        if self.metric != "st-lpips" or images.dim() == 5:  # kept reference features: images only
            return loss(self.metric, images, refs)
        v, self._ref_features[key] = M.st_lpips_kept(images, refs, self._ref_features.get(key))
        return v.double()

    # -- timing ----------------------------------------------------------------------------
    def time_run(self, steps: int, fresh: int, factor: float | str | None = None, probe: bool = False) -> Timing:
        """One image (the first prompt) at ``steps`` steps with ``fresh`` fresh ones, timed per step;
        with ``factor`` (a side factor or a D step's name, schedule.format.reduced_key), the other
        steps are D of that kind instead of predicted; with ``probe``,
        they are G steps whose probe always predicts (an infinite threshold)."""
        if probe:
            plan = Plan("F" * fresh + "G" * (steps - fresh))
            pred = replace(self.base.predictor, probe_thresholds=(float("inf"),), max_run=steps, gates="R")
            runtime.enable(self.pipe, self.base.with_plan(plan, predictor=pred))
        elif factor is not None:
            plan = Plan("F" * fresh + "D" * (steps - fresh))
            f, axes = parse_reduced_key(factor)
            runtime.enable(self.pipe, self.base.with_plan(plan, predictor=replace(self.base.predictor, reduced=f,
                                                                                  reduced_axes=axes)))
        elif fresh >= steps:
            plan = Plan("F" * steps)
            runtime.disable(self.pipe)
        else:
            plan = Plan(gate_letters(spaced_mask(steps, fresh, 2, 0, 1.0), ["E", "R", "E"]))
            runtime.enable(self.pipe, self.base.with_plan(plan))
        try:
            total, per_step = timed_steps(self.pipe, lambda: sample(self.pipe, self.spec, self.prompts[0], self.seed,
                                                                   num_inference_steps=steps))
            return Timing(total, tuple(per_step), plan.steps)
        finally:
            runtime.disable(self.pipe)

    def full_images(self, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        """Full-step images, ``batch`` prompts per call (references rendered on a worker)."""
        runtime.disable(self.pipe)
        out = [sample_batch(self.pipe, self.spec, prompts[i:i + self.batch], seeds[i:i + self.batch]).cpu()
               for i in range(0, len(prompts), self.batch)]
        return torch.cat(out)

    def time_schedule(self, schedule: Schedule, runs: int) -> tuple[float, float]:
        """Median seconds of (full-step, scheduled) single-image runs, interleaved. An adaptive
        plan's call count varies per prompt, so its runs rotate over up to 8 prompts."""
        sample(self.pipe, self.spec, self.prompts[0], self.seed)  # warm-up
        adaptive = schedule.plan.adaptive or any(p.adaptive for p in schedule.branch_plans.values())
        k = min(len(self.prompts), 8) if adaptive else 1
        return time_interleaved(self.pipe, self.spec, schedule, self.prompts[:k], [self.seed + i for i in range(k)], runs)


@functools.cache
def _code_digest() -> str:
    """sha256 of zeustune's Python sources: cached scores never outlive the code that made them."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def loss(metric: str, images: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """Per-image quality loss, lower is better: the metric itself, or 1 - SSIM, or -PSNR."""
    v = M.score(metric, images, refs).double()
    if not M.METRICS[metric].higher_is_better:
        return v
    return 1.0 - v if metric == "ssim" else -v
