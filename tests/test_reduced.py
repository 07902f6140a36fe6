"""D, a fresh step at reduced resolution: FLUX's packed latents, the math that keeps the sampler at
full resolution, and the step on a real FLUX pipeline."""

from __future__ import annotations

import pytest
import torch
import yaml

import zeustune
from zeustune import tiny
from zeustune.plans import Plan, PlanError
from zeustune.runtime import latents
from zeustune.runtime.actions.reduced import ReducedStepError, full_velocity, reduced_latent
from zeustune.schedule import Model, Predictor, Sampler, Schedule, ScheduleError


def to_text(sched: Schedule) -> str:
    return yaml.safe_dump(sched.to_dict(), sort_keys=False)


def from_text(text: str) -> Schedule:
    return Schedule.from_dict(yaml.safe_load(text))


def test_packing_round_trips_and_ids_lay_out_the_grid():
    x = torch.randn(2, 16, 8, 6)
    tokens = latents.pack(x)
    assert tokens.shape == (2, 12, 64)
    assert torch.equal(latents.unpack(tokens, 4, 3), x)
    ids = latents.ids(4, 3, torch.zeros(12, 3))
    assert latents.grid_of(ids) == (4, 3) and ids[5].tolist() == [0, 1, 2]  # token 5: row 1, column 2
    with pytest.raises(ValueError, match="4\\*C"):
        latents.unpack(tokens, 3, 3)


def test_an_oracle_model_at_half_resolution_gives_the_true_velocity():
    """x0 constant on 2x2 cells and bilinear-exact (a constant), eps white noise: the reduced latent
    carries the full noise level, and a model that returns the true small velocity makes D return the
    true full-resolution one, eps - x0 (float32 rounding: 1e-5)."""
    torch.manual_seed(0)
    s = 0.6
    x0 = torch.full((1, 16, 16, 16), 0.7)
    eps = torch.randn(1, 16, 16, 16)
    x_t = (1 - s) * x0 + s * eps
    v_true = eps - x0
    x_small = reduced_latent(x_t, v_true, s, (8, 8))
    assert x_small.shape == (1, 16, 8, 8)
    noise = (x_small - (1 - s) * 0.7) / s
    assert noise.std() == pytest.approx(eps.std().item(), rel=1e-5)  # rescaled to the full std, not halved
    v_small = noise - 0.7  # the oracle: eps_small - x0_small on the small latent
    v = full_velocity(x_t, x_small, v_small, s)
    assert torch.allclose(v, v_true, atol=1e-5)
    assert torch.allclose(x_t - s * v, x0, atol=1e-5)  # the sampler's clean estimate is the upsampled one


def test_without_history_the_latent_is_taken_as_noise():
    x_t = torch.randn(1, 4, 8, 8)
    small = reduced_latent(x_t, None, 1.0, (4, 4))
    assert small.std() == pytest.approx(x_t.std().item(), rel=1e-5)
    assert torch.allclose(small / small.std(), torch.nn.functional.avg_pool2d(x_t, 2) / torch.nn.functional.avg_pool2d(x_t, 2).std(), atol=1e-6)


def test_plans_accept_d_as_a_call_and_schedules_need_version_4():
    p = Plan("DDFERF")
    assert p.nfe == 2 and p.reduced == 2  # a D step is a call, at a fraction of the cost
    assert str(Plan("DFE")) == "DFE"  # D and F give the two outputs E needs
    with pytest.raises(PlanError):
        Plan("DER")  # one call before E
    sched = Schedule(tag="d", model=Model("flux"), sampler=Sampler("FlowMatchEulerDiscreteScheduler", 6),
                     plan=p, predictor=Predictor(reduced=0.75))
    text = to_text(sched)
    assert "zeustune_schedule: 4" in text and "reduced: 0.75" in text
    assert from_text(text) == sched
    with pytest.raises(ScheduleError, match="zeustune_schedule: 4 or later for the letter D"):
        from_text(text.replace("zeustune_schedule: 4", "zeustune_schedule: 3").replace("  reduced: 0.75\n", ""))
    with pytest.raises(ScheduleError, match="predictor.reduced: got 0.6"):
        from_text(text.replace("reduced: 0.75", "reduced: 0.6"))
    plain = Schedule(tag="p", model=Model("flux"), sampler=Sampler("FlowMatchEulerDiscreteScheduler", 3), plan=Plan("FFE"))
    assert "reduced" not in to_text(plain)  # older files stay as they were


@pytest.fixture(scope="module")
def flux():
    tp = tiny.build("flux", cfg=True)
    return tp, tp(12)


def schedule(tp, plan: str, factor: float = 0.5) -> Schedule:
    return Schedule(tag="d", model=Model("flux"), sampler=Sampler(type(tp.pipe.scheduler).__name__, len(plan)),
                    plan=Plan(plan), predictor=Predictor(reduced=factor))


@pytest.mark.parametrize("factor", [0.5, 0.75])
def test_reduced_steps_call_the_model_on_the_smaller_grid_and_sample_at_full_resolution(flux, factor):
    tp, ref = flux
    seen = []
    # the embedder runs once per real model call (the hook's own reduced call bypasses module hooks)
    handle = tp.pipe.transformer.x_embedder.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    plan = "DDFFEFRFFEFF"
    try:
        zeustune.enable(tp.pipe, schedule(tp, plan, factor))
        out = tp(12)
        summary = zeustune.summary(tp.pipe)
    finally:
        handle.remove()
        zeustune.disable(tp.pipe)
    full_tokens = max(seen)
    h = round(full_tokens ** 0.5)
    small = round(h * factor) ** 2
    per_branch = {c: plan.count(c) for c in "DF"}
    assert sorted(set(seen)) == sorted({small, full_tokens})
    assert seen.count(small) == 2 * per_branch["D"] and seen.count(full_tokens) == 2 * per_branch["F"]  # true CFG
    assert all(c["D"] == per_branch["D"] for c in summary.branches.values())
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert not torch.equal(out, ref)


def test_reduced_step_is_refused_on_other_families_and_at_the_last_sigma():
    tp = tiny.build("sd3", cfg=False)
    sched = Schedule(tag="d", model=Model("sd3"), sampler=Sampler(type(tp.pipe.scheduler).__name__, 6), plan=Plan("FFDFFF"))
    zeustune.enable(tp.pipe, sched)
    try:
        with pytest.raises(ReducedStepError, match="family: got 'sd3', expected 'flux'"):
            tp(6)
    finally:
        zeustune.disable(tp.pipe)
