"""The budget's cost model: timings from one device type only, said out loud when workers mix."""

from __future__ import annotations

from zeustune.search.cost import CostModel
from zeustune.search.driver import budget_cost


class FakeExecutor:
    def __init__(self, devices: dict[str, int], calls: dict[str, float]):
        self.devices, self.calls, self.fitted = devices, calls, []

    def fit_costs(self, steps, runs):
        self.fitted.append((steps, runs))
        return {d: CostModel(fixed=0.1, call=c, skip=0.001, steps=steps, device=d, runs=runs) for d, c in self.calls.items()}


def test_one_device_type_fits_and_budgets_with_it():
    ex = FakeExecutor({"H100": 4}, {"H100": 0.2})
    cost, costs, notes = budget_cost(ex, 28, 5, None)
    assert cost.device == "H100" and ex.fitted == [(28, 5)]
    assert list(costs) == ["H100"] and costs["H100"]["call"] == 0.2
    assert not [n for n in notes if "mix" in n]


def test_mixed_device_types_budget_with_the_most_common_and_say_so():
    ex = FakeExecutor({"A10": 1, "H100": 3}, {"A10": 0.9, "H100": 0.2})
    cost, costs, notes = budget_cost(ex, 28, 5, None)
    assert cost.device == "H100" and cost.call == 0.2  # not an average over types
    assert set(costs) == {"A10", "H100"}  # every type's model is kept with the study
    mixed = [n for n in notes if "mix device types" in n]
    assert mixed and "1 x A10" in mixed[0] and "3 x H100" in mixed[0] and "timings from H100 only" in mixed[0]


def test_a_resumed_study_keeps_its_stored_model_and_flags_other_devices():
    stored = {"cost_model": CostModel(fixed=0.1, call=0.3, skip=0.0, steps=28, device="A10").to_dict()}
    ex = FakeExecutor({"H100": 2}, {"H100": 0.2})
    cost, costs, notes = budget_cost(ex, 28, 5, stored)
    assert cost.device == "A10" and cost.call == 0.3 and ex.fitted == []  # no refit: the budget line stays
    assert any("timed on A10" in n and "H100" in n for n in notes)


def test_a_given_cost_model_is_used_without_fitting_and_checked_for_steps(tmp_path):
    import json

    import pytest

    path = tmp_path / "cost.json"
    path.write_text(json.dumps(CostModel(fixed=0.02, call=0.012, skip=0.0002, steps=28, device="cpu").to_dict()))
    ex = FakeExecutor({"H100": 1}, {"H100": 0.2})
    cost, costs, notes = budget_cost(ex, 28, 5, None, path)
    assert cost.call == 0.012 and ex.fitted == [] and str(path) in notes[0]
    stored = {"cost_model": CostModel(fixed=0.1, call=0.3, skip=0.0, steps=28, device="A10").to_dict()}
    assert budget_cost(ex, 28, 5, stored, path)[0].call == 0.3  # a resumed study keeps its own line
    with pytest.raises(ValueError, match=r"--cost-model .*cost.json: steps: got 28, expected 50"):
        budget_cost(ex, 50, 5, None, path)
    path.write_text("{}")
    with pytest.raises(ValueError, match=r"--cost-model .*cost.json: fixed: got None, expected a value"):
        budget_cost(ex, 28, 5, None, path)


# -- finalists' timing on a busy machine ---------------------------------------------------------


class _Timings:
    """An executor whose interleaved timings are scripted: (full_s, scheduled_s) per call."""

    def __init__(self, *pairs):
        self.pairs, self.runs = list(pairs), []

    def time_schedule(self, schedule, runs, device=None):
        self.runs.append(runs)
        return self.pairs.pop(0)


def _trial(modelled):
    from types import SimpleNamespace

    return SimpleNamespace(number=7, user_attrs={"speedup_model": modelled})


def test_a_finalist_timed_at_a_busy_moment_is_retimed_before_it_is_rejected():
    from zeustune.search.driver import noise_note, time_finalist

    ex = _Timings((2.5, 1.0), (3.3, 1.0))  # 2.50x against a modelled 3.25x, then 3.30x with more runs
    full, fast, measured, runs, samples = time_finalist(ex, None, _trial(3.25), bound=4.0, runs=11, device=None, budget=3.0)
    assert measured == 3.3 and samples == [2.5, 3.3] and ex.runs == [11, 22] and runs == 22
    assert "2.50x, 3.30x" in noise_note(samples) and "unreliable" in noise_note(samples)


def test_a_finalist_that_passes_is_timed_once_and_a_miss_is_confirmed_by_a_second_timing():
    from zeustune.search.driver import noise_note, time_finalist

    ex = _Timings((3.6, 1.0))
    *_, measured, runs, samples = time_finalist(ex, None, _trial(3.25), bound=4.0, runs=11, device=None, budget=3.0)
    assert ex.runs == [11] and samples == [3.6] and noise_note(samples) == ""
    ex = _Timings((2.8, 1.0), (2.85, 1.0))  # 7% under, twice: a real miss, rejected on two timings that agree
    *_, measured, runs, samples = time_finalist(ex, None, _trial(3.25), bound=4.0, runs=11, device=None, budget=3.0)
    assert ex.runs == [11, 22] and measured == 2.85 and noise_note(samples) == ""


def test_a_finalist_a_few_percent_under_the_budget_is_retimed_whatever_the_model_said():
    from zeustune.search.driver import time_finalist

    ex = _Timings((2.9, 1.0), (3.05, 1.0))  # 3% under 3x, as the model said (2.95x): timed again, and passes
    *_, measured, runs, samples = time_finalist(ex, None, _trial(2.95), bound=4.0, runs=11, device=None, budget=3.0)
    assert ex.runs == [11, 22] and measured == 3.05


def test_a_finalist_above_the_call_bound_is_retimed_until_two_timings_agree_at_most_twice():
    from zeustune.search.driver import time_finalist

    ex = _Timings((5.0, 1.0), (4.8, 1.0))
    *_, measured, runs, samples = time_finalist(ex, None, _trial(3.5), bound=4.0, runs=5, device=None, budget=3.0)
    assert ex.runs == [5, 10] and measured == 4.8  # still above, twice: the caller refuses to trust it
    ex = _Timings((5.0, 1.0), (2.5, 1.0), (2.6, 1.0))  # the second misses and disagrees with the first: a third decides
    *_, measured, runs, samples = time_finalist(ex, None, _trial(3.5), bound=4.0, runs=5, device=None, budget=3.0)
    assert ex.runs == [5, 10, 20] and measured == 2.6


def test_the_fidelity_report_counts_where_candidates_stopped_and_the_renders_saved():
    import optuna
    from optuna.trial import TrialState, create_trial

    from zeustune.search.driver import fidelity_report

    study = optuna.create_study(directions=["minimize", "minimize"])
    for _ in range(3):
        study.add_trial(create_trial(values=[0.1, 1.0], params={}, distributions={}, user_attrs={"stage": "tpe"}))
    study.add_trial(create_trial(values=[0.1, 1.0], params={}, distributions={}, user_attrs={"stage": "tpe", "duplicate_of": 0}))
    paired = "hopeless: loss 0.3 after 8 prompts vs 0.1 for trial 0 on the same prompts (worse by 0.2 +- 0.01, z 1.5)"
    for k, reason in ((8, paired), (8, "hopeless: loss 0.9 after 8 prompts > 0.15"), (16, paired)):
        study.add_trial(create_trial(state=TrialState.PRUNED, params={}, distributions={},
                                     user_attrs={"stage": "refine", "prompts_scored": k, "pruned": reason}))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={}, distributions={},
                                 user_attrs={"stage": "tpe", "pruned": "over budget: modelled speedup 2.1x < 3x"}))
    text = fidelity_report(study, 24, 1.5)
    # 3 complete x 24 + 8 + 8 + 16 of 6 x 24 renders; the duplicate and the unrendered over-budget plan count for nothing
    assert text == ("3 candidates stopped early (2 after 8, 1 after 16 of 24 prompts; paired test at z 1.5 (2 stopped by it) "
                    "and the mean bar); 104 of 144 prompt renders (28% saved)")
    assert "mean bar only" in fidelity_report(study, 24, None)


# -- the closed loop ----------------------------------------------------------------------------


def test_when_the_device_is_slower_than_the_model_the_loop_exports_the_best_plan_it_affords(tmp_path):
    """A device 12% slower than the cost model: the search's best plans (7 fresh steps at 3x)
    measure under 3x. The loop derives that 6 fresh steps fit, drops the least useful fresh step of
    the best 7-step plans, refines there, times the best, and exports one that measures at or
    above 3x; the report names the budget that would have exported the best plan that missed."""
    import torch

    from zeustune.schedule.format import Model, Predictor, Sampler, Schedule
    from zeustune.schedule import plans as P
    from zeustune.search import space as SP
    from zeustune.search.driver import SearchConfig, closed_loop, time_finalists
    from zeustune.search.executors import InProcess
    from zeustune.search.study import Search, feasible, front, make_sampler, open_study

    class Runs:  # loss grows with each run of skipped steps, more early in the trajectory
        prompts, batch = 4, 4

        def losses(self, d, bar=None):
            loss, run = 0.0, 0
            for k, c in enumerate(d.plan.steps):
                run = 0 if c == "F" else run + 1
                loss += 0.002 * run * run * (1.5 if k < 6 else 1.0) if c != "F" else 0.0
            return torch.full((self.prompts,), loss, dtype=torch.float64)

    cost = CostModel(fixed=0.024, call=0.0095, skip=0.0002, steps=28, device="test", runs=5)
    slow = 1.12

    class Device(InProcess):
        def time_schedule(self, schedule, runs, device=None):
            return cost.full, cost.latency(schedule.plan.nfe) * slow

    study, _ = open_study("loop", f"sqlite:///{tmp_path / 'st.db'}", make_sampler("tpe", 0), {"space": "t", "space_sha256": "x"})
    search = Search(study, Runs(), SP.load("tiny-flux"), cost, 3.0, seed=0)
    search.run_tpe(60)
    search.refine(10)
    max_fresh = cost.max_fresh(3.0)
    base = Schedule(tag="t", model=Model("flux"), sampler=Sampler("FlowMatchEulerDiscreteScheduler", 28),
                    plan=P.Plan("F" * 28), predictor=Predictor())
    cfg = SearchConfig(model="tiny-flux", timing_runs=3, progress=False)
    ex = Device(Runs())
    cands = sorted(front(feasible(study)), key=lambda t: t.values[0])[:6]
    chosen, timings = time_finalists(ex, cands, base, "tuned-3x", 28, cfg, None, 3.0, False)
    best_missed = min((x for x in timings if x["measured"] < 3.0), key=lambda x: x["loss"])
    assert best_missed["nfe"] == max_fresh and best_missed["loss"] < (chosen[0].values[0] if chosen else 1e9)

    afford = max(k for k in range(2, 29) if cost.speedup(k) / slow >= 3.0)
    assert afford == max_fresh - 1
    chosen2, more, missed = closed_loop(search, ex, cost, 3.0, max_fresh, chosen, timings, base, "tuned-3x", 28, cfg, None)
    trial, full_s, fast_s, measured = chosen2[:4]
    assert measured >= 3.0 and trial.user_attrs["nfe"] == afford
    assert chosen is None or trial.values[0] < chosen[0].values[0]  # better than what the finalists gave
    loop = [t for t in study.trials if t.user_attrs.get("stage") == "loop"]
    assert loop and all(t.user_attrs["nfe"] == afford for t in loop if t.values)
    assert more and all(x["stage"] == "closed-loop plan" for x in more)
    flag = f"--budget {int(best_missed['measured'] * 100) / 100:g}x would export it"
    assert missed is not None and f"trial {best_missed['trial']}" in missed and flag in missed


def test_when_the_model_agrees_with_the_device_the_loop_does_nothing(tmp_path):
    from zeustune.search.driver import closed_loop

    cost = CostModel(fixed=0.024, call=0.0095, skip=0.0002, steps=28, device="test", runs=5)
    timings = [{"trial": 1, "nfe": 7, "loss": 0.01, "measured": 3.05, "modelled": 3.1, "bound": 4.0, "samples": [3.05]}]
    from types import SimpleNamespace

    chosen = (SimpleNamespace(number=1, values=[0.01]), 1.0, 0.33, 3.05, 11, "")
    assert closed_loop(None, None, cost, 3.0, 7, chosen, timings, None, "t", 28, None, None) == (chosen, [], None)


def test_an_export_never_replaces_a_better_one_from_the_same_study(tmp_path):
    from zeustune.schedule import plans as P
    from zeustune.schedule.format import Model, Predictor, Sampler, Schedule
    from zeustune.search.driver import better_export

    def q(calib, val=None):
        return {"calib": {"mean": calib, "prompts": 24}, **({"validation": {"mean": val, "prompts": 24}} if val else {})}

    path = tmp_path / "tuned-3x.yaml"
    assert better_export(path, "s", q(0.01)) is None  # nothing there yet
    Schedule(tag="tuned-3x", model=Model("flux"), sampler=Sampler("FlowMatchEulerDiscreteScheduler", 8), plan=P.Plan("FFRFRRFF"),
             predictor=Predictor(), metrics={"quality": {"calib": {"mean": 0.005, "prompts": 24}}},
             provenance={"study": "s", "trial": 4}).save(path)
    kept = better_export(path, "s", q(0.01))
    assert kept and "0.0050" in kept and "trial 4" in kept
    assert better_export(path, "s", q(0.004)) is None  # this run's is better: it replaces the file
    assert better_export(path, "another study", q(0.01)) is None  # other prompts: not comparable, replaced as before
    assert better_export(path, "s", q(0.01, 0.002)) is None  # validated now, the old one was not: replaced
    Schedule(tag="tuned-3x", model=Model("flux"), sampler=Sampler("FlowMatchEulerDiscreteScheduler", 8), plan=P.Plan("FFRFRRFF"),
             predictor=Predictor(), metrics={"quality": q(0.004, 0.010)}, provenance={"study": "s", "trial": 5}).save(path)
    assert better_export(path, "s", q(0.005, 0.006)) is None  # worse on calibration, better over both: replaces
    kept = better_export(path, "s", q(0.003, 0.012))
    assert kept and "validation" in kept and "0.0070" in kept  # better on calibration alone, not over both: kept


def test_finalists_whose_ratios_to_the_model_disagree_leave_the_model_standing():
    """A CPU-bound job beside the finalists' timing: one measured 0.71x its modelled speedup and
    another 0.84x. That says the machine is noisy, not what it affords: nothing is re-targeted,
    and the best finalist the model puts within the budget is exported, its timing flagged."""
    from types import SimpleNamespace

    from zeustune.search.driver import closed_loop

    cost = CostModel(fixed=0.024, call=0.0095, skip=0.0002, steps=28, device="test", runs=5)
    timings = [{"trial": 0, "nfe": 7, "loss": 0.0098, "measured": 2.29, "modelled": 3.23, "bound": 4.0, "samples": [2.18, 2.29],
                "full_s": 0.2, "latency_s": 0.087, "runs": 22},
               {"trial": 1, "nfe": 6, "loss": 0.0266, "measured": 3.03, "modelled": 3.61, "bound": 4.67, "samples": [3.03],
                "full_s": 0.2, "latency_s": 0.066, "runs": 11}]
    trials = [SimpleNamespace(number=0, values=[0.0098]), SimpleNamespace(number=1, values=[0.0266])]
    search = SimpleNamespace(study=SimpleNamespace(trials=trials))
    chosen = (trials[1], 0.2, 0.066, 3.03, 11, "")
    got, more, missed = closed_loop(search, None, cost, 3.0, 7, chosen, timings, None, "t", 28, None, None)
    assert got[0] is trials[0] and got[3] == 2.29 and "too noisy" in got[5] and more == [] and missed is None


def test_a_finalist_whose_timings_contradict_each_other_is_exported_by_the_model():
    """The best finalist measured 1.94x, 4.35x and 5.20x (above its bound) beside a CPU-bound job,
    the next one 3.05x once: the machine is too noisy to reject the best on; it is exported by the
    model, its timing flagged."""
    from types import SimpleNamespace

    from zeustune.search.driver import closed_loop

    cost = CostModel(fixed=0.024, call=0.0095, skip=0.0002, steps=28, device="test", runs=5)
    timings = [{"trial": 0, "nfe": 7, "loss": 0.0098, "measured": 5.2, "modelled": 3.2, "bound": 4.0,
                "samples": [1.94, 4.35, 5.2], "full_s": 0.2, "latency_s": 0.04, "runs": 44},
               {"trial": 1, "nfe": 6, "loss": 0.0266, "measured": 3.05, "modelled": 3.58, "bound": 4.67, "samples": [3.05],
                "full_s": 0.2, "latency_s": 0.066, "runs": 11}]
    trials = [SimpleNamespace(number=0, values=[0.0098]), SimpleNamespace(number=1, values=[0.0266])]
    chosen = (trials[1], 0.2, 0.066, 3.05, 11, "")
    got, more, missed = closed_loop(SimpleNamespace(study=SimpleNamespace(trials=trials)), None, cost, 3.0, 7, chosen,
                                    timings, None, "t", 28, None, None)
    assert got[0] is trials[0] and "1.94x, 4.35x, 5.20x" in got[5] and "too noisy" in got[5]


def test_finalists_are_ranked_by_their_mean_over_calibration_and_validation_prompts(monkeypatch):
    """The best calibration loss of many trials is partly luck on those prompts: a plan that leads
    there by a little but trails on further calibration prompts loses to the one with the better
    mean over both, even one from outside the front's finalists."""
    from types import SimpleNamespace

    import torch

    from zeustune.models.prompts import load_prompts
    from zeustune.models.registry import MODELS
    from zeustune.search import driver as D

    made = []

    class Validation:  # scores a plan by its key: what the finalists would score on the further prompts
        def __init__(self, pipe, spec, prompts, seed, metric, batch):
            made.append((prompts, seed))

        def prepare(self, cache, progress):
            pass

        def scored(self, decoded, cache):
            return torch.tensor([{"lucky": 0.30, "steady": 0.20, "other": 0.25, "published": 0.05}[decoded]],
                                dtype=torch.float64), False

    monkeypatch.setattr(D, "Evaluator", Validation)
    monkeypatch.setattr(D.X, "decoded_of", lambda t: t.user_attrs["key"])

    def trial(number, calib, key):
        return SimpleNamespace(number=number, values=[calib], user_attrs={"key": key})

    lucky, steady, other = trial(1, 0.20, "lucky"), trial(2, 0.22, "steady"), trial(3, 0.24, "other")
    published = trial(4, 0.30, "published")
    published.user_attrs["seed"] = "zeus-wan2-demo"
    spec, cost = MODELS["tiny-flux"], SimpleNamespace(probe_share=0.0)
    cfg = D.SearchConfig(model="tiny-flux", calib=24, seed=5, progress=False)
    ranked, info = D.validated([lucky], [lucky, steady, other], cfg, None, spec, "gmsd", None, cost, 24)
    assert [t.number for t in ranked] == [2, 3, 1]  # pooled: 0.21, 0.245, 0.25
    assert info["scores"] == {1: 0.30, 2: 0.20, 3: 0.25} and info["prompts"] == 24
    assert "trial 2" in info["summary"] and "trial 1" in info["summary"]  # the one it beat is named
    # the calibration set's next 24 prompts, seeded as a longer --calib would seed them
    assert made == [(load_prompts(spec, "calib")[24:48], 5 + 24)]
    # a seed within the budget joins the pool however far down the calibration ranking it is
    many = [trial(10 + i, 0.21 + i / 1000, "other") for i in range(10)]
    for i, t in enumerate(many):
        t.user_attrs["key"] = f"other-{i}"
    monkeypatch.setattr(D.X, "decoded_of", lambda t: t.user_attrs["key"].split("-")[0])
    ranked, info = D.validated([lucky], [lucky, *many, published], cfg, None, spec, "gmsd", None, cost, 24)
    assert ranked[0] is published and 4 in info["scores"]  # pooled (0.30 + 0.05) / 2 beats every other
    off = D.SearchConfig(model="tiny-flux", calib=24, validation=0, progress=False)
    assert D.validated([lucky], [lucky, steady], off, None, spec, "gmsd", None, cost, 24) == ([lucky], {})
    assert len(D.validation_prompts(spec, D.SearchConfig(model="tiny-flux", calib=60))) == len(load_prompts(spec, "calib")) - 60


def test_a_published_rule_the_best_plan_does_not_clearly_beat_is_exported_in_its_place():
    """The pooled-best of many trials is biased low by selection; a seed it does not beat by a paired
    z of 2 over the calibration and validation prompts goes first, the fewest calls among such seeds."""
    from types import SimpleNamespace

    import torch

    from zeustune.search import driver as D

    def trial(number, nfe, seed=None):
        return SimpleNamespace(number=number, values=[0.0], user_attrs={"nfe": nfe, **({"seed": seed} if seed else {})})

    torch.manual_seed(0)
    base = torch.rand(48, dtype=torch.float64) * 0.01
    noise = torch.randn(48, dtype=torch.float64) * 0.001
    noise -= noise.mean()  # the differences' means are then exactly the offsets below
    tuned, dear, cheap, far = trial(1, 23), trial(2, 24, "zeus-default"), trial(3, 23, "zeus-wan2-demo"), trial(4, 23)
    losses = {1: base, 2: base + 0.0001 + noise, 3: base + 0.0002 + noise.flip(0), 4: base - 0.01}
    assert -2 < D.paired_z(losses[1], losses[2]) < 0 and -2 < D.paired_z(losses[1], losses[3]) < 0
    ranked, note = D.prefer_seed([tuned, dear, cheap], losses)
    assert ranked == [cheap, tuned, dear] and "zeus-wan2-demo (trial 3) ties trial 1" in note  # 23 calls before 24
    losses[3] = base + 0.002 + noise  # now clearly worse: the other tied seed, dearer, goes first
    assert D.paired_z(losses[1], losses[3]) < -2
    assert D.prefer_seed([tuned, dear, cheap], losses)[0] == [dear, tuned, cheap]
    losses[2] = base + 0.002 + noise  # no seed ties: unchanged
    assert D.prefer_seed([tuned, dear, cheap], losses) == ([tuned, dear, cheap], "")
    assert D.prefer_seed([cheap, tuned], losses) == ([cheap, tuned], "")  # a seed first already
    assert D.prefer_seed([far, dear], {4: base, 2: base})[0] == [dear, far]  # equal losses: a tie
    assert D.paired_z(base, base) == 0.0  # identical losses: no difference, a tie
