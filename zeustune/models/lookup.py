"""Resolving what a user names to a :class:`~zeustune.models.spec.ModelSpec`: a short name of
:data:`~zeustune.models.known.MODELS`, a local diffusers pipeline folder or a hub id ``org/name``.
A folder or hub id takes the defaults of the known entry of its family (read from its
``model_index.json``), then a folder's own ``zeustune.yaml``. Nothing is downloaded unless
``ZEUSTUNE_ALLOW_DOWNLOAD=1`` (see :mod:`.hub`)."""

from __future__ import annotations

import difflib
import os
from dataclasses import fields, replace
from pathlib import Path

from .errors import ModelError, ModelNotFoundError
from .folder_yaml import FOLDER_DEFAULTS, folder_defaults
from .hub import cached_index, download_allowed, hf_cache_dir, not_in_cache, read_index
from .known import FAMILY_DEFAULTS, MODELS
from .spec import HUB_ID, ModelSpec


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
    if HUB_ID.match(text):
        for spec in MODELS.values():
            if spec.source == text:
                return spec
        return _from_hub(text)
    expected = f"a short name ({', '.join(MODELS)}), a diffusers pipeline directory or a hub id org/name"
    close = difflib.get_close_matches(text, list(MODELS), n=1)
    if close:
        expected += f"; did you mean {close[0]!r}?"
    raise ModelError("models", "model", text, expected)

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
    spec = _defaults_for(read_index(index), source, source)
    file = path / FOLDER_DEFAULTS
    if file.exists() and not file.is_file():  # a folder of that name would be ignored silently
        raise ModelError(str(file), "file", "a directory", "a YAML file of the folder's sampling defaults")
    return folder_defaults(spec, file) if file.is_file() else spec

def _from_hub(repo_id: str) -> ModelSpec:
    cache = hf_cache_dir()
    index = cached_index(repo_id, cache)
    if index is None and download_allowed():
        from huggingface_hub import hf_hub_download

        index = read_index(Path(hf_hub_download(repo_id, "model_index.json", cache_dir=cache)))
    if index is not None:
        return _defaults_for(index, repo_id, repo_id)
    detail = None
    if not Path(repo_id).is_absolute():  # "models/x" reads as a hub id; say that no such directory exists either
        detail = f"not cached; there is no local directory {Path(repo_id).resolve()} either"
    raise not_in_cache(repo_id, repo_id, cache, detail=detail)
