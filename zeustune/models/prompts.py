"""Prompt sets for calibration (the search) and held-out evaluation.

Collections live in the package, ``zeustune/prompt_sets/<collection>/<split>.txt``: ``general`` for
real text-to-image models, ``tiny-flux`` for the tiny trained FLUX, ``tiny-wan`` for the tiny
trained Wan (captions of moving shapes). A prompt file has one prompt per line; blank lines and
lines starting with ``#`` are skipped.

    prompts = load_prompts("general", "calib")
    tag = prompts_sha256(prompts)[:12]
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..schedule.messages import shown

#: The collections shipped with the package.
PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompt_sets"
SPLITS = ("calib", "heldout")
_ALIASES = {
    "calib": "calib",
    "calibration": "calib",
    "heldout": "heldout",
    "held-out": "heldout",
    "held_out": "heldout",
}


class PromptsError(ValueError):
    """A prompt file or collection that is missing, empty or unreadable; ScheduleError's style."""

    def __init__(self, source: str, field: str, value: Any, expected: str):
        self.source, self.field, self.value, self.expected = source, field, value, expected
        super().__init__(f"{source}: {field}: got {shown(value)}, expected {expected}")


class PromptsNotFoundError(PromptsError, FileNotFoundError):
    """A prompt file that does not exist."""


def list_collections() -> list[str]:
    """Names of the collections shipped with the package."""
    if not PROMPTS_DIR.is_dir():
        return []
    return sorted(p.name for p in PROMPTS_DIR.iterdir() if p.is_dir() and any(p.glob("*.txt")))


def _collection_name(spec_or_collection) -> str:
    if not isinstance(spec_or_collection, (str, os.PathLike)):
        name = getattr(spec_or_collection, "prompts", None)  # a ModelSpec
        if not isinstance(name, str):
            raise PromptsError("prompts", "collection", spec_or_collection, "a collection name or a ModelSpec")
        return name
    name = os.fspath(spec_or_collection)
    if (PROMPTS_DIR / name).is_dir():
        return name
    from .known import MODELS  # a model's short name stands for its collection

    if name in MODELS:
        return MODELS[name].prompts
    raise PromptsError(
        "prompts", "collection", name, f"one of {', '.join(list_collections()) or '(none installed)'} or a model name"
    )


def load_prompts(spec_or_collection, split: str | os.PathLike) -> list[str]:
    """The prompts of a split: ``"calib"``, ``"heldout"`` (alias ``"held-out"``) of a collection
    (a collection name, a model short name or a ModelSpec, whose ``calib_prompts`` /
    ``heldout_prompts`` file wins when set), or a path to the user's own file, in which case the
    collection is not used."""
    key = _ALIASES.get(os.fspath(split)) if isinstance(split, (str, os.PathLike)) else None
    own = getattr(spec_or_collection, f"{key}_prompts", None) if key else None
    if own is not None:  # a ModelSpec carrying the user's own file for this split
        return read_prompt_file(own)
    if key is None:
        if not isinstance(split, (str, os.PathLike)) or not os.fspath(split):
            raise PromptsError("prompts", "split", split, f"one of {', '.join(SPLITS)} or a path to a prompt file")
        return read_prompt_file(split)
    path = PROMPTS_DIR / _collection_name(spec_or_collection) / f"{key}.txt"
    return read_prompt_file(path)


def read_prompt_file(path: str | os.PathLike) -> list[str]:
    """Prompts from a text file: one per line, blank lines and ``#`` comment lines skipped."""
    path = Path(path).expanduser()
    source = str(path)
    if not path.is_file():
        what = "a directory" if path.is_dir() else "no such file"
        raise PromptsNotFoundError(source, "file", what, "a text file with one prompt per line")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise PromptsError(source, "encoding", str(e), "UTF-8 text") from None
    except OSError as e:
        raise PromptsError(source, "file", f"unreadable ({e.strerror or e})", "a readable text file") from None
    prompts = [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]
    if not prompts:
        raise PromptsError(
            source, "prompts", "none", "at least one prompt (one per line; blank lines and # comments are skipped)"
        )
    return prompts


def prompts_sha256(prompts: list[str]) -> str:
    """SHA-256 (hex) of the exact list: content, order and count all change it."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise PromptsError("prompts", "list", prompts, "a list of strings")
    blob = json.dumps(list(prompts), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def generated_prompt_file(module: str, prompts, split: str, n: int, seed: int) -> str:
    """The text of an embedded model's prompt file, written by its scene generator ``module``: a
    '# ' header saying how it was made, then ``prompts(split, n, seed)``, one caption a line."""
    header = f"# prompts({split!r}, {n}, seed={seed}) from {module}; regenerate: python -m {module} --write-prompts"
    return "\n".join([header, *prompts(split, n, seed)]) + "\n"
