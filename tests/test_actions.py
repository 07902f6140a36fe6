"""The step-action registry: its letters, cost classes and predictors, and a new action dispatched
by the hook without touching it.

Predictor outputs on hand-made tensors are compared exactly where the runtime computes the formula
as written (E, R); elsewhere the tolerance is float32 rounding of the same formula in another order.
"""

from __future__ import annotations

import contextlib
from collections import deque

import pytest
import torch

import zeustune
from zeustune.schedule import plans
from zeustune.models import tiny
from zeustune.schedule.plans import Plan
from zeustune.runtime import ScheduleMismatchError, actions, predictors
from zeustune.runtime.actions import Action, BranchState
from zeustune.runtime.actions import extrapolate, lagrange, reuse, scaled
from zeustune.schedule.format import Model, Predictor, Sampler, Schedule

from helpers import SIGMAS, context


# -- the registry ------------------------------------------------------------------------------


def test_the_registry_implements_exactly_the_plan_letters_in_their_order():
    assert list(actions.ACTIONS) == list(plans.ACTIONS)


def test_each_action_has_its_cost_class():
    assert {a.letter: a.cost for a in actions.ACTIONS.values()} == {
        "F": "fresh", "E": "predicted", "R": "predicted", "S": "predicted", "L": "predicted", "C": "predicted",
        "A": "decided", "D": "fraction", "P": "fraction", "G": "probe",
    }
    assert set(actions.COSTS) == {"fresh", "predicted", "decided", "fraction", "probe"}


def test_an_unknown_letter_is_refused_naming_the_known_ones():
    with pytest.raises(ScheduleMismatchError, match=r"^schedule t: plan: got 'Q', expected a letter this runtime "
                                                    r"implements \(F, E, R, S, L, C, A, D, P, G\)$"):
        actions.get("Q", "schedule t")


def test_actions_are_checked_when_declared_and_registered():
    zeros = lambda ctx: torch.zeros(1)  # noqa: E731
    with pytest.raises(ValueError, match="output: got None"):
        Action("P", "predicted")
    with pytest.raises(ValueError, match="record: got None"):
        Action("P", "fresh", output=zeros)
    with pytest.raises(ValueError, match="decide: got None"):
        Action("P", "decided", output=zeros)
    with pytest.raises(ValueError, match="cost: got 'free'"):
        Action("P", "free", output=zeros)
    with pytest.raises(ValueError, match="one character"):
        Action("PP", "predicted", output=zeros)
    with pytest.raises(ValueError, match="'F', expected one not registered"):
        actions.register(Action("F", "predicted", output=zeros))
    assert actions.ACTIONS["F"].cost == "fresh"


def test_the_old_predictors_module_re_exports_the_actions_math():
    assert predictors.zeus_extrapolate is extrapolate.zeus_extrapolate
    assert predictors.reuse is reuse.reuse
    assert predictors.scaled_extrapolate is scaled.scaled_extrapolate
    assert predictors.lagrange is lagrange.lagrange
    assert predictors.x0_from_output is lagrange.x0_from_output
    assert predictors.output_from_x0 is lagrange.output_from_x0


# -- the predictors on hand-made tensors -------------------------------------------------------

def vp(k):
    s2 = SIGMAS[k] ** 2
    return (1 / (1 + s2)) ** 0.5, (s2 / (1 + s2)) ** 0.5


def test_E_is_twice_the_last_minus_the_previous(psis):
    prev, last = psis
    out = actions.get("E").output(context(5, [(3, prev), (4, last)]))
    assert torch.equal(out, 2 * last - prev)


def test_R_is_a_copy_of_the_last(psis):
    prev, last = psis
    out = actions.get("R").output(context(5, [(3, prev), (4, last)]))
    assert torch.equal(out, last) and out.data_ptr() != last.data_ptr()


@pytest.mark.parametrize("time", ["step", "sigma"])
def test_S_scales_the_difference_by_the_time_gap_and_gamma(psis, time):
    prev, last = psis
    ctx = context(7, [(3, prev), (5, last)], gamma=0.6, time=time)
    t = (lambda j: float(j)) if time == "step" else (lambda j: SIGMAS[j])
    want = last + 0.6 * (t(7) - t(5)) / (t(5) - t(3)) * (last - prev)
    torch.testing.assert_close(actions.get("S").output(ctx), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("letter", ["E", "S", "L"])
def test_with_one_fresh_output_the_extrapolations_hold_it(psis, letter):
    _, last = psis
    out = actions.get(letter).output(context(3, [(2, last)]))
    assert torch.equal(out, last) and out.data_ptr() != last.data_ptr()


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction"])
def test_L_extrapolates_x0_through_the_anchors_and_returns_the_models_output(ptype):
    g = torch.Generator().manual_seed(1)
    anchors = [(j, torch.randn(2, 3, generator=g)) for j in (1, 4, 7)]
    x = torch.randn(2, 3, generator=g)
    ctx = context(9, [(7, torch.zeros(2, 3)), (8, torch.zeros(2, 3))], anchors=anchors, ptype=ptype, x=x)
    x0 = sum(v * torch.tensor([(9 - j) / (i - j) for j, _ in anchors if j != i]).prod().item() for i, v in anchors)
    a, s = vp(9)
    want = (x - a * x0) / s if ptype == "epsilon" else (a * x - x0) / s
    torch.testing.assert_close(actions.get("L").output(ctx), want, rtol=1e-5, atol=1e-5)


def test_L_before_two_anchors_is_the_zeus_extrapolation(psis):
    prev, last = psis
    ctx = context(9, [(7, prev), (8, last)], anchors=[(4, torch.ones(2, 3))])
    assert torch.equal(actions.get("L").output(ctx), 2 * last - prev)


def test_L_keeps_the_x0_of_every_anchor_step_fresh_or_predicted(psis):
    _, psi = psis
    store = actions.get("L").observe
    ctx = context(4, [])  # 4 % lagrange_int (3) == 1: an anchor step
    store(ctx, psi)
    a, s = vp(4)
    ((k, x0),) = ctx.branch.anchors
    assert k == 4
    torch.testing.assert_close(x0, (ctx.sample - s * psi) / a)
    for quiet in (context(5, []), context(4, [], flow=True)):  # not an anchor step; a flow model
        store(quiet, psi)
        assert not quiet.branch.anchors


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction", "sample"])
def test_x0_and_output_conversions_invert_each_other(psis, ptype):
    psi, x = psis
    a, s = vp(3)
    x0 = lagrange.x0_from_output(psi, x, a, s, ptype)
    torch.testing.assert_close(lagrange.output_from_x0(x0, x, a, s, ptype), psi)


def test_F_records_a_copy_of_the_fresh_output(psis):
    prev, last = psis
    ctx = context(2, [(0, prev), (1, last)])
    out = torch.full((2, 3), 3.0)
    actions.get("F").record(ctx, out)
    out.zero_()  # what the pipeline does with its tensor must not reach the history
    assert [(k, t) for k, t, _ in ctx.branch.fresh] == [(1, 1.0), (2, 2.0)]
    assert torch.equal(ctx.branch.last, torch.full((2, 3), 3.0)) and torch.equal(ctx.branch.prev, last)


def test_branch_state_reset_forgets_everything():
    branch = BranchState.new(Predictor(lagrange_term=2))
    branch.fresh.extend([(0, 0.0, torch.ones(1)), (1, 1.0, torch.ones(1))])
    branch.anchors.extend([(1, torch.ones(1))] * 3)
    branch.own_state("Z", lambda pred: ["made"], None)
    assert len(branch.anchors) == 2 and branch.own == {"Z": ["made"]}
    branch.reset()
    assert not branch.fresh and not branch.anchors and not branch.own
    assert (branch.fresh.maxlen, branch.anchors.maxlen) == (2, 2)  # the run's bounds stay
    assert isinstance(branch.fresh, deque)


# -- new actions, dispatched by the unchanged hook ---------------------------------------------


@contextlib.contextmanager
def registered(monkeypatch, action: Action):
    """A test-only action in the runtime's registry, and its letter in the plans' (which validate
    plan letters against plans.ACTIONS), both removed on the way out."""
    monkeypatch.setitem(plans.ACTIONS, action.letter, "test-only")
    actions.register(action)
    try:
        yield action
    finally:
        del actions.ACTIONS[action.letter]


def run(tp, plan: str):
    """One run of a tiny pipeline under ``plan``: (outputs the pipeline got, real denoiser calls, summary)."""
    model = tp.pipe.transformer
    outputs, real = [], []
    handles = [model.register_forward_hook(lambda m, a, o: outputs.append(o[0].clone())),
               model.x_embedder.register_forward_pre_hook(lambda m, a: real.append(1))]
    sched = Schedule(tag="t", model=Model(tp.family), sampler=Sampler(type(tp.pipe.scheduler).__name__, len(plan)),
                     plan=Plan(plan))
    zeustune.enable(tp.pipe, sched)
    try:
        tp(len(plan))
        return outputs, len(real), zeustune.summary(tp.pipe)
    finally:
        zeustune.disable(tp.pipe)
        for h in handles:
            h.remove()


def test_a_registered_action_is_dispatched_with_its_own_state_and_sees_every_step(monkeypatch):
    calls, seen = [], []

    def zeros(ctx):
        """Test-only: a zero output, counting its calls in the branch's own state."""
        ctx.state("Z")["calls"] += 1
        calls.append((ctx.name, ctx.k, ctx.state("Z")["calls"]))
        return torch.zeros_like(ctx.branch.last)

    toy = Action("Z", "predicted", output=zeros, observe=lambda ctx, psi: seen.append((ctx.name, ctx.k)),
                 state=lambda predictor: {"calls": 0})
    tp = tiny.build("flux", cfg=True)  # true CFG: two branches, each with its own state
    plan = "FFZFZZFF"
    with registered(monkeypatch, toy):
        for _ in range(2):  # a second run starts from fresh states
            calls.clear()
            seen.clear()
            outputs, real, summ = run(tp, plan)
            assert real == 2 * plan.count("F")
            assert all(not torch.count_nonzero(outputs[2 * k + b]) for k in (2, 4, 5) for b in (0, 1))
            # the pipeline calls cond, then uncond, at every step; each branch counts its own calls
            assert calls == [(n, k, i) for i, k in enumerate((2, 4, 5), 1) for n in ("cond", "uncond")]
            assert sorted(seen) == sorted((n, k) for k in range(len(plan)) for n in ("cond", "uncond"))
            assert {n: dict(c) for n, c in summ.branches.items()} == {n: {"F": 5, "Z": 3} for n in ("cond", "uncond")}
    assert "Z" not in actions.ACTIONS


def test_a_step_decided_at_run_time_runs_the_action_it_names(monkeypatch):
    decider = Action("Y", "decided", decide=lambda ctx: "F" if ctx.k % 2 == 0 else "R")
    tp = tiny.build("flux", cfg=False)
    plan = "FFYYYYYF"
    with registered(monkeypatch, decider):
        outputs, real, summ = run(tp, plan)
    assert real == 6  # steps 0, 1, 7 and the even D steps 2, 4, 6
    for k in (3, 5):
        assert torch.equal(outputs[k], outputs[k - 1])  # R holds the fresh output before it
    assert dict(summ.branches[next(iter(summ.branches))]) == {"F": 6, "R": 2}  # counted as what ran


def test_a_plan_letter_without_an_action_is_refused_before_any_denoiser_call(monkeypatch):
    monkeypatch.setitem(plans.ACTIONS, "Q", "test-only, no action")
    tp = tiny.build("flux", cfg=False)
    real = []
    handle = tp.pipe.transformer.x_embedder.register_forward_pre_hook(lambda m, a: real.append(1))
    try:
        with pytest.raises(ScheduleMismatchError, match=r"plan: got 'Q', expected a letter this runtime implements"):
            run(tp, "FFQF")
    finally:
        handle.remove()
    assert real == []
