"""C, the Chebyshev forecast: the fit against a direct solve, exactness on polynomials, bounded
memory, float32 accumulation, and the action in the runtime on every family.

Hand-made fits run in float64, where the only error is the solve's rounding (1e-9 is far above it
and far below any real mismatch); runtime checks replay the same arithmetic on the recorded
float32 outputs and allow float32 rounding of a sum of d+1 terms (1e-5 relative).
"""

from __future__ import annotations

import pytest
import torch

from zeustune.models import tiny
from zeustune.schedule.plans import Plan, PlanError
from zeustune.runtime.actions import forecast as F
from zeustune.runtime.actions.scaled import scaled_extrapolate

from helpers import CASES, N, context, per_branch, run_scheduled, schedule_for


def fit(points, degree, ridge):
    st = F.ForecastState(degree)
    for tau, h in points:
        st.add(tau, h)
    return st


def test_the_fit_equals_a_direct_ridge_solve():
    g = torch.Generator().manual_seed(0)
    taus = [-1.0, -0.9, -0.7, -0.65, -0.3, 0.1, 0.2]
    hs = [torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in taus]
    for degree, ridge in ((4, 0.1), (2, 0.5), (6, 0.01)):
        st = fit(zip(taus, hs), degree, ridge)
        phi = torch.stack([F.chebyshev(t, degree) for t in taus])  # (n, d+1)
        H = torch.stack(hs).reshape(len(taus), -1)
        C = torch.linalg.solve(phi.T @ phi + ridge * torch.eye(degree + 1, dtype=torch.float64), phi.T @ H)
        for tau in (0.35, 0.9):
            want = (F.chebyshev(tau, degree) @ C).reshape(3, 4)
            assert torch.allclose(st.forecast(tau, ridge), want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("degree", [1, 2, 4])
def test_the_fit_is_exact_on_polynomial_trajectories_up_to_its_degree(degree):
    g = torch.Generator().manual_seed(degree)
    coef = [torch.randn(2, 5, generator=g, dtype=torch.float64) for _ in range(degree + 1)]
    h = lambda tau: sum(c * tau**i for i, c in enumerate(coef))  # noqa: E731 - a polynomial of that degree
    taus = [-1.0 + 0.15 * i for i in range(degree + 3)]
    st = fit(((t, h(t)) for t in taus), degree, ridge=0.0)
    for tau in (0.5, 1.0):
        assert torch.allclose(st.forecast(tau, 0.0), h(tau), rtol=0, atol=1e-9)
    # one degree too many for the fit: the forecast misses (the check above could fail)
    higher = lambda tau: h(tau) + coef[0] * tau ** (degree + 1)  # noqa: E731
    st = fit(((t, higher(t)) for t in taus), degree, ridge=0.0)
    assert not torch.allclose(st.forecast(1.0, 0.0), higher(1.0), atol=1e-3)


def test_memory_is_d_plus_one_tensors_whatever_the_history():
    st = F.ForecastState(4)
    for i in range(40):
        st.add(-1 + i / 20, torch.full((2, 3), float(i)))
    assert st.count == 40 and len(st.moments) == 5 and st.gram.shape == (5, 5)
    assert all(m.shape == (2, 3) for m in st.moments)


def test_bfloat16_outputs_accumulate_in_float32():
    st = F.ForecastState(2)
    for i in range(300):
        st.add(-1 + i / 150, torch.ones(4, dtype=torch.bfloat16))
    assert {m.dtype for m in st.moments} == {torch.float32}
    # a bf16 sum of ones stalls at 256 (257 is not a bf16 number); float32 holds 300 exactly
    assert torch.equal(st.moments[0], torch.full((4,), 300.0))
    assert torch.allclose(st.forecast(0.3, 0.0), torch.ones(4), atol=1e-5)


def test_time_maps_the_run_to_minus_one_one():
    assert F.tau_of(context(0, [])) == -1.0
    last = len(context(0, []).plan) - 1
    assert F.tau_of(context(last, [])) == 1.0
    sig = context(last, [], time="sigma")
    assert F.tau_of(sig) == pytest.approx(1.0) and F.tau_of(context(0, [], time="sigma")) == -1.0


@pytest.mark.parametrize("blend", [0.0, 0.5, 1.0])
def test_the_action_blends_the_forecast_with_the_gap_scaled_step(psis, blend):
    prev, last = psis
    ctx = context(5, [(2, prev), (4, last)], blend=blend, ridge=0.1, degree=1)
    for k, psi in ((2, prev), (4, last)):  # the fit sees the fresh outputs as the hook hands them over
        rec = context(k, [], blend=blend, ridge=0.1, degree=1)
        rec.branch, rec.fresh = ctx.branch, True
        F.record(rec, psi)
    linear = scaled_extrapolate(last, prev, 5.0, 4.0, 2.0)
    cheb = ctx.state("C").forecast(F.tau_of(ctx), 0.1)
    got = F.forecast(ctx)
    assert torch.allclose(got, (1 - blend) * linear + blend * cheb, rtol=1e-6, atol=1e-6)
    if blend == 0.0:
        assert torch.equal(got, linear)


def test_plans_need_two_fresh_steps_before_a_forecast():
    with pytest.raises(PlanError, match=r"plan\[1\]: got 'C'"):
        Plan("FCFF")


# -- in the runtime, on every family ------------------------------------------------------------

PLAN_C = "FFFCFCCFFCCCFFCFFFFF"


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    family, scheduler, ptype, cfg = CASES[request.param]
    tp = tiny.build(family, scheduler=scheduler, prediction_type=ptype, cfg=cfg)
    return tp, tp(N)


def test_forecast_steps_call_nothing_and_follow_each_branchs_own_fit(case):
    tp, untouched = case
    sched = schedule_for(tp, PLAN_C, degree=3, ridge=0.05, blend=0.5)
    _, rec, summ = run_scheduled(tp, sched)
    calls = tp.calls_per_step
    assert rec.real_calls == calls * Plan(PLAN_C).nfe
    assert all(c["C"] == PLAN_C.count("C") for c in summ.branches.values())
    for outs in per_branch(rec.outputs, calls):
        st, fresh = F.ForecastState(3), []
        for k, c in enumerate(PLAN_C):
            tau = -1 + 2 * k / (N - 1)
            if c == "F":
                st.add(tau, outs[k])
                fresh.append((k, outs[k]))
                continue
            (kp, prev), (kl, last) = fresh[-2:]
            want = torch.lerp(scaled_extrapolate(last, prev, k, kl, kp), st.forecast(tau, 0.05), 0.5)
            assert torch.allclose(outs[k], want, rtol=1e-5, atol=1e-5 * want.abs().max().item()), f"step {k}"
    # disabled again: the pipeline is untouched
    assert torch.equal(tp(N), untouched)
