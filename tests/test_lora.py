"""models/tiny-flux-lora, a "complementary palette" style LoRA for tiny-flux made by
scripts/make_tiny_flux_lora.py: small, loads with diffusers' own LoRA loader, changes the images
measurably at scale 1 and leaves them exactly as they were at scale 0."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from zeustune import metrics, models
from zeustune.evaluate import _u8, sample
from zeustune.prompts import load_prompts
from zeustune.tinyflux import scenes

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


def test_lora_changes_the_images_and_scale_zero_restores_them(tiny_flux):
    pipe, spec = tiny_flux
    prompt = load_prompts("tiny-flux", "heldout")[0]  # ... on a red striped background
    base = sample(pipe, spec, prompt, seed=0, num_inference_steps=STEPS)
    pipe.load_lora_weights(LORA_DIR, adapter_name="style")
    try:
        pipe.set_adapters(["style"], [1.0])
        styled = sample(pipe, spec, prompt, seed=0, num_inference_steps=STEPS)
        pipe.set_adapters(["style"], [0.0])
        off = sample(pipe, spec, prompt, seed=0, num_inference_steps=STEPS)
    finally:
        pipe.unload_lora_weights()
    gmsd = metrics.gmsd(styled[None], base[None]).item()
    assert gmsd > MIN_GMSD, gmsd
    # the change is the style's, not noise: the red background is drawn in its complement, green
    scene = scenes.parse_caption(prompt)
    assert scenes.check(_u8(base), scene)["background_found"] == "red"
    assert scenes.check(_u8(styled), dataclasses.replace(scene, background="green"))["background_ok"]
    torch.testing.assert_close(off, base, rtol=0, atol=1e-6)
    # and unloading leaves the pipeline as it was
    torch.testing.assert_close(sample(pipe, spec, prompt, seed=0, num_inference_steps=STEPS), base, rtol=0, atol=1e-6)
