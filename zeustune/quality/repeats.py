"""Library warnings that repeat once per sampled image, shown once per phase with a count.

A tokenizer that truncates a prompt says so on every pipeline call, and a search makes thousands.
Inside :func:`collapse_repeats`, a Python warning or a diffusers / transformers log record is shown
the first time its call site speaks; later ones from the same site (whatever their text: the
truncated words differ per prompt) are counted, and one line at the end of the phase says how many
were held back. Warnings filtered out ("ignore") stay out; phases nest (the inner one counts its
own, the outer one sees each site's first record).

>>> import warnings
>>> with collapse_repeats("demo", out=print):
...     for i in range(3):
...         warnings.warn(f"prompt {i} truncated")
demo: shown once, repeated 2 more times: UserWarning: prompt 0 truncated
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections import Counter
from contextlib import contextmanager

#: Libraries whose loggers speak once per pipeline call.
LIBRARIES = ("diffusers", "transformers")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextmanager
def collapse_repeats(phase: str, out=None):
    """Show each warning site once while the block runs; at its end, one line per site that was
    held back, through ``out`` (default: stderr). Yields the counts (call site -> times)."""
    counts: Counter = Counter()
    first: dict = {}

    def new(site, text: str) -> bool:
        counts[site] += 1
        if counts[site] == 1:
            first[site] = text
        return counts[site] == 1

    gate = _Gate(new)
    handlers = _handlers()
    with warnings.catch_warnings():
        # repeats must reach showwarning to be counted: Python's default action would drop those
        # with the same text before it; explicit filters (ignore, error) still come first
        warnings.simplefilter("always", append=True)
        show = warnings.showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):
            if new(("warning", category, filename, lineno), f"{category.__name__}: {message}"):
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = showwarning
        for h in handlers:
            h.filters.insert(0, gate)  # before an enclosing phase's gate: the inner one counts every record
        try:
            yield counts
        finally:
            for h in handlers:
                h.removeFilter(gate)
    for site, n in counts.items():
        if n > 1:
            (out or _stderr)(f"{phase}: shown once, repeated {n - 1} more times: {_short(first[site])}")


class _Gate(logging.Filter):
    """Lets a log record through the first time its call site speaks."""

    def __init__(self, new):
        super().__init__()
        self.new, self.last, self.verdict = new, None, True

    def filter(self, record: logging.LogRecord) -> bool:
        if record is not self.last:  # one record on its way through several handlers counts once
            self.last = record
            self.verdict = self.new((record.name, record.pathname, record.lineno), record.getMessage())
        return self.verdict


def _handlers() -> list[logging.Handler]:
    """The handlers the libraries' records reach: up each library's logger tree while it propagates,
    or Python's last-resort handler where none is set."""
    found: list[logging.Handler] = []
    for name in LIBRARIES:
        logger, reached = logging.getLogger(name), False
        while logger is not None:
            for h in logger.handlers:
                reached = True
                if h not in found:
                    found.append(h)
            if not logger.propagate:
                break
            logger = logger.parent
        if not reached and logging.lastResort is not None and logging.lastResort not in found:
            found.append(logging.lastResort)
    return found


def _short(text: str, n: int = 120) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= n else line[: n - 3] + "..."
