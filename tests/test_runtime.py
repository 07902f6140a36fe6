"""The runtime sampler on tiny random pipelines of every supported family.

Outputs are compared bit for bit where the computation is the same sequence of float operations
(all-fresh plans, repeated runs, the E and R predictors, which the hook computes exactly as
``2 * last - prev`` and ``last``); elsewhere the tolerance is stated with its reason.
"""

from __future__ import annotations

import pytest
import torch

import zeustune
from zeustune.models import tiny
from zeustune.schedule.plans import Plan
from zeustune.runtime import ScheduleMismatchError, UnsupportedPipelineError
from zeustune.schedule.format import Model, Cfg, Sampler, Schedule

from helpers import CASES, N, PLAN, per_branch, run_recorded, run_scheduled, schedule_for, scheduled

@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    family, scheduler, ptype, cfg = CASES[request.param]
    tp = tiny.build(family, scheduler=scheduler, prediction_type=ptype, cfg=cfg)
    return tp, tp(N)  # the untouched pipeline's output


def test_all_fresh_plan_is_bit_identical_and_disable_restores(case):
    tp, ref = case
    zeustune.enable(tp.pipe, schedule_for(tp, "F" * N))
    try:
        assert torch.equal(tp(N), ref)
    finally:
        assert zeustune.disable(tp.pipe)
    assert torch.equal(tp(N), ref)
    assert zeustune.disable(tp.pipe) is False  # nothing left to remove


def test_skipped_steps_do_not_call_the_denoiser(case):
    tp, ref = case
    sched = schedule_for(tp)
    out, rec, summ = run_scheduled(tp, sched)
    executed = Plan(summ.plan)
    assert rec.real_calls == executed.nfe * tp.calls_per_step == summ.denoiser_calls
    assert len(rec.outputs) == N * tp.calls_per_step  # the pipeline still got an output every call
    assert len(summ.branches) == tp.calls_per_step
    assert torch.isfinite(out).all()
    assert not torch.equal(out, ref)  # the predictions really replaced fresh outputs


def test_a_second_call_behaves_exactly_like_the_first(case):
    tp, _ = case
    with scheduled(tp, schedule_for(tp), resample=True):
        first = tp(N)
        tp(12, seed=5)  # a run of another length in between must not leak into the next
        second = tp(N)
    assert torch.equal(first, second)


def test_summary_counts_each_branch():
    tp = tiny.build("flux", cfg=True)
    assert zeustune.summary(tp.pipe) is None
    zeustune.enable(tp.pipe, schedule_for(tp))
    assert zeustune.summary(tp.pipe) is None  # enabled but not run yet
    tp(N)
    summ = zeustune.summary(tp.pipe)
    assert set(summ.branches) == {"cond", "uncond"}
    executed = summ.plan
    for counts in summ.branches.values():
        assert counts["F"] == executed.count("F") == Plan(PLAN).nfe
        assert sum(counts.values()) == N
        assert counts["E"] == executed.count("E") and counts["R"] == executed.count("R")
    assert "cond" in str(summ) and "fresh" in str(summ)


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_skipped_outputs_are_the_zeus_predictor_of_each_branchs_own_fresh_history(family):
    tp = tiny.build(family, cfg=True)
    plan = "FFFEFERFEFFF" + "F" * (N - 12)
    _, rec, _ = run_scheduled(tp, schedule_for(tp, plan))
    for outs in per_branch(rec.outputs, 2):
        fresh = []
        for k, c in enumerate(plan):
            if c == "F":
                fresh.append(outs[k])
            elif c == "E":
                assert torch.equal(outs[k], 2 * fresh[-1] - fresh[-2]), f"step {k}"
            elif c == "R":
                assert torch.equal(outs[k], fresh[-1]), f"step {k}"
    cond, uncond = per_branch(rec.outputs, 2)
    assert not torch.allclose(cond[2], uncond[2])  # the branches really differ, so the check bites


def test_one_shared_history_would_mix_the_cfg_branches():
    """With one buffer (ZEUS's reference code) the uncond call's history holds cond outputs; the
    separate-history run must give a different result, and the shared run must show the mix."""
    tp = tiny.build("wan", cfg=True)
    plan = "FFFE" + "F" * (N - 4)
    outs = {}
    for policy in ("separate", "shared"):
        sched = Schedule(tag="t", model=Model("wan"), sampler=Sampler(type(tp.pipe.scheduler).__name__, N),
                         plan=Plan(plan), cfg=Cfg(policy))
        final, rec, _ = run_scheduled(tp, sched)
        outs[policy] = (final, rec.outputs)
    sep, shared = outs["separate"][1], outs["shared"][1]
    # step 3, cond call (index 6): shared history is [.., cond@2, uncond@2] -> 2*uncond@2 - cond@2
    assert torch.equal(shared[6], 2 * shared[5] - shared[4])
    assert torch.equal(sep[6], 2 * sep[4] - sep[2])  # cond@2, cond@1
    assert torch.equal(sep[7], 2 * sep[5] - sep[3])  # uncond@2, uncond@1
    assert not torch.allclose(sep[6], shared[6])
    assert not torch.allclose(outs["separate"][0], outs["shared"][0])


@pytest.mark.parametrize("time", ["step", "sigma"])
def test_scaled_extrapolation_uses_the_gap_ratio_and_gamma(time):
    tp = tiny.build("flux", cfg=False)
    plan = "FFFSFFSS" + "F" * (N - 8)
    gamma = 0.7
    _, rec, _ = run_scheduled(tp, schedule_for(tp, plan, gamma=gamma, time=time))
    sigmas = [float(s) for s in tp.pipe.scheduler.sigmas[:N]]
    t = list(range(N)) if time == "step" else sigmas
    for k, (kl, kp) in {3: (2, 1), 6: (5, 4), 7: (5, 4)}.items():
        last, prev = rec.outputs[kl], rec.outputs[kp]
        expected = last + gamma * (t[k] - t[kl]) / (t[kl] - t[kp]) * (last - prev)
        # same formula, operations in another order: float32 rounding only (|psi| ~ 1, eps 1.2e-7)
        torch.testing.assert_close(rec.outputs[k], expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(rec.outputs[7], rec.outputs[6])  # two steps ahead goes further


@pytest.mark.parametrize("ptype", ["v_prediction", "epsilon"])
def test_unet_tail_skips_extrapolate_x0_through_the_lagrange_anchors(ptype):
    tp = tiny.build("sd", scheduler="euler", prediction_type=ptype)
    plan, term, every = "FFFFFFFFFFLLFLLFLLFF", 3, 3
    _, rec, _ = run_scheduled(tp, schedule_for(tp, plan, lagrange_term=term, lagrange_int=every))
    sig = [float(s) for s in tp.pipe.scheduler.sigmas[:N]]
    a = [1 / (1 + s * s) ** 0.5 for s in sig]
    s_ = [s / (1 + s * s) ** 0.5 for s in sig]

    def x0(k):  # independent of the runtime: the VP relation x = a*x0 + s*eps, v = a*eps - s*x0
        x, psi = rec.inputs[k], rec.outputs[k]
        return (x - s_[k] * psi) / a[k] if ptype == "epsilon" else a[k] * x - s_[k] * psi

    anchors = [k for k in range(N) if k % every == 1]
    for k, c in enumerate(plan):
        if c != "L":
            continue
        ks = [j for j in anchors if j < k][-term:]
        pred = sum(
            x0(i) * torch.tensor([(k - j) / (i - j) for j in ks if j != i]).prod().item() for i in ks
        )
        x = rec.inputs[k]
        want = (x - a[k] * pred) / s_[k] if ptype == "epsilon" else (a[k] * x - pred) / s_[k]
        # float32 arithmetic in a different order, amplified by 1/s at the low-noise end (< 30 here)
        torch.testing.assert_close(rec.outputs[k], want, rtol=1e-4, atol=1e-4)


def test_other_pipelines_get_an_error_naming_the_supported_families():
    from diffusers import DiffusionPipeline

    class MyPipeline(DiffusionPipeline):
        pass

    tp = tiny.build("flux")
    with pytest.raises(UnsupportedPipelineError, match="MyPipeline.*FluxPipeline \\(flux\\).*WanPipeline"):
        zeustune.enable(MyPipeline(), schedule_for(tp))


def test_a_schedule_for_another_family_is_refused():
    flux, sdxl = tiny.build("flux"), tiny.build("sdxl")
    with pytest.raises(ScheduleMismatchError, match="model.family.*flux.*expected sdxl"):
        zeustune.enable(sdxl.pipe, schedule_for(flux))


def test_another_scheduler_is_refused_unless_resampling():
    tp = tiny.build("sdxl", scheduler="dpm++")
    sched = schedule_for(tiny.build("sdxl", scheduler="euler"))
    with pytest.raises(ScheduleMismatchError, match="EulerDiscreteScheduler.*DPMSolverMultistepScheduler.*resample=True"):
        zeustune.enable(tp.pipe, sched)
    with scheduled(tp, sched, resample=True):
        assert torch.isfinite(tp(N)).all()


def test_another_step_count_is_refused_at_the_call_unless_resampling():
    tp = tiny.build("flux", cfg=False)
    sched = schedule_for(tp)
    with scheduled(tp, sched):
        with pytest.raises(ScheduleMismatchError, match=r"sampler.steps: got 28, expected 20 steps.*resample=True"):
            tp(28)
    _, rec, summ = run_scheduled(tp, sched, steps=28, resample=True)
    assert summ.steps == 28 and len(summ.plan) == 28
    assert rec.real_calls == Plan(summ.plan).nfe
    assert 28 / Plan(summ.plan).nfe == pytest.approx(Plan(PLAN).speedup_bound, rel=0.2)


def test_enable_again_replaces_the_schedule():
    tp = tiny.build("flux", cfg=False)
    zeustune.enable(tp.pipe, schedule_for(tp))
    _, rec, _ = run_scheduled(tp, schedule_for(tp, "F" * N))
    assert rec.real_calls == N


def test_presets_apply_by_name():
    tp = tiny.build("flux", cfg=False)
    _, rec, _ = run_scheduled(tp, "zeus-flux-demo", steps=50)
    assert rec.real_calls == zeustune.load_preset("zeus-flux-demo").nfe == 27


@pytest.mark.parametrize("order", ["offload-first", "schedule-first"])
def test_composes_with_model_cpu_offload(order):
    pytest.importorskip("accelerate")
    tp = tiny.build("flux")
    sched = schedule_for(tp)
    zeustune.enable(tp.pipe, sched)
    expected = tp(N)
    zeustune.disable(tp.pipe)
    ref = tp(N)

    tp = tiny.build("flux")
    if order == "offload-first":
        tp.pipe.enable_model_cpu_offload(device="cpu")
    zeustune.enable(tp.pipe, sched)
    if order == "schedule-first":
        tp.pipe.enable_model_cpu_offload(device="cpu")
    for _ in range(2):  # diffusers re-installs the offload hooks after every call
        out, rec = run_recorded(tp)
        assert torch.equal(out, expected)
        assert rec.real_calls == Plan(PLAN).nfe * 2
    zeustune.disable(tp.pipe)
    out, rec = run_recorded(tp)
    assert torch.equal(out, ref) and rec.real_calls == 2 * N


def test_decisions_stay_out_of_compiled_graphs():
    tp = tiny.build("flux", cfg=False)
    zeustune.enable(tp.pipe, schedule_for(tp))
    expected = tp(N)
    tp.pipe.transformer.compile(backend="eager")  # dynamo must break around the decision code
    try:
        first, second = tp(N), tp(N)
    finally:
        zeustune.disable(tp.pipe)
    assert torch.equal(first, expected) and torch.equal(second, expected)
