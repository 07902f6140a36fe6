"""The ZEUS hook: a diffusers ModelHook on the denoiser that follows a schedule's plan.

On a fresh step it calls the denoiser and records the output in the history of the current CFG
branch; on a skipped step it returns a prediction instead and the denoiser is not called. The
step index comes from the pipeline (cache context or scheduler), never from counting calls, so
pipelines that call the denoiser twice per step (true CFG) work unchanged.
"""

from __future__ import annotations

import weakref
from collections import Counter, deque
from dataclasses import dataclass, field

import torch
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import StateManager

from ..plans import Plan, resample
from ..schedule import Schedule, ScheduleError
from . import predictors as P
from .families import Family

HOOK_NAME = "zeustune"


class ScheduleMismatchError(ScheduleError):
    """A schedule applied to a pipeline or a call it was not tuned for."""


class _ContextTracker(StateManager):
    """Receives the pipeline's ``cache_context`` (the CFG branch name, on some pipelines the step).

    diffusers hands the context to every StateManager attribute of a stateful hook; this one keeps
    only the current context, the branch states live in the hook.
    """

    def __init__(self):
        super().__init__(dict)
        self.current = None

    def set_context(self, context) -> None:
        self.current = context

    def reset(self, *args, **kwargs) -> None:
        self.current = None


@dataclass
class _Branch:
    fresh: deque = field(default_factory=lambda: deque(maxlen=2))  # (k, t, psi) of fresh outputs
    anchors: deque = field(default_factory=deque)  # (k, x0) for the Lagrange tail


@dataclass
class RunSummary:
    """What the last run did: per CFG branch, how many steps were fresh and how many predicted."""

    tag: str
    steps: int
    plan: str
    branches: dict[str, Counter]

    @property
    def denoiser_calls(self) -> int:
        return sum(c["F"] for c in self.branches.values())

    def __str__(self) -> str:
        kinds = ["F", *sorted({k for c in self.branches.values() for k in c} - {"F"})]
        head = f"{'branch':<10}" + "".join(f"{('fresh' if k == 'F' else k):>7}" for k in kinds) + f"{'steps':>7}"
        rows = [
            f"{name:<10}" + "".join(f"{c[k]:>7}" for k in kinds) + f"{sum(c.values()):>7}"
            for name, c in self.branches.items()
        ]
        return "\n".join(
            [f"schedule {self.tag}: {self.steps} steps, plan {self.plan}", head, *rows,
             f"denoiser calls: {self.denoiser_calls}"]
        )


def _sample_of(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    return out[0]  # tuple, or a diffusers BaseOutput (indexable like a tuple)


class ZeusHook(ModelHook):
    _is_stateful = True

    def __init__(self, schedule: Schedule, family: Family, pipe, resample: bool = False):
        super().__init__()
        self.schedule = schedule
        self.family = family
        self.resample = resample
        self._pipe = weakref.ref(pipe)
        self._context = _ContextTracker()
        self._wrap = None
        self.last_run: RunSummary | None = None
        self.reset_state(None)

    # -- state -----------------------------------------------------------------------------
    def reset_state(self, module):
        """Forget the histories (diffusers calls this at the end of every pipeline call)."""
        self._branches: dict[str, _Branch] = {}
        self._k: int | None = None
        self._call = 0
        self._context.reset()
        return module

    def _start_run(self, sched, ctx) -> None:
        name = type(sched).__name__
        if getattr(sched, "order", 1) != 1:
            raise ScheduleMismatchError(
                self._source, "scheduler", name, "a scheduler with one denoiser evaluation per step (order 1)"
            )
        if name != self.schedule.sampler.scheduler and not self.resample:
            raise ScheduleMismatchError(
                self._source,
                "sampler.scheduler",
                name,
                f"{self.schedule.sampler.scheduler} as tuned; pass resample=True to apply it anyway",
            )
        n = (ctx.num_inference_steps if ctx is not None else None) or len(sched.timesteps)
        self._sigmas = [float(s) for s in sched.sigmas[:n]] if getattr(sched, "sigmas", None) is not None else None
        self.plan = self._plan_for(n)
        self._branches = {}
        self.last_run = RunSummary(self.schedule.tag, n, str(self.plan), {})

    @property
    def _source(self) -> str:
        return f"schedule {self.schedule.tag}"

    def _plan_for(self, n: int) -> Plan:
        plan, pred = self.schedule.plan, self.schedule.predictor
        if n != len(plan):
            if not self.resample:
                raise ScheduleMismatchError(
                    self._source,
                    "sampler.steps",
                    n,
                    f"{len(plan)} steps as tuned; pass resample=True to map the plan to {n} steps",
                )
            src = self.schedule.sampler.sigmas
            by_sigma = src is not None and self._sigmas is not None and len(self._sigmas) == n
            plan = resample(
                plan,
                n,
                source_sigmas=src if by_sigma else None,
                target_sigmas=self._sigmas if by_sigma else None,
                caching_mode=pred.caching,
            )
        return plan.resolved(pred.caching, lagrange=not self.family.flow)

    # -- decisions (kept out of compiled graphs) -------------------------------------------
    def _step_index(self, ctx, sched, args, kwargs) -> int:
        if ctx is not None and ctx.step_index is not None:
            return int(ctx.step_index)
        if hasattr(sched, "step_index"):  # None until the scheduler's first step
            k = sched.step_index
            return int(k if k is not None else (getattr(sched, "begin_index", None) or 0))
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        t0 = t.flatten()[0] if isinstance(t, torch.Tensor) else t
        hits = (sched.timesteps.to(torch.float64) == float(t0)).nonzero()
        if len(hits) == 0:
            raise ScheduleMismatchError(self._source, "timestep", t0, f"one of {type(sched).__name__}'s timesteps")
        return int(hits[0])

    @torch.compiler.disable
    def _decide(self, args, kwargs):
        ctx = self._context.current
        sched = self._pipe().scheduler
        k = self._step_index(ctx, sched, args, kwargs)
        if self._k is None or k < self._k:
            self._start_run(sched, ctx)
        if k != self._k:
            self._k, self._call = k, 0
        else:
            self._call += 1
        if k >= len(self.plan):
            raise ScheduleMismatchError(self._source, "step index", k, f"< {len(self.plan)} (steps of this run)")
        if self.schedule.cfg.branches == "shared":
            name = "shared"
        else:
            name = ctx.name if ctx is not None else f"call{self._call}"
        branch = self._branches.setdefault(name, _Branch(anchors=deque(maxlen=self.schedule.predictor.lagrange_term)))
        self.last_run.branches.setdefault(name, Counter())
        t = float(k) if self.schedule.predictor.time == "step" or self._sigmas is None else self._sigmas[k]
        return self.plan.steps[k], name, branch, k, t

    def new_forward(self, module, *args, **kwargs):
        action, name, branch, k, t = self._decide(args, kwargs)
        if action == "F":
            out = self.fn_ref.original_forward(*args, **kwargs)
            self._record(out, name, branch, k, t, args, kwargs)
            return out
        return self._predict(action, name, branch, k, t, args, kwargs)

    @torch.compiler.disable
    def _record(self, out, name, branch, k, t, args, kwargs) -> None:
        psi = _sample_of(out)
        if self._wrap is None:
            self._wrap = _wrapper_like(out)
        branch.fresh.append((k, t, psi.detach().clone()))  # clone: the pipeline owns what it got
        self._store_anchor(branch, psi, k, args, kwargs)
        self.last_run.branches[name]["F"] += 1

    @torch.compiler.disable
    def _predict(self, action, name, branch, k, t, args, kwargs):
        if not branch.fresh:
            raise ScheduleMismatchError(self._source, "plan", self.plan.steps, f"a fresh step in branch {name!r} before step {k}")
        _, t_last, last = branch.fresh[-1]
        have_prev = len(branch.fresh) == 2
        if action == "R" or not have_prev:
            psi = P.reuse(last).clone()
        elif action == "E":
            psi = P.zeus_extrapolate(last, branch.fresh[0][2])
        elif action == "S":
            psi = P.scaled_extrapolate(last, branch.fresh[0][2], t, t_last, branch.fresh[0][1], self.schedule.predictor.gamma)
        elif action == "L":
            psi = self._lagrange(branch, k, args, kwargs)
        else:  # plans are validated, so this is a letter the runtime does not know yet
            raise ScheduleMismatchError(self._source, "plan", action, "a letter this runtime implements (F, E, R, S, L)")
        self._store_anchor(branch, psi, k, args, kwargs)
        self.last_run.branches[name][action] += 1
        return self._wrap(psi)

    # -- the Lagrange x0 tail of VP (UNet) pipelines ----------------------------------------
    def _vp(self, k, args, kwargs) -> tuple[float, float]:
        """(a, s) with x_t = a * x0 + s * eps at step k; the UNet sees the VP-scaled sample."""
        if self._sigmas is not None:
            s2 = self._sigmas[k] ** 2
            return (1 / (1 + s2)) ** 0.5, (s2 / (1 + s2)) ** 0.5
        sched = self._pipe().scheduler
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        t0 = int(t.flatten()[0]) if isinstance(t, torch.Tensor) else int(t)
        abar = float(sched.alphas_cumprod[t0])
        return abar**0.5, (1 - abar) ** 0.5

    def _x_and_type(self, args, kwargs):
        x = kwargs["sample"] if "sample" in kwargs else args[0]
        return x, self._pipe().scheduler.config.prediction_type

    def _store_anchor(self, branch, psi, k, args, kwargs) -> None:
        pred = self.schedule.predictor
        if self.family.flow or "L" not in self.plan.steps or k % pred.lagrange_int != 1:
            return
        x, ptype = self._x_and_type(args, kwargs)
        a, s = self._vp(k, args, kwargs)
        branch.anchors.append((k, P.x0_from_output(psi, x, a, s, ptype)))

    def _lagrange(self, branch, k, args, kwargs) -> torch.Tensor:
        if len(branch.anchors) < 2:  # not enough anchors yet: fall back to ZEUS extrapolation
            last, prev = branch.fresh[-1][2], branch.fresh[0][2]
            return P.zeus_extrapolate(last, prev) if len(branch.fresh) == 2 else last.clone()
        ks, x0s = zip(*branch.anchors)
        x0 = P.lagrange([float(v) for v in ks], list(x0s), float(k))
        x, ptype = self._x_and_type(args, kwargs)
        a, s = self._vp(k, args, kwargs)
        return P.output_from_x0(x0, x, a, s, ptype).to(branch.fresh[-1][2].dtype)


def _wrapper_like(out):
    """A function giving a predicted tensor the structure of the denoiser's real output."""
    if isinstance(out, torch.Tensor):
        return lambda psi: psi
    if isinstance(out, tuple):
        rest = tuple(out[1:])
        return lambda psi: (psi, *rest)
    key = next(iter(out.keys()))
    cls = type(out)
    return lambda psi: cls(**{key: psi})
