"""The models zeustune knows by short name (:data:`MODELS`), with the model cards' sampling settings,
and which of them a folder or hub id of each family takes its defaults from (:data:`FAMILY_DEFAULTS`).
tiny-flux, the embedded model, keeps its settings in the TINY_FLUX_* constants here."""

from __future__ import annotations

from ..schedule.shipped import shipped
from .spec import ModelSpec

#: The embedded models, one folder each (models/ in the repository; shipped in the package).
EMBEDDED_DIR = shipped("zeustune.models", "embedded")
#: The tiny trained FLUX pipeline (scripts/train_tiny_flux.py writes it).
TINY_FLUX_DIR = EMBEDDED_DIR / "tiny-flux"
#: tiny-flux's sampling settings, all in this one place (they are retuned with the model).
TINY_FLUX_STEPS = 28
TINY_FLUX_SIZE = 64
TINY_FLUX_CALL_KWARGS = {"true_cfg_scale": 4.0, "negative_prompt": "", "max_sequence_length": 32, "guidance_scale": 1.0}
#: The tiny trained Wan pipeline (scripts/train_tiny_wan.py writes it): 17 frames of 32x32, 50 steps
#: (WanPipeline's default and ZEUS's Wan config), Wan's guidance 5.0 as two calls. Its captions are
#: at most 10 tokens: WanPipeline's default of 512 would show it 496 padding tokens it never saw.
TINY_WAN_DIR = EMBEDDED_DIR / "tiny-wan"
TINY_WAN_CALL_KWARGS = {"negative_prompt": "", "max_sequence_length": 16}

# From the Wan2.1 diffusers model card example (uncertain: quoted from memory of the card).
_WAN_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, "
    "poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, "
    "messy background, three legs, many people in the background, walking backwards"
)


def _spec(name: str, source: str, family: str, pipeline: str, *, steps: int, size: tuple[int, int],
          guidance: tuple[str, float], dtype: str, **kw) -> ModelSpec:
    """An entry, one line of settings each: ``size`` is (height, width), ``guidance`` (mode, scale)."""
    kw.setdefault("frames", None)
    kw.setdefault("call_kwargs", {})
    kw.setdefault("prompts", "general")
    (height, width), (mode, scale) = size, guidance
    return ModelSpec(name=name, source=source, family=family, pipeline=pipeline, steps=steps, height=height, width=width,
                     guidance={"mode": mode, "scale": scale}, dtype=dtype, **kw)


MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        # Trained by scripts/train_tiny_flux.py; small enough for CPU tests and CI.
        _spec("tiny-flux", str(TINY_FLUX_DIR), "flux", "FluxPipeline", steps=TINY_FLUX_STEPS,
              size=(TINY_FLUX_SIZE, TINY_FLUX_SIZE), guidance=("true_cfg", TINY_FLUX_CALL_KWARGS["true_cfg_scale"]),
              dtype="float32", call_kwargs=TINY_FLUX_CALL_KWARGS, prompts="tiny-flux"),
        # Trained by scripts/train_tiny_wan.py: the embedded video model (UniPC, flow shift 3, as saved).
        _spec("tiny-wan", str(TINY_WAN_DIR), "wan", "WanPipeline", steps=50, size=(32, 32), frames=17,
              guidance=("true_cfg", 5.0), dtype="float32", call_kwargs=TINY_WAN_CALL_KWARGS, prompts="tiny-wan",
              # a trial renders 17-frame clips in two CFG calls: the image defaults took 10 min at 3x; fewer
              # trials and moves cost little, 16 calibration prompts much (docs/video/search-effort.md)
              search=(("trials", 160), ("refine", 40), ("heldout", 32))),
        # FluxPipeline defaults (28 steps, guidance_scale 3.5, max_sequence_length 512) as on the model card.
        _spec("flux", "black-forest-labs/FLUX.1-dev", "flux", "FluxPipeline", steps=28, size=(1024, 1024),
              guidance=("distilled", 3.5), dtype="bfloat16"),
        # Model card: 4 steps, guidance_scale 0.0 (no guidance embedding), max_sequence_length 256.
        _spec("flux-schnell", "black-forest-labs/FLUX.1-schnell", "flux", "FluxPipeline", steps=4, size=(1024, 1024),
              guidance=("none", 0.0), dtype="bfloat16", call_kwargs={"max_sequence_length": 256}),
        # SD3.5 Large (not Medium): model card 28 steps, guidance_scale 3.5, bf16. (Medium's card
        # uses 40 steps and 4.5.)
        _spec("sd3.5", "stabilityai/stable-diffusion-3.5-large", "sd3", "StableDiffusion3Pipeline", steps=28,
              size=(1024, 1024), guidance=("cfg", 3.5), dtype="bfloat16"),
        # StableDiffusionXLPipeline defaults: 50 steps, guidance_scale 5.0; fp16 as on the card
        # (its VAE config has force_upcast, so decoding runs in float32). Loaded without
        # variant="fp16": the full-precision files are cast.
        _spec("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "sdxl", "StableDiffusionXLPipeline", steps=50,
              size=(1024, 1024), guidance=("cfg", 5.0), dtype="float16"),
        # SD 2.1 (v-prediction, 768px) with the settings of schedules/sd/zeus-sd-demo.yaml: 50 steps,
        # guidance 7.5. Uncertain: Stability AI may have taken this repository off the hub; a local
        # copy works with --model PATH.
        _spec("sd2.1", "stabilityai/stable-diffusion-2-1", "sd", "StableDiffusionPipeline", steps=50, size=(768, 768),
              guidance=("cfg", 7.5), dtype="float16"),
        # Model card: 480x832, 81 frames, guidance_scale 5.0, 50 steps (WanPipeline default),
        # transformer in bf16 and VAE in float32 (see loading.COMPONENT_DTYPES), the card's negative prompt.
        _spec("wan2.1-1.3b", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "wan", "WanPipeline", steps=50, size=(480, 832),
              frames=81, guidance=("true_cfg", 5.0), dtype="bfloat16", call_kwargs={"negative_prompt": _WAN_NEGATIVE_PROMPT}),
    )
}

#: The registry entry whose defaults a directory or hub id of each family gets.
FAMILY_DEFAULTS = {"flux": "flux", "sd3": "sd3.5", "sdxl": "sdxl", "sd": "sd2.1", "wan": "wan2.1-1.3b"}
