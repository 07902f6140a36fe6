"""The model layer: which pipelines zeustune tunes and how they are loaded and called.

- ``errors``: ModelError and ModelNotFoundError;
- ``spec``: :class:`ModelSpec` and :class:`Lora` (what a model is, checked field by field);
- ``known``: the short names (``MODELS``) with their sampling settings, tiny-flux's among them;
- ``folder_yaml``: a model folder's own defaults (``zeustune.yaml``);
- ``hub``: the Hugging Face cache, the download policy, how to provide missing weights;
- ``lookup``: ``resolve``: a short name, a folder or a hub id -> a ModelSpec;
- ``loading``: ``load``: the pipeline, its dtype, size check and LoRAs, offline;
- ``calling``: the ``pipe(...)`` arguments of a spec;
- ``registry``: all of the above's public names in one module (older imports, scripts);
- ``settings``: the user's settings (flags, a folder's ``zeustune.yaml``) -> a ModelSpec;
- ``prompts``: the calibration and held-out prompt sets;
- ``tiny``: tiny random pipelines of every family, built offline (tests, benchmarks);
- ``tinyflux``: the embedded model tiny-flux (architecture, the scene data it was trained on).
- ``tinywan``: the embedded video model tiny-wan (Wan 2.1 architecture, its synthetic clips and detector).
"""

from .calling import pipeline_kwargs
from .errors import ModelError, ModelNotFoundError
from .known import MODELS, TINY_FLUX_DIR, TINY_WAN_DIR
from .loading import load
from .lookup import resolve
from .spec import ModelSpec

__all__ = ["MODELS", "TINY_FLUX_DIR", "TINY_WAN_DIR", "ModelError", "ModelNotFoundError", "ModelSpec", "load", "pipeline_kwargs", "resolve"]
