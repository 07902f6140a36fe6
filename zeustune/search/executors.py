"""Where trials are scored. The study loop asks, submits, and tells as results come back; an
executor only turns (plan, abort bar) into an :class:`Outcome`.

:class:`InProcess` scores on the pipeline already loaded in this process, one trial at a time,
with no start-up cost: the default.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .evaluator import Hopeless, NonFiniteOutput
from .space import Decoded


@dataclass(frozen=True)
class Outcome:
    kind: str  # "complete" | "pruned" | "fail"
    losses: tuple[float, ...] | None = None
    reason: str = ""
    worker: str = ""


def score(evaluator, decoded: Decoded, bar: float | None, worker: str = "") -> Outcome:
    """Run one plan on an evaluator and classify the result."""
    try:
        losses = evaluator.losses(decoded, bar)
    except Hopeless as e:
        return Outcome("pruned", reason=f"hopeless: {e}", worker=worker)
    except NonFiniteOutput as e:
        return Outcome("fail", reason=str(e), worker=worker)
    return Outcome("complete", tuple(float(v) for v in losses), worker=worker)


class InProcess:
    """Scores each submitted plan right away on the local evaluator."""

    slots = 1

    def __init__(self, evaluator, worker: str = ""):
        self.evaluator, self.worker = evaluator, worker
        self._ids = itertools.count()
        self._done: list[tuple[int, Outcome]] = []

    def submit(self, decoded: Decoded, bar: float | None) -> int:
        handle = next(self._ids)
        self._done.append((handle, score(self.evaluator, decoded, bar, self.worker)))
        return handle

    def next(self) -> tuple[int, Outcome]:
        """The next finished job (handle, outcome); blocks until one is done."""
        return self._done.pop(0)

    def close(self) -> None:
        pass
