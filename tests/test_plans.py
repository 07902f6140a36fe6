"""Specification of zeustune.schedule.plans: the per-step plan and the generators that make plans.

Reference numbers come from /work/shared/FACTS.md: section 1 (ZEUS's published patterns and the
authors' ablation NFE counts) and section 2 (Spectrum's fresh-step counts).
"""

from __future__ import annotations

import math
import re

import pytest

from zeustune.schedule.plans import CACHING_MODES, Plan, PlanError, Segment, from_mask, growing_gaps, periodic, resample, zeus

N = 50


def runs_of_skips(plan: Plan | str) -> list[str]:
    """The maximal runs of non-F letters, in order."""
    return [r for r in str(plan).split("F") if r]


def fresh_indices(plan: Plan | str) -> list[int]:
    return [k for k, c in enumerate(str(plan)) if c == "F"]


def caching_run(caching_mode: str, n: int) -> str:
    """A run of n skips as FACTS.md §1 spells each caching mode: E R E R / E R R / E E E."""
    return {"reuse_interp": ("ER" * n)[:n], "reuse_all": ("E" + "R" * n)[:n], "interp_all": "E" * n}[caching_mode]


def assert_plan_error(excinfo, field: str, value, expected: str) -> None:
    """Project standard: the message names the field, the bad value and what was expected."""
    msg = str(excinfo.value)
    assert msg.startswith(f"{field}:"), msg
    assert repr(value) in msg, msg
    assert expected in msg, msg


# --------------------------------------------------------------------------------------------
# 1. The published ZEUS patterns (FACTS.md §1 table), copied verbatim
# --------------------------------------------------------------------------------------------

_ZEUS_TAIL_3_24_6 = dict(lagrange_term=3, lagrange_step=24, lagrange_int=6)
_ZEUS_TAIL_4_24_4 = dict(lagrange_term=4, lagrange_step=24, lagrange_int=4)

#: name -> (zeus() keyword arguments, pattern of steps 0..49, NFE), as in the table.
PUBLISHED = {
    "flux_demo": (
        dict(acc_start=10, acc_end=45, denominator=3, modular=(0, 1), **_ZEUS_TAIL_3_24_6, max_interval=4,
             caching_mode="reuse_interp"),
        "FFFFFFFFFFFEFERFERFERFERFFLLLLFFLLLLFFLLLLFFLLFFFF",
        27,
    ),
    "sd_demo": (
        dict(acc_start=10, acc_end=45, denominator=3, modular=(0, 1), **_ZEUS_TAIL_4_24_4, max_interval=6,
             caching_mode="reuse_interp"),
        "FFFFFFFFFFFEFERFERFERFERFFLLLFLLLFLLLFLLLFLLLFFFFF",
        26,
    ),
    "xl_demo": (
        dict(acc_start=10, acc_end=45, denominator=3, modular=(0, 1), **_ZEUS_TAIL_4_24_4, max_interval=4,
             caching_mode="reuse_interp"),
        "FFFFFFFFFFFEFERFERFERFERFFLLLFLLLFLLLFLLLFLLLFFFFF",
        26,
    ),
    "wan2_demo": (
        dict(acc_start=8, acc_end=47, denominator=3, modular=(0, 1), **_ZEUS_TAIL_4_24_4, max_interval=6,
             caching_mode="reuse_interp"),
        "FFFFFFFFFFERFERFERFERFERFFLLLFLLLFLLLFLLLFLLLFLLFF",
        23,
    ),
    "cogvideo_demo": (
        dict(acc_start=8, acc_end=47, denominator=3, modular=(0, 1), **_ZEUS_TAIL_3_24_6, max_interval=6,
             caching_mode="reuse_interp"),
        "FFFFFFFFFFERFERFERFERFERFFLLLLLFLLLLLFLLLLLFLLLLFF",
        21,
    ),
    "rebuttal_default": (
        dict(acc_start=10, acc_end=45, denominator=3, modular=(0, 1), **_ZEUS_TAIL_3_24_6, max_interval=6,
             caching_mode="reuse_interp"),
        "FFFFFFFFFFFEFERFERFERFERFFLLLLLFLLLLLFLLLLLFLLFFFF",
        24,
    ),
    # Drawn in the table with reuse_interp letters; its real mode is reuse_all (tested separately).
    "generate_dit_default": (
        dict(acc_start=7, acc_end=47, denominator=4, modular=(0, 1, 2), **_ZEUS_TAIL_3_24_6, max_interval=8,
             caching_mode="reuse_interp"),
        "FFFFFFFFFEREFEREFEREFEREFFLLLLLFLLLLLFLLLLLFLLLLFF",
        19,
    ),
}

#: The rebuttal default, the base of the authors' ablations.
BASE = PUBLISHED["rebuttal_default"][0]


@pytest.fixture(params=sorted(PUBLISHED), ids=str)
def published(request):
    config, pattern, nfe = PUBLISHED[request.param]
    return config, pattern, nfe


def test_zeus_reproduces_each_published_pattern_letter_for_letter(published):
    config, pattern, _ = published
    assert len(pattern) == N
    assert str(zeus(N, **config)) == pattern


def test_zeus_nfe_of_each_published_config_matches_the_table(published):
    config, pattern, nfe = published
    assert pattern.count("F") == nfe  # the table is self-consistent
    assert zeus(N, **config).nfe == nfe


def test_generate_dit_in_its_real_reuse_all_mode_reuses_after_the_first_skip_of_each_run():
    config, table_pattern, nfe = PUBLISHED["generate_dit_default"]
    plan = zeus(N, **{**config, "caching_mode": "reuse_all"})
    # Same fresh steps as the table; head runs become E R R (the L tail letters are unaffected).
    assert plan.fresh_mask == Plan(table_pattern).fresh_mask
    assert plan.nfe == nfe
    assert str(plan) == "FFFFFFFFFERRFERRFERRFERRFFLLLLLFLLLLLFLLLLLFLLLLFF"
    # Executed on a flow model, every run is one E followed only by R.
    for run in runs_of_skips(plan.resolved("reuse_all")):
        assert run == caching_run("reuse_all", len(run))


# --------------------------------------------------------------------------------------------
# 2. The authors' ablation NFE counts (N=50, base = rebuttal default)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_interval, nfe", [(2, 27), (4, 27), (6, 24), (8, 24)])
def test_ablation_max_interval_nfe(max_interval, nfe):
    assert zeus(N, **{**BASE, "max_interval": max_interval}).nfe == nfe


@pytest.mark.parametrize(
    "warm, middle, tail, acc_range, nfe",
    [
        (10, 80, 10, (5, 45), 21),
        (15, 70, 15, (8, 42), 25),
        (20, 70, 10, (10, 45), 24),
        (25, 60, 15, (13, 42), 28),
    ],
)
def test_ablation_window_percentages_nfe(warm, middle, tail, acc_range, nfe):
    assert warm + middle + tail == 100
    acc_start = math.ceil(warm * N / 100)
    acc_end = N - math.ceil(tail * N / 100)
    assert (acc_start, acc_end) == acc_range
    assert zeus(N, **{**BASE, "acc_start": acc_start, "acc_end": acc_end}).nfe == nfe


@pytest.mark.parametrize("r, nfe", [(3, 24), (4, 23), (5, 21), (6, 22)])
def test_ablation_skip_ratio_r_nfe(r, nfe):
    config = {**BASE, "denominator": r, "modular": range(r - 1), "lagrange_int": 6}
    assert zeus(N, **config).nfe == nfe


# --------------------------------------------------------------------------------------------
# 3. The ZEUS schedule rule
# --------------------------------------------------------------------------------------------

_RULE_GRID = [
    dict(acc_start=a, acc_end=e, denominator=d, modular=tuple(range(max(d - 1, 1))), max_interval=mi, **tail)
    for a in (0, 5, 10)
    for e in (40, 47, 50)
    for d in (1, 2, 3, 5)
    for mi in (1, 2, 3, 6)
    for tail in ({}, dict(lagrange_term=3, lagrange_step=24, lagrange_int=6))
]


@pytest.mark.parametrize("config", _RULE_GRID)
def test_zeus_runs_of_skips_never_exceed_max_interval(config):
    plan = zeus(N, **config)
    assert plan.max_run <= config["max_interval"]


@pytest.mark.parametrize(
    "caching_mode, expected",
    [
        # every step may be skipped (d=1), so each run is cut by max_interval=3 alone
        ("reuse_interp", "FFFF" + "ERE" + "F" + "ERE" + "F" + "ERE" + "F" + "ERE" + "F"),
        ("reuse_all", "FFFF" + "ERR" + "F" + "ERR" + "F" + "ERR" + "F" + "ERR" + "F"),
        ("interp_all", "FFFF" + "EEE" + "F" + "EEE" + "F" + "EEE" + "F" + "EEE" + "F"),
    ],
)
def test_zeus_letters_each_run_of_skips_by_caching_mode(caching_mode, expected):
    plan = zeus(20, acc_start=3, acc_end=20, denominator=1, modular=(0,), max_interval=3, caching_mode=caching_mode)
    assert str(plan) == expected
    assert plan.max_run == 3  # the cap is reached, not just respected


@pytest.mark.parametrize("caching_mode", CACHING_MODES)
def test_zeus_long_runs_follow_the_caching_mode_pattern(caching_mode):
    plan = zeus(12, acc_start=3, acc_end=12, denominator=1, modular=(0,), max_interval=5, caching_mode=caching_mode)
    assert str(plan).startswith("FFFF" + caching_run(caching_mode, 5) + "F")


@pytest.mark.parametrize("config", _RULE_GRID)
def test_zeus_first_three_steps_are_always_fresh(config):
    assert str(zeus(N, **config))[:3] == "FFF"


def test_zeus_clamps_acc_start_to_three():
    # even decisions skip: without the clamp, the decision at k=2 would skip step 3
    common = dict(acc_end=40, denominator=2, modular=(0,), max_interval=6)
    for acc_start in (-5, 0, 1, 2, 3):
        assert str(zeus(N, acc_start=acc_start, **common)).startswith("FFFFFEF")


def test_zeus_first_decision_is_made_at_step_two():
    # The tail rule has no acc_start clamp: with lagrange_step=0 the decision at k=2 skips step 3,
    # and nothing earlier can be skipped (no decision is made at k=0 or k=1).
    plan = zeus(10, acc_start=3, acc_end=10, denominator=3, modular=(), max_interval=9,
                lagrange_term=3, lagrange_step=0, lagrange_int=6)
    assert str(plan)[:4] == "FFFL"


@pytest.mark.parametrize(
    "override, field, value, expected",
    [
        (dict(denominator=0), "denominator", 0, "an integer >= 1"),
        (dict(modular=(0, 3)), "modular", (0, 3), "residues in [0, 3)"),
        (dict(max_interval=0), "max_interval", 0, "an integer >= 1"),
        (dict(lagrange_term=-1), "lagrange_term", -1, "an integer >= 0"),
        (dict(lagrange_step=None), "lagrange_step", None, "an integer when lagrange_term > 0"),
        (dict(lagrange_int=0), "lagrange_int", 0, "an integer >= 1"),
        (dict(caching_mode="reuse"), "caching_mode", "reuse", "reuse_interp, reuse_all, interp_all"),
    ],
)
def test_zeus_rejects_bad_arguments_naming_them(override, field, value, expected):
    with pytest.raises(PlanError) as excinfo:
        zeus(N, **{**BASE, **override})
    assert_plan_error(excinfo, field, value, expected)


@pytest.mark.parametrize("steps", [2, 0, 50.0])
def test_zeus_rejects_a_step_count_below_three_or_not_an_integer(steps):
    with pytest.raises(PlanError) as excinfo:
        zeus(steps, **BASE)
    assert_plan_error(excinfo, "steps", steps, "an integer >= 3")


# --------------------------------------------------------------------------------------------
# 4. Plan validation and properties
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", ["", None, 123])
def test_plan_must_be_a_non_empty_string(steps):
    with pytest.raises(PlanError) as excinfo:
        Plan(steps)
    assert_plan_error(excinfo, "plan", steps, "a non-empty string of step letters")


@pytest.mark.parametrize("steps, bad", [("FFX", "X"), ("FFe", "e"), ("FF F", " "), ("FFZFQ", "QZ")])
def test_plan_rejects_unknown_letters_listing_them(steps, bad):
    with pytest.raises(PlanError) as excinfo:
        Plan(steps)
    assert_plan_error(excinfo, "plan", steps, f"only the letters FERSLCADPG (found {bad})")


@pytest.mark.parametrize("first", list("ERSL"))
def test_plan_first_step_must_be_fresh(first):
    with pytest.raises(PlanError) as excinfo:
        Plan(first + "FFF")
    assert_plan_error(excinfo, "plan[0]", first, "'F'")


@pytest.mark.parametrize(
    "steps, index, letter, fresh_before",
    [
        ("FE", 1, "E", 1),
        ("FSFF", 1, "S", 1),
        ("FLFF", 1, "L", 1),
        ("FRE", 2, "E", 1),  # R after one F is fine, E right after it is not
        ("FRRRS", 4, "S", 1),  # counts fresh steps, not steps
    ],
)
def test_plan_rejects_E_S_L_before_two_fresh_steps_naming_the_step(steps, index, letter, fresh_before):
    with pytest.raises(PlanError) as excinfo:
        Plan(steps)
    msg = str(excinfo.value)
    assert msg.startswith(f"plan[{index}]: got {letter!r}"), msg
    assert f"only {fresh_before} precede step {index}" in msg


@pytest.mark.parametrize("steps", ["FR", "FRRR", "FRFE", "FRFLLF", "FFE", "FFS", "FFL"])
def test_plan_accepts_reuse_after_one_fresh_step_and_other_skips_after_two(steps):
    assert str(Plan(steps)) == steps


def test_plan_properties_nfe_speedup_bound_max_run_fresh_mask():
    plan = Plan("FFERFFLLLRF")
    assert plan.nfe == 5
    assert len(plan) == 11
    assert plan.speedup_bound == pytest.approx(11 / 5)
    assert plan.max_run == 4
    assert plan.fresh_mask == (True, True, False, False, True, True, False, False, False, False, True)


def test_all_fresh_plan_has_no_runs_and_speedup_bound_one():
    plan = Plan("FFFF")
    assert (plan.nfe, plan.max_run, plan.speedup_bound) == (4, 0, 1.0)


def test_speedup_bound_of_published_pattern_is_steps_over_nfe(published):
    _, pattern, nfe = published
    assert Plan(pattern).speedup_bound == pytest.approx(N / nfe)


def test_plans_compare_by_letters_and_are_immutable():
    assert Plan("FFER") == Plan("FFER")
    assert Plan("FFER") != Plan("FFRE")
    with pytest.raises(AttributeError):
        Plan("FFER").steps = "FFFF"


@pytest.mark.parametrize(
    "caching_mode, expected",
    [
        # a run continues across letters: "ER" then L L are the 3rd and 4th skips of that run
        ("reuse_interp", "FFEREFFERERFERF"),
        ("reuse_all", "FFERRFFERRRFERF"),
        ("interp_all", "FFEREFFEEEEFEEF"),
    ],
)
def test_resolved_letters_L_by_its_position_in_the_run_on_flow_models(caching_mode, expected):
    plan = Plan("FFERLFFLLLLFLLF")
    resolved = plan.resolved(caching_mode)
    assert str(resolved) == expected  # E and R already in the plan are kept as written
    assert resolved.fresh_mask == plan.fresh_mask


@pytest.mark.parametrize("caching_mode", CACHING_MODES)
def test_resolved_keeps_L_on_lagrange_capable_pipelines(caching_mode):
    plan = Plan("FFERLFFLLLLFLLF")
    assert plan.resolved(caching_mode, lagrange=True) == plan


def test_resolved_rejects_an_unknown_caching_mode_when_it_must_letter_L():
    with pytest.raises(PlanError) as excinfo:
        Plan("FFLF").resolved("reuse")
    assert_plan_error(excinfo, "caching_mode", "reuse", "reuse_interp, reuse_all, interp_all")


def test_published_patterns_resolve_to_the_caching_mode_letters_on_flow_models(published):
    config, pattern, _ = published
    resolved = Plan(pattern).resolved(config["caching_mode"])
    for run in runs_of_skips(resolved):
        assert run == caching_run(config["caching_mode"], len(run))


# --------------------------------------------------------------------------------------------
# 5. periodic()
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "segment",
    [Segment(3, 9, "FER"), {"start": 3, "end": 9, "pattern": "FER"}, (3, 9, "FER")],
    ids=["Segment", "dict", "tuple"],
)
def test_periodic_accepts_segments_as_Segment_dict_or_tuple(segment):
    assert str(periodic(12, [segment])) == "FFF" + "FERFER" + "FFF"


def test_periodic_steps_outside_every_segment_are_fresh():
    plan = periodic(16, [(2, 6, "FFE"), {"start": 8, "end": 13, "pattern": "FR"}])
    #        0-1    2-5 (FFE FFE..)  6-7   8-12 (FR FR F)  13-15
    assert str(plan) == "FF" + "FFEF" + "FF" + "FRFRF" + "FFF"


def test_periodic_pattern_restarts_at_each_segment_start():
    plan = periodic(10, [(2, 5, "FEE"), (5, 8, "FEE")])
    assert str(plan) == "FF" + "FEE" + "FEE" + "FF"


def test_periodic_with_no_segments_is_all_fresh():
    assert str(periodic(5, [])) == "FFFFF"


@pytest.mark.parametrize(
    "segments, field, value, expected",
    [
        ([(2, 6, "FE"), (5, 8, "FE")], "segments[1].start", 5, "not overlapping (previous ends at 6)"),
        ([(6, 8, "FE"), (2, 4, "FE")], "segments[1].start", 2, "segments in order"),
        ([(0, 13, "FE")], "segments[0].start/end", (0, 13), "0 <= start < end <= 12"),
        ([(-1, 4, "FE")], "segments[0].start/end", (-1, 4), "0 <= start < end <= 12"),
        ([(4, 4, "FE")], "segments[0].start/end", (4, 4), "0 <= start < end <= 12"),
        ([(2, 6, "ER")], "segments[0].pattern", "ER", "with at least one F"),
        ([(2, 6, "")], "segments[0].pattern", "", "with at least one F"),
        ([(2, 4, "FF"), (4, 6, "FX")], "segments[1].pattern", "FX", "letters of FERSLCADP"),
    ],
)
def test_periodic_rejects_bad_segments_naming_them(segments, field, value, expected):
    with pytest.raises(PlanError) as excinfo:
        periodic(12, segments)
    assert_plan_error(excinfo, field, value, expected)


def test_periodic_result_is_validated_as_a_plan():
    with pytest.raises(PlanError, match=r"^plan\[1\]: got 'E'"):
        periodic(6, [(0, 6, "FE")])


# --------------------------------------------------------------------------------------------
# 6. growing_gaps() (Spectrum, FACTS.md §2)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha, nfe", [(0.75, 14), (3.0, 10)])
def test_growing_gaps_matches_spectrum_fresh_counts(alpha, nfe):
    plan = growing_gaps(N, warmup=5, window=2, alpha=alpha)
    assert plan.nfe == nfe
    assert str(plan)[:5] == "FFFFF"


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.75, 1.5, 3.0])
@pytest.mark.parametrize("window", [1, 2, 3.5])
@pytest.mark.parametrize("warmup", [2, 5])
def test_growing_gaps_gaps_between_fresh_steps_never_shrink_after_warmup(alpha, window, warmup):
    plan = growing_gaps(N, warmup=warmup, window=window, alpha=alpha)
    fresh = [k for k in fresh_indices(plan) if k >= warmup - 1]
    gaps = [b - a for a, b in zip(fresh, fresh[1:])]
    assert gaps == sorted(gaps)
    assert gaps[0] == int(window)  # the first gap after warm-up is the starting window


def test_growing_gaps_without_growth_keeps_a_constant_gap():
    plan = growing_gaps(20, warmup=2, window=3, alpha=0)
    assert fresh_indices(plan) == [0, 1, 4, 7, 10, 13, 16, 19]


@pytest.mark.parametrize("tail", [1, 3, 8])
def test_growing_gaps_tail_forces_last_steps_fresh_and_changes_nothing_before(tail):
    plain = growing_gaps(N, alpha=3.0)
    tailed = growing_gaps(N, alpha=3.0, tail=tail)
    assert str(tailed).endswith("F" * tail)
    assert str(tailed)[: N - tail] == str(plain)[: N - tail]


@pytest.mark.parametrize("caching_mode", CACHING_MODES)
def test_growing_gaps_letters_skips_by_caching_mode(caching_mode):
    plan = growing_gaps(N, alpha=3.0, caching_mode=caching_mode)
    # alpha=3: fresh at 0..4, 6, 11, 19, 30, 44 (gaps 2, 5, 8, 11, 14), then 5 skips to the end
    assert fresh_indices(plan) == [0, 1, 2, 3, 4, 6, 11, 19, 30, 44]
    assert runs_of_skips(plan) == [caching_run(caching_mode, n) for n in (1, 4, 7, 10, 13, 5)]


@pytest.mark.parametrize(
    "kwargs, field, value, expected",
    [
        (dict(steps=0), "steps", 0, "an integer >= 1"),
        (dict(warmup=1), "warmup", 1, "an integer in [2, 50]"),
        (dict(warmup=51), "warmup", 51, "an integer in [2, 50]"),
        (dict(window=0.5), "window", 0.5, "a number >= 1"),
        (dict(alpha=-0.25), "alpha", -0.25, "a number >= 0"),
        (dict(tail=-1), "tail", -1, "an integer in [0, 50]"),
        (dict(tail=51), "tail", 51, "an integer in [0, 50]"),
        (dict(caching_mode="reuse"), "caching_mode", "reuse", "reuse_interp, reuse_all, interp_all"),
    ],
)
def test_growing_gaps_rejects_bad_arguments_naming_them(kwargs, field, value, expected):
    kwargs = {"steps": N, **kwargs}
    with pytest.raises(PlanError) as excinfo:
        growing_gaps(**kwargs)
    assert_plan_error(excinfo, field, value, expected)


@pytest.mark.parametrize("kwargs, field", [(dict(window="2"), "window"), (dict(alpha="0.75"), "alpha")])
def test_growing_gaps_rejects_non_numeric_window_or_alpha_naming_the_field(kwargs, field):
    with pytest.raises(PlanError, match=rf"^{field}: got '"):
        growing_gaps(N, **kwargs)


# --------------------------------------------------------------------------------------------
# 7. from_mask()
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mask",
    ["11100111", [True, True, True, False, False, True, True, True], [1, 1, 1, 0, 0, 1, 1, 1]],
    ids=["string", "bools", "ints"],
)
def test_from_mask_one_means_compute_zero_means_skip(mask):
    # cache-dit's steps_computation_mask convention: 1 = compute the step (fresh)
    plan = from_mask(mask)
    assert str(plan) == "FFFERFFF"
    assert plan.nfe == 6


@pytest.mark.parametrize(
    "caching_mode, expected", [("reuse_interp", "FFEREFF"), ("reuse_all", "FFERRFF"), ("interp_all", "FFEEEFF")]
)
def test_from_mask_letters_skips_by_caching_mode(caching_mode, expected):
    assert str(from_mask("1100011", caching_mode)) == expected


def test_from_mask_of_a_plans_fresh_mask_gives_back_the_plan(published):
    config, pattern, _ = published
    plan = Plan(pattern).resolved(config["caching_mode"])
    assert from_mask(plan.fresh_mask, config["caching_mode"]) == plan


@pytest.mark.parametrize("mask", ["1102", "11 01", "FFEF", "1,1,0"])
def test_from_mask_rejects_strings_other_than_zeros_and_ones(mask):
    with pytest.raises(PlanError) as excinfo:
        from_mask(mask)
    assert_plan_error(excinfo, "mask", mask, "a string of 0 and 1")


def test_from_mask_reuses_where_fewer_than_two_fresh_steps_precede():
    # extrapolation needs two fresh outputs: after a single one, a skip can only reuse it
    assert str(from_mask("1001011")) == "FRRFEFF"


@pytest.mark.parametrize("mask, field", [("", "plan"), ("011", "plan[0]")])
def test_from_mask_result_is_validated_as_a_plan(mask, field):
    with pytest.raises(PlanError, match=rf"^{re.escape(field)}:"):
        from_mask(mask)


# --------------------------------------------------------------------------------------------
# 8. resample()
# --------------------------------------------------------------------------------------------

#: Source plans for resampling: the published ZEUS patterns and the two Spectrum placements.
RESAMPLE_SOURCES = {name: Plan(pattern) for name, (_, pattern, _) in PUBLISHED.items()}
RESAMPLE_SOURCES["spectrum_a0.75"] = growing_gaps(N, alpha=0.75)
RESAMPLE_SOURCES["spectrum_a3.0"] = growing_gaps(N, alpha=3.0)


@pytest.fixture(params=sorted(RESAMPLE_SOURCES), ids=str)
def source_plan(request):
    return RESAMPLE_SOURCES[request.param]


def _sigmas(n: int) -> list[float]:
    """A decreasing, non-uniform grid (denser near sigma 0, as shifted schedules are)."""
    return [(1 - k / n) ** 2 + 0.01 for k in range(n)]


def test_resample_to_the_same_step_count_is_the_identity(source_plan):
    assert resample(source_plan, len(source_plan)) == source_plan


def test_resample_onto_the_same_sigma_grid_is_the_identity(source_plan):
    sig = _sigmas(len(source_plan))
    assert resample(source_plan, len(source_plan), source_sigmas=sig, target_sigmas=sig) == source_plan


def test_resample_50_to_25_roughly_halves_nfe(source_plan):
    # Tolerance: the fresh fraction may move by up to 4 steps of 25 (0.16). Nearest-step sampling
    # at a stride of ~2 aliases with the period-3/4/6 ZEUS patterns (a period-4 "EREF" sampled every
    # other step keeps half or all of its skips depending on phase), and the validity repair only
    # adds fresh steps. Measured on these sources the largest move is 0.14 (generate_dit, 19 -> 13).
    target = resample(source_plan, 25)
    assert len(target) == 25
    assert abs(target.nfe / 25 - source_plan.nfe / N) <= 0.16
    assert target.nfe < source_plan.nfe


def test_resample_50_to_25_of_an_alternating_plan_keeps_its_fresh_fraction():
    # nearest-step picking would alias onto one phase of the period-2 pattern (all fresh or all
    # skipped); density-preserving placement keeps every other step fresh
    source = Plan("FF" + "FE" * 24)  # NFE 26
    target = resample(source, 25)
    assert abs(target.nfe / 25 - source.nfe / N) <= 1 / 25 + 1e-9  # one step of rounding
    assert target.max_run == 1


@pytest.mark.parametrize("steps", [4, 10, 20, 25, 28, 49, 51, 75, 100])
def test_resample_always_gives_a_valid_plan_no_longer_runs_than_the_source(source_plan, steps):
    target = resample(source_plan, steps)
    assert len(target) == steps
    assert str(target)[0] == "F"
    assert target.max_run <= source_plan.max_run
    assert Plan(str(target)) == target  # revalidates: E/S/L only after two fresh steps


@pytest.mark.parametrize("caching_mode", CACHING_MODES)
def test_resample_reletters_head_skips_by_caching_mode_and_keeps_L(caching_mode):
    source = Plan(PUBLISHED["rebuttal_default"][1])
    target = resample(source, 40, caching_mode=caching_mode)
    assert "L" in str(target)  # tail skips stay L for the pipeline to resolve
    for run in runs_of_skips(target.resolved(caching_mode)):
        assert run == caching_run(caching_mode, len(run))


def test_resample_by_sigma_places_the_target_grid_where_its_sigmas_fall():
    source = Plan(PUBLISHED["rebuttal_default"][1])
    src_sig = _sigmas(N)
    # A 25-step target whose sigmas are those of source steps 0..24 covers only the first half of
    # the source trajectory: it must reproduce those 25 letters, where relative position would
    # squeeze the whole 50-step plan into 25 steps.
    target = resample(source, 25, source_sigmas=src_sig, target_sigmas=src_sig[:25])
    assert str(target) == str(source)[:25]
    assert target != resample(source, 25)


def test_resample_by_sigma_blends_only_where_the_target_grid_jumps():
    source = Plan(PUBLISHED["rebuttal_default"][1])
    src_sig = _sigmas(N)
    # The target keeps the sigmas of source steps 0..9 and 25..49. Away from the jump each target
    # step stands for exactly one source step and takes its letter; the two steps beside the jump
    # each stand for half of the skipped stretch 10..24 too.
    picked = list(range(10)) + list(range(25, N))
    target = resample(source, len(picked), source_sigmas=src_sig, target_sigmas=[src_sig[k] for k in picked])
    same = [j for j in range(len(picked)) if j not in (9, 10)]
    assert [str(target)[j] for j in same] == [str(source)[picked[j]] for j in same]
    assert target != resample(source, len(picked))  # the sigma grid, not the position, decided


@pytest.mark.parametrize(
    "source_sigmas, target_sigmas, field",
    [
        ([1.0, 0.5, 0.1], [1.0, 0.5, 0.2, 0.1], "source_sigmas"),  # 3 for a 4-step plan
        ([1.0, 0.7, 0.4, 0.1], [1.0, 0.1], "target_sigmas"),  # 2 for 3 target steps
        (None, [1.0, 0.5, 0.1], "source_sigmas"),
        ([1.0, 0.7, 0.4, 0.1], None, "target_sigmas"),
    ],
)
def test_resample_rejects_sigma_grids_of_the_wrong_length(source_sigmas, target_sigmas, field):
    with pytest.raises(PlanError) as excinfo:
        resample(Plan("FFEF"), 3, source_sigmas=source_sigmas, target_sigmas=target_sigmas)
    value = source_sigmas if field == "source_sigmas" else target_sigmas
    n = 4 if field == "source_sigmas" else 3
    assert_plan_error(excinfo, field, value, f"{n} values")


@pytest.mark.parametrize("source_sigmas", [[0.1, 0.4, 0.7, 1.0], [1.0, 0.5, 0.5, 0.1]])
def test_resample_rejects_source_sigmas_that_do_not_strictly_decrease(source_sigmas):
    with pytest.raises(PlanError) as excinfo:
        resample(Plan("FFEF"), 3, source_sigmas=source_sigmas, target_sigmas=[1.0, 0.5, 0.1])
    assert_plan_error(excinfo, "source_sigmas", source_sigmas, "strictly decreasing values")


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_resample_rejects_a_bad_target_step_count(steps):
    with pytest.raises(PlanError) as excinfo:
        resample(Plan("FFEF"), steps)
    assert_plan_error(excinfo, "steps", steps, "an integer >= 1")
