"""A, adaptive steps: the two criteria on hand-made values, and in the runtime on every family:
a criterion that never fires is the all-fresh run bit for bit, one that always fires is the static
plan of its gates bit for bit, real thresholds decide per branch from the branch's own outputs
(replayed from the recorded outputs), and a batch decides as one (the documented rule).
"""

from __future__ import annotations

import math

import pytest
import torch

import zeustune
from zeustune.models import tiny
from zeustune.schedule.plans import Plan, gate_for
from zeustune.runtime.actions import adaptive as A

from helpers import CASES, ENTRY, N, denoiser, schedule_for

PLAN_A = "FF" + "A" * (N - 4) + "FF"


# -- the criteria -------------------------------------------------------------------------------


def sada_state(buffer, used=None):
    st = A.AdaptiveState()
    st.means.extend(buffer)
    st.used = buffer[-1] if used is None else used
    st.scale = abs(st.used)
    return st


def test_sada_predicts_when_the_mean_second_difference_is_not_negative():
    assert A.sada_stable(sada_state([1.0, 2.0, 3.5]), 0.0)  # second difference +0.5: SADA calls it stable
    st = sada_state([1.0, 2.0, 2.5])  # -0.5: decelerating
    assert not A.sada_stable(st, 0.0)
    assert A.sada_stable(st, 0.5 / 2.5)  # a threshold relative to mean|f| lets it through
    assert not A.sada_stable(A.AdaptiveState(), 1e9)  # fewer than three outputs: never


def test_sada_chains_skips_on_the_copies_it_pushes():
    """As SADA's code: a predicted step pushes a copy of the newest entry and the test reads the
    output it used, so after an extrapolation m = 0 up to rounding and after a reuse exactly 0."""
    v1, v2 = 1.0, 2.5
    after_e = sada_state([v1, v2, v2], used=2 * v2 - v1)  # E at step n: b = [v_{n-2}, v_{n-1}, copy]
    assert A.sada_stable(after_e, 1e-12) and not A.sada_stable(sada_state([v1, v2, v2], used=2 * v2 - v1 - 1e-3), 0.0)
    after_r = sada_state([v2, v2, v2], used=v2)
    assert A.sada_stable(after_r, 0.0)
    across = sada_state([v2, v2, 3.0])  # fresh after the run: a first difference across the gap
    assert A.sada_stable(across, 0.0) and not A.sada_stable(sada_state([v2, v2, 2.0]), 0.0)


def test_change_accumulates_the_estimated_relative_change_until_the_threshold():
    st = A.AdaptiveState(x_prev=torch.zeros(4), rate=2.0, o_scale=4.0)
    x = torch.full((4,), 0.5)  # each step: 2.0 * 0.5 / 4.0 = 0.25
    assert A.change_stable(st, x, 0.6) and st.acc == 0.25
    st.x_prev = torch.zeros(4)
    assert A.change_stable(st, x, 0.6) and st.acc == 0.5
    st.x_prev = torch.zeros(4)
    assert not A.change_stable(st, x, 0.6)  # 0.75 >= 0.6: recompute
    assert not A.change_stable(A.AdaptiveState(), x, 1e9)  # no rate yet: never


# -- in the runtime ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    family, scheduler, ptype, cfg = CASES[request.param]
    tp = tiny.build(family, scheduler=scheduler, prediction_type=ptype, cfg=cfg)
    return tp, tp(N)


def recorded_run(tp, schedule, **overrides):
    """Per call: (output the pipeline got, whether the denoiser really ran); and the summary."""
    calls, real = [], [False]

    def entered(module, args):
        real[0] = True

    def returned(module, args, output):
        calls.append((output[0].clone(), real[0]))
        real[0] = False

    model = denoiser(tp)
    handles = [model.get_submodule(ENTRY[tp.family]).register_forward_pre_hook(entered),
               model.register_forward_hook(returned)]
    zeustune.enable(tp.pipe, schedule)
    try:
        out = tp(N, **overrides)
        return out, calls, zeustune.summary(tp.pipe)
    finally:
        zeustune.disable(tp.pipe)
        for h in handles:
            h.remove()


def always_letters(plan: str, criterion: str, max_run: int, gates: str) -> str:
    """The static plan an always-stable criterion executes: A is fresh until the criterion has its
    inputs (SADA: three outputs; change: a rate, after the second fresh step) and after max_run
    predictions in a row, else the gate of its position."""
    out, last, fresh = [], None, 0
    for k, c in enumerate(plan):
        ready = k >= 3 if criterion == "sada" else fresh >= 2
        if c == "F" or not ready or fresh < 2 or k - last > max_run:
            out.append("F")
            last, fresh = k, fresh + 1
        else:
            out.append(gate_for(k - last, gates))
    return "".join(out)


@pytest.mark.parametrize("criterion", ["sada", "change"])
def test_never_stable_is_the_untouched_run_and_always_stable_the_static_plan(case, criterion):
    tp, untouched = case
    never = schedule_for(tp, PLAN_A, criterion=criterion, threshold=-1e9 if criterion == "sada" else 0.0)
    out, calls, summ = recorded_run(tp, never)
    assert torch.equal(out, untouched) and all(r for _, r in calls)
    always = schedule_for(tp, PLAN_A, criterion=criterion, threshold=1e9, max_run=3, gates="ERE")
    out, calls, summ = recorded_run(tp, always)
    static = always_letters(PLAN_A, criterion, 3, "ERE")
    assert static.count("F") < len(static) - 6  # the check bites: many steps are predicted
    assert sum(r for _, r in calls) == tp.calls_per_step * static.count("F")  # predicted steps call nothing
    out_static, calls_static, _ = recorded_run(tp, schedule_for(tp, static))
    assert torch.equal(out, out_static)
    for counts in summ.branches.values():
        assert counts["F"] == static.count("F") and counts["E"] == static.count("E")


def replay_sada(outputs_and_real, plan: str, threshold: float, max_run: int, batch_mean=True):
    """SADA's decisions re-derived from one branch's recorded outputs; asserts they match."""
    means, used, scale, last, fresh = [], 0.0, 0.0, None, 0
    for k, ((out, real), c) in enumerate(zip(outputs_and_real, plan)):
        if c == "A":
            stable = (fresh >= 2 and k - last <= max_run and len(means) >= 3
                      and -(used - means[-2]) + (means[-2] - means[-3]) <= threshold * scale)
            assert real == (not stable), f"step {k}"
        used, scale = float(out.mean(dtype=torch.float32)), float(out.abs().mean(dtype=torch.float32))
        means.append(used if real else means[-1])
        if real:
            last, fresh = k, fresh + 1
    return fresh


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_each_branch_decides_from_its_own_outputs(family):
    tp = tiny.build(family, cfg=True)
    plan = "FFF" + "A" * (N - 5) + "FF"
    _, calls, summ = recorded_run(tp, schedule_for(tp, plan, criterion="sada", threshold=0.0, max_run=3))
    counts = [replay_sada(calls[b::2], plan, 0.0, 3) for b in range(2)]
    assert [summ.branches[n]["F"] for n in ("cond", "uncond")] == counts
    assert min(counts) < len(plan)  # something was predicted, so the replay checked decisions both ways


def test_a_batch_decides_as_one_over_all_its_samples():
    tp = tiny.build("flux", cfg=False)
    plan = "FFF" + "A" * (N - 5) + "FF"
    sched = schedule_for(tp, plan, criterion="sada", threshold=0.0, max_run=3)
    _, calls, summ = recorded_run(tp, sched, num_images_per_prompt=3)
    assert calls[0][0].shape[0] == 3
    fresh = replay_sada(calls, plan, 0.0, 3)  # means over the whole batch tensor, as documented
    assert fresh == summ.denoiser_calls < len(plan)


def test_adaptive_plans_count_their_bounds():
    p = Plan("FFAAFA")
    assert (p.nfe, p.max_nfe, p.adaptive) == (3, 6, True)
    assert not Plan("FFEF").adaptive and math.isclose(Plan("FFEF").speedup_bound, 4 / 3)
