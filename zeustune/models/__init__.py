"""The model layer: which pipelines zeustune tunes and how they are loaded and called.

- ``registry``: short names, :class:`ModelSpec`, offline loading, LoRAs, ``pipe(...)`` arguments;
- ``settings``: the user's settings (flags, a folder's ``zeustune.yaml``) -> a ModelSpec;
- ``prompts``: the calibration and held-out prompt sets;
- ``tiny``: tiny random pipelines of every family, built offline (tests, benchmarks);
- ``tinyflux``: the embedded model tiny-flux (architecture, the scene data it was trained on).
- ``tinywan``: the embedded video model tiny-wan (Wan 2.1 architecture, its synthetic clips and detector).
"""

from .registry import MODELS, TINY_FLUX_DIR, ModelError, ModelNotFoundError, ModelSpec, load, pipeline_kwargs, resolve

__all__ = ["MODELS", "TINY_FLUX_DIR", "ModelError", "ModelNotFoundError", "ModelSpec", "load", "pipeline_kwargs", "resolve"]
