"""Reduced-resolution calls (D) as a search component: the space's ``reduced`` section, the
decoded plans, their measured cost in the cost model, refinement moves that keep the cost, and the
bench's cost column and PostDiff-style rows."""

from __future__ import annotations

import random

import pytest
import yaml

from zeustune.bench import compute
from zeustune.bench import methods as MT
from zeustune.bench.methods import Method
from zeustune.schedule.plans import Plan
from zeustune.search import space as SP
from zeustune.search import study as ST
from zeustune.search.cost import CostModel, fit

COST = CostModel(fixed=0.02, call=0.01, skip=0.0002, steps=28, reduced={"0.5": 0.004, "0.75": 0.0065})


def flux_space(**extra):
    data = yaml.safe_load((SP.BUILTIN_SPACES / "tiny-flux.yaml").read_text())
    data.update(extra)
    return SP.from_dict(data, "test.yaml")


def test_the_reduced_section_is_read_and_bad_values_are_refused_by_field():
    space = flux_space(reduced={"factors": [0.5, 0.75], "calls": [0, 6]})
    assert space.reduced["factors"] == (0.5, 0.75) and space.reduced["calls"] == SP.IntRange(0, 6)
    assert flux_space().reduced == {}
    with pytest.raises(SP.SpaceError, match=r"reduced.factors: got \[0.3\], expected a non-empty list"):
        flux_space(reduced={"factors": [0.3]})
    assert flux_space(family="sdxl", reduced={"factors": [0.5]}).reduced["factors"] == (0.5,)  # D runs on every family
    assert flux_space(reduced={"factors": [0.5]}).sha256 != flux_space().sha256  # a resumed study sees the change


def test_decoded_plans_run_their_first_calls_reduced_and_are_costed_at_the_measured_d_cost():
    space = flux_space(reduced={"factors": [0.5, 0.75], "calls": [0, 6]}, uncond_drop=[0, 2])
    rng = random.Random(0)
    seen = 0
    for _ in range(300):
        trial = _Random(rng)
        params = SP.suggest(trial, space, 28, 12)
        d = SP.decode(params, space, 28)
        r = params["reduced_calls"]
        if not r:
            assert "D" not in d.plan.steps and d.factor is None and d.calls(COST) == d.static_nfe
            continue
        seen += 1
        calls = [c for c in d.plan.steps if c in "FD"]
        r = min(r, len(calls) - 1)  # one full-resolution call always stays
        assert calls[:r] == ["D"] * r and "D" not in calls[r:] and calls[-1] == "F"  # the first r calls, and only those
        assert d.factor == params["reduced_factor"] and dict(d.knobs)["reduced"] == d.factor
        if d.uncond is not None:
            assert d.uncond.reduced == min(r, d.uncond.nfe + d.uncond.reduced - 1)
        # the cost model's latency of the equivalent count is the plan's: D at its measured cost
        f, n_d = d.static_nfe, d.reduced_calls
        want = COST.fixed + f * COST.call + n_d * COST.reduced[f"{d.factor:g}"] + (28 - f - n_d) * COST.skip
        assert COST.latency(d.calls(COST)) == pytest.approx(want, rel=1e-12)
    assert seen > 50


def test_video_spaces_draw_what_d_shrinks_and_cost_it_by_name():
    """``axes`` in the reduced section: each trial with D steps draws side, frames or both; the
    decoded knobs carry it (left out for the side, so image plans keep their keys) and the cost
    model prices the D steps by their name."""
    space = flux_space(family="wan", reduced={"factors": [0.5, 0.75], "axes": ["side", "frames", "both"], "calls": [1, 4]})
    assert space.reduced_keys == ("0.5", "0.75", "frames:0.5", "frames:0.75", "both:0.5", "both:0.75")
    assert flux_space(reduced={"factors": [0.5]}).reduced_keys == ("0.5",)
    assert "axes" not in flux_space(reduced={"factors": [0.5], "axes": ["side"]}).reduced  # older spaces keep their hash
    with pytest.raises(SP.SpaceError, match=r"reduced.axes: got \['time'\], expected a non-empty list of distinct names "
                                            r"from side, frames, both"):
        flux_space(reduced={"factors": [0.5], "axes": ["time"]})
    cost = CostModel(fixed=0.02, call=0.01, skip=0.0002, steps=28,
                     reduced={k: 0.001 * (i + 1) for i, k in enumerate(space.reduced_keys)})
    rng, drawn = random.Random(1), set()
    for _ in range(200):
        params = SP.suggest(_Random(rng), space, 28, 12)
        d = SP.decode(params, space, 28)
        axes = params["reduced_axes"]
        drawn.add(axes)
        assert dict(d.knobs).get("reduced_axes", "side") == axes and ("reduced_axes" in dict(d.knobs)) == (axes != "side")
        name = f"{d.factor:g}" if axes == "side" else f"{axes}:{d.factor:g}"
        assert d.reduction == name
        want = cost.fixed + d.static_nfe * cost.call + d.reduced_calls * cost.reduced[name] + (
            28 - d.static_nfe - d.reduced_calls) * cost.skip
        assert cost.latency(d.calls(cost)) == pytest.approx(want, rel=1e-12)
    assert drawn == {"side", "frames", "both"}


def test_a_plan_with_d_steps_needs_the_measured_cost_of_its_factor():
    bare = CostModel(fixed=0.02, call=0.01, skip=0.0002, steps=28)
    with pytest.raises(ValueError, match=r"reduced: got factors none, expected '0.5'"):
        bare.equivalent(7, 3, 0.5)
    assert bare.equivalent(7) == 7


def test_the_fit_recovers_each_factors_d_cost():
    import fake_clock

    truth = CostModel(fixed=0.03, call=0.012, skip=0.0004, steps=28, reduced={"0.5": 0.0041, "0.75": 0.0077})
    got = fit(fake_clock.time_run(truth.fixed, truth.call, truth.skip, reduced=truth.reduced), 28, runs=3, factors=(0.5, 0.75))
    for k in ("0.5", "0.75"):  # exact timings: each D step's seconds are read, not solved for
        assert got.reduced[k] == pytest.approx(truth.reduced[k], rel=1e-9)
    assert "ms per D step at 0.5" in got.describe()
    assert CostModel(**got.to_dict()) == got  # stored with the study, read back the same


def test_refinement_moves_keep_the_counts_of_fresh_and_reduced_calls():
    rng = random.Random(1)
    plan = "DDFERFERRFERFERRFFERFERFFFFE"
    moved = {"fresh": 0, "reduced": 0}
    for _ in range(200):
        cand = ST._swap(plan, rng, 10)
        relabelled = ST._relabel(cand, ["E", "R", "E"]).steps
        assert relabelled.count("F") == plan.count("F") and relabelled.count("D") == plan.count("D")
        d_moved = [k for k, c in enumerate(relabelled) if c == "D"] != [0, 1]
        moved["reduced" if d_moved else "fresh"] += 1
    assert moved["reduced"] > 50 and moved["fresh"] > 50  # both kinds of move are made


def test_the_bench_costs_a_d_step_at_its_factors_share_and_postdiff_rows_follow_the_published_fractions():
    shares = {"E": 1e-3, "R": 2e-3, "D0.5": 0.29, "D0.75": 0.56}
    m = Method("d", "zeustune tuned", work="zeustune", schedule=sched("DDFERFEF", reduced=0.75), steps=8, calls=3)
    assert compute.cost(m, shares) == pytest.approx(3 + 2 * 0.56 + 2 * 1e-3 + 2e-3)  # calls count F only
    loaded = compute.load_shares()["shares"]  # the shipped measurement: FLOPs share + resampling
    assert 0.28 < loaded["D0.5"] < 0.30 and 0.56 < loaded["D0.75"] < 0.57
    assert str(MT.postdiff_plan(28, 0.5)) == "P" * 14 + "F" * 14 and str(MT.postdiff_plan(50, 0.2)) == "P" * 10 + "F" * 40
    stage = Method("p", "PostDiff-style", work="zeustune", schedule=sched("PPPPFFFF", reduced=0.5), steps=8, calls=4)
    assert compute.cost(stage, shares) == pytest.approx(4 + 4 * 0.29)  # a stage step: a reduced call
    assert {(s, f) for s, f in MT.POSTDIFF} == {(0.5, 0.5), (0.5, 0.75), (0.2, 0.5), (0.2, 0.75)}


def sched(plan: str, **pred):
    from zeustune.schedule.format import Model, Predictor, Sampler, Schedule

    return Schedule(tag="t", model=Model("flux", "x", "FluxPipeline"), sampler=Sampler("FlowMatchEulerDiscreteScheduler", len(plan)),
                    plan=Plan(plan), predictor=Predictor(**pred))


class _Random:
    def __init__(self, rng):
        self.rng = rng

    def suggest_categorical(self, name, choices):
        return self.rng.choice(list(choices))

    def suggest_int(self, name, lo, hi):
        return self.rng.randint(lo, hi)

    def suggest_float(self, name, lo, hi, log=False):
        return self.rng.uniform(lo, hi)
