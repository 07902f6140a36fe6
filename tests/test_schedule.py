"""Specification of zeustune.schedule.format: the versioned YAML schedule, its validation and its presets."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from pathlib import Path

import pytest
import yaml

import zeustune
from zeustune.schedule.plans import Plan
from zeustune.schedule.format import Cfg, Guidance, Model, Predictor, Sampler, Schedule, ScheduleError, load

#: The rebuttal-default ZEUS pattern (FACTS.md §1), 50 steps, NFE 24.
PLAN = "FFFFFFFFFFFEFERFERFERFERFFLLLLLFLLLLLFLLLLLFLLFFFF"
SIGMAS = tuple(round(1.0 - k / 50, 4) for k in range(50))


def make_schedule(tag: str = "flux-dev-50-r3", **changes) -> Schedule:
    """A schedule that uses every part of the format."""
    fields = dict(
        tag=tag,
        model=Model(family="flux", id="black-forest-labs/FLUX.1-dev", pipeline="FluxPipeline"),
        sampler=Sampler(
            scheduler="FlowMatchEulerDiscreteScheduler",
            steps=50,
            height=1024,
            width=1024,
            guidance=Guidance(mode="distilled", scale=3.5),
            sigmas=SIGMAS,
        ),
        plan=Plan(PLAN),
        predictor=Predictor(caching="reuse_all", gamma=0.8, time="sigma", lagrange_term=4, lagrange_int=4),
        cfg=Cfg(branches="shared"),
        description="rebuttal default, r=3, 20/70/10",
        metrics={"lpips": 0.051, "psnr": 29.4, "speedup": {"nfe_bound": 2.08, "wall": 1.97}},
        provenance={"search": "optuna-tpe", "trials": 200, "seeds": [0, 1, 2]},
    )
    fields.update(changes)
    return Schedule(**fields)


def valid_doc() -> dict:
    """A minimal valid document, as a user would write it."""
    return {
        "zeustune_schedule": 1,
        "tag": "flux-dev-50-r3",
        "model": {"family": "flux"},
        "sampler": {"scheduler": "FlowMatchEulerDiscreteScheduler", "steps": 50},
        "plan": PLAN,
    }


_DELETE = object()


def edited(doc: dict, edits: dict) -> dict:
    """A deep copy of doc with dotted keys set (or removed with _DELETE)."""
    doc = copy.deepcopy(doc)
    for dotted, value in edits.items():
        *parents, key = dotted.split(".")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        if value is _DELETE:
            node.pop(key, None)
        else:
            node[key] = value
    return doc


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def assert_schedule_error(err: ScheduleError, source, field: str, value, expected: str) -> None:
    """Project standard: error names the file, the field, the bad value and what was expected."""
    assert err.source == str(source)
    assert err.field == field
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(err.value)
    else:
        assert err.value == value and type(err.value) is type(value)
    assert expected in err.expected
    msg = str(err)
    assert msg.startswith(f"{source}: {field}: got "), msg
    assert expected in msg


# --------------------------------------------------------------------------------------------
# 1. Round trip
# --------------------------------------------------------------------------------------------


def test_saved_schedule_loads_back_equal(tmp_path):
    schedule = make_schedule()
    path = schedule.save(tmp_path / "flux" / "s.yaml")  # creates missing directories
    assert path == tmp_path / "flux" / "s.yaml"
    assert Schedule.load(path) == schedule


def test_round_trip_keeps_metrics_provenance_and_sigmas(tmp_path):
    loaded = Schedule.load(make_schedule().save(tmp_path / "s.yaml"))
    assert loaded.metrics == {"lpips": 0.051, "psnr": 29.4, "speedup": {"nfe_bound": 2.08, "wall": 1.97}}
    assert loaded.provenance == {"search": "optuna-tpe", "trials": 200, "seeds": [0, 1, 2]}
    assert loaded.sampler.sigmas == SIGMAS
    assert loaded.sampler.guidance == Guidance(mode="distilled", scale=3.5)
    assert (loaded.nfe, loaded.steps) == (24, 50)


def test_round_trip_of_a_minimal_schedule_fills_defaults(tmp_path):
    minimal = Schedule.from_dict(valid_doc())
    assert minimal.predictor == Predictor()
    assert minimal.cfg == Cfg(branches="separate")
    assert minimal.sampler.guidance == Guidance(mode="none", scale=None)
    assert (minimal.metrics, minimal.provenance, minimal.description) == ({}, {}, "")
    assert Schedule.load(minimal.save(tmp_path / "m.yaml")) == minimal


def test_to_dict_from_dict_round_trip():
    schedule = make_schedule()
    assert Schedule.from_dict(schedule.to_dict()) == schedule


def test_saved_yaml_starts_with_the_schema_version(tmp_path):
    path = make_schedule().save(tmp_path / "s.yaml")
    assert path.read_text().splitlines()[0] == "zeustune_schedule: 1"


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "s.yaml"
    make_schedule().save(path)
    make_schedule(tag="second").save(path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]
    assert Schedule.load(path).tag == "second"


def test_failed_save_keeps_the_previous_file_intact(tmp_path):
    path = make_schedule().save(tmp_path / "s.yaml")
    before = path.read_text()
    with pytest.raises(yaml.YAMLError):
        make_schedule(metrics={"not_yaml": object()}).save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.yaml"]


# --------------------------------------------------------------------------------------------
# 2. Validation errors of Schedule.load / from_dict
# --------------------------------------------------------------------------------------------


def test_load_of_a_missing_file_names_the_file(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ScheduleError) as excinfo:
        Schedule.load(path)
    assert_schedule_error(excinfo.value, path, "file", str(path), "an existing schedule file")


def test_load_of_a_directory_is_refused_as_not_a_file(tmp_path):
    with pytest.raises(ScheduleError) as excinfo:
        Schedule.load(tmp_path)
    assert_schedule_error(excinfo.value, tmp_path, "file", str(tmp_path), "an existing schedule file")


def test_load_of_invalid_yaml_reports_the_parser_message(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("zeustune_schedule: 1\ntag: [unclosed\n")
    with pytest.raises(ScheduleError) as excinfo:
        Schedule.load(path)
    err = excinfo.value
    assert (err.source, err.field, err.expected) == (str(path), "yaml", "valid YAML")
    assert isinstance(err.value, str) and err.value  # the first line of the parser's message
    assert str(err).startswith(f"{path}: yaml: got ")


@pytest.mark.parametrize(
    "text, value", [("- a\n- b\n", ["a", "b"]), ("just a string\n", "just a string"), ("", None)],
    ids=["list", "scalar", "empty"],
)
def test_load_of_a_document_that_is_not_a_mapping(tmp_path, text, value):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ScheduleError) as excinfo:
        Schedule.load(path)
    assert_schedule_error(excinfo.value, path, "document", value, "a mapping")


#: (edits to the valid document, field, bad value, fragment of what is expected)
INVALID = {
    "schema version 7": ({"zeustune_schedule": 7}, "zeustune_schedule", 7, "1 or 2 or 3 or 4 or 5 or 6 (the schema versions"),
    "schema version as string": ({"zeustune_schedule": "1"}, "zeustune_schedule", "1",
                                 "1 or 2 or 3 or 4 or 5 or 6 (the schema versions"),
    "reduced_axes in a version 5 file": ({"zeustune_schedule": 5, "predictor": {"reduced_axes": "frames"}},
                                         "predictor.reduced_axes", "frames", "zeustune_schedule: 6 or later for this field"),
    "reduced_axes unknown": ({"zeustune_schedule": 6, "predictor": {"reduced_axes": "time"}}, "predictor.reduced_axes",
                             "time", "one of side, frames, both"),
    "forecast knob in a version 1 file": ({"predictor": {"degree": 3}}, "predictor.degree", 3,
                                          "zeustune_schedule: 3 or later for this field"),
    "adaptive letter in a version 1 file": ({"plan": "FFA" + "F" * 47}, "plan", "FFA" + "F" * 47,
                                            "zeustune_schedule: 3 or later for the letter A"),
    "unknown criterion": ({"zeustune_schedule": 3, "predictor": {"criterion": "magic"}}, "predictor.criterion", "magic",
                          "one of sada, change"),
    "bad gates": ({"zeustune_schedule": 3, "predictor": {"gates": "EL"}}, "predictor.gates", "EL",
                  "1 to 3 letters of E, R, S, C"),
    "negative ridge": ({"zeustune_schedule": 3, "predictor": {"ridge": -0.1}}, "predictor.ridge", -0.1, "a number >= 0"),
    "blend above 1": ({"zeustune_schedule": 3, "predictor": {"blend": 1.5}}, "predictor.blend", 1.5, "a number in [0, 1]"),
    "loras in a version 1 file": ({"model": {"family": "flux", "loras": [{"name": "x", "sha256": "a" * 64}]}},
                                  "model.loras", [{"name": "x", "sha256": "a" * 64}], "zeustune_schedule: 2"),
    "lora sha256 not hex": ({"zeustune_schedule": 2, "model": {"family": "flux", "loras": [{"name": "x", "sha256": "xyz"}]}},
                            "model.loras[0].sha256", "xyz", "64 lowercase hex digits"),
    "sampler.call not scalar": ({"zeustune_schedule": 2, "sampler": {"scheduler": "FlowMatchEulerDiscreteScheduler",
                                 "steps": 50, "call": {"max_sequence_length": [1]}}}, "sampler.call.max_sequence_length",
                                [1], "a string, number or boolean"),
    "schema version missing": ({"zeustune_schedule": _DELETE}, "zeustune_schedule", None, "this field is required"),
    "typo plann": ({"plan": _DELETE, "plann": PLAN}, "plann", "plann", "one of the keys zeustune_schedule, tag,"),
    "unknown top-level key": ({"steps": 50}, "steps", "steps", "one of the keys"),
    "tag missing": ({"tag": _DELETE}, "tag", None, "this field is required"),
    "model missing": ({"model": _DELETE}, "model", None, "this field is required"),
    "sampler missing": ({"sampler": _DELETE}, "sampler", None, "this field is required"),
    "plan missing": ({"plan": _DELETE}, "plan", None, "this field is required"),
    "tag uppercase": ({"tag": "Flux-Dev"}, "tag", "Flux-Dev", "lowercase letters, digits"),
    "tag with spaces": ({"tag": "flux dev"}, "tag", "flux dev", "lowercase letters, digits"),
    "tag too long": ({"tag": "a" * 65}, "tag", "a" * 65, "(at most 64)"),
    "tag not a string": ({"tag": 42}, "tag", 42, "a string"),
    "description not a string": ({"description": ["x"]}, "description", ["x"], "a string"),
    "model not a mapping": ({"model": "flux"}, "model", "flux", "a mapping"),
    "model.family unknown": ({"model.family": "fluxx"}, "model.family", "fluxx", "one of flux, sd3, sdxl, sd, wan"),
    "model.family missing": ({"model.family": _DELETE}, "model.family", None, "this field is required"),
    "model.familly typo": ({"model.familly": "flux"}, "model.familly", "familly", "one of the keys family, id"),
    "sampler.steps zero": ({"sampler.steps": 0}, "sampler.steps", 0, "an integer >= 1"),
    "sampler.steps negative": ({"sampler.steps": -50}, "sampler.steps", -50, "an integer >= 1"),
    "sampler.steps string": ({"sampler.steps": "50"}, "sampler.steps", "50", "an integer >= 1"),
    "sampler.steps float": ({"sampler.steps": 50.0}, "sampler.steps", 50.0, "an integer >= 1"),
    "sampler.steps bool": ({"sampler.steps": True}, "sampler.steps", True, "an integer >= 1"),
    "sampler.steps missing": ({"sampler.steps": _DELETE}, "sampler.steps", None, "this field is required"),
    "sampler.scheduler missing": ({"sampler.scheduler": _DELETE}, "sampler.scheduler", None, "required"),
    "sampler.height zero": ({"sampler.height": 0}, "sampler.height", 0, "an integer >= 1"),
    "sampler.stepz typo": ({"sampler.steps": _DELETE, "sampler.stepz": 50}, "sampler.stepz", "stepz",
                           "one of the keys scheduler, steps,"),
    "sampler.guidance.mode unknown": ({"sampler.guidance.mode": "classifier_free"}, "sampler.guidance.mode",
                                      "classifier_free", "one of none, distilled, cfg, true_cfg"),
    "sampler.guidance.scale negative": ({"sampler.guidance.scale": -1.0}, "sampler.guidance.scale", -1.0,
                                        "a positive finite number"),
    "sampler.guidance not a mapping": ({"sampler.guidance": "cfg"}, "sampler.guidance", "cfg", "a mapping"),
    "sampler.sigmas too short": ({"sampler.sigmas": [1.0, 0.5]}, "sampler.sigmas", [1.0, 0.5],
                                 "a list of 50 finite numbers, one per step"),
    "sampler.sigmas not numbers": ({"sampler.sigmas": ["x"] * 50}, "sampler.sigmas", ["x"] * 50,
                                   "a list of 50 finite numbers"),
    "sampler.sigmas not a list": ({"sampler.sigmas": 1.0}, "sampler.sigmas", 1.0, "a list of 50 finite numbers"),
    "plan bad letter": ({"plan": PLAN[:20] + "X" + PLAN[21:]}, "plan", PLAN[:20] + "X" + PLAN[21:],
                        "only the letters FERSLCADPG (found X)"),
    "plan not a string": ({"plan": 123}, "plan", 123, "a string of step letters"),
    "plan too short": ({"plan": PLAN[:-1]}, "plan", PLAN[:-1], "50 letters (sampler.steps), not 49"),
    "plan too long": ({"plan": PLAN + "F"}, "plan", PLAN + "F", "50 letters (sampler.steps), not 51"),
    "plan starts with E": ({"plan": "E" + PLAN[1:]}, "plan", "E" + PLAN[1:], "plan[0]: got 'E'"),
    "plan E after one F": ({"plan": "FE" + PLAN[2:]}, "plan", "FE" + PLAN[2:], "plan[1]: got 'E'"),
    "predictor.caching unknown": ({"predictor.caching": "reuse"}, "predictor.caching", "reuse",
                                  "one of reuse_interp, reuse_all, interp_all"),
    "predictor.gamma zero": ({"predictor.gamma": 0}, "predictor.gamma", 0, "a positive finite number"),
    "predictor.gamma negative": ({"predictor.gamma": -0.5}, "predictor.gamma", -0.5, "a positive finite number"),
    "predictor.gamma string": ({"predictor.gamma": "1.0"}, "predictor.gamma", "1.0", "a positive finite number"),
    "predictor.gamma bool": ({"predictor.gamma": True}, "predictor.gamma", True, "a positive finite number"),
    "predictor.gamma nan": ({"predictor.gamma": float("nan")}, "predictor.gamma", float("nan"),
                            "a positive finite number"),
    "predictor.gamma inf": ({"predictor.gamma": float("inf")}, "predictor.gamma", float("inf"),
                            "a positive finite number"),
    "predictor.time unknown": ({"predictor.time": "timestep"}, "predictor.time", "timestep", "one of step, sigma"),
    "predictor.lagrange_term zero": ({"predictor.lagrange_term": 0}, "predictor.lagrange_term", 0,
                                     "an integer >= 1"),
    "predictor.lagrange_int zero": ({"predictor.lagrange_int": 0}, "predictor.lagrange_int", 0, "an integer >= 1"),
    "predictor.gama typo": ({"predictor.gama": 1.0}, "predictor.gama", "gama", "one of the keys caching, gamma,"),
    "cfg.branches unknown": ({"cfg.branches": "both"}, "cfg.branches", "both", "one of separate, shared"),
    "metrics not a mapping": ({"metrics": [0.05, 29.4]}, "metrics", [0.05, 29.4], "a mapping"),
    "provenance not a mapping": ({"provenance": "optuna"}, "provenance", "optuna", "a mapping"),
    "predictor a number": ({"predictor": 0}, "predictor", 0, "a mapping"),
    "cfg an empty string": ({"cfg": ""}, "cfg", "", "a mapping"),
    "guidance an empty list": ({"sampler.guidance": []}, "sampler.guidance", [], "a mapping"),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_load_rejects_invalid_field_naming_file_field_value_and_expectation(tmp_path, name):
    edits, field, value, expected = INVALID[name]
    path = write_yaml(tmp_path / "s.yaml", edited(valid_doc(), edits))
    with pytest.raises(ScheduleError) as excinfo:
        Schedule.load(path)
    assert_schedule_error(excinfo.value, path, field, value, expected)


@pytest.mark.parametrize("name", ["model.family unknown", "sampler.stepz typo", "metrics not a mapping"])
def test_from_dict_reports_errors_against_the_given_source(name):
    edits, field, value, expected = INVALID[name]
    with pytest.raises(ScheduleError) as excinfo:
        Schedule.from_dict(edited(valid_doc(), edits), source="inline")
    assert_schedule_error(excinfo.value, "inline", field, value, expected)
    with pytest.raises(ScheduleError, match=r"^<schedule>: "):
        Schedule.from_dict(edited(valid_doc(), edits))


def test_valid_document_loads(tmp_path):
    # guards the table above: each invalid case differs from a document that loads
    schedule = Schedule.load(write_yaml(tmp_path / "s.yaml", valid_doc()))
    assert (schedule.tag, schedule.model.family, schedule.nfe) == ("flux-dev-50-r3", "flux", 24)


@pytest.mark.parametrize("version", [True, 1.0])
def test_schema_version_must_be_the_integer_one(tmp_path, version):
    path = write_yaml(tmp_path / "s.yaml", edited(valid_doc(), {"zeustune_schedule": version}))
    with pytest.raises(ScheduleError) as excinfo:
        Schedule.load(path)
    assert excinfo.value.field == "zeustune_schedule"


def test_scheduleerror_is_a_valueerror():
    assert issubclass(ScheduleError, ValueError)


# --------------------------------------------------------------------------------------------
# 3. Presets
# --------------------------------------------------------------------------------------------


@pytest.fixture
def preset_dir(tmp_path, monkeypatch):
    """An empty preset directory in $ZEUSTUNE_SCHEDULES (names below are unique to these tests)."""
    d = tmp_path / "presets"
    d.mkdir()
    monkeypatch.setenv("ZEUSTUNE_SCHEDULES", str(d))
    return d


def add_preset(directory: Path, family: str, stem: str, tag: str | None = None) -> Schedule:
    schedule = make_schedule(tag=tag or stem)
    schedule.save(directory / family / f"{stem}.yaml")
    return schedule


@pytest.mark.parametrize("name", ["zt-spec-alpha", "flux/zt-spec-alpha"])
def test_from_preset_finds_a_preset_by_name_or_family_slash_name(preset_dir, name):
    expected = add_preset(preset_dir, "flux", "zt-spec-alpha")
    assert Schedule.from_preset(name) == expected
    assert zeustune.load_preset(name) == expected


def test_from_preset_of_an_unknown_name_lists_the_available_presets(preset_dir):
    add_preset(preset_dir, "flux", "zt-spec-alpha")
    add_preset(preset_dir, "sdxl", "zt-spec-beta")
    with pytest.raises(ScheduleError) as excinfo:
        Schedule.from_preset("zt-spec-gamma")
    err = excinfo.value
    assert (err.source, err.field, err.value) == ("presets", "name", "zt-spec-gamma")
    assert "flux/zt-spec-alpha" in err.expected and "sdxl/zt-spec-beta" in err.expected
    assert "zt-spec-gamma" in str(err) and "flux/zt-spec-alpha" in str(err)


def test_from_preset_of_an_ambiguous_name_asks_to_qualify_it(preset_dir):
    add_preset(preset_dir, "flux", "zt-spec-dup")
    sdxl = add_preset(preset_dir, "sdxl", "zt-spec-dup", tag="zt-spec-dup-xl")
    with pytest.raises(ScheduleError) as excinfo:
        Schedule.from_preset("zt-spec-dup")
    err = excinfo.value
    assert (err.field, err.value) == ("name", "zt-spec-dup")
    assert "qualify it with its family" in str(err)
    assert str(preset_dir / "flux" / "zt-spec-dup.yaml") in str(err)
    assert str(preset_dir / "sdxl" / "zt-spec-dup.yaml") in str(err)
    assert Schedule.from_preset("sdxl/zt-spec-dup") == sdxl


def test_an_ambiguous_name_resolves_to_the_one_of_the_pipelines_family(preset_dir):
    flux = add_preset(preset_dir, "flux", "zt-spec-two")
    xl = make_schedule(tag="zt-spec-two", model=Model(family="sdxl", id="stabilityai/stable-diffusion-xl-base-1.0",
                                                        pipeline="StableDiffusionXLPipeline"))
    xl.save(preset_dir / "sdxl" / "zt-spec-two.yaml")
    assert Schedule.from_preset("zt-spec-two", family="sdxl") == xl
    assert zeustune.load("zt-spec-two", family="flux") == flux  # as enable() asks, with the pipeline's family
    with pytest.raises(ScheduleError, match="qualify it with its family"):
        Schedule.from_preset("zt-spec-two", family="wan")  # neither is: still ambiguous
    with pytest.raises(ScheduleError, match="qualify it with its family"):
        Schedule.from_preset("zt-spec-two")


def test_first_preset_directory_wins(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    winner = add_preset(first, "flux", "zt-spec-same", tag="from-first")
    add_preset(second, "flux", "zt-spec-same", tag="from-second")
    monkeypatch.setenv("ZEUSTUNE_SCHEDULES", f"{first}{os.pathsep}{second}")
    assert Schedule.from_preset("zt-spec-same") == winner
    # a later directory's preset of the pipeline's family wins over a first one of another family
    xl = make_schedule(tag="from-second-xl", model=Model(family="sdxl", id="stabilityai/stable-diffusion-xl-base-1.0",
                                                           pipeline="StableDiffusionXLPipeline"))
    xl.save(second / "sdxl" / "zt-spec-same.yaml")
    assert Schedule.from_preset("zt-spec-same", family="sdxl") == xl
    assert Schedule.from_preset("zt-spec-same", family="flux") == winner


def test_from_preset_finds_a_preset_by_its_tag(preset_dir):
    expected = add_preset(preset_dir, "flux", "zt-spec-file", tag="zt-spec-tag")
    assert Schedule.from_preset("zt-spec-tag") == expected


def test_load_accepts_a_schedule_a_path_or_a_preset_name(preset_dir, tmp_path):
    schedule = add_preset(preset_dir, "flux", "zt-spec-alpha")
    path = preset_dir / "flux" / "zt-spec-alpha.yaml"
    assert load(schedule) is schedule
    assert load(path) == schedule
    assert load(str(path)) == schedule
    assert load("zt-spec-alpha") == schedule
    assert load("flux/zt-spec-alpha") == schedule
    assert zeustune.load is load


def test_load_reads_an_existing_file_without_a_yaml_suffix(tmp_path):
    schedule = make_schedule()
    path = schedule.save(tmp_path / "schedule.txt")
    assert load(path) == schedule


def test_load_of_a_missing_yaml_path_reports_the_file_not_a_preset(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ScheduleError) as excinfo:
        load(path)
    assert (excinfo.value.field, excinfo.value.value) == ("file", str(path))


# --------------------------------------------------------------------------------------------
# 4. Long plans wrapped over lines
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plan_block",
    [
        "plan: >-\n  " + "\n  ".join([PLAN[:20], PLAN[20:40], PLAN[40:]]) + "\n",  # folded
        "plan: |\n  " + "\n  ".join([PLAN[:20], PLAN[20:40], PLAN[40:]]) + "\n",  # literal
        "plan:\n  " + "\n  ".join([PLAN[:20], PLAN[20:40], PLAN[40:]]) + "\n",  # plain, continued
        "plan: " + " ".join(PLAN[k : k + 10] for k in range(0, 50, 10)) + "\n",  # spaced in groups
    ],
    ids=["folded", "literal", "plain", "grouped"],
)
def test_plan_may_be_wrapped_over_lines(tmp_path, plan_block):
    doc = valid_doc()
    del doc["plan"]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False) + plan_block)
    schedule = Schedule.load(path)
    assert schedule.plan == Plan(PLAN)
    assert len(schedule.plan) == schedule.sampler.steps == 50


# --------------------------------------------------------------------------------------------
# Version 2: the settings a schedule was tuned at
# --------------------------------------------------------------------------------------------


def test_version_2_fields_round_trip_and_plain_schedules_stay_version_1(tmp_path):
    from zeustune.schedule.format import LoraRef

    plain = Schedule.from_dict(valid_doc())
    assert plain.save(tmp_path / "plain.yaml").read_text().splitlines()[0] == "zeustune_schedule: 1"
    sampler = dataclasses.replace(plain.sampler, dtype="bfloat16", call={"max_sequence_length": 8, "negative_prompt": "blur"})
    model = dataclasses.replace(plain.model, loras=(LoraRef("style", "ab" * 32, 0.5),))
    rich = dataclasses.replace(plain, sampler=sampler, model=model)
    path = rich.save(tmp_path / "rich.yaml")
    assert path.read_text().splitlines()[0] == "zeustune_schedule: 2"
    again = Schedule.load(path)
    assert again == rich
    assert again.model.loras[0].adapter == "style-abababab"
