"""Files zeustune ships inside its package, found through ``importlib.resources``.

The repository keeps them in top-level folders that other tools and the docs refer to; the
package reaches them through links, and a wheel carries copies (pyproject's package-data):

    zeustune/schedule/presets -> schedules/         preset schedules
    zeustune/search/spaces    -> search_spaces/     search spaces
    zeustune/models/embedded  -> models/            embedded models (tiny-flux, its LoRA, ...)
    zeustune/bench/figures    -> docs/benchmarks/   measured skip costs the bench prices with

Links rather than setuptools ``package-dir`` mappings, because a mapped package exists only once
installed: a checkout on ``PYTHONPATH`` would not find it, or would find another checkout's
through an older editable install.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def shipped(package: str, name: str) -> Path:
    """The folder ``name`` shipped in ``package``, on disk, links resolved (in a checkout: the
    top-level folder, so paths in studies and caches stay what they were)."""
    root = files(package) / name
    if not isinstance(root, Path):  # zipimport: diffusers and globbing need real folders
        raise RuntimeError(f"{package}/{name}: got {root!r}, expected a folder on disk (install zeustune with pip, "
                           "which unpacks it; a zipped install is not supported)")
    return root.resolve()
