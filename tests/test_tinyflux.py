"""The embedded model tiny-flux: it loads offline like FLUX.1-dev, follows its prompts, is fast,
and is hard enough that skipping steps costs measurable quality."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zeustune.quality import metrics
from zeustune.models import registry as models
from zeustune import runtime
from zeustune.quality.evaluate import sample
from zeustune.models.prompts import load_prompts
from zeustune.schedule.plans import from_mask
from zeustune.schedule.format import Schedule
from zeustune.models.tinyflux import scenes

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_flux():
    pipe, spec = models.load("tiny-flux", progress=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe, spec


def test_weights_are_committed_and_small():
    files = [p for p in models.TINY_FLUX_DIR.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    assert sum(p.stat().st_size for p in files) <= 25 * 2**20


def test_loads_offline_with_diffusers_and_takes_plain_text_prompts():
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(models.TINY_FLUX_DIR, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert pipe.scheduler.config.use_dynamic_shifting  # FLUX's sigma shift settings
    out = pipe("a large red circle in the center, on a white plain background", height=64, width=64,
               num_inference_steps=4, max_sequence_length=32, output_type="np").images
    assert out.shape == (1, 64, 64, 3)


def test_true_cfg_calls_the_transformer_twice_per_step(tiny_flux):
    pipe, spec = tiny_flux
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        sample(pipe, spec, "a small blue square on the left, on a gray plain background", 0, num_inference_steps=5)
    finally:
        handle.remove()
    assert len(calls) == 10


def test_follows_held_out_prompts(tiny_flux):
    """Colour at the stated position for captions whose (colour, shape, position) triples were
    never in training; chance level is 1/9 per object."""
    pipe, spec = tiny_flux
    prompts = load_prompts("tiny-flux", "heldout")[:12]
    accuracies = []
    for i, prompt in enumerate(prompts):
        image = sample(pipe, spec, prompt, seed=i)
        u8 = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        accuracies.append(scenes.check(u8, scenes.parse_caption(prompt))["color_accuracy"])
    assert sum(accuracies) / len(accuracies) >= 0.8, accuracies  # measured 0.96-0.98


def test_skipping_steps_costs_measurable_quality(tiny_flux):
    """Real FLUX sits near 29 dB at 2x; a model whose trajectories are straight would give every
    plan a near-perfect score and leave nothing to tune. Two plans with the same NFE must differ."""
    pipe, spec = tiny_flux
    prompts = load_prompts("tiny-flux", "calib")[:4]
    refs = torch.stack([sample(pipe, spec, p, seed=i) for i, p in enumerate(prompts)])
    zeus = Schedule.from_preset("tiny-flux/zeus-28")
    spread = from_mask([k in {round(i * 27 / 12) for i in range(13)} for k in range(28)])  # 13 fresh, evenly
    assert spread.nfe == zeus.nfe == 13
    psnr = {}
    for name, schedule in (("zeus", zeus), ("spread", zeus.with_plan(spread))):
        runtime.enable(pipe, schedule)
        try:
            images = torch.stack([sample(pipe, spec, p, seed=i) for i, p in enumerate(prompts)])
        finally:
            runtime.disable(pipe)
        psnr[name] = metrics.psnr(images, refs).mean().item()
    assert psnr["zeus"] < 40.0, psnr
    assert abs(psnr["zeus"] - psnr["spread"]) > 1.0, psnr


def test_training_script_is_seeded_and_reproducible(tmp_path):
    from helpers import load_script

    train = load_script("scripts", "train_tiny_flux")
    args = ["--images", "64", "--vae-steps", "2", "--vae-batch", "4", "--steps", "2", "--batch", "4"]
    for run in ("a", "b"):
        assert train.main([*args, "--out", str(tmp_path / run)]) == 0
    from safetensors.torch import load_file

    for weights in sorted((tmp_path / "a").rglob("*.safetensors")):
        a, b = load_file(weights), load_file(tmp_path / "b" / weights.relative_to(tmp_path / "a"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), weights
    assert (tmp_path / "a" / "model_index.json").read_text() == (tmp_path / "b" / "model_index.json").read_text()
