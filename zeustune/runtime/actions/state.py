"""Per-CFG-branch state of a run: the fresh outputs predictors read, the Lagrange anchors, and the
states that actions bring of their own. A branch's state lives for one pipeline call."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BranchState:
    """What one CFG branch remembers during a run.

    fresh: ``(k, t, psi)`` of the two most recent fresh outputs (oldest first); predictions are
        never stored here, so no prediction is built on another one.
    anchors: ``(k, x0)`` clean-sample estimates for the Lagrange tail, the last ``lagrange_term``.
    own: the state of each action that registered a factory, by letter, made on first use.
    """

    fresh: deque = field(default_factory=lambda: deque(maxlen=2))
    anchors: deque = field(default_factory=deque)
    own: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, predictor) -> BranchState:
        return cls(anchors=deque(maxlen=predictor.lagrange_term))

    @property
    def last(self):
        """The most recent fresh output."""
        return self.fresh[-1][2]

    @property
    def prev(self):
        """The fresh output before the last (the last itself while only one exists)."""
        return self.fresh[0][2]

    def own_state(self, letter: str, factory: Callable[[Any], Any], predictor) -> Any:
        state = self.own.get(letter)
        if state is None:
            state = self.own[letter] = factory(predictor)
        return state

    def reset(self) -> None:
        """Forget everything (deques keep their lengths; own states are made again on next use)."""
        self.fresh.clear()
        self.anchors.clear()
        self.own.clear()
