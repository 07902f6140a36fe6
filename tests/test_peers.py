"""Peer caches (diffusers' FirstBlockCache, TaylorSeer, MagCache, SeaCache) on tiny-flux: they skip calls,
change the image, and leave the pipeline bit-exact full-step once removed.

tiny-flux samples with true CFG, so a full-step run makes two denoiser calls a step.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

import zeustune
from zeustune.bench import peers
from zeustune.schedule.plans import Plan
from zeustune.quality.evaluate import sample
from zeustune.models.registry import TINY_FLUX_DIR, load
from zeustune.models.prompts import load_prompts

pytestmark = pytest.mark.skipif(
    not (TINY_FLUX_DIR / "model_index.json").is_file(), reason="tiny-flux weights not present"
)

BRANCHES = 2  # true CFG: cond and uncond
# An aggressive knob per peer (all skip at least half the calls on tiny-flux).
AGGRESSIVE = {"fbcache": 0.3, "taylorseer": 4, "taylorseer-attn": 4, "magcache": 1.0, "seacache": 0.8}


@pytest.fixture(scope="module")
def tiny():
    pipe, spec = load("tiny-flux", progress=False)
    pipe.set_progress_bar_config(disable=True)
    prompt = load_prompts(spec, "calib")[0]
    box = {}

    def run():
        box["image"] = sample(pipe, spec, prompt, 0)

    return pipe, spec, run, box


@pytest.fixture(scope="module")
def full(tiny):
    """The full-step run: (full calls, image)."""
    pipe, _, run, box = tiny
    n = peers.count_full_calls(pipe, run)
    return n, box["image"]


def test_full_step_run_counts_every_call(tiny, full):
    _, spec, _, _ = tiny
    assert full[0] == BRANCHES * spec.steps


def test_counter_agrees_with_the_zeustune_runtime(tiny, full):
    pipe, _, run, _ = tiny
    zeustune.enable(pipe, "tiny-flux/tuned-2x")
    try:
        n = peers.count_full_calls(pipe, run)
        assert n == zeustune.summary(pipe).denoiser_calls < full[0]
    finally:
        zeustune.disable(pipe)


@pytest.mark.parametrize("name", list(AGGRESSIVE))
def test_peer_skips_calls_and_is_removed_on_exit(tiny, full, name):
    pipe, spec, run, box = tiny
    n_full, ref = full
    calib = run if name == "magcache" else None  # MagCache calibrates on entry
    with peers.apply(pipe, name, AGGRESSIVE[name], calib_run=calib):
        assert pipe.transformer.is_cache_enabled
        n = peers.count_full_calls(pipe, run)
        image = box["image"]
        # Same again: the caches' state is reset between pipeline calls.
        assert peers.count_full_calls(pipe, run) == n
        assert torch.equal(box["image"], image)
    assert n <= n_full // 2
    assert not torch.equal(image, ref)
    assert (image - ref).abs().max() < 0.9  # still an image of the prompt's range, not NaN or noise
    if name.startswith("taylorseer"):
        # Full at steps 0..2 (disable_cache_before_step=3), then at 4, 4 + k, ...: the counter sees
        # exactly the refreshes, including taylorseer-attn's (whose MLPs run on every call).
        k = AGGRESSIVE[name]
        assert n == BRANCHES * (3 + len(range(4, spec.steps, k)))
    assert not pipe.transformer.is_cache_enabled
    assert "cache_context" not in vars(pipe.transformer)  # SeaCache's step-context adapter is gone too
    assert peers.count_full_calls(pipe, run) == n_full
    assert torch.equal(box["image"], ref)


def test_seacache_sees_each_sample_latent_unpacked_as_the_pipeline_unpacks_it(tiny):
    """SeaCache's FLUX adapter: the packed 2x2-patch tokens back on the latent grid, per sample,
    equal to what FluxPipeline's own unpacking gives (so its spectral filter sees an image)."""
    pipe, spec, _, _ = tiny
    h, w = spec.height // pipe.vae_scale_factor, spec.width // pipe.vae_scale_factor  # latent side, in pixels/8
    latents = torch.randn(3, 16, h, w)
    packed = pipe._pack_latents(latents, 3, 16, h, w)
    ids = pipe._prepare_latent_image_ids(3, h // 2, w // 2, "cpu", torch.float32)
    views = peers.flux_raw_vision(None, (), {"hidden_states": packed, "img_ids": ids})
    assert len(views) == 3 and views[0].shape == (16, 1, h, w)
    for view, latent in zip(views, latents):
        assert torch.equal(view[:, 0], latent)
    assert peers.flux_raw_vision(None, (), {"hidden_states": packed[:, 1:], "img_ids": ids}) is None  # grid mismatch


def test_milder_knob_skips_less(tiny, full):
    pipe, _, run, _ = tiny
    counts = []
    for threshold in (0.05, 0.3):
        with peers.apply(pipe, "fbcache", threshold):
            counts.append(peers.count_full_calls(pipe, run))
    assert full[0] > counts[0] > counts[1]


def test_magcache_calibration_gives_one_positive_ratio_per_step(tiny, full):
    pipe, spec, run, box = tiny
    ratios = peers.calibrate_magcache(pipe, run)
    assert ratios.shape == (spec.steps,)
    assert torch.isfinite(ratios).all() and (ratios > 0).all()
    assert ratios[0] == 1.0  # diffusers logs 1.0 for the first step (no previous residual)
    assert (ratios[1:] != 1.0).any()
    # Calibration skips nothing and leaves no cache behind.
    assert torch.equal(box["image"], full[1])
    assert not pipe.transformer.is_cache_enabled
    config = peers.enable(pipe, "magcache", 0.1, mag_ratios=ratios, max_skip_steps=2)
    try:
        assert config.num_inference_steps == spec.steps and config.max_skip_steps == 2
        assert torch.equal(config.mag_ratios, ratios)
    finally:
        assert peers.disable(pipe)
    assert not peers.disable(pipe)


@pytest.mark.parametrize(
    "name, knob, field, expected",
    [
        ("nope", 0.1, "name", "one of fbcache"),
        ("fbcache", -0.1, "threshold", "a number >= 0"),
        ("fbcache", "0.2", "threshold", "a number >= 0"),
        ("fbcache", math.nan, "threshold", "a number >= 0"),
        ("magcache", True, "threshold", "a number >= 0"),
        ("taylorseer", 0, "cache_interval", "an integer >= 1"),
        ("taylorseer", 2.5, "cache_interval", "an integer >= 1"),
        ("taylorseer-attn", None, "cache_interval", "an integer >= 1"),
    ],
)
def test_bad_name_or_knob_is_refused_at_once(tiny, name, knob, field, expected):
    pipe = tiny[0]
    with pytest.raises(ValueError) as err:
        peers.apply(pipe, name, knob)  # refused before entering
    value = name if field == "name" else knob
    assert f"{field}: got {value!r}, expected {expected}" in str(err.value)
    assert not pipe.transformer.is_cache_enabled


def test_bad_options_and_missing_calibration_are_refused(tiny):
    pipe = tiny[0]
    with pytest.raises(ValueError, match=r"peer fbcache: option: got 'thresh', expected one of"):
        peers.apply(pipe, "fbcache", 0.1, thresh=0.2)
    with pytest.raises(ValueError, match=r"peer taylorseer: option: got 'use_lite_mode'"):
        peers.apply(pipe, "taylorseer", 3, use_lite_mode=False)  # the peer's name says which mode
    with pytest.raises(ValueError, match=r"peer magcache: calib_run: got None, expected a function"):
        peers.apply(pipe, "magcache", 0.1)
    with pytest.raises(ValueError, match=r"peer magcache: mag_ratios: got None"):
        peers.enable(pipe, "magcache", 0.1)
    with pytest.raises(ValueError, match=r"mag_ratios: got \[1.0, -1.0\], expected one finite positive ratio per step"):
        peers.enable(pipe, "magcache", 0.1, mag_ratios=[1.0, -1.0])
    assert not pipe.transformer.is_cache_enabled


def test_refuses_to_stack_on_a_cache_or_a_schedule(tiny):
    pipe = tiny[0]
    busy = r"transformer cache: got 'FirstBlockCacheConfig', expected none"
    with peers.apply(pipe, "fbcache", 0.1), pytest.raises(ValueError, match=busy):
        peers.enable(pipe, "taylorseer", 3)
    zeustune.enable(pipe, "tiny-flux/tuned-2x")
    try:
        refused = r"zeustune schedule: got 'enabled', expected none"
        with pytest.raises(ValueError, match=refused), peers.apply(pipe, "fbcache", 0.1):
            pass
    finally:
        zeustune.disable(pipe)
    assert not pipe.transformer.is_cache_enabled


def test_taylorseer_lite_is_the_s_gate_at_gamma_1_on_its_fresh_steps(tiny, full):
    """TaylorSeer lite forecasts the transformer's output (proj_out) by a first-order Taylor series
    in the step index from its last two full calls: zeustune's S at gamma 1 on the same fresh steps.
    So the search's TaylorSeer seeds (space.taylor_seed) are that peer, and its front covers it."""
    pipe, spec, run, box = tiny
    k = 4
    # diffusers' rule: full calls before disable_cache_before_step (3), then every k-th from step 4
    plan = "".join("F" if s < 3 or (s - 4) % k == 0 else "S" for s in range(spec.steps))
    with peers.apply(pipe, "taylorseer", k):
        run()
    theirs = box["image"]
    base = zeustune.load("tiny-flux/tuned-2x")
    ours = replace(base, plan=Plan(plan), predictor=replace(base.predictor, gamma=1.0, time="step"))
    zeustune.enable(pipe, ours)
    try:
        run()
    finally:
        zeustune.disable(pipe)
    # float32 throughout (the peer keeps its factors in the model's dtype): only the order of a few
    # additions differs, so the images agree to float32 rounding carried through the sampler
    assert torch.allclose(box["image"], theirs, rtol=0, atol=1e-5)
    assert not torch.equal(theirs, full[1])
