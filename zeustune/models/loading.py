"""Loading a model: the pipeline from a folder or the Hugging Face cache (offline unless
``ZEUSTUNE_ALLOW_DOWNLOAD=1``), in the spec's dtype, checked against its family and size, with its
LoRAs. :func:`load` returns ``(pipe, spec)``; torch and diffusers are imported on first use."""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..schedule.messages import first_line
from .errors import ModelError, ModelNotFoundError
from .hub import cached_index, download_allowed, hf_cache_dir, how_to_provide, not_in_cache, read_index
from .lookup import resolve
from .spec import DTYPES, ModelSpec

#: Components loaded in another dtype than the pipeline's, per family. Wan's model card keeps
#: the VAE in float32 for decoding quality.
COMPONENT_DTYPES = {"wan": {"vae": "float32"}}


def _dtype_name(dtype) -> str:
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ModelError("load", "dtype", dtype, f"one of {', '.join(DTYPES)}")
    return name


def _dtype_keyword() -> str:
    # diffusers renamed from_pretrained's torch_dtype to dtype (the old name warns).
    try:
        from diffusers.utils import deprecation_utils

        return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    except ImportError:
        return "torch_dtype"

def load(
    name_or_path: str | os.PathLike | ModelSpec,
    *,
    device: str | None = "cpu",
    dtype=None,
    progress: bool = True,
):
    """Load a pipeline: ``(pipe, spec)``; spec is the resolved one, with ``dtype`` if given.

    Reads a local directory, or a hub id from the Hugging Face cache only (no network unless
    ``ZEUSTUNE_ALLOW_DOWNLOAD=1``). Raises ModelNotFoundError when the weights are missing.
    ``device=None`` leaves the pipeline where it was loaded (CPU); ``progress=False`` turns off
    the loading progress bars and the pipeline's sampling progress bar.
    """
    import torch

    spec = resolve(name_or_path)
    if dtype is not None:
        spec = replace(spec, dtype=_dtype_name(dtype))
    allow = download_allowed()
    kwargs: dict[str, Any] = {"local_files_only": not allow}
    index: dict | None = None
    if spec.local:
        path = Path(spec.source).expanduser()
        index_path = path / "model_index.json"
        if not index_path.is_file():
            detail = "no such directory" if not path.exists() else "the directory has no model_index.json"
            raise ModelNotFoundError(spec.name, str(path), how_to_provide(spec.name, None, None), detail=detail)
        index = read_index(index_path)
        where = str(path)
        source = str(path)
    else:
        cache = hf_cache_dir()
        where = f"the Hugging Face cache {cache} (hub id {spec.source})"
        index = cached_index(spec.source, cache)
        if index is None and not allow:
            raise not_in_cache(spec.name, spec.source, cache)
        kwargs["cache_dir"] = str(cache)
        source = spec.source

    main = getattr(torch, spec.dtype)
    extra = COMPONENT_DTYPES.get(spec.family, {})
    torch_dtype: Any = main
    if any(getattr(torch, d) != main for d in extra.values()):
        torch_dtype = {"default": main, **{k: getattr(torch, d) for k, d in extra.items()}}
    kwargs[_dtype_keyword()] = torch_dtype
    # diffusers saves a component that is None as [null, null] in model_index.json but will not
    # load such a pipeline back unless the component is passed as None explicitly.
    for key, value in (index or {}).items():
        if not key.startswith("_") and value in ([None, None], (None, None)):
            kwargs[key] = None

    from diffusers import DiffusionPipeline

    try:
        with _loading_bars(progress):
            pipe = DiffusionPipeline.from_pretrained(source, **kwargs)
    except OSError as e:  # FileNotFoundError, huggingface_hub's LocalEntryNotFoundError, EnvironmentError
        detail = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
        if spec.local:
            how = how_to_provide(spec.name, None, None)
            raise ModelNotFoundError(spec.name, where, how, detail=detail) from e
        raise not_in_cache(spec.name, spec.source, hf_cache_dir(), detail=f"incomplete: {detail}") from e

    from ..runtime.families import detect

    fam = detect(pipe)
    if fam.name != spec.family:
        expected = f"a {spec.pipeline} ({spec.family} family)"
        raise ModelError(f"model {spec.name}", "pipeline", type(pipe).__name__, expected)
    check_size(pipe, spec)
    if spec.loras:
        load_loras(pipe, spec)
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=not progress)
    return pipe, spec


def size_multiple(pipe, family: str) -> int:
    """The multiple of height and width the pipeline samples without resizing: the VAE's
    downsampling times the transformer's patch (FLUX packs 2x2 latents into a token)."""
    if family == "wan":
        patch = getattr(pipe.transformer.config, "patch_size", (1, 2, 2))
        return pipe.vae_scale_factor_spatial * patch[-1]
    vae = pipe.vae_scale_factor
    if family == "flux":
        return vae * 2
    if family == "sd3":
        return vae * getattr(pipe, "patch_size", 2)
    return vae


def check_size(pipe, spec: ModelSpec) -> None:
    """A named error for a size the pipeline would silently resize (FLUX, Wan) or reject late."""
    m = size_multiple(pipe, spec.family)
    for key in ("height", "width"):
        v = getattr(spec, key)
        if v % m:
            lo, hi = max(m, v - v % m), v - v % m + m
            raise ModelError(f"model {spec.name}", key, v, f"a multiple of {m} (VAE x patch size of this "
                             f"{type(pipe).__name__}), e.g. {lo} or {hi}")
    if spec.frames is not None:
        t = pipe.vae_scale_factor_temporal
        if (spec.frames - 1) % t:
            raise ModelError(f"model {spec.name}", "frames", spec.frames, f"{t}k + 1 frames (the VAE packs {t} frames "
                             f"after the first), e.g. {spec.frames - (spec.frames - 1) % t}")


def load_loras(pipe, spec: ModelSpec) -> None:
    """Load the spec's LoRAs with diffusers' loader, each under its name-and-hash adapter name,
    and activate them together at their scales."""
    if not hasattr(pipe, "load_lora_weights"):
        raise ModelError(f"model {spec.name}", "--lora", [x.path for x in spec.loras],
                         f"a pipeline with diffusers' LoRA loader; {type(pipe).__name__} has none")
    names = []
    for lora in spec.loras:
        if lora.adapter in names:
            continue
        try:
            pipe.load_lora_weights(lora.path, adapter_name=lora.adapter)
        except (ValueError, KeyError, RuntimeError, OSError) as e:
            raise ModelError("--lora", "path", lora.path, f"LoRA weights for {type(pipe).__name__} ({first_line(e)})") from None
        names.append(lora.adapter)
    pipe.set_adapters([x.adapter for x in spec.loras], [x.scale for x in spec.loras])


@contextlib.contextmanager
def _loading_bars(enabled: bool):
    """diffusers' and transformers' loading progress bars on or off (they are global switches)."""
    if enabled:
        yield
        return
    from diffusers.utils import logging as dlog

    switches = [dlog]
    try:
        from transformers.utils import logging as tlog

        switches.append(tlog)
    except ImportError:
        pass
    was = [m.is_progress_bar_enabled() for m in switches]
    for m in switches:
        m.disable_progress_bar()
    try:
        yield
    finally:
        for m, on in zip(switches, was):
            if on:
                m.enable_progress_bar()
