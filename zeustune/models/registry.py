"""The model layer's public names in one module, as they were before it was split by concern (kept
for scripts and code that import from here; new code imports from the module that holds a name):

- :mod:`.errors`: ModelError, ModelNotFoundError;
- :mod:`.spec`: ModelSpec, Lora, parse_lora, the dtypes and guidance modes a spec takes;
- :mod:`.known`: MODELS (short names), FAMILY_DEFAULTS, tiny-flux's folder and settings;
- :mod:`.folder_yaml`: a model folder's ``zeustune.yaml``;
- :mod:`.hub`: the Hugging Face cache, the download policy, ``model_index.json``;
- :mod:`.lookup`: resolve (a short name, a folder or a hub id to a ModelSpec);
- :mod:`.loading`: load (pipeline, dtype, size check, LoRAs);
- :mod:`.calling`: the ``pipe(...)`` arguments of a spec.

Importing it is cheap: torch, diffusers and huggingface_hub are imported on first use.
"""

from __future__ import annotations

from .calling import guidance_kwargs, pipeline_kwargs
from .errors import ModelError, ModelNotFoundError
from .folder_yaml import FOLDER_DEFAULTS, folder_defaults
from .hub import ALLOW_DOWNLOAD_ENV, download_allowed, hf_cache_dir
from .known import (EMBEDDED_DIR, FAMILY_DEFAULTS, MODELS, TINY_FLUX_CALL_KWARGS, TINY_FLUX_DIR, TINY_FLUX_SIZE,
                    TINY_FLUX_STEPS, TINY_WAN_DIR)
from .loading import COMPONENT_DTYPES, check_size, load, load_loras, size_multiple
from .lookup import resolve
from .spec import DTYPES, FAMILY_GUIDANCE, FAMILY_NAMES, HUB_ID, Lora, ModelSpec, lora_file, parse_lora

__all__ = [
    "ALLOW_DOWNLOAD_ENV", "COMPONENT_DTYPES", "DTYPES", "EMBEDDED_DIR", "FAMILY_DEFAULTS", "FAMILY_GUIDANCE",
    "FAMILY_NAMES", "FOLDER_DEFAULTS", "HUB_ID", "MODELS", "TINY_FLUX_CALL_KWARGS", "TINY_FLUX_DIR", "TINY_FLUX_SIZE",
    "TINY_FLUX_STEPS", "TINY_WAN_DIR", "Lora", "ModelError", "ModelNotFoundError", "ModelSpec", "check_size", "download_allowed",
    "folder_defaults", "guidance_kwargs", "hf_cache_dir", "load", "load_loras", "lora_file", "parse_lora",
    "pipeline_kwargs", "resolve", "size_multiple",
]
