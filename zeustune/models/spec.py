"""What a model is: :class:`ModelSpec` (where its weights are, its family, how it is sampled by
default) and the :class:`Lora` weights loaded on top of it, with the checks that make a bad field a
named :class:`~zeustune.models.errors.ModelError` when the spec is made, not a failure mid-search."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..schedule.format import FAMILIES as FAMILY_NAMES  # the names of zeustune.runtime.families.FAMILIES
from ..schedule.format import MAX_STEPS, adapter_name
from .errors import ModelError

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

#: A hub repository id, ``org/name``.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


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

#: What a model may set of the search's effort (ModelSpec.search): the CLI flags without dashes.
SEARCH_EFFORT = ("trials", "refine", "probe_trials", "calib", "heldout")


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
    #: The search's effort for this model where it differs from ``zeustune search``'s defaults, as
    #: (flag, count) pairs of SEARCH_EFFORT (a video model's trial costs many images' worth).
    search: tuple[tuple[str, int], ...] = ()

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
        for pair in self.search if isinstance(self.search, tuple) else [self.search]:
            ok = isinstance(pair, tuple) and len(pair) == 2 and pair[0] in SEARCH_EFFORT
            if not (ok and isinstance(pair[1], int) and not isinstance(pair[1], bool) and pair[1] >= 1):
                fail("search", pair, f"(name, count) pairs, a name from {', '.join(SEARCH_EFFORT)} and a count >= 1")
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
    return Path(source).expanduser().is_absolute() or Path(source).exists() or not HUB_ID.match(source)
