"""Exact reuse of shared trajectory prefixes: denoiser calls a candidate would repeat are served
from a recording instead of run.

A candidate's run is a deterministic function of its batch (prompts, seeds), its plan letters up to
the step (every CFG branch's) and its predictor settings. So if an earlier run of the same batch had
the same letters at steps ``0..L-1`` and the same predictor, every denoiser call it made before step
``L`` had exactly the inputs the candidate's calls will have, and returns the same output: those
calls are replayed from the recording, bit for bit, and the runtime hook above still makes every
decision itself (predictions, adaptive criteria, forecasts see the same tensors). Steps where every
branch is fresh do not depend on the predictor, so the all-fresh prefix (the full-step reference's
trajectory) is shared by every candidate, whatever its knobs; refinement moves change one step, so
their neighbours share longer prefixes.

:class:`PrefixCache` keeps recordings per batch, least recently used first out, within a byte budget;
:class:`ReplayHook` sits under the zeustune hook on the denoiser, serves the calls of the shared
prefix and records the rest.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from diffusers.hooks import HookRegistry, ModelHook

from ..runtime.hook import HOOK_NAME, _sample_of, _wrapper_like

REPLAY_HOOK = "zeustune-replay"


def step_keys(schedule, steps: int) -> tuple[str, ...]:
    """Per step, the letters every branch's plan has there (main plan first)."""
    plans = [schedule.plan, *(schedule.branch_plans[b] for b in sorted(schedule.branch_plans))]
    return tuple("".join(p.steps[k] for p in plans) for k in range(steps))


def _all_fresh(key: str) -> bool:
    return set(key) == {"F"}


@dataclass
class Recording:
    keys: tuple[str, ...]  # step_keys of the run
    knobs: str  # the predictor and CFG settings, as text
    calls: list[tuple[int, torch.Tensor]]  # (step, output) of every denoiser call, in call order
    nbytes: int = 0


@dataclass
class PrefixCache:
    """Recorded runs per batch; ``budget`` bytes at most (the oldest used go first)."""

    budget: int = 1 << 30
    entries: OrderedDict = field(default_factory=OrderedDict)  # (batch, keys, knobs) -> Recording
    nbytes: int = 0
    served: int = 0  # denoiser calls replayed
    run: int = 0  # denoiser calls computed
    wrap: object = None  # gives a served tensor the structure of the denoiser's output (learnt from a real call)

    def lookup(self, batch, keys: tuple[str, ...], knobs: str) -> tuple[int, list[torch.Tensor]]:
        """(L, outputs): the longest prefix of ``keys`` a recording of ``batch`` shares, in steps, and
        the outputs of its calls before step L."""
        best, best_rec = 0, None
        lead = next((k for k, key in enumerate(keys) if not _all_fresh(key)), len(keys))
        for (b, _, _), rec in self.entries.items():
            if b != batch:
                continue
            n = 0
            for a, c in zip(keys, rec.keys):
                if a != c:
                    break
                n += 1
            if rec.knobs != knobs:  # other settings: only the all-fresh prefix is the same trajectory
                n = min(n, lead)
            if n > best:
                best, best_rec = n, rec
        if best_rec is None:
            return 0, []
        self.entries.move_to_end(next(k for k, v in self.entries.items() if v is best_rec))
        return best, [out for step, out in best_rec.calls if step < best]

    def store(self, batch, keys: tuple[str, ...], knobs: str, calls: list[tuple[int, torch.Tensor]]) -> None:
        key = (batch, keys, knobs)
        if key in self.entries:
            self.entries.move_to_end(key)
            return
        rec = Recording(keys, knobs, calls, sum(t.numel() * t.element_size() for _, t in calls))
        if rec.nbytes > self.budget:
            return
        self.entries[key] = rec
        self.nbytes += rec.nbytes
        while self.nbytes > self.budget:
            _, old = self.entries.popitem(last=False)
            self.nbytes -= old.nbytes

    @property
    def share(self) -> float:
        total = self.served + self.run
        return self.served / total if total else 0.0


class ReplayHook(ModelHook):
    """Under the zeustune hook: the first ``len(serve)`` denoiser calls of a pipeline call return
    the given outputs; every call's (step, output) is recorded."""

    _is_stateful = True

    def __init__(self, pipe, cache: PrefixCache):
        super().__init__()
        self._zeus = lambda: HookRegistry.check_if_exists_or_initialize(pipe.transformer).get_hook(HOOK_NAME)
        self.cache = cache
        self.serve: list[torch.Tensor] = []
        self.recorded: list[tuple[int, torch.Tensor]] = []

    def reset_state(self, module):
        return module  # what to serve and what was recorded are set and read per batch by the caller

    def new_forward(self, module, *args, **kwargs):
        step = self._zeus()._k
        i = len(self.recorded)
        if i < len(self.serve):
            psi = self.serve[i]
            self.recorded.append((step, psi))
            self.cache.served += 1
            return self.cache.wrap(psi.clone())
        out = self.fn_ref.original_forward(*args, **kwargs)
        if self.cache.wrap is None:
            self.cache.wrap = _wrapper_like(out)
        self.recorded.append((step, _sample_of(out).detach().clone()))
        self.cache.run += 1
        return out


def install(pipe, cache: PrefixCache) -> ReplayHook:
    """The replay hook on the pipeline's denoiser; enable the schedule after it (it must sit under)."""
    registry = HookRegistry.check_if_exists_or_initialize(pipe.transformer)
    if registry.get_hook(REPLAY_HOOK) is not None:
        registry.remove_hook(REPLAY_HOOK, recurse=False)
    hook = ReplayHook(pipe, cache)
    registry.register_hook(hook, REPLAY_HOOK)
    return hook


def remove(pipe) -> None:
    registry = HookRegistry.check_if_exists_or_initialize(pipe.transformer)
    if registry.get_hook(REPLAY_HOOK) is not None:
        registry.remove_hook(REPLAY_HOOK, recurse=False)
