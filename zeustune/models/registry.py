"""The models zeustune tunes for: a registry of short names, and how to load and call them.

A :class:`ModelSpec` says where a pipeline's weights come from (a hub id or a local directory),
which runtime family it belongs to, and how it is sampled by default (steps, size, guidance,
dtype, extra ``pipe(...)`` arguments, prompt collection). :data:`MODELS` holds the known ones by
short name; :func:`resolve` also accepts a local diffusers pipeline directory or a hub id, taking
the defaults of the registry entry of the same family.

Weights are never downloaded behind the user's back. :func:`load` reads a local directory, or a
hub id from the user's Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``, as huggingface_hub
resolves them) with ``local_files_only=True``; when the weights are not there it raises
:class:`ModelNotFoundError`, which says which model, where it looked and how to provide it.
Setting ``ZEUSTUNE_ALLOW_DOWNLOAD=1`` lets it download from the hub instead (still subject to
``HF_HUB_OFFLINE``).

Importing this module is cheap: torch, diffusers and huggingface_hub are imported on first use.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..schedule.format import FAMILIES as FAMILY_NAMES  # the names of zeustune.runtime.families.FAMILIES
from ..schedule.format import MAX_STEPS, adapter_name
from ..schedule import safeyaml
from ..schedule.messages import shown
from ..schedule.shipped import shipped
DTYPES = ("bfloat16", "float16", "float32")
#: Guidance modes each family's pipeline can run: FLUX has distilled guidance (a transformer
#: input) and true CFG (a second call); the UNet families and SD3 batch CFG into one call; Wan
#: runs CFG as a second call, so it is "true_cfg" here.
FAMILY_GUIDANCE = {
    "flux": ("distilled", "true_cfg", "none"),
    "sd3": ("cfg", "none"),
    "sdxl": ("cfg", "none"),
    "sd": ("cfg", "none"),
    "wan": ("true_cfg", "none"),
}
#: Components loaded in another dtype than the pipeline's, per family. Wan's model card keeps
#: the VAE in float32 for decoding quality.
COMPONENT_DTYPES = {"wan": {"vae": "float32"}}

#: Set to 1 to let load() (and resolve() for uncached hub ids) download from the hub.
ALLOW_DOWNLOAD_ENV = "ZEUSTUNE_ALLOW_DOWNLOAD"

#: The embedded models, one folder each (models/ in the repository; shipped in the package).
EMBEDDED_DIR = shipped("zeustune.models", "embedded")
#: The tiny trained FLUX pipeline (scripts/train_tiny_flux.py writes it).
TINY_FLUX_DIR = EMBEDDED_DIR / "tiny-flux"
#: tiny-flux's sampling settings, all in this one place (they are retuned with the model).
TINY_FLUX_STEPS = 28
TINY_FLUX_SIZE = 64
TINY_FLUX_CALL_KWARGS = {"true_cfg_scale": 4.0, "negative_prompt": "", "max_sequence_length": 32, "guidance_scale": 1.0}

# From the Wan2.1 diffusers model card example (uncertain: quoted from memory of the card).
_WAN_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, "
    "poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, "
    "messy background, three legs, many people in the background, walking backwards"
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelError(ValueError):
    """A model name, spec field or pipeline directory that is not valid; same style as ScheduleError."""

    def __init__(self, source: str, field: str, value: Any, expected: str):
        self.source, self.field, self.value, self.expected = source, field, value, expected
        super().__init__(f"{source}: {field}: got {shown(value)}, expected {expected}")


class ModelNotFoundError(FileNotFoundError):
    """The weights of a model are not where zeustune looked (and it does not download them)."""

    def __init__(self, model: str, looked_in: str, how: list[str], detail: str | None = None):
        self.model, self.looked_in, self.how, self.detail = model, looked_in, list(how), detail
        lines = [f"model {model}: weights not found; looked in {looked_in}"]
        if detail:
            lines.append(f"  ({detail})")
        lines.append("To provide it, any of:")
        lines += [f"  - {h}" for h in how]
        super().__init__("\n".join(lines))

    def __str__(self) -> str:  # OSError's own __str__ would add errno formatting
        return self.args[0]


@dataclass(frozen=True)
class Lora:
    """LoRA weights to load with diffusers' loader: a .safetensors file or a folder holding one."""

    path: str
    scale: float = 1.0
    sha256: str = ""  # of the weights file's bytes; filled in by parse_lora

    @property
    def name(self) -> str:
        p = Path(self.path)
        return p.parent.name if p.is_file() and p.stem == "pytorch_lora_weights" else p.stem

    @property
    def adapter(self) -> str:
        return adapter_name(self.name, self.sha256)


def lora_file(path: str | os.PathLike) -> Path:
    """The weights file of a LoRA path (a file, or a folder with one .safetensors/.bin file)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        files = sorted(p.glob("*.safetensors")) or sorted(p.glob("*.bin"))
        if len(files) == 1:
            return files[0]
        found = ", ".join(f.name for f in files) or "none"
        raise ModelError("--lora", "path", str(path), f"a LoRA file or a folder with exactly one .safetensors file (found: {found})")
    raise ModelError("--lora", "path", str(path), "an existing LoRA weights file or folder")


def parse_lora(text: str | os.PathLike, scale: float | None = None) -> Lora:
    """``PATH`` or ``PATH:SCALE`` -> a Lora with the SHA-256 of its weights file."""
    import hashlib

    text = os.fspath(text)
    path, _, tail = text.rpartition(":")
    if scale is None and path and not Path(text).exists():
        try:
            scale = float(tail)
        except ValueError:
            raise ModelError("--lora", "scale", tail, "a number after the last ':' (PATH:SCALE)") from None
    else:
        path = text
    scale = 1.0 if scale is None else scale
    if not (scale == scale and abs(scale) != float("inf")):
        raise ModelError("--lora", "scale", scale, "a finite number")
    f = lora_file(path)
    digest = hashlib.sha256()
    with f.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return Lora(str(Path(path).expanduser().resolve()), float(scale), digest.hexdigest())


@dataclass(frozen=True)
class ModelSpec:
    """What a model is and how it is sampled by default. Treat the dicts as read-only."""

    name: str  # short name; for a directory or hub id not in MODELS, the same as source
    source: str  # hub id or local directory
    family: str  # zeustune.runtime.families name: flux, sd3, sdxl, sd, wan
    pipeline: str  # diffusers pipeline class name
    steps: int
    height: int
    width: int
    frames: int | None
    guidance: dict  # {"mode": "distilled" | "cfg" | "true_cfg" | "none", "scale": float | None}
    dtype: str  # "bfloat16" / "float16" / "float32"
    call_kwargs: dict  # extra pipe(...) kwargs
    prompts: str  # prompt collection under zeustune/prompt_sets/
    #: The user's own prompt files, used instead of the collection's split when set.
    calib_prompts: str | None = None
    heldout_prompts: str | None = None
    #: LoRAs loaded (diffusers' loader) on top of the weights, in order.
    loras: tuple[Lora, ...] = ()

    def __post_init__(self):
        src = f"model {self.name}"

        def fail(field, value, expected):
            raise ModelError(src, field, value, expected)

        if not isinstance(self.name, str) or not self.name:
            raise ModelError("model", "name", self.name, "a non-empty string")
        if not isinstance(self.source, str) or not self.source:
            fail("source", self.source, "a hub id or a local directory")
        if self.family not in FAMILY_NAMES:
            fail("family", self.family, f"one of {', '.join(FAMILY_NAMES)}")
        if not isinstance(self.pipeline, str) or not self.pipeline:
            fail("pipeline", self.pipeline, "a diffusers pipeline class name")
        for key in ("steps", "height", "width"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                fail(key, v, "a positive integer")
        if self.steps > MAX_STEPS:
            fail("steps", self.steps, f"an integer in [1, {MAX_STEPS}]")
        if self.family == "wan":
            if not isinstance(self.frames, int) or isinstance(self.frames, bool) or self.frames <= 0:
                fail("frames", self.frames, "a positive integer (Wan generates video)")
        elif self.frames is not None:
            fail("frames", self.frames, f"null ({self.family} generates images)")
        g = self.guidance
        if not isinstance(g, dict) or set(g) - {"mode", "scale"} or "mode" not in g:
            fail("guidance", g, "a mapping with keys mode and scale")
        allowed = FAMILY_GUIDANCE[self.family]
        if g["mode"] not in allowed:
            fail("guidance.mode", g["mode"], f"one of {', '.join(allowed)} for the {self.family} family")
        scale = g.get("scale")
        if scale is not None and (not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale)
                                  or scale < 0):  # NaN compares false with everything: it passed as "no CFG"
            fail("guidance.scale", scale, "a non-negative finite number")
        if scale is None and g["mode"] != "none":
            fail("guidance.scale", scale, f"a number for guidance mode {g['mode']}")
        if g["mode"] == "none" and self.family != "flux" and scale is not None and scale > 1:
            fail("guidance.scale", scale, "at most 1 with guidance mode none (above 1 the pipeline runs CFG)")
        if self.dtype not in DTYPES:
            fail("dtype", self.dtype, f"one of {', '.join(DTYPES)}")
        if not isinstance(self.call_kwargs, dict) or not all(isinstance(k, str) for k in self.call_kwargs):
            fail("call_kwargs", self.call_kwargs, "a mapping of pipe(...) argument names to values")
        if not isinstance(self.prompts, str) or not self.prompts:
            fail("prompts", self.prompts, "the name of a prompt collection")
        for key in ("calib_prompts", "heldout_prompts"):
            v = getattr(self, key)
            if v is not None and not (isinstance(v, str) and Path(v).expanduser().is_file()):
                fail(key, v, "an existing prompts file (one prompt per line)")
        if not isinstance(self.loras, tuple) or not all(isinstance(x, Lora) for x in self.loras):
            fail("loras", self.loras, "a tuple of Lora (see parse_lora)")
        # Own copies, so a caller's dict (or the registry's constants) is never shared.
        object.__setattr__(self, "guidance", {"mode": g["mode"], "scale": None if scale is None else float(scale)})
        object.__setattr__(self, "call_kwargs", dict(self.call_kwargs))

    @property
    def local(self) -> bool:
        """Whether source is a local directory (else a hub id)."""
        return _is_local(self.source)


def _is_local(source: str) -> bool:
    return Path(source).expanduser().is_absolute() or Path(source).exists() or not _HUB_ID.match(source)


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


def _spec(**kw) -> ModelSpec:
    kw.setdefault("frames", None)
    kw.setdefault("call_kwargs", {})
    kw.setdefault("prompts", "general")
    return ModelSpec(**kw)


MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        # Trained by scripts/train_tiny_flux.py; small enough for CPU tests and CI.
        _spec(
            name="tiny-flux",
            source=str(TINY_FLUX_DIR),
            family="flux",
            pipeline="FluxPipeline",
            steps=TINY_FLUX_STEPS,
            height=TINY_FLUX_SIZE,
            width=TINY_FLUX_SIZE,
            guidance={"mode": "true_cfg", "scale": TINY_FLUX_CALL_KWARGS["true_cfg_scale"]},
            dtype="float32",
            call_kwargs=TINY_FLUX_CALL_KWARGS,
            prompts="tiny-flux",
        ),
        # FluxPipeline defaults (28 steps, guidance_scale 3.5, max_sequence_length 512) as on the model card.
        _spec(
            name="flux",
            source="black-forest-labs/FLUX.1-dev",
            family="flux",
            pipeline="FluxPipeline",
            steps=28,
            height=1024,
            width=1024,
            guidance={"mode": "distilled", "scale": 3.5},
            dtype="bfloat16",
        ),
        # Model card: 4 steps, guidance_scale 0.0 (no guidance embedding), max_sequence_length 256.
        _spec(
            name="flux-schnell",
            source="black-forest-labs/FLUX.1-schnell",
            family="flux",
            pipeline="FluxPipeline",
            steps=4,
            height=1024,
            width=1024,
            guidance={"mode": "none", "scale": 0.0},
            dtype="bfloat16",
            call_kwargs={"max_sequence_length": 256},
        ),
        # SD3.5 Large (not Medium): model card 28 steps, guidance_scale 3.5, bf16. (Medium's card
        # uses 40 steps and 4.5.)
        _spec(
            name="sd3.5",
            source="stabilityai/stable-diffusion-3.5-large",
            family="sd3",
            pipeline="StableDiffusion3Pipeline",
            steps=28,
            height=1024,
            width=1024,
            guidance={"mode": "cfg", "scale": 3.5},
            dtype="bfloat16",
        ),
        # StableDiffusionXLPipeline defaults: 50 steps, guidance_scale 5.0; fp16 as on the card
        # (its VAE config has force_upcast, so decoding runs in float32). Loaded without
        # variant="fp16": the full-precision files are cast.
        _spec(
            name="sdxl",
            source="stabilityai/stable-diffusion-xl-base-1.0",
            family="sdxl",
            pipeline="StableDiffusionXLPipeline",
            steps=50,
            height=1024,
            width=1024,
            guidance={"mode": "cfg", "scale": 5.0},
            dtype="float16",
        ),
        # SD 2.1 (v-prediction, 768px) with the settings of schedules/sd/zeus-sd-demo.yaml: 50 steps,
        # guidance 7.5. Uncertain: Stability AI may have taken this repository off the hub; a local
        # copy works with --model PATH.
        _spec(
            name="sd2.1",
            source="stabilityai/stable-diffusion-2-1",
            family="sd",
            pipeline="StableDiffusionPipeline",
            steps=50,
            height=768,
            width=768,
            guidance={"mode": "cfg", "scale": 7.5},
            dtype="float16",
        ),
        # Model card: 480x832, 81 frames, guidance_scale 5.0, 50 steps (WanPipeline default),
        # transformer in bf16 and VAE in float32 (see COMPONENT_DTYPES), the card's negative prompt.
        _spec(
            name="wan2.1-1.3b",
            source="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            family="wan",
            pipeline="WanPipeline",
            steps=50,
            height=480,
            width=832,
            frames=81,
            guidance={"mode": "true_cfg", "scale": 5.0},
            dtype="bfloat16",
            call_kwargs={"negative_prompt": _WAN_NEGATIVE_PROMPT},
        ),
    )
}

#: The registry entry whose defaults a directory or hub id of each family gets.
FAMILY_DEFAULTS = {"flux": "flux", "sd3": "sd3.5", "sdxl": "sdxl", "sd": "sd2.1", "wan": "wan2.1-1.3b"}

#: Gated hub repositories: the license must be accepted on huggingface.co before downloading.
_GATED = {"black-forest-labs/FLUX.1-dev", "stabilityai/stable-diffusion-3.5-large"}


# --------------------------------------------------------------------------------------------
# Resolving names, directories and hub ids
# --------------------------------------------------------------------------------------------


def download_allowed() -> bool:
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub resolved HF_HUB_CACHE / HF_HOME."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve(name_or_path: str | os.PathLike | ModelSpec, **changes) -> ModelSpec:
    """The spec of a short name, a local diffusers pipeline directory or a hub id ``org/name``.

    A directory or hub id gets the defaults of the registry entry of its family (see
    FAMILY_DEFAULTS), the family read from its ``model_index.json`` (for a hub id, the cached
    one). ``changes`` override fields of the result, e.g. ``steps=50, height=512, width=512``.
    """
    spec = _lookup(name_or_path)
    if not changes:
        return spec
    names = {f.name for f in fields(ModelSpec)}
    unknown = sorted(set(changes) - names)
    if unknown:
        expected = f"one of the fields {', '.join(sorted(names))}"
        raise ModelError(f"model {spec.name}", "override", unknown[0], expected)
    return replace(spec, **changes)


def _lookup(value) -> ModelSpec:
    if isinstance(value, ModelSpec):
        return value
    text = os.fspath(value)
    if text in MODELS:
        return MODELS[text]
    path = Path(text).expanduser()
    if path.exists():
        if path.is_file() and path.name == "model_index.json":
            path = path.parent
        if not path.is_dir():
            expected = "a diffusers pipeline directory (with model_index.json), not a file"
            raise ModelError("models", "model", text, expected)
        for spec in MODELS.values():  # a registry entry's own directory keeps that entry's settings
            if spec.local and Path(spec.source).expanduser().resolve() == path.resolve():
                return spec
        return _from_local_dir(path)
    if _HUB_ID.match(text):
        for spec in MODELS.values():
            if spec.source == text:
                return spec
        return _from_hub(text)
    expected = f"a short name ({', '.join(MODELS)}), a diffusers pipeline directory or a hub id org/name"
    close = difflib.get_close_matches(text, list(MODELS), n=1)
    if close:
        expected += f"; did you mean {close[0]!r}?"
    raise ModelError("models", "model", text, expected)


def _read_index(index: Path, source: str) -> dict:
    try:
        data = json.loads(index.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(str(index), "json", reason, "valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("_class_name"), str):
        value = data.get("_class_name") if isinstance(data, dict) else data
        raise ModelError(str(index), "_class_name", value, "the pipeline class name of a diffusers model_index.json")
    return data


def _family_of(class_name: str, source: str) -> str:
    from ..runtime.families import FAMILIES as _FAMILIES  # imports diffusers: only when needed

    for fam in _FAMILIES:
        if fam.pipeline == class_name:
            return fam.name
    import diffusers  # a subclass of a supported pipeline runs as that family

    cls = getattr(diffusers, class_name, None)
    if isinstance(cls, type):
        for base in cls.__mro__:
            for fam in _FAMILIES:
                if fam.pipeline == base.__name__:
                    return fam.name
    from ..runtime.families import supported

    expected = f"a pipeline of a supported family: {supported()}"
    raise ModelError(source, "model_index.json: _class_name", class_name, expected)


def _defaults_for(index: dict, name: str, source: str) -> ModelSpec:
    family = _family_of(index["_class_name"], source)
    return replace(MODELS[FAMILY_DEFAULTS[family]], name=name, source=source, pipeline=index["_class_name"])


def _from_local_dir(path: Path) -> ModelSpec:
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelNotFoundError(
            str(path),
            str(index),
            ["pass the directory of a diffusers pipeline, with model_index.json at its top (as written by "
             "pipe.save_pretrained(DIR) or `hf download ORG/NAME --local-dir DIR`)"],
            detail="the directory has no model_index.json",
        )
    source = str(path.resolve())
    spec = _defaults_for(_read_index(index, source), source, source)
    file = path / FOLDER_DEFAULTS
    if file.exists() and not file.is_file():  # a folder of that name would be ignored silently
        raise ModelError(str(file), "file", "a directory", "a YAML file of the folder's sampling defaults")
    return folder_defaults(spec, file) if file.is_file() else spec


#: The file next to model_index.json that carries a folder's own sampling defaults.
FOLDER_DEFAULTS = "zeustune.yaml"
#: pipe(...) arguments zeustune passes itself (pipeline_kwargs), which call_kwargs must not replace.
_SET_BY_ZEUSTUNE = ("prompt", "num_inference_steps", "height", "width", "num_frames", "generator", "prompt_embeds",
                    "output_type", "return_dict", "latents", "callback_on_step_end")
_FOLDER_KEYS = ("zeustune_model", "steps", "height", "width", "frames", "guidance", "negative_prompt", "dtype",
                "prompts", "call_kwargs")


def folder_defaults(spec: ModelSpec, file: Path) -> ModelSpec:
    """``spec`` with the defaults of a folder's zeustune.yaml (format: docs/models.md). Every
    key is optional; prompt file paths are relative to the folder."""
    src = str(file)
    data = safeyaml.read(file, ModelError)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ModelError(src, "document", data, "a mapping of settings")
    for key in data:
        if key not in _FOLDER_KEYS:
            close = difflib.get_close_matches(str(key), _FOLDER_KEYS, n=1)
            raise ModelError(src, str(key), data[key], f"one of the keys {', '.join(_FOLDER_KEYS)}"
                             + (f"; did you mean {close[0]!r}?" if close else ""))
    if data.get("zeustune_model", 1) != 1:
        raise ModelError(src, "zeustune_model", data["zeustune_model"], "1 (the format version this zeustune reads)")
    changes: dict[str, Any] = {k: data[k] for k in ("steps", "height", "width", "frames", "dtype") if k in data}
    call = dict(spec.call_kwargs)
    extra = data.get("call_kwargs") or {}
    if not isinstance(extra, dict):
        raise ModelError(src, "call_kwargs", extra, "a mapping of pipe(...) argument names to values")
    for key, value in extra.items():  # checked here, not by the pipeline at the first call of a search
        if not (isinstance(key, str) and key.isidentifier()) or key in _SET_BY_ZEUSTUNE:
            raise ModelError(src, f"call_kwargs.{key}", value, "a pipe(...) argument name other than "
                             f"{', '.join(_SET_BY_ZEUSTUNE)} (zeustune sets those)")
        if not (value is None or isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value))):
            raise ModelError(src, f"call_kwargs.{key}", value, "a string, a finite number, true/false or null")
    call.update(extra)
    if "negative_prompt" in data:
        if not isinstance(data["negative_prompt"], str):
            raise ModelError(src, "negative_prompt", data["negative_prompt"], "a string")
        call["negative_prompt"] = data["negative_prompt"]
    changes["call_kwargs"] = call
    if "guidance" in data:
        g = data["guidance"]
        if not isinstance(g, dict) or "mode" not in g:
            raise ModelError(src, "guidance", g, "a mapping {mode: ..., scale: ...}")
        for key in g:
            if key not in ("mode", "scale"):
                raise ModelError(src, f"guidance.{key}", g[key], "one of the keys mode, scale")
        changes["guidance"] = {"mode": g["mode"], "scale": g.get("scale")}
    prompts = data.get("prompts")
    if isinstance(prompts, str):
        changes["prompts"] = prompts  # a shipped collection
    elif isinstance(prompts, dict):
        for split, value in prompts.items():
            if split not in ("calib", "heldout") or not isinstance(value, str):
                raise ModelError(src, f"prompts.{split}", value, "calib: FILE and/or heldout: FILE (relative to the folder)")
            folder = file.parent.resolve()
            p = (folder / value).resolve()
            if not p.is_relative_to(folder):  # the folder's file names files of its own, nothing else on the machine
                raise ModelError(src, f"prompts.{split}", value, f"a file inside the model folder {folder} "
                                 "(give another file with --prompts / --heldout-prompts)")
            if not p.is_file():
                raise ModelError(src, f"prompts.{split}", value, f"an existing prompts file ({p} does not exist)")
            changes[f"{split}_prompts"] = str(p)
    elif prompts is not None:
        raise ModelError(src, "prompts", prompts, "a collection name or {calib: FILE, heldout: FILE}")
    try:
        return replace(spec, **changes)
    except ModelError as e:  # name the file, not the model
        raise ModelError(src, e.field, e.value, e.expected) from None


def _from_hub(repo_id: str) -> ModelSpec:
    from huggingface_hub import try_to_load_from_cache

    cache = hf_cache_dir()
    cached = try_to_load_from_cache(repo_id, "model_index.json", cache_dir=cache)
    if isinstance(cached, str):
        return _defaults_for(_read_index(Path(cached), repo_id), repo_id, repo_id)
    if download_allowed():
        from huggingface_hub import hf_hub_download

        index = hf_hub_download(repo_id, "model_index.json", cache_dir=cache)
        return _defaults_for(_read_index(Path(index), repo_id), repo_id, repo_id)
    detail = None
    if not Path(repo_id).is_absolute():  # "models/x" reads as a hub id; say that no such directory exists either
        detail = f"not cached; there is no local directory {Path(repo_id).resolve()} either"
    raise _not_in_cache(repo_id, repo_id, cache, detail=detail)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _how_to_provide(spec_name: str, repo_id: str | None, cache: Path | None) -> list[str]:
    if spec_name == "tiny-flux":
        return [
            "reinstall zeustune: it ships tiny-flux (zeustune/models/embedded, models/ in the repository)",
            "or train it: python scripts/train_tiny_flux.py (writes models/tiny-flux)",
            "or pass a copy of a trained tiny-flux directory: --model PATH",
        ]
    if repo_id is None:
        return ["pass an existing diffusers pipeline directory: --model PATH"]
    gated = " (gated: accept its license on huggingface.co and `hf auth login` first)" if repo_id in _GATED else ""
    folder = "models--" + repo_id.replace("/", "--")
    return [
        f"on a machine with hub access run `hf download {repo_id}`{gated}, then copy its cache folder "
        f"{folder} into {cache} here (or point HF_HOME / HF_HUB_CACHE at a copied cache)",
        f"or `hf download {repo_id} --local-dir DIR` there, copy DIR here and pass --model DIR",
        f"or let zeustune download it: {ALLOW_DOWNLOAD_ENV}=1 (needs network access to the hub)",
    ]


def _not_in_cache(name: str, repo_id: str, cache: Path, detail: str | None = None) -> ModelNotFoundError:
    label = name if name == repo_id else f"{name} ({repo_id})"
    return ModelNotFoundError(
        label,
        f"the Hugging Face cache {cache} (hub id {repo_id})",
        _how_to_provide(name, repo_id, cache),
        detail=detail,
    )


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
            raise ModelNotFoundError(spec.name, str(path), _how_to_provide(spec.name, None, None), detail=detail)
        index = _read_index(index_path, str(path))
        where = str(path)
        source = str(path)
    else:
        from huggingface_hub import try_to_load_from_cache

        cache = hf_cache_dir()
        where = f"the Hugging Face cache {cache} (hub id {spec.source})"
        cached = try_to_load_from_cache(spec.source, "model_index.json", cache_dir=cache)
        if isinstance(cached, str):
            index = _read_index(Path(cached), spec.source)
        elif not allow:
            raise _not_in_cache(spec.name, spec.source, cache)
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
            how = _how_to_provide(spec.name, None, None)
            raise ModelNotFoundError(spec.name, where, how, detail=detail) from e
        raise _not_in_cache(spec.name, spec.source, hf_cache_dir(), detail=f"incomplete: {detail}") from e

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
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelError("--lora", "path", lora.path, f"LoRA weights for {type(pipe).__name__} ({first})") from None
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


# --------------------------------------------------------------------------------------------
# Calling
# --------------------------------------------------------------------------------------------


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
