"""The runtime's errors that several of its modules raise, below them all (the hook and the action
registry both raise ScheduleMismatchError; the hook imports the actions, so neither may define it)."""

from __future__ import annotations

from ..schedule.format import ScheduleError


class ScheduleMismatchError(ScheduleError):
    """A schedule applied to a pipeline or a call it was not tuned for."""
