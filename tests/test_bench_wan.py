"""The bench on a Wan model: SeaCache skips there (diffusers' own latent view), the PostDiff-style
rows stay FLUX's, the report names Wan2.1-14B, and the shipped fixed share is what
experiments/wan_fixed_share.py counts. On random tiny pipelines (zeustune.models.tiny)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

import zeustune
from zeustune.bench import compute, peers
from zeustune.bench.methods import Method
from zeustune.models import tiny
from zeustune.schedule.format import Model, Predictor, Sampler, Schedule
from zeustune.schedule.plans import Plan

from helpers import load_script

STEPS = 20


@pytest.fixture(scope="module")
def wan():
    tp = tiny.build("wan", cfg=True)  # two-call CFG: 2 calls a step
    box = {}
    run = lambda: box.update(out=tp(STEPS))  # noqa: E731
    full = peers.count_full_calls(tp.pipe, run)
    return tp, run, box, full, box["out"]


def test_seacache_skips_calls_on_wan_with_diffusers_own_latent_view(wan):
    tp, run, box, full, ref = wan
    assert full == 2 * STEPS
    with peers.apply(tp.pipe, "seacache", 1.0) as config:
        assert config.raw_vision_callback is None  # diffusers picks its Wan adapter
        n = peers.count_full_calls(tp.pipe, run)
        out = box["out"]
    # as much as SeaCache allows: the first and last step run, and after max_consecutive_cached (2)
    # cached steps one runs: steps 0, 3, 6, ..., 18 and 19 of 20, per branch
    assert n == 2 * (2 + (STEPS - 2) // (config.max_consecutive_cached + 1)) == 16
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    assert peers.count_full_calls(tp.pipe, run) == full and torch.equal(box["out"], ref)  # removed on exit
    # FLUX's latent view on Wan's 5-D hidden states sees nothing: every call runs (the bug this fixes)
    with peers.apply(tp.pipe, "seacache", 1.0, raw_vision_callback=peers.flux_raw_vision):
        assert peers.count_full_calls(tp.pipe, run) == full


def test_seacache_keeps_the_flux_latent_view_on_flux():
    model = tiny.build("flux", cfg=False).pipe.transformer
    assert peers.PEERS["seacache"].build(model, 0.5, {}).raw_vision_callback is peers.flux_raw_vision


def test_a_p_stage_does_not_run_on_wan_so_postdiff_rows_stay_flux_only(wan):
    from zeustune.bench import methods as MT
    from zeustune.runtime.actions.reduced import ReducedStepError

    tp = wan[0]
    sched = Schedule(tag="p", model=Model("wan"), sampler=Sampler(type(tp.pipe.scheduler).__name__, 8),
                     plan=Plan("PPPFFFFF"), predictor=Predictor(reduced=0.5))
    zeustune.enable(tp.pipe, sched)
    try:
        with pytest.raises(ReducedStepError, match="plan letter P: family: got 'wan'"):
            tp(8)
    finally:
        zeustune.disable(tp.pipe)
    assert MT.postdiff(tp.pipe, SimpleNamespace(family="wan", steps=8), None, {}) == []


def test_the_first_blocks_share_the_report_quotes_is_read_off_the_denoiser(wan):
    from zeustune.bench.run import _first_block_share

    assert _first_block_share(wan[0].pipe) == 0.5  # 2 alike blocks
    assert _first_block_share(tiny.build("sd", cfg=False).pipe) is None  # a UNet


def test_a_wan_report_names_wan_2_1_14b_and_its_fixed_share(tmp_path):
    from zeustune.bench.report import markdown

    rows = [Method("full steps", "full steps", steps=50, calls=50, calls_p90=50, cost=50, projected=1.0, speedup=1.0,
                   loss=0.0, loss_p90=0.0),
            Method("25 steps", "fewer steps", steps=25, calls=25, calls_p90=25, cost=25, projected=1.99, speedup=1.9,
                   loss=0.001, loss_p90=0.001)]
    info = {"model": "tiny-wan", "steps": 50, "metric": "st-lpips-video", "target": "Wan2.1-14B",
            "first block's share of the blocks' parameters": 0.25}
    text = markdown(rows, info, "zeustune bench --model tiny-wan", (2,))
    s = compute.WAN_TARGET.fixed_share_50
    assert f"f = {s:.3g} / ({s:.3g} + {1 - s:.3g} N / 50)" in text and "0.0017 / (0.0017 + 0.998 N / 50)" in text
    assert "one Wan2.1-14B call (40 blocks,\n81 frames of 832x480)" in text
    assert "about\n1/40 of a call, where on tiny-wan it is a quarter" in text
    assert "cost: Wan2.1-14B full-call equivalents" in text and "end-to-end speedup on Wan2.1-14B" in text
    assert "FLUX.1-dev call" not in text and "tiny-flux" not in text
    # an older results.json (no target): FLUX.1-dev, and tiny-flux's first block
    old = markdown(rows, {"model": "tiny-flux", "steps": 50, "metric": "st-lpips"}, "c", (2,))
    assert "one FLUX.1-dev call" in old and "where on tiny-flux it is a third" in old and "0.03 / (0.03 + 0.97 N / 50)" in old


def test_the_shipped_fixed_share_is_what_the_script_counts():
    """The script's full-size counts (on the meta device: shapes only) against the shipped JSON, and
    compute's fallback constant against both."""
    from diffusers import AutoencoderKLWan

    script = load_script("experiments", "wan_fixed_share")
    shipped = json.loads((compute.BENCHMARKS / "wan-projection.json").read_text())
    with torch.device("meta"):
        vae = AutoencoderKLWan()
    full = script.vae_decode(vae, compute.WAN_14B.latent, "meta")
    assert full["output"] == [3, 81, 480, 832]
    assert full["convolutions"] + full["attention"] == shipped["vae_decode"]["flops"]
    fixed, call = shipped["fixed_flops"], compute.wan_flops()["total"]
    assert shipped["call_flops"] == call and fixed == shipped["vae_decode"]["flops"] + 2 * shipped["text_encoder"]["flops_per_prompt"]
    assert shipped["fixed_share_50"] == pytest.approx(fixed / (fixed + 100 * call), rel=1e-12)
    assert compute.WAN_TARGET.fixed_share_50 == shipped["fixed_share_50"]
    assert compute.WAN_FIXED_SHARE_50 == pytest.approx(shipped["fixed_share_50"], rel=1e-4)  # 5 significant digits
