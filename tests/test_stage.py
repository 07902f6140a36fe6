"""P, a low-resolution stage: the plan rules, the lift and its read-back, the whole stage with an
oracle denoiser under true CFG (the switch lands where the recipe says), and the stage on a real
FLUX pipeline."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import zeustune
from zeustune.models import tiny
from zeustune.schedule.plans import Plan, PlanError, resample
from zeustune.runtime import latents
from zeustune.runtime.actions import StepContext
from zeustune.runtime.actions.stage import shifted_sigma, stage_call, upsampling_matrix
from zeustune.runtime.actions.state import BranchState
from zeustune.schedule.format import Model, Predictor, Sampler, Schedule


def test_p_is_a_prefix_followed_by_f_and_counts_as_a_reduced_call_not_as_history():
    p = Plan("PPPFFEF")
    assert p.nfe == 3 and p.reduced == 3
    for bad, why in (("FPF", "P only as a prefix"), ("PPE", "'F' after a P stage"), ("PPDF", "'F' after a P stage"),
                     ("PPFEF", "E needs two fresh steps")):
        with pytest.raises(PlanError, match=why):
            Plan(bad)
    assert str(resample(Plan("PPPP" + "FFFERFERFERF"), 28)).startswith("P" * 7 + "F")  # the stage keeps its share


def test_the_lift_has_an_exact_left_inverse_and_the_shift_maps_sigmas_between_token_counts():
    for small, full in ((8, 16), (12, 16), (9, 12)):
        u = upsampling_matrix(small, full)
        assert u.shape == (full, small)
        assert torch.allclose(torch.linalg.pinv(u) @ u, torch.eye(small, dtype=u.dtype), atol=1e-10)
    assert shifted_sigma(1.0, 1.15, 0.5) == 1.0 and shifted_sigma(0.4, 0.7, 0.7) == pytest.approx(0.4)
    lo = [shifted_sigma(s, 1.15, 0.65) for s in (0.9, 0.6, 0.3)]
    assert all(a > b for a, b in zip(lo, lo[1:])) and lo[1] < 0.6  # fewer tokens, less shift: lower sigmas


def test_the_stage_under_true_cfg_follows_the_small_trajectory_and_switches_to_the_recipes_target():
    """An oracle denoiser (each branch's own clean image at the small size: v = (y - x0_b) / s) and
    the pipeline's CFG mix and Euler step done by hand: the stage's latent follows Euler at the small
    size with the guided velocity, and after the switch the full latent is exactly
    (1 - s') up(x0_cfg) + s' eps, eps the initial noise."""
    torch.manual_seed(0)
    plan = Plan("PPPPF")
    sigmas = [1.0, 0.8, 0.55, 0.35, 0.2]
    g = 3.0
    h = w = 4  # token grid: latent 8 x 8
    x0 = {"cond": torch.randn(1, 4, 4, 4), "uncond": torch.randn(1, 4, 4, 4)}  # clean images at half size
    x0_cfg = x0["uncond"] + g * (x0["cond"] - x0["uncond"])
    pred = Predictor(reduced=0.5)
    branches = {n: BranchState.new(pred) for n in x0}
    family = SimpleNamespace(name="flux")
    sched = SimpleNamespace(config={"use_dynamic_shifting": False})
    x = torch.randn(1, 4, 2 * h, 2 * w)
    eps = x.clone()
    ids = latents.ids(h, w, torch.zeros(h * w, 3))
    ys = []
    for k in range(4):
        outs = {}
        for name in ("cond", "uncond"):
            def oracle(*args, _n=name, **kw):
                y = latents.unpack(kw["hidden_states"], 2, 2)
                return (latents.pack((y - x0[_n]) / float(kw["timestep"][0])),)

            kwargs = {"hidden_states": latents.pack(x), "img_ids": ids, "timestep": torch.tensor([sigmas[k]])}
            ctx = StepContext(branches[name], name, k, float(k), pred, (), kwargs, family, sched, sigmas, plan)
            ctx.denoise = oracle
            outs[name] = latents.unpack(stage_call(ctx), h, w)
        ys.append(branches["cond"].own_state("P", None, pred).y.clone())
        assert torch.equal(ys[-1], branches["uncond"].own_state("P", None, pred).y)  # each branch's copy agrees
        v = outs["uncond"] + g * (outs["cond"] - outs["uncond"])  # the pipeline's true-CFG mix
        x = x + (sigmas[k + 1] - sigmas[k]) * v
    # the small trajectory: Euler with the guided oracle velocity from the downsampled noise
    y = F.adaptive_avg_pool2d(eps, (4, 4))
    y = y * eps.std() / y.std()
    for k in range(3):
        assert torch.allclose(ys[k], y, atol=1e-5)
        y = y + (sigmas[k + 1] - sigmas[k]) * (y - x0_cfg) / sigmas[k]
    assert torch.allclose(ys[3], y, atol=1e-5)
    up = F.interpolate(x0_cfg, size=(8, 8), mode="bilinear", align_corners=False)  # oracle: x0_hat is exact
    assert torch.allclose(x, (1 - sigmas[4]) * up + sigmas[4] * eps, atol=1e-5)


@pytest.mark.parametrize("factor", [0.5, 0.75])
def test_a_stage_calls_the_model_on_the_small_grid_then_full_resolution(factor):
    tp = tiny.build("flux", cfg=True)
    ref = tp(12)
    seen = []
    handle = tp.pipe.transformer.x_embedder.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    plan = "PPPPFFEFRFFF"
    sched = Schedule(tag="p", model=Model("flux"), sampler=Sampler(type(tp.pipe.scheduler).__name__, 12),
                     plan=Plan(plan), predictor=Predictor(reduced=factor))
    try:
        zeustune.enable(tp.pipe, sched)
        out = tp(12)
        summary = zeustune.summary(tp.pipe)
    finally:
        handle.remove()
        zeustune.disable(tp.pipe)
    full = max(seen)
    small = round(round(full ** 0.5) * factor) ** 2
    assert seen.count(small) == 2 * 4 and seen.count(full) == 2 * plan.count("F")  # both CFG branches
    assert all(c["P"] == 4 for c in summary.branches.values())
    assert out.shape == ref.shape and torch.isfinite(out).all() and not torch.equal(out, ref)
