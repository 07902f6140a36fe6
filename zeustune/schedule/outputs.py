"""Where zeustune writes: output folders and files checked when a command starts.

A search writes its schedule, report and cache at the end; a folder that is a file, or one it
cannot write, found only then loses the whole run (its finalists' timings, its held-out scores).
So every command checks its outputs first: the nearest existing part of the path must be a
folder this process can create files in (tried with a nameless temporary file, since the
permission bits do not tell for root or a read-only mount).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["check_dir", "check_file"]


def _existing(path: Path) -> Path:
    """The path itself or its nearest ancestor that exists."""
    p = path
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def check_dir(path: str | os.PathLike, name: str, value: str | None = None) -> Path:
    """``path`` as an output folder (it may not exist yet), or a ValueError ``NAME: got VALUE,
    expected ...`` saying which part of it is in the way."""
    p = Path(path).expanduser()
    shown = repr(str(path) if value is None else value)
    there = _existing(p)
    if not there.is_dir():
        where = "it" if there == p and value is None else str(there)
        raise ValueError(f"{name}: got {shown}, expected a folder to write in ({where} is a file)")
    try:
        with tempfile.TemporaryFile(dir=there):
            pass
    except OSError as e:
        raise ValueError(f"{name}: got {shown}, expected a folder zeustune can write in "
                         f"({there}: {e.strerror or e})") from None
    return p


def check_file(path: str | os.PathLike, name: str, value: str | None = None) -> Path:
    """``path`` as an output file: not a folder, in a folder zeustune can write in."""
    p = Path(path).expanduser()
    value = str(path) if value is None else value
    if p.is_dir():
        raise ValueError(f"{name}: got {value!r}, expected a file name ({p} is a folder)")
    check_dir(p.parent, name, value=value)
    return p
