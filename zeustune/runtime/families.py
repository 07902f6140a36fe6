"""The pipeline families the runtime supports, and how to recognise them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    pipeline: str  # diffusers pipeline class name (subclasses are accepted)
    denoiser: str  # pipeline attribute holding the denoiser
    flow: bool  # flow matching (velocity output); False: VP model with an x0 Lagrange tail
    sample: str = "sample"  # the denoiser's keyword for the noisy input (else its first argument)


FAMILIES = (
    Family("flux", "FluxPipeline", "transformer", flow=True, sample="hidden_states"),
    Family("sd3", "StableDiffusion3Pipeline", "transformer", flow=True, sample="hidden_states"),
    Family("sdxl", "StableDiffusionXLPipeline", "unet", flow=False),
    Family("sd", "StableDiffusionPipeline", "unet", flow=False),
    Family("wan", "WanPipeline", "transformer", flow=True, sample="hidden_states"),
)


class UnsupportedPipelineError(TypeError):
    pass


def supported() -> str:
    return ", ".join(f"{f.pipeline} ({f.name})" for f in FAMILIES)


def detect(pipe) -> Family:
    """The family of a pipeline instance, by its class or a base class."""
    names = [c.__name__ for c in type(pipe).__mro__]
    for name in names:  # most derived first, so a subclass of a supported pipeline matches it
        for fam in FAMILIES:
            if fam.pipeline == name:
                return fam
    raise UnsupportedPipelineError(
        f"pipeline: got {type(pipe).__name__}, expected one of the supported families: {supported()}"
    )


def by_name(name: str) -> Family:
    for fam in FAMILIES:
        if fam.name == name:
            return fam
    raise UnsupportedPipelineError(f"family: got {name!r}, expected one of {', '.join(f.name for f in FAMILIES)}")
