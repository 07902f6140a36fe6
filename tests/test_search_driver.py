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


def test_a_finalist_that_passes_or_agrees_is_timed_once():
    from zeustune.search.driver import noise_note, time_finalist

    for pair, modelled in (((3.6, 1.0), 3.25), ((2.9, 1.0), 3.25)):  # passes; misses by under 15%: a real miss
        ex = _Timings(pair)
        *_, measured, runs, samples = time_finalist(ex, None, _trial(modelled), bound=4.0, runs=11, device=None, budget=3.0)
        assert ex.runs == [11] and samples == [pair[0]] and noise_note(samples) == ""


def test_a_finalist_above_the_call_bound_is_retimed_at_most_twice():
    from zeustune.search.driver import time_finalist

    ex = _Timings((5.0, 1.0), (4.8, 1.0), (4.6, 1.0))
    *_, measured, runs, samples = time_finalist(ex, None, _trial(3.5), bound=4.0, runs=5, device=None, budget=3.0)
    assert ex.runs == [5, 10, 20] and measured == 4.6  # still above: the caller refuses to trust it


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
