"""Where weights come from and the download policy: the user's Hugging Face cache, read offline
(``local_files_only``), and the hub only with ``ZEUSTUNE_ALLOW_DOWNLOAD=1``. A pipeline's
``model_index.json`` is read here (from a folder or the cache), and a model whose weights are missing
gets a :class:`~zeustune.models.errors.ModelNotFoundError` that says how to provide them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..schedule.messages import first_line
from .errors import ModelError, ModelNotFoundError

#: Set to 1 to let load() (and resolve() for uncached hub ids) download from the hub.
ALLOW_DOWNLOAD_ENV = "ZEUSTUNE_ALLOW_DOWNLOAD"

#: Gated hub repositories: the license must be accepted on huggingface.co before downloading.
GATED = {"black-forest-labs/FLUX.1-dev", "stabilityai/stable-diffusion-3.5-large"}


def download_allowed() -> bool:
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub resolved HF_HUB_CACHE / HF_HOME."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)

def read_index(index: Path) -> dict:
    """A diffusers ``model_index.json``, read and checked (a mapping naming its pipeline class)."""
    try:
        data = json.loads(index.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(str(index), "json", first_line(e), "valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("_class_name"), str):
        value = data.get("_class_name") if isinstance(data, dict) else data
        raise ModelError(str(index), "_class_name", value, "the pipeline class name of a diffusers model_index.json")
    return data

def cached_index(repo_id: str, cache: Path) -> dict | None:
    """The hub repository's ``model_index.json`` from the cache, read; None when it is not cached."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "model_index.json", cache_dir=cache)
    return read_index(Path(cached)) if isinstance(cached, str) else None


def how_to_provide(spec_name: str, repo_id: str | None, cache: Path | None) -> list[str]:
    if spec_name in ("tiny-flux", "tiny-wan"):  # the embedded models
        script = spec_name.replace("-", "_")
        return [
            f"reinstall zeustune: it ships {spec_name} (zeustune/models/embedded, models/ in the repository)",
            f"or train it: python scripts/train_{script}.py (writes models/{spec_name})",
            f"or pass a copy of a trained {spec_name} directory: --model PATH",
        ]
    if repo_id is None:
        return ["pass an existing diffusers pipeline directory: --model PATH"]
    gated = " (gated: accept its license on huggingface.co and `hf auth login` first)" if repo_id in GATED else ""
    folder = "models--" + repo_id.replace("/", "--")
    return [
        f"on a machine with hub access run `hf download {repo_id}`{gated}, then copy its cache folder "
        f"{folder} into {cache} here (or point HF_HOME / HF_HUB_CACHE at a copied cache)",
        f"or `hf download {repo_id} --local-dir DIR` there, copy DIR here and pass --model DIR",
        f"or let zeustune download it: {ALLOW_DOWNLOAD_ENV}=1 (needs network access to the hub)",
    ]


def not_in_cache(name: str, repo_id: str, cache: Path, detail: str | None = None) -> ModelNotFoundError:
    label = name if name == repo_id else f"{name} ({repo_id})"
    return ModelNotFoundError(
        label,
        f"the Hugging Face cache {cache} (hub id {repo_id})",
        how_to_provide(name, repo_id, cache),
        detail=detail,
    )
