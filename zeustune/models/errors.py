"""The model layer's errors: a bad name, field or folder (:class:`ModelError`), and weights that are
not where zeustune looked (:class:`ModelNotFoundError`, which says how to provide them)."""

from __future__ import annotations

from typing import Any

from ..schedule.messages import shown


class ModelError(ValueError):
    """A model name, spec field or pipeline directory that is not valid; same style as ScheduleError."""

    def __init__(self, source: str, field: str, value: Any, expected: str):
        self.source, self.field, self.value, self.expected = source, field, value, expected
        super().__init__(f"{source}: {field}: got {shown(value)}, expected {expected}")


class ModelNotFoundError(FileNotFoundError):
    """The weights of a model are not where zeustune looked (and it does not download them)."""

    def __init__(self, model: str, looked_in: str, how: list[str], detail: str | None = None):
        self.model, self.looked_in, self.how, self.detail = model, looked_in, list(how), detail
        lines = [f"model {model}: weights not found; looked in {looked_in}"]
        if detail:
            lines.append(f"  ({detail})")
        lines.append("To provide it, any of:")
        lines += [f"  - {h}" for h in how]
        super().__init__("\n".join(lines))

    def __str__(self) -> str:  # OSError's own __str__ would add errno formatting
        return self.args[0]
