"""The benchmark against peer methods, by layer:

- ``peers``: diffusers' caches (FirstBlockCache, TaylorSeer, MagCache, SeaCache) on a pipeline;
- ``methods``: every row's method, one builder per family (SADA, Spectrum, LeMiCa, EasyCache-style
  and ZEUS's published settings as plans in our runtime; cache-dit; the diffusers caches);
- ``compute``: a row's cost in full calls of the model its users deploy (FLUX.1-dev; Wan2.1-14B for
  Wan) and its projected speedup there (equal compute);
- ``report``: tables, verdicts, plots; ``run``: the ``zeustune bench`` command;
- ``gpu``: the exported schedules timed on the full-size architecture, where a GPU exists.
"""

from .run import main

__all__ = ["main"]
