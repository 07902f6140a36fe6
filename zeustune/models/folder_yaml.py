"""A model folder's own sampling defaults: the ``zeustune.yaml`` next to its ``model_index.json``
(format: docs/models.md), read strictly (unknown keys, bad values and prompt files outside the
folder are named errors) into changes of the folder's family defaults."""

from __future__ import annotations

import difflib
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..schedule import safeyaml
from .calling import SET_BY_ZEUSTUNE
from .errors import ModelError
from .spec import ModelSpec

#: The file next to model_index.json that carries a folder's own sampling defaults.
FOLDER_DEFAULTS = "zeustune.yaml"
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
        if not (isinstance(key, str) and key.isidentifier()) or key in SET_BY_ZEUSTUNE:
            raise ModelError(src, f"call_kwargs.{key}", value, "a pipe(...) argument name other than "
                             f"{', '.join(SET_BY_ZEUSTUNE)} (zeustune sets those)")
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
