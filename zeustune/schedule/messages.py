"""The form of zeustune's user-facing errors: ``SOURCE: FIELD: got VALUE, expected WHAT``, one or two
lines, so a value is shown shortened when it is long (a 200,000-letter plan echoed in full buries
the reason under it)."""

from __future__ import annotations

from typing import Any

#: Characters of a long value that a message keeps.
HEAD = 60
#: Values whose repr is at most this long are shown whole.
WHOLE = 80


def shown(value: Any) -> str:
    """``repr(value)``, or for a long value its first HEAD characters and its length.

    >>> shown("F" * 200_000)
    "'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF'... (200000 letters)"
    >>> shown([1, 2])
    '[1, 2]'
    """
    text = repr(value)
    if len(text) <= WHOLE:
        return text
    if isinstance(value, str):
        return f"{value[:HEAD]!r}... ({len(value)} letters)"
    return f"{text[:HEAD]}... ({len(text)} characters)"


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its class name when the message is empty.

    >>> first_line(ValueError("bad value\\nmore detail")), first_line(KeyError())
    ('bad value', 'KeyError')
    """
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__
