"""A deterministic stopwatch for tests that time pipelines (budget checks, cost-model fits,
finalists re-timed against a budget): a timing on a shared machine lands on either side of a
budget line, and a test must not.

The run itself still happens (images, call counts, hooks); only its seconds are computed, from
the work the denoiser did: FIXED (text encoding, decoding) plus CALL per full denoiser call, a
call counted by the blocks that ran (a probe's first block is a fraction of one, a predicted step
nothing). A cost-model fit then recovers FIXED and CALL exactly, and a plan's measured speedup is
its modelled one on every machine.

In a subprocess (a CLI run, a script, its Ray workers): ``env()``, which puts fake_clock_site/ (a
sitecustomize) on PYTHONPATH; in this process, wrap a timing function with :func:`timed`.

Scripts that time pieces of work smaller than a denoiser call (a predicted step, a skipped call's
bookkeeping) read :class:`Work` instead: a stopwatch that counts the elements every tensor
operation writes.
"""

from __future__ import annotations

import os
from pathlib import Path

FIXED, CALL = 0.02, 0.01  # seconds: the fixed share is two denoiser calls (one true-CFG step of tiny-flux)
SITE = Path(__file__).resolve().parent / "fake_clock_site"


def blocks(denoiser) -> list:
    """The denoiser's repeated blocks (a transformer's, a UNet's down and up blocks)."""
    import torch

    return [m for child in denoiser.children() if isinstance(child, torch.nn.ModuleList) for m in child]


def timed(pipe, fn) -> float:
    """Stands in for ``zeustune.quality.evaluate.timed``: runs ``fn`` and returns its computed seconds."""
    denoiser = getattr(pipe, "transformer", None) or pipe.unet
    every = blocks(denoiser)
    ran = []
    hooks = [b.register_forward_hook(lambda *_: ran.append(1)) for b in every]
    try:
        fn()
    finally:
        for h in hooks:
            h.remove()
    return FIXED + CALL * len(ran) / len(every)


def timed_steps(pipe, fn) -> tuple[float, list[float]]:
    """Stands in for ``zeustune.quality.evaluate.timed_steps``: the computed seconds of the run and
    of each step (CALL per full call's worth of blocks; a predicted step's bookkeeping is free)."""
    import torch

    denoiser = getattr(pipe, "transformer", None) or pipe.unet
    every = blocks(denoiser)
    seen, per_step = [], []

    def pre(module, args, kwargs):
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        key = float(t.flatten()[0]) if torch.is_tensor(t) else t
        if not seen or key != seen[-1]:
            seen.append(key)
            per_step.append(0.0)

    def ran(*_):
        per_step[-1] += CALL / len(every)

    hooks = [denoiser.register_forward_pre_hook(pre, with_kwargs=True)] + [b.register_forward_hook(ran) for b in every]
    try:
        fn()
    finally:
        for h in hooks:
            h.remove()
    return FIXED + sum(per_step), per_step


class Work:
    """A stopwatch that advances by work, not time: 1 ns per element each tensor operation writes
    while it is entered (``with Work() as clock: ... clock.perf_counter()``)."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode  # the hook FlopCounterMode uses

        clock = self

        class Count(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                import torch
                from torch.utils._pytree import tree_leaves

                out = func(*args, **(kwargs or {}))
                clock.elements += sum(t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
                return out

        self.elements, self._mode = 0, Count()

    def perf_counter(self) -> float:
        return self.elements * 1e-9

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)


def time_run(fixed: float, call: float, skip: float, probe_s: float = 0.0, reduced: dict | None = None, jitter=None,
             seen: list | None = None):
    """A stand-in for ``Evaluator.time_run`` that costs nothing: the Timing a plan with ``fresh`` of
    ``steps`` fresh would take under these costs (seconds: ``probe_s`` a predicted G step,
    ``reduced`` a D step per factor). ``jitter()``, if given, scales each step and the fixed part
    (a noisy machine); ``seen`` collects the design points asked for."""
    from zeustune.search.cost import Timing

    def run(steps, fresh, factor=None, probe=False):
        if seen is not None:
            seen.append((steps, fresh, factor, probe))
        rest = "G" if probe else "D" if factor is not None else "R"
        at = {round(k * (steps - 1) / max(fresh - 1, 1)) for k in range(fresh)} if fresh < steps else set(range(steps))
        letters = "".join("F" if k in at else rest for k in range(steps))
        each = {"F": call, "R": skip, "G": probe_s, "D": (reduced or {}).get(factor if isinstance(factor, str) else f"{factor:g}" if factor else "", 0.0)}
        scale = jitter or (lambda: 1.0)
        per = tuple(each[c] * scale() for c in letters)
        return Timing(fixed * scale() + sum(per), per, letters)

    return run


def env(base: dict | None = None) -> dict:
    """``base`` (default: this process's environment) with the fake stopwatch for subprocesses."""
    out = dict(os.environ if base is None else base)
    out["PYTHONPATH"] = os.pathsep.join([str(SITE)] + ([out["PYTHONPATH"]] if out.get("PYTHONPATH") else []))
    return out
