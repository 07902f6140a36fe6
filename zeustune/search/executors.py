"""Where trials are scored and timings taken. The study loop asks, submits, and tells as results
come back; an executor turns (plan, abort bar) into an :class:`Outcome`, and also owns the
devices the budget is timed on (``fit_costs``, ``time_schedule``) and, on a cluster, where
missing references are rendered (``render``).

:class:`InProcess` scores on the pipeline already loaded in this process, one trial at a time,
with no start-up cost: the default. ``ray_executor.RayExecutor`` is the cluster one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .cost import CostModel, device_name, fit
from .evaluator import Hopeless, NonFiniteOutput
from .space import Decoded


@dataclass(frozen=True)
class Outcome:
    kind: str  # "complete" | "pruned" | "fail" (| "unready": a restarted worker without references yet)
    losses: tuple[float, ...] | None = None
    reason: str = ""
    worker: str = ""
    calls: tuple[float, ...] | None = None  # per prompt: denoiser calls per CFG branch
    prompts: int | None = None  # pruned: after how many prompts


def score(evaluator, decoded: Decoded, bar, worker: str = "") -> Outcome:
    """Run one plan on an evaluator and classify the result."""
    try:
        losses = evaluator.losses(decoded, bar)
    except Hopeless as e:
        return Outcome("pruned", reason=f"hopeless: {e}", worker=worker, prompts=e.done)
    except NonFiniteOutput as e:
        return Outcome("fail", reason=str(e), worker=worker)
    return Outcome("complete", tuple(float(v) for v in losses), worker=worker,
                   calls=tuple(getattr(evaluator, "last_calls", ()) or ()) or None)


class InProcess:
    """Scores each submitted plan right away on the local evaluator."""

    slots = 1
    render = None  # references are computed here, by the evaluator itself

    def __init__(self, evaluator, worker: str = "", device: str = "cpu"):
        self.evaluator, self.worker = evaluator, worker
        self.device = device_name(device)
        self._ids = itertools.count()
        self._done: list[tuple[int, Outcome]] = []

    @property
    def devices(self) -> dict[str, int]:
        """Device type -> number of workers with it."""
        return {self.device: 1}

    def fit_costs(self, steps: int, runs: int, factors=(), probe: bool = False) -> dict[str, CostModel]:
        return {self.device: fit(self.evaluator.time_run, steps, runs=runs, device=self.device, factors=factors, probe=probe)}

    def time_schedule(self, schedule, runs: int, device: str | None = None) -> tuple[float, float]:
        return self.evaluator.time_schedule(schedule, runs)

    def set_probe_share(self, share: float) -> None:
        self.evaluator.probe_share = share

    def set_references(self, images) -> None:
        pass  # the evaluator holds them already

    def submit(self, decoded: Decoded, bar) -> int:
        handle = next(self._ids)
        self._done.append((handle, score(self.evaluator, decoded, bar, self.worker)))
        return handle

    def next(self) -> tuple[int, Outcome]:
        """The next finished job (handle, outcome); blocks until one is done."""
        return self._done.pop(0)

    def close(self) -> None:
        pass
