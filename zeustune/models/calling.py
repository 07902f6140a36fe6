"""Calling a pipeline at a spec's settings: the ``pipe(...)`` arguments for its guidance
(:func:`guidance_kwargs`) and for a whole seeded call (:func:`pipeline_kwargs`)."""

from __future__ import annotations

from typing import Any

from .spec import ModelSpec

#: pipe(...) arguments zeustune passes itself (pipeline_kwargs), which call_kwargs must not replace.
SET_BY_ZEUSTUNE = ("prompt", "num_inference_steps", "height", "width", "num_frames", "generator", "prompt_embeds",
                   "output_type", "return_dict", "latents", "callback_on_step_end")


def guidance_kwargs(spec: ModelSpec) -> dict:
    """The pipe(...) arguments that set the spec's guidance."""
    mode, scale = spec.guidance["mode"], spec.guidance["scale"]
    if mode == "true_cfg":
        # FLUX: true_cfg_scale, on only with a negative prompt. Wan: guidance_scale > 1 runs CFG.
        key = "true_cfg_scale" if spec.family == "flux" else "guidance_scale"
        return {key: scale, "negative_prompt": ""}
    if mode in ("distilled", "cfg"):
        return {"guidance_scale": scale}
    if scale is not None:  # none: FLUX-schnell takes 0.0; the CFG families need a scale <= 1
        return {"guidance_scale": scale}
    return {} if spec.family == "flux" else {"guidance_scale": 1.0}


def pipeline_kwargs(spec: ModelSpec, prompt, *, seed: int, steps: int | None = None, device="cpu", **overrides) -> dict:
    """Everything for ``pipe(**kwargs)``: prompt, steps, size (and frames), guidance, a seeded
    generator on ``device``, then ``spec.call_kwargs``, then ``overrides``, which win.

    ``prompt`` may be None when the overrides carry ``prompt_embeds``; embeddings given as
    overrides replace the matching text (``prompt`` / ``negative_prompt``), which the pipelines
    refuse to take together with them.
    """
    import torch

    kwargs: dict[str, Any] = {}
    if prompt is not None:
        kwargs["prompt"] = prompt
    kwargs["num_inference_steps"] = spec.steps if steps is None else steps
    kwargs["height"], kwargs["width"] = spec.height, spec.width
    if spec.frames is not None:
        kwargs["num_frames"] = spec.frames
    kwargs.update(guidance_kwargs(spec))
    kwargs["generator"] = torch.Generator(device).manual_seed(seed)
    kwargs.update(spec.call_kwargs)
    for embeds, text in (("prompt_embeds", "prompt"), ("negative_prompt_embeds", "negative_prompt")):
        if overrides.get(embeds) is not None and text not in overrides:
            kwargs.pop(text, None)
    kwargs.update(overrides)
    return kwargs
