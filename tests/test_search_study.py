"""The study loop with a stand-in evaluator (no model): seeds, dedup, budget pruning, early
abort, failures, refinement, and recovery of trials a killed search left running."""

from __future__ import annotations

import math
import os
import random
import socket
from dataclasses import replace

import optuna
import pytest
from optuna.trial import TrialState

from zeustune.search import space as SP
from zeustune.search.cost import BudgetError, CostModel, fit, parse_budget
from zeustune.search.evaluator import Bar, Hopeless
from zeustune.search.study import Search, feasible, front, make_sampler, open_study

from helpers import COST, STEPS, FakeEvaluator, assert_each_plan_scored_once, two_drivers


def make(tmp_path, budget=3.0, storage=None, name="s"):
    storage = storage or f"sqlite:///{tmp_path / 'st.db'}"
    study, resumed = open_study(name, storage, make_sampler("tpe", 0), {"space": "tiny-flux", "space_sha256": "x"})
    return Search(study, FakeEvaluator(), SP.load("tiny-flux"), COST, budget, seed=0), resumed


def test_seeds_are_scored_even_over_budget_and_excluded_from_the_feasible_set(tmp_path):
    s, resumed = make(tmp_path)
    assert not resumed
    assert s.seed_trials() == []
    s.run_tpe(10)
    seeds = {t.user_attrs["seed"]: t for t in s.study.trials if "seed" in t.user_attrs}
    assert set(seeds) >= set(SP.ZEUS_PUBLISHED)
    taylor = [t for name, t in seeds.items() if name.startswith("taylorseer-")]
    assert {t.user_attrs["seed"][:len("taylorseer-2")] for t in taylor} == {"taylorseer-2", "taylorseer-3"}
    for t in taylor:  # the shortest interval within the budget: feasible, at gamma 1
        assert t.state == TrialState.COMPLETE and t.user_attrs["speedup_model"] >= 3.0 and t.params["gamma"] == 1.0
    for t in seeds.values():
        assert t.state in (TrialState.COMPLETE, TrialState.FAIL)
    over = [t for t in seeds.values() if t.state == TrialState.COMPLETE and t.user_attrs["speedup_model"] < 3.0]
    assert over and all(t.constraints["budget"] > 0 for t in over)
    assert not set(t.number for t in over) & set(t.number for t in feasible(s.study))
    assert not set(t.number for t in over) & set(t.number for t in s.study.best_trials)


def test_listed_seeds_are_the_two_published_lists_nearest_the_budget_line(tmp_path):
    cost = CostModel(fixed=0.0, call=0.01, skip=0.0, steps=50)  # speedup = 50 / fresh steps
    picked = {}
    for budget in (2.0, 3.0, 6.0):
        study, _ = open_study(f"l{budget}", f"sqlite:///{tmp_path / 'st.db'}", make_sampler("tpe", 0), {"space": "tiny-wan"})
        picked[budget] = set(Search(study, FakeEvaluator(), SP.load("tiny-wan"), cost, budget)._listed_seeds())
    assert picked == {2.0: {"lemica-20", "lemica-15"}, 3.0: {"lemica-15", "lemica-10"}, 6.0: set()}
    s, _ = make(tmp_path)  # tiny-flux.yaml has no listed generator: no such seeds
    assert s._listed_seeds() == {}


def test_a_ladder_is_seeded_around_each_of_its_budgets(tmp_path):
    cost = CostModel(fixed=0.0, call=0.01, skip=0.0, steps=50)  # speedup = 50 / fresh steps
    study, _ = open_study("ladder", f"sqlite:///{tmp_path / 'st.db'}", make_sampler("tpe", 0), {"space": "tiny-wan"})
    s = Search(study, FakeEvaluator(), SP.load("tiny-wan"), cost, 2.0)
    assert s.seed_trials([4.0]) == []
    names = {t.user_attrs.get("seed") for t in s.live.get_trials(states=(TrialState.WAITING,))}
    # 2x: every 2nd step, LeMiCa's 20 and 15; 4x: every 4th and 5th (13 and 10 calls), LeMiCa's 10 too
    assert {"uniform-2", "uniform-4", "uniform-5", "lemica-20", "lemica-15", "lemica-10"} <= names


def test_over_budget_trials_are_pruned_without_rendering_and_duplicates_scored_once(tmp_path):
    s, _ = make(tmp_path)
    s.run_tpe(80)
    trials = [t for t in s.study.trials if t.state.is_finished()]
    assert len(trials) >= 80
    scored = s.evaluator.calls
    assert len(scored) == len(set(scored))  # each effective plan rendered once
    for t in trials:
        if "seed" in t.user_attrs:
            continue
        if t.user_attrs["speedup_model"] < 3.0 and "duplicate_of" not in t.user_attrs:
            assert t.state == TrialState.PRUNED and t.user_attrs["key"] not in scored
    dups = [t for t in trials if "duplicate_of" in t.user_attrs]
    for t in dups:
        first = s.study.trials[t.user_attrs["duplicate_of"]]
        assert first.user_attrs["key"] == t.user_attrs["key"] and first.values == t.values


def test_non_finite_plans_fail_and_the_search_goes_on(tmp_path):
    s, _ = make(tmp_path)
    s.run_tpe(60)
    failed = [t for t in s.study.trials if t.state == TrialState.FAIL]
    assert failed and all("non-finite" in t.user_attrs["error"] for t in failed)
    assert s.counts("tpe") >= 60 and len(feasible(s.study)) > 0


def test_hopeless_trials_are_pruned_after_the_first_batch(tmp_path):
    s, _ = make(tmp_path)
    s.rung_z = None  # the running-mean bar alone
    s.run_tpe(80)
    hopeless = [t for t in s.study.trials if "hopeless" in t.user_attrs.get("pruned", "")]
    assert hopeless and not [t for t in hopeless if "same prompts" in t.user_attrs["pruned"]]
    for t in hopeless:  # pruned only when some trial at least as fast was much better
        better = [u for u in feasible(s.study) if u.values[1] <= COST.latency(t.user_attrs["nfe"]) + 1e-12]
        assert better and FakeEvaluator().value(SP.Decoded(optuna_plan(t), t.user_attrs["gamma"])) > s.prune_ratio * min(u.values[0] for u in better) * 0.99


def test_the_paired_rung_test_stops_candidates_worse_than_a_faster_trial_on_the_same_prompts(tmp_path):
    s, _ = make(tmp_path)
    s.run_tpe(80)
    paired = [t for t in s.study.trials if "same prompts" in t.user_attrs.get("pruned", "")]
    assert paired
    by_number = {t.number: t for t in s.study.trials}
    for t in paired:
        rival = by_number[int(t.user_attrs["pruned"].split("for trial ")[1].split()[0])]
        # the rival is a complete, feasible trial at least as fast and better than the stopped one
        assert rival.state == TrialState.COMPLETE and rival.values[1] <= COST.latency(t.user_attrs["nfe"]) + 1e-12
        assert FakeEvaluator().value(SP.Decoded(optuna_plan(t), t.user_attrs["gamma"])) > rival.values[0] - 1e-4
        assert t.user_attrs["prompts_scored"] == s.evaluator.batch  # the fake's prompts are all rungs: stopped at the first
    sent = [b for b in s.evaluator.bars if b is not None]
    assert sent and all(isinstance(b, Bar) and b.z == 1.5 and len(b.rival) == s.evaluator.prompts for b in sent)


def test_the_paired_test_needs_confidence_not_just_a_worse_mean():
    rival = (0.10, 0.30, 0.10, 0.30, 0.10, 0.30, 0.10, 0.30)
    bar = Bar(rival=rival, z=1.5, rival_trial=3)
    noisy = [0.12, 0.29, 0.11, 0.31, 0.12, 0.28, 0.12, 0.30]  # worse by 0.006 on average, sd 0.015: kept
    bar.check(noisy, rung=True)
    worse = [v + 0.01 for v in rival]  # worse on every prompt: stopped
    with pytest.raises(Hopeless, match=r"vs 0.2000 for trial 3 on the same prompts \(worse by 0.0100"):
        bar.check(worse, rung=True)
    bar.check(worse, rung=False)  # only at rungs
    Bar(rival=rival, z=None).check(worse, rung=True)  # off without a confidence
    with pytest.raises(Hopeless, match=r"after 2 prompts > 0.1000"):
        Bar(mean=0.1).check([0.1, 0.2], rung=False)  # the running-mean bar holds at every batch


def optuna_plan(t):
    from zeustune.schedule.plans import Plan

    return Plan(t.user_attrs["plan"])


def test_refinement_keeps_nfe_and_is_told_into_the_same_study(tmp_path):
    s, _ = make(tmp_path)
    s.run_tpe(40)
    best = s.best()
    s.refine(25)
    refined = [t for t in s.study.trials if t.user_attrs.get("stage") == "refine"]
    assert len(refined) == 25
    assert all(t.user_attrs["nfe"] == best.user_attrs["nfe"] for t in refined)
    assert s.best().values[0] <= best.values[0]
    assert any(t.number in {u.number for u in refined} for t in front(feasible(s.study))) or s.best() is best
    # resuming the refinement does not redo what is stored
    s.refine(25)
    assert len([t for t in s.study.trials if t.user_attrs.get("stage") == "refine"]) == 25


def test_recover_fails_trials_of_dead_workers_and_retries_their_parameters(tmp_path):
    s, _ = make(tmp_path)
    t = s.study.ask({"generator": optuna.distributions.CategoricalDistribution(["spaced"])})
    t.set_user_attr("worker", "somewhere-else:999999")
    number = t.number
    assert s.recover() == 1
    assert s.study.trials[number].state == TrialState.FAIL
    waiting = s.live.get_trials(states=(TrialState.WAITING,))  # queued where the sampler asks next
    assert [w.system_attrs["fixed_params"] for w in waiting] == [{"generator": "spaced"}]  # how optuna queues them


def test_reopening_a_study_with_another_space_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'st.db'}"
    open_study("s", storage, make_sampler("tpe", 0), {"space": "a", "space_sha256": "1"})
    study, resumed = open_study("s", storage, make_sampler("tpe", 0), {"space": "a", "space_sha256": "1"})
    assert resumed
    with pytest.raises(ValueError, match="space_sha256"):
        open_study("s", storage, make_sampler("tpe", 0), {"space": "a", "space_sha256": "2"})


def test_storage_must_be_a_url():
    with pytest.raises(ValueError, match="--storage: got 'studies.db'"):
        open_study("s", "studies.db", None, {})


# -- cost model ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [("3x", 3.0), ("2.5x", 2.5), (" 4 ", 4.0), (3, 3.0)])
def test_parse_budget(text, value):
    assert parse_budget(text) == value


@pytest.mark.parametrize("text", ["fast", "0.5x", "1x", "3xx", "-2x"])
def test_parse_budget_refuses_nonsense(text):
    with pytest.raises(ValueError, match="--budget"):
        parse_budget(text)


def test_cost_fit_recovers_the_generating_model():
    import fake_clock

    m = fit(fake_clock.time_run(fixed=0.03, call=0.01, skip=0.0005), STEPS, runs=3)
    assert m.fixed == pytest.approx(0.03, rel=1e-6)
    assert m.call == pytest.approx(0.01, rel=1e-6)
    assert m.skip == pytest.approx(0.0005, rel=1e-6)
    assert m.error == pytest.approx(0.0, abs=1e-9) and m.runs == 3  # the held-back runs agree: one round


def test_cost_fits_on_a_noisy_machine_agree_on_the_fresh_steps_each_budget_allows():
    """Each step and run jittered by up to +-10% (uniform, seeded): ten fits' parts are medians over
    dozens of steps, so they agree on what 2x, 3x and 4x allow (the least-squares fit on four run
    totals did not: issue 22)."""
    import fake_clock

    rng = random.Random(0)
    allowed = set()
    for _ in range(10):
        m = fit(fake_clock.time_run(fixed=0.03, call=0.01, skip=0.0005, jitter=lambda: rng.uniform(0.9, 1.1)), STEPS, runs=5)
        allowed.add(tuple(m.max_fresh(b) for b in (2, 3, 4)))
    true = CostModel(fixed=0.03, call=0.01, skip=0.0005, steps=STEPS)
    assert allowed == {tuple(true.max_fresh(b) for b in (2, 3, 4))}


def test_a_fit_that_misses_its_held_back_runs_times_again_and_keeps_the_miss():
    import fake_clock

    base = fake_clock.time_run(fixed=0.03, call=0.01, skip=0.0005)

    def time_run(steps, fresh, factor=None, probe=False):  # the held-back N/2-step runs take 20% longer
        t = base(steps, fresh, factor, probe)
        return replace(t, total=t.total * 1.2) if steps < STEPS else t

    m = fit(time_run, STEPS, runs=2)
    assert m.runs == 4  # timed twice as often
    assert m.error == pytest.approx(0.2, abs=5e-5)  # modelled over measured speedup, less 1, kept to 4 places
    assert "held-back runs within 20.0%" in m.describe()


def test_speedup_is_bounded_by_the_call_ratio_and_the_ceiling():
    for nfe in range(1, STEPS + 1):
        assert COST.speedup(nfe) <= STEPS / nfe + 1e-12
    assert COST.ceiling == COST.speedup(1)
    assert COST.speedup(COST.max_fresh(3.0)) >= 3.0 > COST.speedup(COST.max_fresh(3.0) + 1)


def test_unreachable_budget_is_refused_with_the_ceiling():
    with pytest.raises(BudgetError) as e:
        COST.check(50.0)
    msg = str(e.value)
    assert "--budget 50x cannot be reached" in msg and f"{COST.ceiling:.2f}x" in msg
    assert COST.check(3.0) == COST.max_fresh(3.0)
    assert math.isclose(COST.full, 0.024 + 28 * 0.0095)


def test_optuna_dashboard_shows_the_study(tmp_path):
    """`optuna-dashboard <storage>` serves the study: its objectives by name, every trial."""
    import io
    import json
    import sys

    dashboard = pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is in the test extra")
    s, _ = make(tmp_path)
    s.run_tpe(12)
    app = dashboard.wsgi(f"sqlite:///{tmp_path / 'st.db'}")

    def get(path):
        status = {}
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "wsgi.input": io.BytesIO(b""),
               "wsgi.errors": sys.stderr, "SERVER_NAME": "localhost", "SERVER_PORT": "8080", "wsgi.url_scheme": "http"}
        body = b"".join(app(env, lambda st, headers, exc=None: status.setdefault("s", st)))
        assert status["s"].startswith("200"), status
        return json.loads(body)

    (summary,) = get("/api/studies")["study_summaries"]
    assert summary["study_name"] == "s"
    detail = get(f"/api/studies/{summary['study_id']}")
    assert detail["objective_names"] == ["loss", "latency_s"]
    assert len(detail["trials"]) == len(s.study.trials)


def test_the_storage_gets_finished_trials_only_and_drivers_share_them(tmp_path):
    """The sampler draws from an in-memory mirror; the storage holds every finished trial, which
    a second driver on the same study pulls in (it neither rescores those plans nor reseeds)."""
    a, _ = make(tmp_path)
    a.seed_trials()
    seen_running = []
    a.run_tpe(20, progress=lambda *_: seen_running.append(len(a.study.get_trials(states=(TrialState.RUNNING,)))))
    assert seen_running and max(seen_running) == 0  # nothing half-done is ever written
    stored = a.study.trials
    assert len(stored) == 20 and [t.number for t in stored] == list(range(20))
    for t in stored:  # duplicates point at the stored trial that was scored
        if "duplicate_of" in t.user_attrs:
            assert stored[t.user_attrs["duplicate_of"]].user_attrs["key"] == t.user_attrs["key"]

    b, resumed = make(tmp_path)
    assert resumed
    b.seed_trials()
    assert len(b.live.trials) == 20 and not b.live.get_trials(states=(TrialState.WAITING,))  # seeds were scored
    b.run_tpe(30)
    after = b.study.trials
    assert len(after) == 30 and [t.params for t in after[:20]] == [t.params for t in stored]
    old_keys = {u.user_attrs["key"] for u in stored if u.state != TrialState.FAIL}
    assert not [k for k in b.evaluator.calls if k in old_keys]  # plans scored by the first driver are not rendered again


class AdaptiveEvaluator(FakeEvaluator):
    """Adaptive steps call the denoiser on a share of their steps that grows with max_run's
    inverse; prompts differ by one call, so means and p90 differ."""

    def losses(self, d, bar=None):
        out = super().losses(d, bar)
        extra = d.plan.steps.count("A") / (1 + dict(d.knobs).get("max_run", 1))
        self.last_calls = [d.static_nfe + extra + (i % 2) for i in range(self.prompts)]
        return out


def test_adaptive_trials_are_budgeted_at_their_measured_calls(tmp_path):
    storage = f"sqlite:///{tmp_path / 'st.db'}"
    study, _ = open_study("a", storage, make_sampler("tpe", 0), {"space": "x", "space_sha256": "x"})
    space = SP.from_dict({"zeustune_space": 1, "family": "flux", "generators": ["adaptive"], "max_run": 8,
                          "warmup": [2, 4], "tail": [0, 2], "adaptive": {"max_run": [1, 8]}})
    s = Search(study, AdaptiveEvaluator(), space, COST, 3.0, seed=0)
    s.run_tpe(40)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert done
    for t in done:
        calls = s.evaluator.prompts
        mean = t.user_attrs["nfe"]
        assert t.user_attrs["calls_min"] < mean < t.user_attrs["calls_p90"]  # measured, not the F count
        assert t.values[1] == pytest.approx(COST.latency(mean))
        assert t.constraints["budget"] == pytest.approx(3.0 - COST.speedup(mean), abs=1e-4)
        assert calls == 8
    over = [t for t in done if COST.speedup(t.user_attrs["nfe"]) < 3.0]
    assert over and not {t.number for t in over} & {t.number for t in feasible(study)}


def test_refinement_compares_neighbours_with_the_current_plan_raised_by_three_temperatures(tmp_path):
    s, _ = make(tmp_path)
    s.run_tpe(40)
    n_tpe = len(s.evaluator.bars)
    s.refine(12)
    bars = [b for b in s.evaluator.bars[n_tpe:] if b is not None and b.rival is not None]
    assert bars
    losses = {t.number: t.user_attrs["losses"] for t in s.study.trials if t.user_attrs.get("losses")}
    for b in bars:  # the rival is a scored plan's per-prompt losses x (1 + 3 T), T from 5% down to 0.5%
        base = losses[b.rival_trial]  # stored rounded to 1e-6
        ratio = sum(b.rival) / sum(base)
        assert 1 + 3 * 0.005 - 1e-5 <= ratio <= 1 + 3 * 0.05 + 1e-5
        assert all(r == pytest.approx(v * ratio, abs=2e-6) for r, v in zip(b.rival, base))


def test_a_budget_ladder_parses_ascending_and_refuses_gaps_repeats_and_bad_values():
    from zeustune.search.cost import parse_budgets

    assert parse_budgets("4x,2x,3x") == [2.0, 3.0, 4.0] and parse_budgets("3x") == [3.0] and parse_budgets(2.5) == [2.5]
    for text, expected in (("2x,,3x", "separated by commas"), ("2x,3x,", "separated by commas"), ("3x,3", "each speedup once"),
                           ("2x,0.5x", "above 1x"), ("2x,fast", "like 3x")):
        with pytest.raises(ValueError, match=expected) as e:
            parse_budgets(text)
        assert str(e.value).startswith("--budget: got")


def test_two_drivers_on_one_sqlite_study_score_each_plan_once(tmp_path):
    scored, stored = two_drivers(f"sqlite:///{tmp_path / 'st.db'}", "two")
    assert_each_plan_scored_once(scored, stored)


def test_a_claim_is_left_to_a_live_driver_and_taken_over_from_one_that_is_gone(tmp_path):
    a, _ = make(tmp_path)
    b, _ = make(tmp_path)
    assert not a.claimed_elsewhere("plan-1") and not a.claimed_elsewhere("plan-1")  # its own claim, again
    assert b.claimed_elsewhere("plan-1")  # a is alive in this process: b leaves the plan to it
    a.holder = f"{socket.gethostname()}:{os.getpid()}:gone"  # a search of this process that ended
    assert not a.claimed_elsewhere("plan-2") and not b.claimed_elsewhere("plan-2")
    a.holder = f"{socket.gethostname()}:999999999:x"  # a driver of this host whose process is gone
    assert not a.claimed_elsewhere("plan-3") and not b.claimed_elsewhere("plan-3")
    a.holder = "another-host:1:x"  # elsewhere: cannot tell, so it is left to that driver
    assert not a.claimed_elsewhere("plan-4") and b.claimed_elsewhere("plan-4")


def test_opening_a_database_another_driver_is_creating_is_tried_again_and_nothing_else_is():
    from sqlalchemy.exc import IntegrityError, OperationalError

    from zeustune.search.study import _creating

    def opener(errors):
        def open_it():
            if errors:
                raise errors.pop(0)
            return "study"
        return open_it

    race = [OperationalError("CREATE TABLE studies", {}, Exception("table studies already exists")),
            IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed")),
            OperationalError("BEGIN", {}, Exception("database is locked"))]
    assert _creating(opener(list(race))) == "study"
    down = OperationalError("connect", {}, Exception("could not connect to server: Connection refused"))
    with pytest.raises(OperationalError, match="Connection refused"):
        _creating(opener([down]))
    with pytest.raises(IntegrityError):  # a race that never ends is the error it is
        _creating(opener([race[1]] * 3), tries=3)
