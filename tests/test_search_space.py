"""Search spaces: the shipped files load, bad files are refused by field, every configuration
decodes into a valid plan, and the seeds reproduce what users have today."""

from __future__ import annotations

import random

import pytest
import yaml

from zeustune.schedule.plans import Plan, from_mask, zeus
from zeustune.search import space as SP

from helpers import RandomTrial

SHIPPED = sorted(p.stem for p in SP.BUILTIN_SPACES.glob("*.yaml"))


def test_a_space_for_every_family_and_tiny_flux():
    assert {"flux", "sd3", "sdxl", "sd2", "wan", "tiny-flux"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("steps", [28, 50])
def test_every_sampled_configuration_decodes_to_a_valid_plan(name, steps):
    space = SP.load(name)
    rng = random.Random(f"{name}-{steps}")
    generators = set()
    for _ in range(300):
        t = RandomTrial(rng)
        params = SP.suggest(t, space, steps, max_fresh=steps)
        assert params == t.params  # what was drawn is what decodes
        d = SP.decode(params, space, steps)
        assert isinstance(d.plan, Plan) and len(d.plan) == steps
        # runs of decided steps (A, G) are capped at run time by their max_run knob (G's by its own range)
        assert (dict(d.knobs)["max_run"] <= steps) if d.adaptive else (d.plan.max_run <= space.max_run)
        decided = "".join(c for g, c in (("adaptive", "A"), ("probe", "G")) if g in space.generators)
        assert set(d.plan.steps) <= set("F" + "".join(space.gates) + "L" + ("D" if space.reduced else "") + decided)
        generators.add(params["generator"])
    assert generators == set(space.generators)


def test_gamma_is_drawn_only_when_an_s_gate_is():
    space = SP.load("tiny-flux")
    rng = random.Random(1)
    for _ in range(200):
        t = RandomTrial(rng)
        p = SP.suggest(t, space, 28)
        has_s = "S" in (p["gate_1"], p["gate_2"], p["gate_3"])
        assert ("gamma" in p) == has_s


def test_spaced_fresh_count_respects_the_budget_cap():
    space = SP.load("tiny-flux")
    rng = random.Random(2)
    for _ in range(200):
        t = RandomTrial(rng)
        p = SP.suggest(t, space, 28, max_fresh=7)
        if p["generator"] == "spaced":
            assert p["spaced_fresh"] <= 7
            raw = SP.spaced_mask(28, p["spaced_fresh"], p["warmup"], p["tail"], p["spaced_rho"])
            nfe = SP.decode(p, space, 28).plan.nfe
            # exact unless the max_run constraint had to add fresh steps
            assert nfe == p["spaced_fresh"] if SP.cap_runs(raw, space.max_run) == raw else nfe > p["spaced_fresh"]


def test_equal_effective_plans_have_equal_keys_and_gamma_matters_only_with_s():
    space = SP.load("tiny-flux")
    p = SP.uniform_seed(space, 28, 3)
    a = SP.decode(p, space, 28)
    b = SP.decode({**p, "periodic_boundary": p["periodic_boundary"] + 3}, space, 28)  # same skips both sides
    assert a.key == b.key
    with_gamma = SP.decode({**p, "gamma": 0.4}, space, 28)
    assert with_gamma.key == a.key  # no S gate: gamma has no effect
    s1 = SP.decode({**p, "gate_1": "S", "gamma": 0.4}, space, 28)
    s2 = SP.decode({**p, "gate_1": "S", "gamma": 0.6}, space, 28)
    assert s1.key != s2.key and s1.plan == s2.plan


@pytest.mark.parametrize("name", list(SP.ZEUS_PUBLISHED))
def test_zeus_seeds_reproduce_the_rule_at_the_mapped_positions(name):
    c = SP.ZEUS_PUBLISHED[name]
    space = SP.load("tiny-flux")
    p = SP.zeus_seed(name, 28)
    assert SP.fits(p, space, 28) is None
    d, mods = SP.parse_pattern(c["pattern"])
    expected = zeus(28, acc_start=max(round(c["acc"][0] * 0.56), 3), acc_end=round(c["acc"][1] * 0.56), denominator=d,
                    modular=mods, max_interval=c["max_interval"], lagrange_term=c["lagrange"][0],
                    lagrange_step=round(c["lagrange"][1] * 0.56), lagrange_int=c["lagrange"][2],
                    caching_mode=c["mode"]).resolved(c["mode"])
    assert SP.decode(p, space, 28).plan == expected


def test_zeus_seed_at_50_steps_is_the_published_pattern():
    space = SP.load("flux")
    p = SP.zeus_seed("zeus-flux-demo", 50)
    assert SP.fits(p, space, 50) is None
    # FACTS.md §1, flux_demo; tail L skips on a flow model resolve to the E/R rule
    published = Plan("FFFFFFFFFFFEFERFERFERFERFFLLLLFFLLLLFFLLLLFFLLFFFF").resolved("reuse_interp")
    assert SP.decode(p, space, 50).plan == published


@pytest.mark.parametrize("every", [2, 3, 4])
def test_uniform_seeds_are_the_uniform_masks(every):
    space = SP.load("tiny-flux")
    p = SP.uniform_seed(space, 28, every)
    assert SP.fits(p, space, 28) is None
    assert SP.decode(p, space, 28).plan == from_mask([k % every == 0 for k in range(28)])


def test_taylor_seeds_are_taylorseer_lite_as_s_steps_and_need_an_s_gate():
    space = SP.load("flux")
    p = SP.taylor_seed(space, 50, 4)
    assert SP.fits(p, space, 50) is None
    d = SP.decode(p, space, 50)
    # three fresh steps, then one every 4th; every skip a first-order step at gamma 1
    assert d.plan.steps == "FFF" + "SSSF" * 11 + "SSS" and d.gamma == 1.0
    assert SP.decode(SP.taylor_seed(space, 50, 3, warmup=2), space, 50).plan.steps == "FF" + "SSF" * 16
    no_s = SP.from_dict({**yaml.safe_load(SP.find("flux").read_text()), "gates": ["E", "R"]})
    assert SP.taylor_seed(no_s, 50, 4) is None


def test_unet_spaces_keep_lagrange_tail_skips():
    space = SP.load("sdxl")
    p = SP.zeus_seed("zeus-sd-demo", 50)
    plan = SP.decode(p, space, 50).plan
    assert "L" in plan.steps and plan.nfe == 26  # FACTS.md §1: sd_demo NFE 26


def test_gate_letters_cycle_the_last_two_gates_and_need_two_fresh():
    assert SP.gate_letters([True, False, True] + [False] * 6, ["E", "R", "S"]) == "FRFERSRSR"
    assert SP.gate_letters([True, True] + [False] * 4, ["E", "R", "R"]) == "FFERRR"


def test_cap_runs_breaks_long_runs_with_a_fresh_step():
    mask = [True] + [False] * 9
    assert SP.cap_runs(mask, 3) == [True, False, False, False, True, False, False, False, True, False]


@pytest.mark.parametrize("fresh,warmup,tail,rho", [(5, 2, 0, 1.0), (7, 3, 1, 2.0), (10, 2, 2, 0.5), (28, 2, 0, 1.0), (3, 6, 0, 1.0)])
def test_spaced_mask_has_exactly_the_fresh_count(fresh, warmup, tail, rho):
    mask = SP.spaced_mask(28, fresh, warmup, tail, rho)
    assert sum(mask) == fresh
    assert all(mask[: min(warmup, fresh)])


def _write(tmp_path, data):
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


BASE = {"zeustune_space": 1, "family": "flux", "generators": ["spaced"], "spaced": {"fresh": [0.1, 0.5], "rho": [0.5, 2.0]}}


@pytest.mark.parametrize("change,field,fragment", [
    ({"family": "dalle"}, "family", "one of flux"),
    ({"zeustune_space": 2}, "zeustune_space", "schema version"),
    ({"generators": ["zeus", "magic"]}, "generators", "distinct names"),
    ({"generators": ["periodic"]}, "periodic", "a 'periodic:' section"),
    ({"gates": ["E", "Q"]}, "gates", "letters from E, R, S"),
    ({"warmup": [4, 2]}, "warmup", "low <= high"),
    ({"max_run": 0}, "max_run", "integer >= 1"),
    ({"spaced": {"fresh": [0.1, 1.5], "rho": [0.5, 2.0]}}, "spaced.fresh", "fractions of the step count"),
    ({"spaced": {"fresh": [0.1, 0.5], "rhoo": [1, 2]}}, "spaced.rhoo", "known keys"),
    ({"generators": ["zeus"], "zeus": {"patterns": ["3:05"]}}, "zeus.patterns[0]", "residues < d"),
    ({"colour": "red"}, "colour", "known keys"),
])
def test_bad_space_files_name_file_field_value_and_expectation(tmp_path, change, field, fragment):
    path = _write(tmp_path, {**BASE, **change})
    with pytest.raises(SP.SpaceError) as e:
        SP.load(path)
    assert e.value.field == field and e.value.source == str(path)
    assert fragment in str(e.value)


def test_unknown_space_name_lists_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="tiny-flux"):
        SP.find("no-such-space")


def test_space_hash_changes_with_content_only(tmp_path):
    a = SP.load(_write(tmp_path, BASE))
    b = SP.from_dict({**BASE, "description": "other words"}, source="x")
    c = SP.from_dict({**BASE, "max_run": 3}, source="x")
    assert a.sha256 == b.sha256 != c.sha256


# -- the forecaster, adaptive steps and per-branch plans in the space ---------------------------

NEW = {"zeustune_space": 1, "family": "flux", "generators": ["periodic", "adaptive"], "gates": ["E", "R", "S", "C"],
       "max_run": 8, "periodic": {"boundary": [0.2, 0.8], "skips": [0, 4]}, "adaptive": {"max_run": [1, 8]},
       "forecast": {"degree": [1, 4], "ridge": [0.01, 1.0], "blend": [0.0, 1.0]}, "uncond_drop": [0, 2, 3]}


def test_new_components_decode_to_valid_plans_with_their_knobs():
    space = SP.from_dict(NEW)
    rng, seen = random.Random(1), set()
    for _ in range(400):
        t = RandomTrial(rng)
        p = SP.suggest(t, space, 28)
        d = SP.decode(p, space, 28)
        knobs = dict(d.knobs)
        gates = [p[f"gate_{j}"] for j in (1, 2, 3)]
        assert ("degree" in knobs) == ("C" in gates) == ("forecast_ridge" in t.params)
        if p["generator"] == "adaptive":
            assert set(d.plan.steps) <= {"F", "A"} and d.plan.adaptive
            assert knobs["criterion"] in ("sada", "change") and knobs["gates"] == "".join(gates)
            assert knobs["max_run"] == p["adaptive_max_run"]
        else:
            assert "A" not in d.plan.steps and d.plan.max_run <= 8
        if d.uncond is not None:
            assert p["uncond_drop"] >= 2 and d.uncond.nfe < d.plan.nfe and len(d.uncond) == 28
            assert d.static_nfe == (d.plan.nfe + d.uncond.nfe) / 2
        assert SP.Decoded.from_wire(d.wire()) == d
        seen.add((p["generator"], "C" in d.plan.steps, d.uncond is not None))
    assert {("adaptive", False, False), ("periodic", True, False), ("periodic", False, True)} <= seen


def test_knobs_and_branch_plans_make_distinct_keys():
    plan = Plan("FFFCFFCFFF")
    a = SP.Decoded(plan, knobs=(("blend", 0.5), ("degree", 4), ("ridge", 0.1)))
    b = SP.Decoded(plan, knobs=(("blend", 1.0), ("degree", 4), ("ridge", 0.1)))
    c = SP.Decoded(plan, knobs=a.knobs, uncond=Plan("FFFCECCFFF"))
    assert len({a.key, b.key, c.key}) == 3


@pytest.mark.parametrize("change, field, fragment", [
    ({"uncond_drop": [1]}, "uncond_drop", "each 0 (same plan) or >= 2"),
    ({"forecast": {"blend": [0.0, 1.5]}}, "forecast.blend", "within [0, 1]"),
    ({"forecast": {"ridge": [0.0, 1.0]}}, "forecast.ridge", "0 < low"),
    ({"adaptive": {"criteria": ["magic"]}}, "adaptive.criteria", "sada, change"),
    ({"generators": ["listed"], "listed": {"lists": ["lemica-11"]}}, "listed.lists", "names from lemica-26"),
    ({"generators": ["listed"]}, "listed", "a 'listed:' section"),
])
def test_bad_new_fields_are_refused_by_name(change, field, fragment):
    with pytest.raises(SP.SpaceError) as e:
        SP.from_dict({**NEW, **change})
    assert e.value.field == field and fragment in e.value.expected


def test_the_tiny_wan_space_reaches_the_fresh_counts_of_3x_where_wan_yaml_rarely_does():
    """On the CPU a tiny-wan clip's decode is 13% of a run, so 3x allows 9 fresh steps of 50:
    wan.yaml (runs of at most 6, warm-up >= 2) drew such a plan in under 1% of its draws and its
    search stopped with "no trial reached 3x"; tiny-wan.yaml must draw them often."""
    def share_within(name, cap=9, draws=1500):
        space, rng = SP.load(name), random.Random(0)
        hits = 0
        for _ in range(draws):
            p = SP.suggest(RandomTrial(rng), space, 50, max_fresh=cap)
            hits += SP.decode(p, space, 50).plan.nfe <= cap
        return hits / draws

    assert share_within("wan") < 0.02
    assert share_within("tiny-wan") > 0.2


def test_listed_plans_are_the_published_lists_with_the_spaces_gates_drops_and_d():
    from zeustune.schedule.plans import LISTED_50

    space = SP.load("tiny-wan")
    base = {**SP.listed_seed("lemica-10"), "uncond_drop": 0, "reduced_calls": 0}
    assert SP.fits(base, space, 50) is None
    plain = SP.decode(base, space, 50)
    assert [k for k, c in enumerate(plain.plan.steps) if c == "F"] == list(LISTED_50["lemica-10"])
    assert set(plain.plan.steps) == {"F", "R"} and plain.uncond is None  # as LeMiCa ships it: zero order
    drawn = SP.decode({**base, "gate_1": "E", "gate_2": "S", "gate_3": "S", "gamma": 0.5, "uncond_drop": 3,
                       "reduced_calls": 2, "reduced_factor": 0.5}, space, 50)
    assert [c != "F" and c != "D" for c in drawn.plan.steps] == [c == "R" for c in plain.plan.steps]  # same positions
    assert drawn.plan.steps[:4] == "DDEF" and "S" in drawn.plan.steps  # D first, then the gates per run position
    assert drawn.uncond is not None and drawn.uncond.nfe < drawn.plan.nfe  # every 3rd fresh call dropped there
    assert SP.decode(base, space, 28).plan.nfe == 6  # resampled: the fresh share kept
