"""Equal compute: a bench row's cost in FLUX.1-dev calls, its projected speedup, the re-implemented
peers' plans, and the tuned-vs-best-other ratios."""

from __future__ import annotations

import json

import pytest

from zeustune.schedule import plans as P
from zeustune.bench import compute
from zeustune.bench import methods as MT
from zeustune.bench.methods import Method
from zeustune.bench.report import ratios
from zeustune.schedule.format import Model, Predictor, Sampler, Schedule


def sched(plan: str, **pred) -> Schedule:
    return Schedule(tag="t", model=Model("flux"), sampler=Sampler("FlowMatchEulerDiscreteScheduler", len(plan)),
                    plan=P.Plan(plan), predictor=Predictor(**pred))


def test_flux_dev_blocks_cost_alike_and_attention_grows_with_tokens():
    f = compute.flux_dev_flops()
    assert f["total"] == 19 * f["double"] + 38 * f["single"]
    # a double block's two streams and a single block's fused stream both do 12 d^2 per token
    assert f["double"] == f["single"] and f["first_block"] == pytest.approx(1 / 57)
    small = compute.flux_dev_flops(compute.Arch(image_tokens=1024))
    assert small["total"] < f["total"] / 3  # 4x fewer image tokens: linear parts /3.6, attention /12


def test_projection_stays_under_the_call_bound_and_adds_the_fixed_share():
    assert compute.fixed_share(50) == pytest.approx(0.03)
    assert compute.fixed_share(28) > compute.fixed_share(50)  # fewer denoiser steps, same encoders and VAE
    for n, cost in [(28, 7.0), (28, 10.0), (50, 12.0), (50, 49.0)]:
        s = compute.projected_speedup(cost, n)
        assert 1.0 < s < n / cost
    assert compute.projected_speedup(28, 28) == pytest.approx(1.0)
    # with the fixed share: 1 / (f + (1 - f) / 4) at a quarter of the calls
    f = compute.fixed_share(28)
    assert compute.projected_speedup(7, 28) == pytest.approx(1 / (f + (1 - f) / 4))


def test_cost_adds_each_skipped_steps_work_by_letter_and_by_peer():
    shares = {"E": 1e-3, "R": 2e-3, "C": 5e-3, "A-sada": 7e-3, "fbcache": 0.02}
    m = Method("x", "zeustune tuned", work="zeustune", schedule=sched("FFERRFCF"), steps=8, calls=4)
    assert compute.cost(m, shares) == pytest.approx(4 + 1e-3 + 2 * 2e-3 + 5e-3)
    # A steps: the ones that did not call are costed as the criterion's work (calls are measured)
    a = Method("a", "SADA", work="zeustune", schedule=sched("FFFAAAAF", criterion="sada"), steps=8, calls=5.5)
    assert compute.cost(a, shares) == pytest.approx(5.5 + 2.5 * 7e-3)
    fb = Method("fb", "diffusers fbcache", work="fbcache", steps=28, calls=7.5)
    assert compute.cost(fb, shares) == pytest.approx(7.5 + 20.5 * 0.02)
    assert compute.cost(Method("6 steps", "fewer steps", steps=6, calls=6), shares) == 6
    with pytest.raises(KeyError, match="'magcache'"):
        compute.cost(Method("m", "diffusers magcache", work="magcache", steps=28, calls=7), shares)


def test_measured_peer_shares_are_read_and_cache_dit_follows_fbcache(tmp_path):
    path = tmp_path / "skip.json"
    path.write_text(json.dumps({"peers": {"fbcache": {"share": 0.019}, "magcache": {"share": 1e-4}}}))
    got = compute.load_shares(path)
    assert got["shares"]["fbcache"] == 0.019 and got["shares"]["magcache"] == 1e-4
    assert got["shares"]["cache-dit"] == 0.019 and "as fbcache" in got["source"]["cache-dit"]
    missing = compute.load_shares(tmp_path / "none.json")  # no measurement: fbcache from FLOPs
    assert missing["shares"]["fbcache"] == pytest.approx(1 / 57) and missing["source"]["fbcache"].startswith("FLOPs")


def test_sada_plan_follows_the_published_ranges_at_50_steps_and_scales_to_28():
    plan = str(MT.sada_plan(50))
    assert plan[:11] == "F" * 11 and set(plan[11:25]) == {"A"}  # fresh up to acc_start, A up to lagrange_step
    tail = plan[25:47]
    assert all((c == "F") == (k % 4 == 0) for k, c in enumerate(tail, start=25))  # skip iff k % lagrange_int
    assert plan[47:] == "FFF"
    p28 = MT.sada_plan(28)
    assert len(p28) == 28 and p28.max_nfe < 28 and str(p28).startswith("F" * 7 + "A")  # acc_start round(10 * 28 / 50) = 6


def test_lemica_lists_keep_their_counts_natively_and_their_share_resampled():
    for k in MT.LEMICA_50:
        native = MT.lemica_plan(k, 50)
        assert native.nfe == k and set(str(native)) <= {"F", "R"}  # zero-order reuse
        assert [i for i, c in enumerate(str(native)) if c == "F"] == sorted(MT.LEMICA_50[k])
        at28 = MT.lemica_plan(k, 28)
        assert abs(at28.nfe - k * 28 / 50) <= 1.5 and set(str(at28)) <= {"F", "R"}


def test_ratios_compare_the_tuned_front_with_the_best_family_at_each_speed():
    rows = [Method("tuned", "zeustune tuned", projected=3.2, loss=0.01),
            Method("a", "fewer steps", projected=3.5, loss=0.05), Method("b", "fewer steps", projected=2.0, loss=0.01),
            Method("c", "diffusers magcache", projected=3.1, loss=0.02)]
    table = "\n".join(ratios(rows, (2, 3, 4)))
    assert "| 2x | 0.0100 | fewer steps | 0.0100 | 1.00 |" in table
    assert "| 3x | 0.0100 | diffusers magcache | 0.0200 | 0.50 |" in table  # magcache's 0.02 beats 0.05 (fewer steps at 3.5x)
    assert "| 4x | - | - (none this fast) | - | - |" in table


def test_the_report_explains_the_projection_and_round_trips_through_results_json(tmp_path):
    from zeustune.bench.report import markdown, plot, rows_of

    rows = [Method("full steps", "full steps", steps=28, calls=28, calls_p90=28, cost=28, projected=1.0, speedup=1.0,
                   loss=0.0, loss_p90=0.0),
            Method("tuned-3x", "zeustune tuned", steps=28, calls=7, calls_p90=7, cost=7, projected=3.46, speedup=3.2,
                   loss=0.009, loss_p90=0.02),
            Method("fbcache 0.25", "diffusers fbcache", steps=28, calls=7.2, calls_p90=8, cost=7.65, projected=3.21,
                   speedup=1.55, loss=0.0104, loss_p90=0.017)]
    text = markdown(rows, {"model": "m", "steps": 28, "metric": "st-lpips"}, "zeustune bench --model m", (3,))
    assert "f = 0.03 / (0.03 + 0.97 N / 50)" in text  # the projection is explained where the figures are
    assert "| fbcache 0.25 | diffusers fbcache | - | 7.2 (8) | 7.65 | 3.21x | 1.55x | 0.0104 | 0.0170 |" in text
    assert "| 3x | 0.0090 | diffusers fbcache | 0.0104 | 0.87 |" in text  # fbcache reaches 3x only at 3.21x
    back = rows_of({"rows": [{k: getattr(m, k) for k in ("name", "family", "calls", "cost", "projected", "speedup", "loss")}
                             for m in rows]})
    assert [(m.name, m.projected, m.loss) for m in back] == [(m.name, m.projected, m.loss) for m in rows]
    assert plot(back, tmp_path / "p.png", "st-lpips").stat().st_size > 10_000


def test_a_measured_speedup_beyond_the_call_bound_is_flagged():
    from zeustune.bench.report import markdown

    rows = [Method("full steps", "full steps", steps=50, calls=50, calls_p90=50, cost=50, projected=1.0, speedup=1.0,
                   loss=0.0, loss_p90=0.0),
            Method("12 steps", "fewer steps", steps=12, calls=12, calls_p90=12, cost=12, projected=3.81, speedup=4.54,
                   loss=0.007, loss_p90=0.01),
            Method("25 steps", "fewer steps", steps=25, calls=25, calls_p90=25, cost=25, projected=1.94, speedup=1.9,
                   loss=0.001, loss_p90=0.001)]
    text = markdown(rows, {"model": "m", "steps": 50, "metric": "st-lpips"}, "c", (2,))
    assert "| 4.54x (!) |" in text and "| 1.90x |" in text  # 50 / 12 = 4.17x bound; 25 steps is within its 2x
    assert "beyond the call bound N / calls by more than 2%: 12 steps." in text


def test_the_equal_calls_table_leaves_out_reduced_resolution_rows_on_both_sides():
    rows = [Method("tuned", "zeustune tuned", steps=28, calls=7.0, loss=0.01, schedule=sched("F" * 7 + "R" * 21)),
            Method("tuned-d", "zeustune tuned", steps=28, calls=5.0, loss=0.001, schedule=sched("D" * 4 + "F" + "R" * 23)),
            Method("fbcache", "diffusers fbcache", steps=28, calls=7.0, loss=0.02, work="fbcache"),
            Method("7 steps", "fewer steps", steps=7, calls=7.0, loss=0.05)]
    table = "\n".join(ratios(rows, (4, 5), "calls"))
    # tuned-d (5 full calls, 5.6x) would win both; without D only 'tuned' (4.0x) counts
    assert "| 4x | 0.0100 | diffusers fbcache | 0.0200 | 0.50 |" in table
    assert "| 5x | - | - (none this fast) | - | - |" in table


# -- the Wan2.1-14B projection ------------------------------------------------------------------


def wan_left_out(a: compute.WanArch, text_dim: int, freq_dim: int) -> int:
    """What wan_flops leaves out of a call, as WanTransformer3DModel computes it: the patch embedding
    (a 1x2x2 convolution per token), the time embedder (two linears) and its projection to the six
    modulation vectors, the text embedder (two linears per text token) and the output head."""
    d, t, c = a.hidden, a.tokens, a.latent[0]
    patch = a.patch[0] * a.patch[1] * a.patch[2]
    return (2 * t * c * patch * d + 2 * (freq_dim * d + d * d) + 2 * d * 6 * d
            + 2 * a.text_tokens * (text_dim * d + d * d) + 2 * t * d * c * patch)


def test_the_wan_formula_is_what_torch_counts_on_a_small_wan_transformer():
    """wan_flops at a small WanTransformer3DModel's configuration against torch's FLOP counter: each
    block is counted exactly, and the call exceeds the formula by exactly what it leaves out
    (wan_left_out), which at Wan2.1-14B's size is under 1e-4 of a call."""
    import torch
    from diffusers import WanTransformer3DModel
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    d, ffn, text_dim, freq_dim = 64, 128, 32, 32
    a = compute.WanArch(blocks=2, hidden=d, ffn=ffn, latent=(4, 3, 8, 12), text_tokens=8)  # 3 x 4 x 6 tokens
    torch.manual_seed(0)
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=4,
                                  out_channels=4, text_dim=text_dim, freq_dim=freq_dim, ffn_dim=ffn, num_layers=2,
                                  rope_max_seq_len=32).eval()
    # CPU's fused attention kernel is one op the counter does not know; the math backend's products it does
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        model(torch.randn(1, *a.latent), torch.tensor([500]), torch.randn(1, a.text_tokens, text_dim))
    f, counts = compute.wan_flops(a), fc.get_flop_counts()
    assert a.tokens == 72
    for k in range(a.blocks):
        assert sum(counts[f"WanTransformer3DModel.blocks.{k}"].values()) == f["block"]
    left_out = wan_left_out(a, text_dim, freq_dim)
    assert 0 < left_out < 0.1 * f["total"]
    assert fc.get_total_flops() - f["total"] == left_out
    big = compute.wan_flops()
    assert wan_left_out(compute.WAN_14B, text_dim=4096, freq_dim=256) < 1e-4 * big["total"]


def test_wan_2_1_14b_at_480p_is_32760_tokens_and_every_block_is_alike():
    f = compute.wan_flops()
    assert compute.WAN_14B.tokens == 21 * 30 * 52 == 32760
    assert f["total"] == 40 * f["block"] and f["first_block"] == pytest.approx(1 / 40)
    assert 4.1e13 < f["block"] < 4.3e13 and 22 < f["total"] / compute.flux_dev_flops()["total"] < 23
    # attention is quadratic: half the side (a quarter of the tokens) costs less than a quarter
    half = compute.wan_flops(compute.WanArch(latent=(16, 21, 30, 52)))
    assert 1 / 16 < half["total"] / f["total"] < 1 / 4


def test_each_family_is_projected_where_its_users_deploy():
    assert compute.target_for("wan") is compute.WAN_TARGET
    assert {compute.target_for(f).name for f in ("flux", "sd3", "sd", "sdxl")} == {"FLUX.1-dev"}
    flux = compute.FLUX_TARGET
    assert (flux.call_flops, flux.first_block, flux.fixed_share_50) == (
        compute.flux_dev_flops()["total"], compute.flux_dev_flops()["first_block"], compute.FIXED_SHARE_50)
    wan = compute.WAN_TARGET
    assert wan.output_elements == 16 * 21 * 60 * 104 and wan.hidden_elements == 32760 * 5120
    # the text encoder and VAE: a far smaller share of a 14B video run than of FLUX.1-dev's
    assert 0 < wan.fixed_share_50 < 0.01
    f = compute.fixed_share(50, wan.fixed_share_50)
    assert compute.projected_speedup(25, 50, target=wan) == pytest.approx(1 / (f + (1 - f) / 2))
    assert compute.projected_speedup(25, 50) < compute.projected_speedup(25, 50, target=wan) < 2  # less fixed work
    assert compute.projected_speedup(50, 50, target=wan) == pytest.approx(1.0)


def test_shares_are_carried_to_wan_by_what_each_skipped_steps_work_scales_with(tmp_path):
    path = tmp_path / "skip.json"
    flux_first = 1 / 57
    path.write_text(json.dumps({"peers": {"fbcache": {"share": 1.1 * flux_first}, "magcache": {"share": 4e-4},
                                          "taylorseer-attn": {"share": 0.55}}}))
    flux, wan = compute.load_shares(path), compute.load_shares(path, compute.WAN_TARGET)
    s, src = wan["shares"], wan["source"]
    # the first block: Wan's FLOPs share (1/40) times the measured/FLOPs ratio on FLUX.1-dev (1.1)
    assert s["fbcache"] == pytest.approx(1.1 / 40) and "1/40" in src["fbcache"] and "1.100" in src["fbcache"]
    assert s["cache-dit"] == s["probe-residual"] == s["probe-modulated"] == s["fbcache"]
    assert compute.load_shares(tmp_path / "none.json", compute.WAN_TARGET)["shares"]["fbcache"] == pytest.approx(1 / 40)
    # hidden-state ops: elements per call FLOP, 4608 x 3072 on FLUX.1-dev, 32760 x 5120 on Wan
    per_flop = (32760 * 5120 / compute.wan_flops()["total"]) / (4608 * 3072 / compute.flux_dev_flops()["total"])
    assert s["magcache"] == pytest.approx(4e-4 * per_flop) and 0.5 < per_flop < 0.55
    f = compute.wan_flops()
    assert s["taylorseer-attn"] == pytest.approx(f["ffn"] / f["block"]) and 0.2 < s["taylorseer-attn"] < 0.25
    # zeustune's letters: output elements per call FLOP, 4096 x 64 against 16 x 21 x 60 x 104
    out = (16 * 21 * 60 * 104 / f["total"]) / (4096 * 64 / compute.flux_dev_flops()["total"])
    for k in ("E", "R", "S", "C", "A-sada"):
        assert s[k] == pytest.approx(flux["shares"][k] * out)
    # a D call: its own FLOPs on Wan (latent sides rounded to the patch: 44 x 78 at 0.75) + resampling
    resampling = json.loads((compute.BENCHMARKS / "reduced.json").read_text())["factors"]
    for factor, (h, w) in (("0.5", (30, 52)), ("0.75", (44, 78))):
        small = compute.wan_flops(compute.WanArch(latent=(16, 21, h, w)))["total"] / f["total"]
        assert s[f"D{factor}"] == pytest.approx(small + resampling[factor]["share"] * out)
    assert s["D0.5"] < 0.25  # attention: below the token ratio (FLUX.1-dev's 0.29 keeps its text tokens in it)
    # D on fewer latent frames (21 -> round(10.5) = 10, 16) and on both, resampled like the side factor's
    for name, (fr, h, w) in (("frames:0.5", (10, 60, 104)), ("frames:0.75", (16, 60, 104)), ("both:0.5", (10, 30, 52)),
                             ("both:0.75", (16, 44, 78))):
        small = compute.wan_flops(compute.WanArch(latent=(16, fr, h, w)))["total"] / f["total"]
        assert s[f"D{name}"] == pytest.approx(small + resampling[name.split(":")[1]]["share"] * out)
    assert s["Dboth:0.5"] < s["D0.5"] < s["Dframes:0.5"] < s["Dframes:0.75"] < 1
    video_only = {f"D{a}:{x}" for a in ("frames", "both") for x in ("0.5", "0.75")}
    assert set(s) == set(flux["shares"]) | video_only and all("projected to Wan2.1-14B" in src[k] for k in s)
