"""The ZEUS hook: a diffusers ModelHook on the denoiser that follows a schedule's plan.

The hook tracks the run (step index, CFG branch, plan resolution, the summary) and dispatches each
step to the action its letter names (:mod:`.actions`): on a fresh step it calls the denoiser and
hands the output to the action to record; on any other step it returns the action's output and the
denoiser is not called. The step index comes from the pipeline (cache context or scheduler), never
from counting calls, so pipelines that call the denoiser twice per step (true CFG) work unchanged.
"""

from __future__ import annotations

import warnings
import weakref
from collections import Counter
from dataclasses import dataclass

import torch
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import StateManager

from ..schedule.plans import Plan, resample
from ..schedule.format import Schedule
from ..schedule.pack import Choice, Pack, speed_label
from . import actions, packs
from .actions import Action, BranchState, StepContext
from .errors import ScheduleMismatchError
from .families import Family
from .probes import BlockProbe, Skip

HOOK_NAME = "zeustune"
#: What a pack's call runs when no entry fits it: the nearest entry resampled to the call, or full steps.
FALLBACKS = ("resample", "full")


class PackFallbackWarning(UserWarning):
    """A call that no entry of the pack was tuned for: it ran the nearest one resampled, or full steps."""


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
class RunSummary:
    """What the last run did: per CFG branch, how many steps were fresh and how many predicted."""

    tag: str
    steps: int
    plan: str
    branches: dict[str, Counter]
    #: With a pack: which entry the run used and why (its file, speed, exact or the fallback).
    chosen: str = ""

    @property
    def denoiser_calls(self) -> int:
        return sum(c["F"] for c in self.branches.values())

    @property
    def probe_skips(self) -> int:
        """Predicted probe steps (G): each still ran the denoiser's first block."""
        return sum(c["G"] for c in self.branches.values())

    def __str__(self) -> str:
        kinds = ["F", *sorted({k for c in self.branches.values() for k in c} - {"F"})]
        head = f"{'branch':<10}" + "".join(f"{('fresh' if k == 'F' else k):>7}" for k in kinds) + f"{'steps':>7}"
        rows = [
            f"{name:<10}" + "".join(f"{c[k]:>7}" for k in kinds) + f"{sum(c.values()):>7}"
            for name, c in self.branches.items()
        ]
        return "\n".join(
            [f"schedule {self.tag}: {self.steps} steps, plan {self.plan}", *([self.chosen] if self.chosen else []), head,
             *rows, f"denoiser calls: {self.denoiser_calls}"]
        )


def _sample_of(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    return out[0]  # tuple, or a diffusers BaseOutput (indexable like a tuple)


class ZeusHook(ModelHook):
    _is_stateful = True

    def __init__(self, schedule: Schedule | Pack, family: Family, pipe, resample: bool = False, speed: float | None = None,
                 fallback: str = "resample"):
        super().__init__()
        # A pack chooses the schedule (and whether it is resampled) at the start of every run.
        self.pack = schedule if isinstance(schedule, Pack) else None
        self.schedule = None if self.pack else schedule
        self.speed, self.fallback = speed, fallback
        self.family = family
        self.resample = self._resample = resample
        self._timesteps = None  # the scheduler's timesteps of the current run: a new tensor is a new run
        self._pipe = weakref.ref(pipe)
        self._context = _ContextTracker()
        self._wrap = None
        self._probe: BlockProbe | None = None  # hooks on the denoiser's blocks, while the plan has probe steps
        self._remember: Action | None = None  # the probe action every full call reports to
        self.last_run: RunSummary | None = None
        self.reset_state(None)

    # -- state -----------------------------------------------------------------------------
    def reset_state(self, module):
        """Forget the histories (diffusers calls this at the end of every pipeline call)."""
        self._branches: dict[str, BranchState] = {}
        self._k: int | None = None
        self._call = 0
        self._context.reset()
        return module

    def _start_run(self, sched, ctx, args, kwargs) -> None:
        self._timesteps = sched.timesteps
        n = (ctx.num_inference_steps if ctx is not None else None) or len(sched.timesteps)
        chosen = self._choose(sched, n, args, kwargs) if self.pack is not None else ""
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
        self._sigmas = [float(s) for s in sched.sigmas[:n]] if getattr(sched, "sigmas", None) is not None else None
        self.plan = self._plan_for(n, self.schedule.plan)
        # Looked up once per run: an unknown letter fails before the first denoiser call.
        self._actions: list[Action] = self._actions_of(self.plan)
        self._branch_actions = {name: self._actions_of(self._plan_for(n, p)) for name, p in self.schedule.branch_plans.items()}
        used = dict.fromkeys(a for acts in (self._actions, *self._branch_actions.values()) for a in acts)
        for a in list(used):  # what a decided step may run observes too
            if a.delegates is not None:
                used.update(dict.fromkeys(actions.get(c, self._source) for c in a.delegates(self.schedule.predictor)))
        self._observers = [a for a in used if a.observe is not None]
        self._remember = next((a for a in used if a.cost == "probe"), None)
        if self._remember is None or (self._probe is not None and self._probe.kind != self.schedule.predictor.probe):
            self.detach()  # a pack's previous run may have had probe steps; this one has other ones, or none
        if self._remember is not None and self._probe is None:
            self._probe = BlockProbe(getattr(self._pipe(), self.family.denoiser), self.schedule.predictor.probe)
        self._branches = {}
        self.last_run = RunSummary(self.schedule.tag, n, str(self.plan), {}, chosen)

    def _choose(self, sched, n: int, args, kwargs) -> str:
        """A pack's run: the entry for this call at the speed asked, set as this run's schedule; says
        which and why (for the summary). A call no entry fits runs the fallback, with a warning."""
        speed = packs.asked(self, self.speed)
        call = packs.call_setting(self._pipe(), self.family, sched, n, args, kwargs)
        choice: Choice = self.pack.choose(call, speed)
        entry = choice.entry
        said = f"pack {self.pack.source}: {entry.file} ({speed_label(speed)}"
        self.schedule, self.resample = entry.schedule, self._resample
        if choice.exact:
            return said + f", tuned for this call: {call})"
        differs = "; ".join(choice.differences)
        if self.fallback == "full":
            self.schedule, self.resample = entry.schedule.with_plan("F" * n, tag="full-steps"), True
            said = f"pack {self.pack.source}: full steps (no {speed_label(speed)} entry for this call: {differs}"
        else:
            self.resample = True
            said += f", the nearest entry, resampled: {differs}"
        warnings.warn(said + ")", PackFallbackWarning, stacklevel=2)
        return said + ")"

    def _actions_of(self, plan: Plan) -> list[Action]:
        return [actions.get(c, self._source) for c in plan.steps]

    @property
    def _source(self) -> str:
        return f"schedule {self.schedule.tag}" if self.schedule is not None else f"pack {self.pack.source}"

    def _plan_for(self, n: int, plan: Plan) -> Plan:
        pred = self.schedule.predictor
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
    def _decide(self, args, kwargs) -> tuple[bool, Action, StepContext]:
        ctx = self._context.current
        sched = self._pipe().scheduler
        k = self._step_index(ctx, sched, args, kwargs)
        if self._k is None or k < self._k or sched.timesteps is not self._timesteps:
            self._start_run(sched, ctx, args, kwargs)
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
        pred = self.schedule.predictor
        branch = self._branches.get(name)
        if branch is None:
            branch = self._branches[name] = BranchState.new(pred)
        self.last_run.branches.setdefault(name, Counter())
        t = float(k) if pred.time == "step" or self._sigmas is None else self._sigmas[k]
        acts = self._branch_actions.get(name, self._actions)
        step = StepContext(branch, name, k, t, pred, args, kwargs, self.family, sched, self._sigmas, self.plan)
        action = acts[k]
        if action.cost == "decided":
            action = actions.get(action.decide(step), self._source)
            if action.cost == "decided":
                raise ValueError(f"action {acts[k].letter}: decided {action.letter!r}, itself decided at run time")
        # new_forward (traced under torch.compile) branches on a plain bool, as it did on the letter.
        return action.cost == "fresh", action, step

    def detach(self) -> None:
        """Take the probe's hooks off the denoiser's blocks (when this hook is removed)."""
        if self._probe is not None:
            self._probe.remove()
            self._probe = None

    def new_forward(self, module, *args, **kwargs):
        fresh, action, step = self._decide(args, kwargs)
        if fresh:
            out = self._full(step, args, kwargs)
            self._record(action, step, out)
            return out
        if action.cost == "probe":
            return self._probed(action, step, args, kwargs)
        return self._predict(action, step)

    def _full(self, step: StepContext, args, kwargs):
        """A full denoiser call; with probe steps in the plan, their reference is refreshed too."""
        if self._remember is None:
            return self.fn_ref.original_forward(*args, **kwargs)
        out, capture = self._probe.run(self.fn_ref.original_forward, args, kwargs, None)
        self._remember.remember(step, capture)
        return out

    def _probed(self, action: Action, step: StepContext, args, kwargs):
        """A probe step: the head block runs, then the rest (fresh), a gate's prediction, or the
        head output plus a tail residual; counted as F when fresh, else as the probe's letter."""
        try:
            out, capture = self._probe.run(self.fn_ref.original_forward, args, kwargs, action.probe(step))
        except Skip as skip:
            return self._predict(actions.get(skip.letter, self._source), step, count=action.letter)
        if capture.replaced:
            self._observe_and_count(action, step, _sample_of(out))
            return out
        action.remember(step, capture)
        self._record(actions.get("F", self._source), step, out)
        return out

    @torch.compiler.disable
    def _record(self, action: Action, step: StepContext, out) -> None:
        psi = _sample_of(out)
        if self._wrap is None:
            self._wrap = _wrapper_like(out)
        step.fresh = True
        action.record(step, psi)
        self._observe_and_count(action, step, psi)

    @torch.compiler.disable
    def _predict(self, action: Action, step: StepContext, count: str | None = None):
        if action.cost == "predicted" and not step.branch.fresh:
            raise ScheduleMismatchError(
                self._source, "plan", self.plan.steps, f"a fresh step in branch {step.name!r} before step {step.k}"
            )
        if action.cost == "fraction":
            step.denoise, step.fresh = self._denoise, True
            step.denoiser = getattr(self._pipe(), self.family.denoiser, None)
        psi = action.output(step)
        self._observe_and_count(action, step, psi, count)
        return self._wrap(psi)

    def _denoise(self, *args, **kwargs):
        """The denoiser, for a fraction step's own call; learns the output's structure (a run may
        start with such a step)."""
        out = self.fn_ref.original_forward(*args, **kwargs)
        if self._wrap is None:
            self._wrap = _wrapper_like(out)
        return out

    def _observe_and_count(self, action: Action, step: StepContext, psi: torch.Tensor, count: str | None = None) -> None:
        for observer in self._observers:  # actions of this plan that keep state from every step
            observer.observe(step, psi)
        self.last_run.branches[step.name][count or action.letter] += 1


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
