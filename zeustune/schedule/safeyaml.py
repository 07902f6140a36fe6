"""The one reader of the YAML files users hand zeustune: schedules, search spaces, a model folder's
zeustune.yaml.

Plain data only, and stricter than ``yaml.safe_load`` where it surprised users: aliases (and the
merge keys that use them) are refused, since their expansion is unbounded (an 838-byte file can
stand for hundreds of megabytes); a key given twice is refused instead of the later one winning
silently; a file that is not UTF-8 text is refused with its name. Every refusal goes through the
caller's error class, ``error(source, field, value, expected)``, so it reads like the caller's
other errors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .messages import first_line

__all__ = ["load", "read"]

Error = Callable[[str, str, Any, str], Exception]


class _Refused(Exception):
    def __init__(self, field: str, value: Any, expected: str):
        super().__init__(field)
        self.field, self.value, self.expected = field, value, expected


class _Loader(yaml.SafeLoader):
    """SafeLoader (the pure-Python composer, so aliases can be seen) without aliases or duplicate keys."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused("yaml", f"*{event.anchor}", f"no aliases or merge keys (<<: *name), line "
                           f"{event.start_mark.line + 1}: write the value out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    raise _Refused(str(key), key, f"each key once (line {line} repeats line {first[key]})")
                first[key] = line
            except TypeError:  # an unhashable key: the base class reports it
                pass
        return super().construct_mapping(node, deep)


def load(text: str, source: str, error: Error) -> Any:
    """The data of a YAML document, or ``error(...)`` naming ``source``."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except _Refused as e:
        raise error(source, e.field, e.value, e.expected) from None
    except yaml.YAMLError as e:
        first = first_line(e)
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None)
        where = f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark and problem else first
        raise error(source, "yaml", where, "valid YAML") from None
    except RecursionError:
        raise error(source, "yaml", "nesting too deep to read", "plain data (mappings, lists, values)") from None


def read(path: str | os.PathLike, error: Error) -> Any:
    """The data of a YAML file; a missing, unreadable, binary or malformed one raises ``error(...)``."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise error(source, "file", f"unreadable ({e.strerror or e})", "a readable YAML file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(source, "encoding", f"byte 0x{raw[e.start]:02x} at offset {e.start}",
                    "UTF-8 text (a YAML file, not a binary one)") from None
    return load(text, source, error)
