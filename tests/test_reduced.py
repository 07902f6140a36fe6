"""D, a fresh step at reduced resolution: FLUX's packed latents, the math that keeps the sampler at
full resolution, and the step on a real FLUX pipeline."""

from __future__ import annotations

import pytest
import torch
import yaml

import zeustune
from zeustune.models import tiny
from zeustune.schedule.plans import Plan, PlanError
from zeustune.runtime import latents
from zeustune.runtime.actions.reduced import ReducedStepError, full_velocity, reduced_latent
from zeustune.schedule.format import Model, Predictor, Sampler, Schedule, ScheduleError


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
    from zeustune.bench.peers import count_full_calls

    zeustune.enable(tp.pipe, schedule(tp, plan, factor))
    try:  # the bench counts full calls only: a reduced one is priced by its letter
        assert count_full_calls(tp.pipe, lambda: tp(12)) == 2 * per_branch["F"]
    finally:
        zeustune.disable(tp.pipe)


def run_seeing(tp, sched: Schedule, module) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
    """An 8-step run under ``sched`` and the latent shapes ``module`` saw (batch and channels left out)."""
    shapes = []
    handle = module.register_forward_pre_hook(lambda m, a: shapes.append(tuple(a[0].shape[2:])))
    try:
        zeustune.enable(tp.pipe, sched)
        return tp(8), shapes
    finally:
        handle.remove()
        zeustune.disable(tp.pipe)


#: the first layer each family's denoiser feeds the latent to (the hook's own reduced call
#: bypasses hooks on the denoiser module itself)
ENTRY = {"sd3": "pos_embed", "wan": "patch_embedding", "sdxl": "conv_in", "sd": "conv_in"}


@pytest.mark.parametrize("family,prediction", [("sd3", None), ("wan", None), ("sdxl", None), ("sd", None),
                                               ("sd", "v_prediction")])
def test_reduced_steps_run_on_every_family_at_a_side_the_model_divides(family, prediction):
    kw = {"prediction_type": prediction} if prediction else {}
    tp = tiny.build(family, cfg=False, **kw)
    ref = tp(8)
    denoiser = getattr(tp.pipe, "unet" if family in ("sd", "sdxl") else "transformer")
    plan = "DDFFEFRF"
    sched = Schedule(tag="d", model=Model(family), sampler=Sampler(type(tp.pipe.scheduler).__name__, 8), plan=Plan(plan),
                     predictor=Predictor(reduced=0.5))
    out, shapes = run_seeing(tp, sched, getattr(denoiser, ENTRY[family]))
    sides = [s[-1] for s in shapes]
    full, small = max(sides), min(sides)
    assert small < full and sides.count(small) == plan.count("D") and sides.count(full) == plan.count("F")
    m = 2 ** (len(denoiser.config.down_block_types) - 1) if family in ("sd", "sdxl") else 2
    assert small % m == 0  # what the model divides by
    assert out.shape == ref.shape and torch.isfinite(out).all() and not torch.equal(out, ref)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample", "flow"])
def test_an_oracle_model_at_half_resolution_gives_the_true_output_in_every_parameterisation(kind):
    """As for flow matching above: a constant x0, white noise, and a small model that returns the
    true small output give back the true full-resolution output (float32 rounding)."""
    from zeustune.runtime.actions.reduced import join, small_latent, split

    torch.manual_seed(1)
    a, b = (0.4, 0.6) if kind == "flow" else (0.6, 0.8)  # VP: a^2 + b^2 = 1
    x0, eps = torch.full((1, 4, 16, 16), 0.3), torch.randn(1, 4, 16, 16)
    x = a * x0 + b * eps
    true_out = join(x, x0, kind, a, b)
    got_x0, got_eps = split(x, true_out, kind, a, b)
    assert torch.allclose(got_x0, x0, atol=1e-5) and torch.allclose(got_eps, eps, atol=1e-5)
    x_small = small_latent(got_x0, got_eps, a, b, (8, 8))
    oracle = join(x_small, torch.full((1, 4, 8, 8), 0.3), kind, a, b)  # the small model's exact output
    x0_small, _ = split(x_small, oracle, kind, a, b)
    up = torch.nn.functional.interpolate(x0_small, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(join(x, up, kind, a, b), true_out, atol=1e-4)


def test_a_reduced_last_step_runs_and_an_unknown_parameterisation_is_refused_by_name():
    tp = tiny.build("flux", cfg=False)
    sched = Schedule(tag="d", model=Model("flux"), sampler=Sampler(type(tp.pipe.scheduler).__name__, 6), plan=Plan("FFFFFD"),
                     predictor=Predictor(reduced=0.5))
    zeustune.enable(tp.pipe, sched)
    try:
        tp(6)  # FLUX's last sigma is 1/6 here: allowed
    finally:
        zeustune.disable(tp.pipe)
    with pytest.raises(ReducedStepError, match=r"prediction type: got 'x', expected flow"):
        from zeustune.runtime.actions.reduced import split

        split(torch.zeros(1), torch.zeros(1), "x", 1.0, 1.0)


def test_on_video_an_oracle_model_on_fewer_frames_gives_the_true_output():
    """As above on a (B, C, F, H, W) latent with x0 constant: shrinking the frames, or frames and
    side, keeps the noise level and gives back the true full-size output (float32 rounding)."""
    from zeustune.runtime.actions.reduced import _resize, join, small_latent, small_shape, split

    torch.manual_seed(2)
    s = 0.6
    x0, eps = torch.full((1, 4, 5, 8, 8), 0.3), torch.randn(1, 4, 5, 8, 8)
    x = (1 - s) * x0 + s * eps
    for axes, shape in (("frames", (2, 8, 8)), ("both", (2, 4, 4)), ("side", (5, 4, 4))):
        assert small_shape(tuple(x.shape), 0.5, axes, 2) == shape  # 5 frames -> round(2.5) = 2
        x0_, eps_ = split(x, join(x, x0, "flow", 1 - s, s), "flow", 1 - s, s)
        x_small = small_latent(x0_, eps_, 1 - s, s, shape)
        assert x_small.shape[2:] == shape
        assert ((x_small - (1 - s) * 0.3) / s).std() == pytest.approx(eps.std().item(), rel=1e-5)
        oracle = join(x_small, torch.full_like(x_small, 0.3), "flow", 1 - s, s)
        up = _resize(split(x_small, oracle, "flow", 1 - s, s)[0], tuple(x.shape[2:]), up=True)
        assert torch.allclose(join(x, up, "flow", 1 - s, s), eps - x0, atol=1e-5)
    with pytest.raises(ReducedStepError, match=r"predictor.reduced_axes: got 'frames' on a latent of shape \(1, 4, 8, 8\)"):
        small_shape((1, 4, 8, 8), 0.5, "frames", 2)


@pytest.mark.parametrize("axes", ["frames", "both"])
def test_video_d_steps_call_the_model_on_fewer_frames_and_schedules_need_version_6(axes):
    tp = tiny.build("wan", cfg=False)
    ref = tp(8)
    sched = Schedule(tag="d", model=Model("wan"), sampler=Sampler(type(tp.pipe.scheduler).__name__, 8), plan=Plan("DDFFEFRF"),
                     predictor=Predictor(reduced=0.5, reduced_axes=axes))
    out, shapes = run_seeing(tp, sched, tp.pipe.transformer.patch_embedding)
    full = max(shapes)
    small = [s for s in shapes if s != full]
    assert len(small) == 2 and full[0] > 1 and all(s[0] == max(1, round(full[0] * 0.5)) for s in small)
    assert all(s[1:] == (full[1:] if axes == "frames" else tuple(n // 2 for n in full[1:])) for s in small)
    assert out.shape == ref.shape and torch.isfinite(out).all() and not torch.equal(out, ref)
    text = to_text(sched)
    assert "zeustune_schedule: 6" in text and f"reduced_axes: {axes}" in text and from_text(text) == sched
    assert "reduced_axes" not in to_text(Schedule(tag="d", model=Model("wan"), sampler=sched.sampler, plan=sched.plan,
                                                  predictor=Predictor(reduced=0.5)))  # side: version 4 as before


def test_frames_are_refused_by_name_on_an_image_pipeline():
    tp = tiny.build("flux", cfg=False)
    sched = Schedule(tag="d", model=Model("flux"), sampler=Sampler(type(tp.pipe.scheduler).__name__, 6), plan=Plan("DFFFFF"),
                     predictor=Predictor(reduced=0.5, reduced_axes="frames"))
    with pytest.raises(ScheduleError, match=r"predictor.reduced_axes: got 'frames', expected side on flux"):
        zeustune.enable(tp.pipe, sched)
