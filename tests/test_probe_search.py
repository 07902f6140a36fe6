"""Probe-gated steps in the search: the space's probe section, decoding to G plans, the
FirstBlockCache-like seeds, the stage's fixed generator, and how G steps are priced (the cost
model's probe share while searching, the first block's FLUX.1-dev share in the bench)."""

from __future__ import annotations

import json
import random
import statistics

import pytest
import yaml

from zeustune.bench import compute
from zeustune.bench.methods import Method
from zeustune.schedule.format import Model, Predictor, Sampler, Schedule
from zeustune.schedule.plans import Plan
from zeustune.search import space as SP
from zeustune.search.cost import CostModel, fit, read
from zeustune.search.study import _adaptive

from helpers import RandomTrial


def probe_space(tmp_path, **probe):
    data = yaml.safe_load(SP.find("tiny-flux-probe").read_text())
    data["probe"].update(probe)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return SP.load(path)


def test_the_probe_space_decodes_to_g_plans_with_their_thresholds():
    space = SP.load("tiny-flux-probe")
    assert "probe" in space.generators and space.probe["segments"] == 4
    rng = random.Random(0)
    seen = set()
    for _ in range(200):
        t = RandomTrial(rng)
        t.params["generator"] = "probe"
        params = SP.suggest(_Fixed(t, generator="probe"), space, 28, max_fresh=8)
        d = SP.decode(params, space, 28)
        knobs = dict(d.knobs)
        w, tail = params["probe_warmup"], params["probe_tail"]
        assert w + tail <= 7  # forced fresh steps leave the budget's last call (max_fresh 8) to the probe
        assert d.plan.steps == "F" * w + "G" * (28 - w - tail) + "F" * tail
        assert d.adaptive and _adaptive({"plan": d.plan.steps})
        assert knobs["probe_thresholds"] == tuple(params[f"probe_threshold_{i}"] for i in range(1, space.probe["segments"] + 1))
        assert knobs["probe"] == params["probe_kind"] and knobs["max_run"] == params["probe_max_run"]
        if knobs["probe_output"] == "tail":  # the tail residual is reused or extrapolated: no S or C gate
            assert set(knobs["gates"]) <= {"E", "R"}
        seen.add((knobs["probe"], knobs["probe_output"]))
        Predictor(**knobs)  # what the evaluator builds from them
    assert seen == {(p, o) for p in ("residual", "modulated") for o in ("gate", "tail")}


class _Fixed:
    """An Optuna trial with some parameters fixed (as enqueue_trial does), the rest drawn."""

    def __init__(self, trial, **fixed):
        self.trial, self.fixed = trial, fixed

    def suggest_categorical(self, name, choices):
        if name in self.fixed:
            assert self.fixed[name] in choices
            return self.fixed[name]
        return self.trial.suggest_categorical(name, choices)

    def suggest_int(self, name, lo, hi):
        return self.trial.suggest_int(name, lo, hi)

    def suggest_float(self, name, lo, hi, log=False):
        return self.trial.suggest_float(name, lo, hi, log)


def test_probe_seeds_are_firstblockcache_at_thresholds_from_2x_to_4x_and_fit_the_space():
    space = SP.load("tiny-flux-probe")
    seeds = SP.probe_seeds(space)
    assert len(seeds) == 12
    for params in seeds.values():
        assert SP.fits(params, space, 28, 8) is None
        d = SP.decode(params, space, 28)
        knobs = dict(d.knobs)
        assert knobs["probe"] == "residual" and knobs["probe_output"] == "tail" and set(knobs["gates"]) == {"R"}
        assert len(set(knobs["probe_thresholds"])) == 1  # one threshold, as FirstBlockCache has
    fbc = [p for name, p in seeds.items() if name.startswith("fbcache-like")]
    assert [(p["probe_warmup"], p["probe_tail"]) for p in fbc] == [(1, 0)] * 5  # FirstBlockCache: no forced fresh step but the first
    assert sorted(dict(SP.decode(p, space, 28).knobs)["probe_thresholds"][0] for p in fbc) == [0.15, 0.25, 0.35, 0.45, 0.6]


@pytest.mark.parametrize("field, value, expected", [
    ("probes", ["first"], "probe.probes"), ("outputs", [], "probe.outputs"), ("segments", 0, "probe.segments"),
    ("segments", 9, "probe.segments"), ("threshold", [0.5, 0.1], "probe.threshold"), ("max_run", [0, 3], "probe.max_run"),
])
def test_a_bad_probe_section_is_refused_by_field(tmp_path, field, value, expected):
    with pytest.raises(SP.SpaceError, match=expected.replace(".", r"\.")):
        probe_space(tmp_path, **{field: value})


def test_a_predicted_probe_step_counts_its_share_of_a_call():
    cost = CostModel(fixed=0.1, call=0.02, skip=0.001, steps=28, probe=0.006)
    assert cost.probe_share == pytest.approx(0.005 / 0.019)
    # a plan's calls with G skips priced at that share have the latency of its real parts
    f, g = 6, 20
    real = 0.1 + f * 0.02 + g * 0.006 + (28 - f - g) * 0.001
    assert cost.latency(f + g * cost.probe_share) == pytest.approx(real)
    assert CostModel(fixed=0.1, call=0.02, skip=0.001, steps=28).probe_share == 0  # not measured: free


def test_the_fit_times_a_run_of_predicted_probe_steps_when_asked():
    import fake_clock

    seen = []
    time_run = fake_clock.time_run(fixed=0.05, call=0.01, skip=0.0002, probe_s=0.003, seen=seen)
    m = fit(time_run, 28, runs=2, probe=True)
    assert (28, 2, None, True) in seen
    assert m.probe == pytest.approx(0.003) and m.call == pytest.approx(0.01)
    assert fit(time_run, 28, runs=1).probe == 0.0


def test_a_cost_model_file_may_carry_the_probe_cost_and_it_is_checked(tmp_path):
    path = tmp_path / "cost.json"
    base = {"fixed": 0.05, "call": 0.03, "skip": 0.0, "steps": 28}
    path.write_text(json.dumps({**base, "probe": 0.0006}))
    assert read(path, 28).probe == 0.0006
    path.write_text(json.dumps({**base, "probe": -1}))
    with pytest.raises(ValueError, match="probe"):
        read(path, 28)


def test_the_shipped_flux_projection_prices_a_probe_at_the_first_block():
    m = read(SP.BUILTIN_SPACES.parent / "docs" / "search" / "probe" / "cost-model-flux-28.json", 28)
    shares = compute.load_shares()["shares"]
    # its extra work over a plain predicted step (the hook's), per call
    assert m.probe_share == pytest.approx((shares["probe-residual"] - shares["R"]) / (1 - shares["R"]), rel=1e-9)
    assert m.speedup(28) == pytest.approx(1.0)
    for cost in (7.0, 9.5):  # the projection the bench compares at
        assert m.speedup(cost) == pytest.approx(compute.projected_speedup(cost, 28))


def test_the_bench_prices_predicted_g_steps_at_the_first_block_and_fresh_g_steps_as_calls():
    plan = "FF" + "G" * 25 + "F"
    s = Schedule(tag="g", model=Model("flux"), sampler=Sampler("FlowMatchEulerDiscreteScheduler", 28), plan=Plan(plan),
                 predictor=Predictor(probe="residual"))
    m = Method("g", "zeustune tuned", work="zeustune", schedule=s, steps=28, calls=8.0)
    shares = compute.load_shares()["shares"]
    assert compute.skipped_letters(m) == {"probe-residual": 20.0}
    assert compute.cost(m, shares) == pytest.approx(8.0 + 20 * shares["fbcache"])


def test_the_fill_stage_spends_the_calls_the_best_probe_plans_leave_under_the_budget(tmp_path):
    """A stand-in model whose G plans call more as their thresholds fall and lose less the more
    they call: the best feasible G plan after the fill stage sits nearer the budget's line than
    TPE's best, and is better; no fill trial is left over the budget unmarked."""
    import torch

    from zeustune.search.cost import CostModel
    from zeustune.search.study import Search, feasible, make_sampler, open_study

    class Threshold:
        prompts, batch = 4, 4

        def __init__(self):
            self.last_calls = []

        def losses(self, d, bar=None):
            knobs = dict(d.knobs)
            th = knobs.get("probe_thresholds")
            if th is None:  # a static plan: worse than any probe plan here
                calls = d.plan.nfe
                loss = 1.0
            else:
                fresh = d.plan.steps.count("F")
                calls = fresh + sum(max(0.0, 0.8 - t) for t in th) * 13 / len(th)
                loss = 1.0 / calls
            self.last_calls = [calls + d for d in (-0.3, -0.1, 0.1, 0.3)]  # prompts call a little more or less
            return torch.full((self.prompts,), loss, dtype=torch.float64)

    cost = CostModel(fixed=0.024, call=0.0095, skip=0.0002, steps=28, probe=0.0004)
    study, _ = open_study("fill", f"sqlite:///{tmp_path / 'st.db'}", make_sampler("tpe", 0), {"space": "p", "space_sha256": "x"})
    s = Search(study, Threshold(), SP.load("tiny-flux-probe"), cost, 3.0, seed=0)
    s.live.enqueue_trial(SP.probe_seeds(s.space)["fbcache-2-1-0.6"])  # 5.6 calls where the budget allows 7.2
    s.run_tpe(1, stage="probe")
    before = min((t for t in feasible(study) if t.params.get("generator") == "probe"), key=lambda t: t.values[0])
    s.fill_budget(parents=1, steps=4)
    fills = [t for t in study.trials if "fill_of" in t.user_attrs]
    assert len(fills) == 4 and {t.user_attrs["fill_of"] for t in fills} == {before.number}
    after = min((t for t in feasible(study) if t.params.get("generator") == "probe"), key=lambda t: t.values[0])
    assert after.values[0] < before.values[0] and after.user_attrs["nfe"] > before.user_attrs["nfe"]
    se = after.user_attrs["calls_se"]
    assert se == pytest.approx(statistics.stdev([-0.3, -0.1, 0.1, 0.3]) / 2, abs=1e-4)
    assert cost.speedup(after.user_attrs["nfe"] + 2 * se) >= 3.0  # within the budget with a margin of 2 standard errors
    assert all(t.user_attrs["speedup_floor"] < t.user_attrs["speedup_model"] for t in fills)
    for t in fills:  # each fill trial's thresholds are its parent's times one factor
        f = t.user_attrs["fill_factor"]
        assert 0.5 < f < 1.0
        for k, v in before.params.items():
            if k.startswith("probe_threshold_"):
                assert t.params[k] == pytest.approx(max(v * f, 0.05), rel=1e-4)  # the factor is kept to 4 places
    s.fill_budget(parents=1, steps=4)  # resumed: not again
    assert len([t for t in study.trials if "fill_of" in t.user_attrs]) == 4


def test_the_fill_stage_fills_each_plan_once_when_tpe_drew_it_twice(tmp_path):
    """Two trials of one G plan (a seed TPE drew again) are one parent: the second parent is the
    next distinct plan, not the same bisection run twice (a 3x search spent 4 of its 8 fill
    scorings that way)."""
    import torch

    from zeustune.search.cost import CostModel
    from zeustune.search.study import Search, make_sampler, open_study

    class Threshold:
        prompts, batch = 4, 4
        last_calls = []

        def losses(self, d, bar=None):
            th = dict(d.knobs).get("probe_thresholds") or (0.8,)
            calls = d.plan.steps.count("F") + sum(max(0.0, 0.8 - t) for t in th) * 13 / len(th)
            self.last_calls = [calls] * self.prompts
            return torch.full((self.prompts,), 1.0 / calls, dtype=torch.float64)

    cost = CostModel(fixed=0.024, call=0.0095, skip=0.0002, steps=28, probe=0.0004)
    study, _ = open_study("fill2", f"sqlite:///{tmp_path / 'st.db'}", make_sampler("tpe", 0), {"space": "p", "space_sha256": "x"})
    s = Search(study, Threshold(), SP.load("tiny-flux-probe"), cost, 3.0, seed=0)
    seeds = SP.probe_seeds(s.space)
    for name in ("fbcache-2-1-0.6", "fbcache-2-1-0.6", "fbcache-1-1-0.6"):
        s.live.enqueue_trial(seeds[name])
    s.run_tpe(3, stage="probe")
    assert len({t.user_attrs["key"] for t in study.trials}) == 2
    s.fill_budget(parents=2, steps=2)
    parents = {t.user_attrs["fill_of"] for t in study.trials if "fill_of" in t.user_attrs}
    assert len(parents) == 2 and len({study.trials[p].user_attrs["key"] for p in parents}) == 2
