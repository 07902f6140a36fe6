"""Per-branch plans: on two-call CFG pipelines the unconditional branch follows its own plan, with
its own history; the schedule file carries it (format 3) and every older file still loads."""

from __future__ import annotations

import pytest
import torch

from zeustune.models import tiny
from zeustune.schedule.plans import Plan
from zeustune.schedule.format import Schedule, ScheduleError
from zeustune.search.space import uncond_letters

from helpers import N, per_branch, run_scheduled, schedule_for

COND = "FFFEFFERFFFEFFFEFFFF"
UNCOND = uncond_letters(COND, 2, ["E", "R", "E"])


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_the_unconditional_branch_follows_its_own_plan_and_history(family):
    tp = tiny.build(family, cfg=True)
    assert Plan(UNCOND).nfe < Plan(COND).nfe
    sched = schedule_for(tp, COND)
    sched = sched.with_plan(sched.plan, predictor=sched.predictor, branch_plans={"uncond": Plan(UNCOND)})
    _, rec, summ = run_scheduled(tp, sched)
    assert rec.real_calls == Plan(COND).nfe + Plan(UNCOND).nfe
    assert summ.branches["cond"]["F"] == Plan(COND).nfe and summ.branches["uncond"]["F"] == Plan(UNCOND).nfe
    for outs, plan in zip(per_branch(rec.outputs, 2), (COND, UNCOND)):
        fresh = []
        for k, c in enumerate(plan):
            if c == "F":
                fresh.append(outs[k])
            elif c == "E":
                assert torch.equal(outs[k], 2 * fresh[-1] - fresh[-2]), f"step {k}"
            else:
                assert torch.equal(outs[k], fresh[-1]), f"step {k}"


def test_branch_plans_round_trip_in_format_3_and_are_validated(tmp_path):
    tp = tiny.build("flux", cfg=True)
    sched = schedule_for(tp, COND)
    assert sched.schema_version == 1 and "branch_plans" not in sched.to_dict()
    with_uncond = sched.with_plan(sched.plan, branch_plans={"uncond": Plan(UNCOND)})
    path = with_uncond.save(tmp_path / "s.yaml")
    loaded = Schedule.load(path)
    assert loaded.schema_version == 3 and loaded.plan_for("uncond") == Plan(UNCOND)
    assert loaded.plan_for("cond") == Plan(COND)
    doc = with_uncond.to_dict()
    doc["branch_plans"] = {"uncond": UNCOND[:-1]}
    with pytest.raises(ScheduleError, match=r"branch_plans.uncond: got '.*', expected one letter per step: 20 letters"):
        Schedule.from_dict(doc)
    doc["branch_plans"] = {"negative": UNCOND}
    with pytest.raises(ScheduleError, match=r"branch_plans.negative: .*expected one of the keys cond, uncond"):
        Schedule.from_dict(doc)
    doc["branch_plans"], doc["zeustune_schedule"] = {"uncond": UNCOND}, 2
    del doc["predictor"]  # its version-3 fields would be refused first
    with pytest.raises(ScheduleError, match=r"branch_plans: .*expected zeustune_schedule: 3 or later"):
        Schedule.from_dict(doc)
    assert N == len(COND)


def test_cache_dit_export_refuses_what_a_static_mask_cannot_say():
    from zeustune.search.export import to_cache_dit

    tp = tiny.build("flux", cfg=True)
    sched = schedule_for(tp, COND)
    assert sum(to_cache_dit(sched)["cache_config"]["steps_computation_mask"]) == Plan(COND).nfe
    with pytest.raises(ValueError, match="a plan of its own for a CFG branch"):
        to_cache_dit(sched.with_plan(sched.plan, branch_plans={"uncond": Plan(UNCOND)}))
    with pytest.raises(ValueError, match=r"steps decided at run time \(A, G\)"):
        to_cache_dit(sched.with_plan("FFFA" + COND[4:]))


def test_show_prints_the_branch_plan_and_the_adaptive_call_range():
    from zeustune.cli import render

    tp = tiny.build("flux", cfg=True)
    sched = schedule_for(tp, COND)
    text = render(sched.with_plan("FFFAAF" + COND[6:], branch_plans={"uncond": Plan(UNCOND)}))
    assert f"uncond     {UNCOND}" in text
    nfe = Plan("FFFAAF" + COND[6:])
    assert f"NFE        {nfe.nfe} to {nfe.max_nfe} of 20 per CFG branch, decided per run" in text
