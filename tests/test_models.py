"""Specification of zeustune.models.registry (registry, resolving, offline loading, pipe(...) arguments)
and zeustune.models.prompts (prompt collections and files).

No weights can be downloaded here, so loading is tested on tiny random pipelines saved to disk,
both as local directories and planted in a temporary Hugging Face cache; every test that could
reach the hub runs with the network refused.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch

from zeustune.models import registry as models
from zeustune.models import tiny
from zeustune.models.registry import MODELS, ModelError, ModelNotFoundError, load, pipeline_kwargs, resolve
from zeustune.models.prompts import PROMPTS_DIR, PromptsError, PromptsNotFoundError, load_prompts, prompts_sha256, read_prompt_file
from zeustune.runtime import families
from zeustune.schedule.format import BUILTIN_SCHEDULES, GUIDANCE_MODES

FAMILIES = [f.name for f in families.FAMILIES]
REQUIRED = ("tiny-flux", "flux", "flux-schnell", "sd3.5", "sdxl", "wan2.1-1.3b")


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Offline for huggingface_hub, and any socket connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(models.ALLOW_DOWNLOAD_ENV, raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch, no_network):
    """An empty Hugging Face cache in place of the user's."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """family -> (TinyPipeline, directory it was saved to with save_pretrained)."""
    root = tmp_path_factory.mktemp("saved")
    out = {}
    for family in FAMILIES:
        tp = tiny.build(family)
        tp.pipe.save_pretrained(root / family)
        out[family] = (tp, root / family)
    return out


def index_of(saved, family) -> dict:
    return {"model_index.json": (saved[family][1] / "model_index.json").read_text()}


def plant_in_cache(cache, repo_id: str, src=None, files=None):
    """Lay out a hub cache entry as huggingface_hub does: refs/main -> snapshots/<commit>/."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    if src is not None:
        shutil.copytree(src, snap)
    else:
        snap.mkdir(parents=True)
    for name, text in (files or {}).items():
        (snap / name).write_text(text)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snap


def ref_latents(tp, steps=3, seed=0):
    return tp(steps, seed=seed)


def assert_same_model_and_run(pipe, tp, out, expected):
    """The loaded pipeline holds bit-identical weights, and samples what the built one does.
    Weights read back from safetensors sit at other memory alignments, so CPU kernels may take
    other vectorised paths and round differently: ~1e-6 after 3 steps on unit-scale latents
    here (float32 eps 1.2e-7), hence 1e-5; a wrong weight or setting moves them by far more."""
    for name, module in tp.pipe.components.items():
        if isinstance(module, torch.nn.Module):
            loaded = pipe.components[name].state_dict()
            assert all(torch.equal(v, loaded[k]) for k, v in module.state_dict().items()), name
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_registry_entry_is_consistent(name):
    spec = MODELS[name]
    assert spec.name == name
    assert spec.family in FAMILIES
    assert spec.pipeline == families.by_name(spec.family).pipeline
    for value in (spec.steps, spec.height, spec.width):
        assert isinstance(value, int) and value > 0
    assert (spec.frames is not None) == (spec.family == "wan")
    if spec.frames is not None:
        assert spec.frames > 0 and (spec.frames - 1) % 4 == 0  # Wan's VAE: 4k+1 frames
    assert spec.guidance["mode"] in GUIDANCE_MODES
    assert spec.guidance["mode"] in models.FAMILY_GUIDANCE[spec.family]
    assert spec.dtype in ("bfloat16", "float16", "float32")
    assert spec.height % 16 == 0 and spec.width % 16 == 0
    if spec.prompts != "tiny-flux":  # tiny-flux's prompts are written with its training script
        assert (PROMPTS_DIR / spec.prompts / "calib.txt").is_file()
    if not spec.local:
        assert models.HUB_ID.match(spec.source)


def test_registry_has_the_required_models_with_their_settings():
    assert set(REQUIRED) <= set(MODELS)
    flux, schnell, sd35, sdxl, wan = (MODELS[n] for n in REQUIRED[1:])
    assert (flux.source, flux.steps, flux.height, flux.width, flux.dtype) == (
        "black-forest-labs/FLUX.1-dev", 28, 1024, 1024, "bfloat16")
    assert flux.guidance == {"mode": "distilled", "scale": 3.5}
    assert (schnell.source, schnell.steps, schnell.guidance["mode"]) == ("black-forest-labs/FLUX.1-schnell", 4, "none")
    assert schnell.call_kwargs["max_sequence_length"] == 256
    assert sd35.source.startswith("stabilityai/stable-diffusion-3.5-") and sd35.steps == 28
    assert (sd35.height, sd35.width, sd35.guidance["mode"]) == (1024, 1024, "cfg")
    assert sdxl.source == "stabilityai/stable-diffusion-xl-base-1.0" and sdxl.steps in (30, 50)
    assert (sdxl.guidance, sdxl.dtype, sdxl.height) == ({"mode": "cfg", "scale": 5.0}, "float16", 1024)
    assert (wan.source, wan.steps, wan.height, wan.width, wan.frames) == (
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", 50, 480, 832, 81)
    assert (wan.guidance, wan.dtype) == ({"mode": "true_cfg", "scale": 5.0}, "bfloat16")
    for spec in (flux, schnell, sd35, sdxl, wan):
        assert spec.prompts == "general"


def test_tiny_flux_entry_takes_its_settings_from_the_module_constants():
    spec = MODELS["tiny-flux"]
    assert Path(spec.source) == BUILTIN_SCHEDULES.parent / "models" / "tiny-flux" == models.TINY_FLUX_DIR
    assert (spec.family, spec.pipeline, spec.dtype, spec.prompts) == ("flux", "FluxPipeline", "float32", "tiny-flux")
    size = models.TINY_FLUX_SIZE
    assert (spec.steps, spec.height, spec.width) == (models.TINY_FLUX_STEPS, size, size)
    assert (spec.steps, spec.height) == (28, 64)
    assert spec.call_kwargs == models.TINY_FLUX_CALL_KWARGS == {
        "true_cfg_scale": 4.0, "negative_prompt": "", "max_sequence_length": 32, "guidance_scale": 1.0}
    assert spec.guidance == {"mode": "true_cfg", "scale": models.TINY_FLUX_CALL_KWARGS["true_cfg_scale"]}
    assert spec.local


def test_family_defaults_cover_every_family():
    assert set(models.FAMILY_NAMES) == set(FAMILIES)
    assert set(models.FAMILY_DEFAULTS) == set(FAMILIES)
    for family, name in models.FAMILY_DEFAULTS.items():
        assert MODELS[name].family == family


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(family="pixart"), "family"),
        (dict(steps=0), "steps"),
        (dict(height=-64), "height"),
        (dict(frames=16), "frames"),  # an image family with frames
        (dict(guidance={"mode": "cfg", "scale": 3.5}), "guidance.mode"),  # FLUX has no batched CFG
        (dict(guidance={"mode": "distilled"}), "guidance.scale"),
        (dict(guidance={"mode": "distilled", "scale": 3.5, "extra": 1}), "guidance"),
        (dict(dtype="float64"), "dtype"),
        (dict(call_kwargs=[("a", 1)]), "call_kwargs"),
        (dict(prompts=""), "prompts"),
        (dict(search=(("trials", 0),)), "search"),
        (dict(search=(("speed", 3),)), "search"),
        (dict(search={"trials": 10}), "search"),
    ],
)
def test_model_spec_rejects_bad_fields(change, field):
    with pytest.raises(ModelError) as err:
        dataclasses.replace(MODELS["flux"], **change)
    assert err.value.field == field
    assert str(err.value).startswith(f"model flux: {field}: got ")


def test_model_spec_wan_needs_frames_and_cfg_families_need_scale_at_most_1_without_guidance():
    with pytest.raises(ModelError, match="frames"):
        dataclasses.replace(MODELS["wan2.1-1.3b"], frames=None)
    with pytest.raises(ModelError, match="at most 1"):
        dataclasses.replace(MODELS["sdxl"], guidance={"mode": "none", "scale": 5.0})


def test_importing_models_and_prompts_is_light():
    code = "import sys, zeustune.models.registry, zeustune.models.prompts; print(sorted({'torch', 'diffusers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_model_spec_keeps_its_own_copies_of_dicts():
    kwargs, guidance = {"max_sequence_length": 64}, {"mode": "distilled", "scale": 2.0}
    spec = dataclasses.replace(MODELS["flux"], call_kwargs=kwargs, guidance=guidance)
    kwargs["max_sequence_length"], guidance["scale"] = 1, 9.0
    assert spec.call_kwargs == {"max_sequence_length": 64} and spec.guidance["scale"] == 2.0
    assert MODELS["tiny-flux"].call_kwargs is not models.TINY_FLUX_CALL_KWARGS


# --------------------------------------------------------------------------------------------
# resolve()
# --------------------------------------------------------------------------------------------


def test_resolve_short_name_and_spec():
    assert resolve("sdxl") is MODELS["sdxl"]
    assert resolve(MODELS["flux"]) is MODELS["flux"]


def test_resolve_overrides_fields_and_validates_them():
    spec = resolve("flux", steps=50, height=512, width=768)
    assert (spec.steps, spec.height, spec.width, spec.source) == (50, 512, 768, MODELS["flux"].source)
    assert MODELS["flux"].steps == 28
    with pytest.raises(ModelError, match="override: got 'stepz'"):
        resolve("flux", stepz=50)
    with pytest.raises(ModelError, match="steps"):
        resolve("flux", steps=-1)


def test_resolve_unknown_name_names_it_and_lists_the_short_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as err:
        resolve("fluxx")
    msg = str(err.value)
    assert "'fluxx'" in msg and "did you mean 'flux'" in msg
    for name in MODELS:
        assert name in msg


@pytest.mark.parametrize("family", FAMILIES)
def test_resolve_local_directory_takes_family_defaults(saved, family):
    _, path = saved[family]
    spec = resolve(path)
    default = MODELS[models.FAMILY_DEFAULTS[family]]
    assert spec.family == family
    assert spec.pipeline == families.by_name(family).pipeline
    assert spec.source == spec.name == str(path.resolve())
    assert spec.local
    assert (spec.steps, spec.height, spec.width, spec.frames) == (default.steps, default.height, default.width,
                                                                  default.frames)
    assert (spec.guidance, spec.dtype, spec.call_kwargs) == (default.guidance, default.dtype, default.call_kwargs)
    assert resolve(str(path / "model_index.json")) == spec  # the index file stands for its directory
    assert resolve(str(path), steps=8, height=32, width=32).steps == 8


def test_resolve_directory_of_a_registry_entry_gives_that_entry(saved, monkeypatch):
    _, path = saved["flux"]
    entry = dataclasses.replace(MODELS["tiny-flux"], source=str(path))
    monkeypatch.setitem(MODELS, "tiny-flux", entry)
    assert resolve(str(path)) is entry


def test_resolve_directory_without_model_index(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(ModelNotFoundError) as err:
        resolve(tmp_path / "weights")
    assert str(tmp_path / "weights") in str(err.value) and "model_index.json" in str(err.value)


def test_resolve_directory_of_an_unsupported_pipeline(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "PixArtAlphaPipeline"}))
    with pytest.raises(ModelError) as err:
        resolve(tmp_path)
    assert "PixArtAlphaPipeline" in str(err.value) and "FluxPipeline" in str(err.value)
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ModelError, match="valid JSON"):
        resolve(tmp_path)


def test_resolve_hub_id_of_a_registry_entry_needs_no_cache(hf_cache):
    assert resolve("black-forest-labs/FLUX.1-dev") is MODELS["flux"]


def test_resolve_hub_id_reads_the_family_from_the_cached_model_index(hf_cache, saved):
    plant_in_cache(hf_cache, "acme/tiny-sd3", files=index_of(saved, "sd3"))
    spec = resolve("acme/tiny-sd3")
    assert (spec.name, spec.source, spec.family, spec.pipeline) == (
        "acme/tiny-sd3", "acme/tiny-sd3", "sd3", "StableDiffusion3Pipeline")
    assert not spec.local
    assert spec.guidance == MODELS["sd3.5"].guidance


def test_resolve_uncached_hub_id_fails_offline(hf_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as err:
        resolve("acme/not-cached")
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert "acme/not-cached" in msg and str(hf_cache) in msg and "hf download acme/not-cached" in msg
    assert "no local directory" in msg  # "acme/not-cached" could have been meant as a path


# --------------------------------------------------------------------------------------------
# load()
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_load_round_trips_a_saved_pipeline(saved, family, no_network):
    tp, path = saved[family]
    pipe, spec = load(path, dtype=torch.float32, progress=False)
    assert type(pipe) is type(tp.pipe)
    assert spec.family == family and spec.dtype == "float32"
    assert pipe.dtype == torch.float32
    assert pipe._progress_bar_config.get("disable") is True
    expected = ref_latents(tp)
    gen = torch.Generator("cpu").manual_seed(0)
    out = pipe(num_inference_steps=3, generator=gen, return_dict=False, **tp.call_kwargs)[0]
    assert_same_model_and_run(pipe, tp, out, expected)
    # The same run through pipeline_kwargs: the embeddings replace the text, overrides win.
    kwargs = pipeline_kwargs(spec, None, seed=0, steps=3, return_dict=False, **tp.call_kwargs)
    assert torch.equal(pipe(**kwargs)[0], out)  # the same pipeline, the same call: bit-identical


def test_load_keeps_the_wan_vae_in_float32(saved, no_network):
    pipe, spec = load(saved["wan"][1], dtype="bfloat16")
    assert spec.dtype == "bfloat16"
    assert pipe.transformer.dtype == torch.bfloat16
    assert pipe.vae.dtype == torch.float32


def test_load_without_progress_restores_the_global_progress_bars(saved, no_network):
    from diffusers.utils import logging as dlog

    assert dlog.is_progress_bar_enabled()
    load(saved["sd"][1], dtype="float32", progress=False)
    assert dlog.is_progress_bar_enabled()
    pipe, _ = load(saved["sd"][1], dtype="float32")
    assert not pipe._progress_bar_config.get("disable", False)


def test_load_hub_id_from_the_cache(hf_cache, saved):
    tp, path = saved["flux"]
    plant_in_cache(hf_cache, "acme/tiny-flux-hub", src=path)
    pipe, spec = load("acme/tiny-flux-hub", dtype="float32", progress=False)
    assert spec.source == "acme/tiny-flux-hub" and spec.family == "flux"
    gen = torch.Generator("cpu").manual_seed(0)
    out = pipe(num_inference_steps=3, generator=gen, return_dict=False, **tp.call_kwargs)[0]
    assert_same_model_and_run(pipe, tp, out, ref_latents(tp))


@pytest.mark.parametrize("name", ["acme/not-cached", "flux", "wan2.1-1.3b"])
def test_load_uncached_hub_model_says_where_it_looked_and_how_to_provide_it(hf_cache, monkeypatch, name):
    from diffusers import DiffusionPipeline

    def no_call(*args, **kwargs):
        raise AssertionError("from_pretrained called for a model that is not cached")

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", no_call)
    repo_id = MODELS[name].source if name in MODELS else name
    with pytest.raises(ModelNotFoundError) as err:
        load(name)
    msg = str(err.value)
    assert name in msg and repo_id in msg and str(hf_cache) in msg
    assert f"hf download {repo_id}" in msg and "--model" in msg and models.ALLOW_DOWNLOAD_ENV in msg
    assert err.value.model.startswith(name)


def test_load_incomplete_cache_entry_is_model_not_found(hf_cache, saved):
    # model_index.json is cached, the weights are not.
    plant_in_cache(hf_cache, "acme/partial", files=index_of(saved, "flux"))
    with pytest.raises(ModelNotFoundError) as err:
        load("acme/partial")
    assert "acme/partial" in str(err.value) and "incomplete" in str(err.value)


def test_load_passes_local_files_only_and_the_cache_unless_download_is_allowed(hf_cache, monkeypatch, saved):
    from diffusers import DiffusionPipeline

    plant_in_cache(hf_cache, "acme/spy", files=index_of(saved, "flux"))
    calls = []

    class Stop(Exception):
        pass

    def spy(source, **kwargs):
        calls.append((source, kwargs))
        raise Stop

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", spy)
    with pytest.raises(Stop):
        load("acme/spy")
    source, kwargs = calls[-1]
    assert source == "acme/spy"
    assert kwargs["local_files_only"] is True and kwargs["cache_dir"] == str(hf_cache)
    assert kwargs["text_encoder"] is None and kwargs["tokenizer_2"] is None  # saved as [null, null]
    monkeypatch.setenv(models.ALLOW_DOWNLOAD_ENV, "1")
    with pytest.raises(Stop):
        load("acme/spy")
    assert calls[-1][1]["local_files_only"] is False


def test_load_missing_tiny_flux_points_at_the_training_script(tmp_path, monkeypatch, no_network):
    for path in (tmp_path / "absent", tmp_path):  # no directory; a directory without model_index.json
        monkeypatch.setitem(MODELS, "tiny-flux", dataclasses.replace(MODELS["tiny-flux"], source=str(path)))
        with pytest.raises(ModelNotFoundError) as err:
            load("tiny-flux")
        msg = str(err.value)
        assert "tiny-flux" in msg and str(path) in msg and "scripts/train_tiny_flux.py" in msg


def test_load_rejects_a_bad_dtype(saved):
    with pytest.raises(ModelError, match="dtype"):
        load(saved["flux"][1], dtype="float64")


# --------------------------------------------------------------------------------------------
# pipeline_kwargs()
# --------------------------------------------------------------------------------------------


def test_pipeline_kwargs_distilled_guidance():
    kw = pipeline_kwargs(MODELS["flux"], "a cat", seed=7)
    assert kw["prompt"] == "a cat"
    assert (kw["num_inference_steps"], kw["height"], kw["width"]) == (28, 1024, 1024)
    assert kw["guidance_scale"] == 3.5
    assert not {"true_cfg_scale", "negative_prompt", "num_frames"} & set(kw)
    assert isinstance(kw["generator"], torch.Generator) and kw["generator"].initial_seed() == 7


def test_pipeline_kwargs_true_cfg_flux():
    kw = pipeline_kwargs(MODELS["tiny-flux"], "a cat", seed=0)
    assert kw["true_cfg_scale"] == 4.0 and kw["negative_prompt"] == ""
    assert kw["max_sequence_length"] == 32 and kw["guidance_scale"] == 1.0
    assert (kw["num_inference_steps"], kw["height"], kw["width"]) == (28, 64, 64)
    plain = dataclasses.replace(MODELS["flux"], guidance={"mode": "true_cfg", "scale": 2.5})
    kw = pipeline_kwargs(plain, "a cat", seed=0)
    assert kw["true_cfg_scale"] == 2.5 and kw["negative_prompt"] == "" and "guidance_scale" not in kw


def test_pipeline_kwargs_true_cfg_wan():
    kw = pipeline_kwargs(MODELS["wan2.1-1.3b"], "a cat walking", seed=0)
    assert kw["guidance_scale"] == 5.0 and "true_cfg_scale" not in kw
    assert kw["negative_prompt"] == MODELS["wan2.1-1.3b"].call_kwargs["negative_prompt"]
    assert (kw["height"], kw["width"], kw["num_frames"]) == (480, 832, 81)
    bare = dataclasses.replace(MODELS["wan2.1-1.3b"], call_kwargs={})
    assert pipeline_kwargs(bare, "x", seed=0)["negative_prompt"] == ""


@pytest.mark.parametrize("name", ["sdxl", "sd3.5", "sd2.1"])
def test_pipeline_kwargs_cfg(name):
    kw = pipeline_kwargs(MODELS[name], "a cat", seed=0)
    assert kw["guidance_scale"] == MODELS[name].guidance["scale"] > 1
    assert not {"true_cfg_scale", "negative_prompt", "num_frames"} & set(kw)


def test_pipeline_kwargs_no_guidance():
    kw = pipeline_kwargs(MODELS["flux-schnell"], "a cat", seed=0)
    assert kw["guidance_scale"] == 0.0 and kw["num_inference_steps"] == 4 and kw["max_sequence_length"] == 256
    assert "true_cfg_scale" not in kw and "negative_prompt" not in kw
    off = dataclasses.replace(MODELS["sdxl"], guidance={"mode": "none", "scale": None})
    assert pipeline_kwargs(off, "a cat", seed=0)["guidance_scale"] == 1.0  # CFG off: scale <= 1
    off = dataclasses.replace(MODELS["flux"], guidance={"mode": "none", "scale": None})
    assert "guidance_scale" not in pipeline_kwargs(off, "a cat", seed=0)


def test_pipeline_kwargs_overrides_win_and_the_spec_is_untouched():
    spec = MODELS["tiny-flux"]
    before = dataclasses.asdict(spec)
    kw = pipeline_kwargs(spec, ["a", "b"], seed=1, steps=10, height=32, true_cfg_scale=2.0, negative_prompt="blur",
                         output_type="latent")
    assert (kw["num_inference_steps"], kw["height"], kw["width"]) == (10, 32, 64)
    assert (kw["true_cfg_scale"], kw["negative_prompt"], kw["output_type"]) == (2.0, "blur", "latent")
    assert kw["prompt"] == ["a", "b"]
    kw["max_sequence_length"] = 1
    assert dataclasses.asdict(spec) == before


def test_pipeline_kwargs_embeddings_replace_the_text():
    pe, ne = torch.zeros(1, 4, 8), torch.ones(1, 4, 8)
    kw = pipeline_kwargs(MODELS["tiny-flux"], "ignored", seed=0, prompt_embeds=pe, negative_prompt_embeds=ne)
    assert "prompt" not in kw and "negative_prompt" not in kw
    assert kw["prompt_embeds"] is pe and kw["negative_prompt_embeds"] is ne
    kw = pipeline_kwargs(MODELS["tiny-flux"], None, seed=0)
    assert "prompt" not in kw


def test_pipeline_kwargs_generator_is_seeded():
    def draw(seed):
        return torch.randn(4, generator=pipeline_kwargs(MODELS["flux"], "x", seed=seed)["generator"])

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))
    assert pipeline_kwargs(MODELS["flux"], "x", seed=0, device=torch.device("cpu"))["generator"].device.type == "cpu"


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------


def test_general_prompt_sets_are_disjoint_and_of_the_stated_sizes():
    calib, heldout = load_prompts("general", "calib"), load_prompts("general", "heldout")
    assert len(calib) == len(heldout) == 48
    assert len(set(calib)) == 48 and len(set(heldout)) == 48
    assert not {p.lower() for p in calib} & {p.lower() for p in heldout}
    for split in ("calib", "heldout"):
        first = (PROMPTS_DIR / "general" / f"{split}.txt").read_text().splitlines()[0]
        assert first.startswith("# ")
    for prompts in (calib, heldout):
        words = [len(p.split()) for p in prompts]
        assert min(words) <= 6 and max(words) >= 15  # short and detailed prompts both
        assert all(w <= 60 for w in words)  # within CLIP's 77 tokens, roughly


def test_load_prompts_aliases_model_names_and_specs():
    heldout = load_prompts("general", "heldout")
    assert load_prompts("general", "held-out") == heldout
    assert load_prompts("flux", "heldout") == heldout  # a model's short name means its collection
    assert load_prompts(MODELS["sdxl"], "heldout") == heldout


def test_load_prompts_from_a_user_file(tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text("# my prompts\n\n  a red car  \n#skipped\n   # indented comment\na sign reading \"#1\"\n\n")
    assert load_prompts("general", f) == ["a red car", 'a sign reading "#1"']
    assert load_prompts("general", str(f)) == read_prompt_file(f)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n  \n# another\n"])
def test_empty_prompt_file_is_an_error_naming_the_path(tmp_path, text):
    f = tmp_path / "empty.txt"
    f.write_text(text)
    with pytest.raises(PromptsError) as err:
        load_prompts("general", f)
    assert str(f) in str(err.value) and "at least one prompt" in str(err.value)


def test_missing_or_unreadable_prompt_file_is_an_error_naming_the_path(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(PromptsNotFoundError) as err:
        load_prompts("general", missing)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, PromptsError)
    assert str(missing) in str(err.value)
    with pytest.raises(PromptsError, match="directory"):
        load_prompts("general", tmp_path)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(PromptsError, match="UTF-8"):
        load_prompts("general", bad)


def test_unknown_collection_lists_the_known_ones():
    with pytest.raises(PromptsError) as err:
        load_prompts("no-such-collection", "calib")
    assert "no-such-collection" in str(err.value) and "general" in str(err.value)


def test_collection_layout_and_a_missing_split(tmp_path, monkeypatch):
    import zeustune.models.prompts as prompts_module

    (tmp_path / "tiny-flux").mkdir()
    (tmp_path / "tiny-flux" / "calib.txt").write_text("# tiny\na red square\na blue circle\n")
    monkeypatch.setattr(prompts_module, "PROMPTS_DIR", tmp_path)
    assert load_prompts("tiny-flux", "calib") == ["a red square", "a blue circle"]
    assert load_prompts(MODELS["tiny-flux"], "calib") == ["a red square", "a blue circle"]
    with pytest.raises(PromptsNotFoundError) as err:
        load_prompts("tiny-flux", "held-out")
    assert str(tmp_path / "tiny-flux" / "heldout.txt") in str(err.value)


def test_tiny_flux_prompts_load_when_present():
    if not (PROMPTS_DIR / "tiny-flux" / "calib.txt").is_file():
        pytest.skip("zeustune/prompt_sets/tiny-flux/ not written yet")
    assert load_prompts("tiny-flux", "calib")


def test_prompts_sha256_is_stable_and_sensitive():
    base = ["a cat", "a dog"]
    digest = prompts_sha256(base)
    assert digest == prompts_sha256(list(base)) == prompts_sha256(tuple(base))
    # Pinned: study names and provenance written earlier must keep matching.
    assert digest == "ba8e612a74f869fb8f236573a4e468222b819d82b1e23067168d3556c64dc039"
    variants = [["a dog", "a cat"], ["a cat"], ["a cat", "a dog", "a dog"], ["a cat ", "a dog"], ["a cat a dog"],
                ["a cat\na dog"], ["A cat", "a dog"], []]
    digests = {prompts_sha256(v) for v in variants}
    assert len(digests) == len(variants) and digest not in digests
    with pytest.raises(PromptsError):
        prompts_sha256("a cat")
    with pytest.raises(PromptsError):
        prompts_sha256(["a cat", 3])


def test_a_models_search_effort_fills_only_the_flags_not_given(monkeypatch):
    """``zeustune search`` takes a model's own counts (a video trial costs many images' worth)
    where the flag is absent; a flag given wins; --help names both defaults."""
    from zeustune import cli
    from zeustune.models import known

    light = dataclasses.replace(MODELS["tiny-flux"], search=(("trials", 7), ("calib", 5), ("heldout", 3)))
    monkeypatch.setitem(known.MODELS, "tiny-flux", light)
    ns = cli.build_parser().parse_args(["search", "--model", "tiny-flux", "--metric", "gmsd", "--trials", "9"])
    spec, heldout = cli._check_search(ns)
    assert (ns.trials, ns.calib, ns.refine, heldout) == (9, 5, 80, 3)
    assert cli._effort("trials").startswith("240; ") and "tiny-flux 7" in cli._effort("trials")
