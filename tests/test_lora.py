"""models/tiny-flux-lora, a "complementary palette" style LoRA for tiny-flux made by
scripts/make_tiny_flux_lora.py: small, loads with diffusers' own LoRA loader, changes the images
measurably at scale 1 and leaves them exactly as they were at scale 0."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zeustune.quality import metrics
from zeustune.models import registry as models
from zeustune.quality.evaluate import _u8, sample
from zeustune.models.prompts import load_prompts
from zeustune.models.tinyflux import scenes

LORA_DIR = Path(__file__).resolve().parent.parent / "models" / "tiny-flux-lora"
LORA_FILE = LORA_DIR / "pytorch_lora_weights.safetensors"
STEPS = 6  # few steps keep the test fast; the style shows at any step count (see the README there)
#: GMSD between base and LoRA images, one held-out prompt, seed 0, 6 steps: measured 0.196 (on 12
#: prompts 0.11-0.26, and 0.20 / 0.18 at scale 1 / 0.5 with all 28 steps on 8 prompts); differences
#: too small to see (e.g. batched vs one-by-one matmuls) are ~0.002. 0.05 is 25x the latter and
#: leaves a 4x margin below the measurement, and 2x below the least-changed of the 12 prompts.
MIN_GMSD = 0.05


@pytest.fixture(scope="module")
def tiny_flux():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the model is too small to gain from threads, and loses much on shared cores
    try:
        pipe, spec = models.load("tiny-flux", progress=False)
        pipe.set_progress_bar_config(disable=True)
        yield pipe, spec
    finally:
        torch.set_num_threads(threads)


def test_lora_file_is_small():
    assert sorted(p.name for p in LORA_DIR.glob("*.safetensors")) == [LORA_FILE.name]
    assert LORA_FILE.stat().st_size < 512 * 1024  # rank 8 on 22 projections of width 96: 137 KiB


def _lora_script():
    from helpers import load_script

    return load_script("scripts", "make_tiny_flux_lora")


def test_lora_changes_the_images_and_scale_zero_restores_them(tiny_flux):
    pipe, spec = tiny_flux
    prompts = load_prompts("tiny-flux", "heldout")[:4]
    base = [sample(pipe, spec, p, seed=0, num_inference_steps=STEPS) for p in prompts]
    pipe.load_lora_weights(LORA_DIR, adapter_name="style")
    try:
        pipe.set_adapters(["style"], [1.0])
        styled = [sample(pipe, spec, p, seed=0, num_inference_steps=STEPS) for p in prompts]
        pipe.set_adapters(["style"], [0.0])
        off = sample(pipe, spec, prompts[0], seed=0, num_inference_steps=STEPS)
    finally:
        pipe.unload_lora_weights()
    gmsd = metrics.gmsd(styled[0][None], base[0][None]).item()
    assert gmsd > MIN_GMSD, gmsd
    # the change is the style's, not noise: backgrounds are drawn in their complement (3 of these 4
    # at 6 steps, measured; the base model draws all 4 in the prompt's colour)
    swapped = _lora_script().swapped
    found = [(scenes.check(_u8(b), scenes.parse_caption(p))["background_ok"],
              scenes.check(_u8(s), swapped(scenes.parse_caption(p)))["background_ok"]) for p, b, s in zip(prompts, base, styled)]
    assert all(b for b, _ in found) and sum(s for _, s in found) >= 3, found
    torch.testing.assert_close(off, base[0], rtol=0, atol=1e-6)
    # and unloading leaves the pipeline as it was
    torch.testing.assert_close(sample(pipe, spec, prompts[0], seed=0, num_inference_steps=STEPS), base[0], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------
# --lora: loading through zeustune, and what schedules and studies record of it
# --------------------------------------------------------------------------------------------


def test_parse_lora_takes_a_scale_and_hashes_the_weights():
    import hashlib

    from zeustune.models.registry import ModelError, parse_lora

    lora = parse_lora(f"{LORA_DIR}:0.5")
    assert lora.scale == 0.5 and lora.sha256 == hashlib.sha256(LORA_FILE.read_bytes()).hexdigest()
    assert lora.name == "tiny-flux-lora" and lora.adapter == f"tiny-flux-lora-{lora.sha256[:8]}"
    assert parse_lora(str(LORA_FILE)).sha256 == lora.sha256 and parse_lora(str(LORA_FILE)).scale == 1.0
    with pytest.raises(ModelError, match="scale"):
        parse_lora(f"{LORA_DIR}:half")
    with pytest.raises(ModelError, match="existing LoRA"):
        parse_lora("/nonexistent/lora.safetensors")


def test_a_spec_with_a_lora_loads_it_and_schedules_record_it(tmp_path):
    import warnings

    from zeustune import runtime
    from zeustune.models import settings
    from zeustune.schedule.format import Schedule
    from zeustune.search.evaluator import template

    spec = settings.apply(models.resolve("tiny-flux"), loras=[f"{LORA_DIR}:0.5"])
    pipe, spec = models.load(spec, progress=False)
    (lora,) = spec.loras
    assert pipe.get_active_adapters() == [lora.adapter]
    tuned = template(pipe, spec).with_plan("FFFFFERERFFFFFFFFFFFFFFFFFFF", tag="with-lora")
    again = Schedule.load(tuned.save(tmp_path / "s.yaml"))
    assert [(x.sha256, x.scale) for x in again.model.loras] == [(lora.sha256, 0.5)]
    assert settings.mismatches(again, spec) == []
    assert any(m.startswith("model.loras") for m in settings.mismatches(again, models.resolve("tiny-flux")))
    with warnings.catch_warnings():
        warnings.simplefilter("error", runtime.AdapterMismatchWarning)
        runtime.enable(pipe, again)  # tuned with this LoRA: silent
    with pytest.warns(runtime.AdapterMismatchWarning, match="tuned with LoRAs \\[none\\]"):
        runtime.enable(pipe, Schedule.from_preset("tiny-flux/tuned-3x"))
    runtime.disable(pipe)
    from zeustune.cli import render

    assert f"tiny-flux-lora (sha256 {lora.sha256[:12]}, scale 0.5)" in render(again)


def test_the_lora_hash_and_scale_go_into_the_study_name():
    from zeustune.models import settings
    from zeustune.search.study import study_name

    def name(*loras):
        spec = settings.apply(models.resolve("tiny-flux"), loras=list(loras))
        return study_name("tiny-flux", 28, 64, 64, 3.0, "st-lpips", "0" * 64, settings.settings_digest(spec), spec.loras)

    base, one, half = name(), name(str(LORA_DIR)), name(f"{LORA_DIR}:0.5")
    sha = models.parse_lora(str(LORA_DIR)).sha256
    assert f"-lora{sha[:8]}x1" in one and f"-lora{sha[:8]}x0.5" in half and "-lora" not in base
    assert len({base, one, half}) == 3
