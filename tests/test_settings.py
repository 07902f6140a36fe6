"""Sampling at the user's settings: flags, a model folder's zeustune.yaml, named errors, what a
schedule records of the settings and the refusal to apply it at others."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from zeustune import cli
from zeustune.models import settings
from zeustune.models.registry import TINY_FLUX_DIR, ModelError, load, pipeline_kwargs, resolve
from zeustune.schedule.format import Schedule
from zeustune.search.study import study_name

pytestmark = pytest.mark.skipif(not (TINY_FLUX_DIR / "model_index.json").is_file(), reason="tiny-flux weights not built")


def prompts_file(path, n):
    path.write_text("# my prompts\n" + "".join(f"a red circle at the top left, take {i}\n" for i in range(n)))
    return path


@pytest.fixture
def folder(tmp_path):
    """A FLUX-architecture folder "trained elsewhere" with its own defaults: 8 text tokens, 32x32,
    true CFG 5, float32, 6 steps, its own prompt files."""
    d = tmp_path / "my-flux"
    shutil.copytree(TINY_FLUX_DIR, d)
    (d / "prompts").mkdir()
    prompts_file(d / "prompts" / "calib.txt", 3)
    prompts_file(d / "prompts" / "heldout.txt", 2)
    (d / "zeustune.yaml").write_text(yaml.safe_dump({
        "steps": 6, "height": 32, "width": 32, "guidance": {"mode": "true_cfg", "scale": 5.0}, "negative_prompt": "noise",
        "dtype": "float32", "prompts": {"calib": "prompts/calib.txt", "heldout": "prompts/heldout.txt"},
        "call_kwargs": {"max_sequence_length": 8, "guidance_scale": 1.0}}))
    return d


def test_a_folder_carries_its_own_defaults_and_flags_override_them(folder):
    spec = resolve(folder)
    assert (spec.steps, spec.height, spec.width, spec.dtype) == (6, 32, 32, "float32")
    kw = pipeline_kwargs(spec, "x", seed=0)
    assert (kw["true_cfg_scale"], kw["negative_prompt"], kw["max_sequence_length"]) == (5.0, "noise", 8)
    assert spec.calib_prompts.endswith("calib.txt") and spec.heldout_prompts.endswith("heldout.txt")
    args = cli.build_parser().parse_args(["search", "--model", str(folder), "--steps", "9", "--true-cfg", "3",
                                          "--width", "48"])
    over = settings.spec_from_args(args)
    assert (over.steps, over.height, over.width, over.guidance) == (9, 32, 48, {"mode": "true_cfg", "scale": 3.0})
    assert pipeline_kwargs(over, "x", seed=0)["negative_prompt"] == "noise"  # kept from the folder


def test_generate_samples_a_folder_at_its_own_settings(folder, tmp_path, capsys):
    from PIL import Image

    assert cli.main(["generate", "--model", str(folder), "--prompt", "a blue square", "--out", str(tmp_path / "g")]) == 0
    (png,) = (tmp_path / "g").glob("*.png")
    assert Image.open(png).size == (32, 32)


@pytest.mark.parametrize("content, field", [
    ({"stepz": 5}, "stepz"),
    ({"steps": 0}, "steps"),
    ({"dtype": "float8"}, "dtype"),
    ({"guidance": {"mode": "cfg", "scale": 3}}, "guidance.mode"),
    ({"prompts": {"calib": "missing.txt"}}, "prompts.calib"),
])
def test_a_bad_folder_file_names_the_file_and_the_field(folder, content, field):
    (folder / "zeustune.yaml").write_text(yaml.safe_dump(content))
    with pytest.raises(ModelError) as e:
        resolve(folder)
    assert e.value.source == str(folder / "zeustune.yaml") and e.value.field == field


@pytest.mark.parametrize("argv, field", [
    (["--steps", "0"], "--steps"),
    (["--dtype", "fp8"], "--dtype"),
    (["--frames", "9"], "--frames"),
    (["--negative-prompt", "blur", "--true-cfg", "1"], "--negative-prompt"),
    (["--guidance", "-1"], "--guidance"),
    (["--prompts", "/nonexistent/prompts.txt"], "file"),
])
def test_bad_flags_get_named_errors(argv, field):
    args = cli.build_parser().parse_args(["search", "--model", "tiny-flux", *argv])
    with pytest.raises(ValueError) as e:
        settings.spec_from_args(args)
    assert e.value.field == field


def test_true_cfg_is_flux_only():
    with pytest.raises(ModelError, match="--guidance"):
        settings.apply(resolve("sdxl"), true_cfg=3.0)
    assert settings.apply(resolve("sdxl"), guidance=7.0).guidance == {"mode": "cfg", "scale": 7.0}
    assert settings.apply(resolve("wan2.1-1.3b"), guidance=1.0).guidance == {"mode": "none", "scale": 1.0}


def test_flux_true_cfg_and_distilled_guidance_both_reach_the_pipeline():
    spec = settings.apply(resolve("flux"), true_cfg=4.0, negative_prompt="blurry")
    kw = pipeline_kwargs(spec, "x", seed=0)
    assert (kw["true_cfg_scale"], kw["guidance_scale"], kw["negative_prompt"]) == (4.0, 3.5, "blurry")
    tiny = settings.apply(resolve("tiny-flux"), true_cfg=6.0)  # the registry's call_kwargs must not win over the flag
    assert pipeline_kwargs(tiny, "x", seed=0)["true_cfg_scale"] == 6.0
    off = settings.apply(resolve("tiny-flux"), true_cfg=1.0)
    assert off.guidance["mode"] == "distilled" and "negative_prompt" not in pipeline_kwargs(off, "x", seed=0)


def test_a_size_the_vae_and_patch_cannot_take_is_refused_at_load():
    with pytest.raises(ModelError) as e:
        load(settings.apply(resolve("tiny-flux"), height=60), progress=False)
    assert e.value.field == "height" and "multiple of 8" in e.value.expected and "56 or 64" in e.value.expected


def test_no_flags_leave_the_registry_spec_unchanged():
    args = cli.build_parser().parse_args(["search", "--model", "tiny-flux"])
    assert settings.spec_from_args(args) == resolve("tiny-flux")


def test_the_study_name_and_the_schedule_record_every_setting():
    base = resolve("tiny-flux")
    names = set()
    for spec in (base, settings.apply(base, steps=20), settings.apply(base, height=48, width=48),
                 settings.apply(base, true_cfg=5.0), settings.apply(base, negative_prompt="blur"),
                 settings.apply(base, dtype="bfloat16")):
        names.add(study_name("tiny-flux", spec.steps, spec.height, spec.width, 3.0, "gmsd", "0" * 64,
                             settings.settings_digest(spec), spec.loras))
    assert len(names) == 6
    ident = settings.identity(settings.apply(base, true_cfg=5.0, negative_prompt="blur"))
    assert ident["dtype"] == "float32" and ident["call"]["true_cfg_scale"] == 5.0 and ident["call"]["negative_prompt"] == "blur"


def test_a_schedule_tuned_at_other_settings_is_refused_with_the_reason(tmp_path, capsys):
    tuned = Schedule.from_preset("tiny-flux/tuned-3x")  # 64x64, true CFG 4
    assert settings.mismatches(tuned, resolve("tiny-flux")) == []
    diff = settings.mismatches(tuned, settings.apply(resolve("tiny-flux"), height=48, true_cfg=5.0))
    assert any(d.startswith("sampler.height: tuned 64, here 48") for d in diff)
    assert any(d.startswith("sampler.guidance") for d in diff)
    argv = ["generate", "--model", "tiny-flux", "--schedule", "tiny-flux/tuned-3x", "--prompt", "a red circle",
            "--height", "48", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "sampler.height: tuned 64, here 48" in capsys.readouterr().err
    assert cli.main(argv + ["--resample"]) == 0
    assert "tuned at other settings" in capsys.readouterr().err


def test_a_prompts_file_shorter_than_calib_is_a_named_error(tmp_path):
    from zeustune.search.driver import SearchConfig, run

    spec = settings.apply(resolve("tiny-flux"), prompts=str(prompts_file(tmp_path / "p.txt", 3)))
    with pytest.raises(ValueError, match=r"--calib: got 8, but .*p\.txt has 3 prompts"):
        run(SearchConfig(model=spec, calib=8, storage=f"sqlite:///{tmp_path / 's.db'}", progress=False))


def test_the_same_settings_sample_the_same_images():
    """--steps through the spec, not through a call override: the references key on it."""
    spec = settings.apply(resolve("tiny-flux"), steps=4)
    pipe, spec = load(spec, progress=False)
    from zeustune.quality.evaluate import sample

    a = sample(pipe, spec, "a red circle", 0)
    b = sample(pipe, spec, "a red circle", 0, num_inference_steps=4)
    assert torch.equal(a, b)
