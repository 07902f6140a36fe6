"""G, probe-gated steps: the first block looks at the current step, then fresh or predicted.

The hook runs the denoiser with :class:`zeustune.runtime.probes.BlockProbe` armed. When the probe's
signal (``predictor.probe``: the head block's residual, or its modulated input) has moved from its
value at the branch's last full call by at most the threshold of this step's segment
(``predictor.probe_thresholds``: one per equal segment of the trajectory), the step is predicted,
at the gate of its position in the run of skips (``predictor.gates``, as A steps):

- ``probe_output: gate``: the denoiser call is abandoned after the probe and the gate predicts psi
  from the fresh history (E, R, S, C);
- ``probe_output: tail``: the head block's output of THIS step plus the tail residual
  (tail output - head output) of the last full call (gate R, FirstBlockCache's output), or that
  residual extrapolated ZEUS-style from the last two full calls (gate E); the model's own output
  layers then run, so part of the step is recomputed.

Otherwise the call runs through (a fresh step). Every full call of a plan with G steps, static F
steps included, refreshes the probe's reference. At most ``predictor.max_run`` predicted steps in a
row (then a fresh call without decision), and two fresh outputs exist before the first skip.
Decisions are per batch (means over the whole tensor, as FirstBlockCache's).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from ...schedule.plans import gate_for
from ..probes import Capture, Skip, relative_change
from .base import Action, StepContext

@dataclass
class ProbeState:
    signal: torch.Tensor | None = None  # the probe's signal at the branch's last full call
    tails: deque = field(default_factory=lambda: deque(maxlen=2))  # tail residuals of the last two full calls
    changes: list = field(default_factory=list)  # (k, relative change) of every probe: diagnostics


def threshold_at(ctx: StepContext) -> float:
    """The threshold of step k's segment: the steps split into len(thresholds) equal parts."""
    th = ctx.predictor.probe_thresholds
    n = len(ctx.plan)
    return th[min(len(th) - 1, ctx.k * len(th) // max(n, 1))]


def tail_prediction(tails: deque, letter: str) -> torch.Tensor | None:
    """The tail residual a skip adds to the head output: the last one (R) or ZEUS's second-order
    extrapolation of the last two (E); None without a residual."""
    if not tails:
        return None
    if letter == "E" and len(tails) == 2:
        return tails[1].mul(2).sub_(tails[0])
    return tails[-1]


def must_compute(ctx: StepContext) -> bool:
    """No decision at all: too little history, or the run of skips is at its cap."""
    branch = ctx.branch
    return len(branch.fresh) < 2 or ctx.k - branch.fresh[-1][0] > ctx.predictor.max_run


def decider(ctx: StepContext):
    """The probe's decision for this step: a function of the signal, for BlockProbe.run (None: no
    decision, the call runs through)."""
    if must_compute(ctx):
        return None
    st: ProbeState = ctx.state("G")
    pred = ctx.predictor

    def decide(signal: torch.Tensor):
        if st.signal is None or st.signal.shape != signal.shape:
            return None
        change = relative_change(signal, st.signal)
        st.changes.append((ctx.k, change))
        if change > threshold_at(ctx):
            return None
        letter = gate_for(ctx.k - ctx.branch.fresh[-1][0], pred.gates)
        if pred.probe_output == "gate":
            return Skip(letter)
        residual = tail_prediction(st.tails, letter)
        if residual is None:
            return None
        return lambda head: head + residual

    return decide


def remember(ctx: StepContext, capture: Capture) -> None:
    """After a full call: the probe's reference signal and the tail residual for later skips."""
    st: ProbeState = ctx.state("G")
    if capture.signal is not None:
        st.signal = capture.signal.clone()
    tail = capture.tail_residual
    if tail is not None:
        if st.tails and st.tails[-1].shape != tail.shape:
            st.tails.clear()
        st.tails.append(tail.detach().clone())


ACTION = Action("G", "probe", probe=decider, remember=remember, state=lambda predictor: ProbeState(),
                delegates=lambda predictor: predictor.gates if predictor.probe_output == "gate" else "")
