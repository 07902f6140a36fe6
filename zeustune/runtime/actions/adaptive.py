"""A, adaptive steps: the hook calls the denoiser or predicts, decided per run from a criterion on
the branch's recent outputs and inputs. A predicted A step uses the gate of its position in the
run of skips (``predictor.gates``, :func:`zeustune.plans.gate_for`); at most ``predictor.max_run``
predicted steps in a row, and the first two steps of a branch's history are always fresh.

Criteria (``predictor.criterion``), both evaluated on the state after step k-1 to decide step k:

- ``"sada"``: SADA's flow-matching rule as its code does it (FACTS §2b). A buffer b holds three
  outputs; a fresh step pushes its output, a predicted step pushes a copy of the buffer's newest
  entry. With f the output used at step k-1 (fresh or predicted) and
  ``m = -(f - b[-2]) + (b[-2] - b[-3])``, predict step k iff ``mean(m) <= threshold * mean|f|``
  (threshold 0 is SADA's rule). So: three fresh steps test the second difference; right after an
  extrapolated step m is 0 up to rounding (threshold 0 makes that a coin toss, as in SADA), after
  a reuse exactly 0, so a stable verdict chains predictions up to ``max_run``; after a run the test
  is a first difference across the gap. The mean is linear, so the state is four scalars.
- ``"change"``: an accumulated relative change of the TeaCache/EasyCache family. At each fresh
  step after the first, the transformation rate ``k = mean|o - o'| / mean|x - x'|`` between the
  last two fresh steps (o outputs, x inputs); at step k the estimated relative output change
  ``k * mean|x_k - x_{k-1}| / mean|o_last|`` is added to an accumulator, reset at every fresh
  step; recompute when it reaches ``threshold``, else predict.

Decisions are per batch: means run over the whole tensor, every sample of a batch included (as in
SADA's code), so a batch calls the denoiser when the batch as a whole needs it, and an image can
differ from its batch-of-one run. The search scores adaptive plans one prompt per call, so its
call counts are per prompt. Each CFG branch decides for itself, from its own state.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from ...schedule.plans import gate_for
from .base import Action, StepContext


@dataclass
class AdaptiveState:
    means: deque = field(default_factory=lambda: deque(maxlen=3))  # sada: mean of b[-3..-1]
    used: float = 0.0  # sada: mean of the output used at the last step
    scale: float = 0.0  # sada: its mean absolute value
    x_prev: torch.Tensor | None = None  # change: the input of the previous step
    x_fresh: torch.Tensor | None = None  # change: the input of the last fresh step
    o_scale: float = 0.0  # change: mean|o_last|
    rate: float | None = None  # change: the transformation rate between the last two fresh steps
    acc: float = 0.0  # change: the accumulated estimate since the last fresh step


def _mean_abs(x: torch.Tensor) -> float:
    return float(x.abs().mean(dtype=torch.float32))


def sada_stable(st: AdaptiveState, threshold: float) -> bool:
    if len(st.means) < 3:
        return False
    b3, b2, _ = st.means
    return -(st.used - b2) + (b2 - b3) <= threshold * st.scale


def change_stable(st: AdaptiveState, x: torch.Tensor, threshold: float) -> bool:
    if st.rate is None or st.x_prev is None or st.o_scale == 0:
        return False
    st.acc += st.rate * float((x - st.x_prev).abs().mean(dtype=torch.float32)) / st.o_scale
    return st.acc < threshold


def decide(ctx: StepContext) -> str:
    branch, pred = ctx.branch, ctx.predictor
    st: AdaptiveState = ctx.state("A")
    if len(branch.fresh) < 2:
        return "F"
    j = ctx.k - branch.fresh[-1][0]  # this step's position in the run of skips (1 = first)
    if j > pred.max_run:
        return "F"
    stable = sada_stable(st, pred.threshold) if pred.criterion == "sada" else change_stable(st, ctx.sample, pred.threshold)
    if not stable:
        return "F"
    return gate_for(j, pred.gates)  # two fresh outputs exist, as every gate may need


def observe(ctx: StepContext, psi: torch.Tensor) -> None:
    """After every step: push to SADA's buffer; keep the inputs and rates the change criterion reads."""
    st: AdaptiveState = ctx.state("A")
    if ctx.predictor.criterion == "sada":
        st.used, st.scale = float(psi.mean(dtype=torch.float32)), _mean_abs(psi)
        st.means.append(st.used if ctx.fresh or not st.means else st.means[-1])
        return
    x = ctx.sample
    if ctx.fresh:
        if st.x_fresh is not None and len(ctx.branch.fresh) >= 2:
            dx = float((x - st.x_fresh).abs().mean(dtype=torch.float32))
            do = float((psi - ctx.branch.prev).abs().mean(dtype=torch.float32))
            st.rate = do / dx if dx > 0 else None
        st.x_fresh = x.detach().clone()
        st.o_scale = _mean_abs(psi)
        st.acc = 0.0
    st.x_prev = x.detach().clone()


ACTION = Action("A", "decided", decide=decide, observe=observe, state=lambda predictor: AdaptiveState(),
                delegates=lambda predictor: predictor.gates)
