"""Trials on local worker processes, each holding one loaded pipeline and using a share of the cores.

Why: a small model's calls leave a multi-threaded process partly idle (Python between operations,
small matrix products). On the 2-core CI machine, two single-threaded processes score 28% more
tiny-flux candidates per second than one process with two threads (docs/search/prefix-reuse.md).

- Workers start when the references are ready (``set_references``), so their start-up never
  overlaps a cost-model fit; they get the reference images with their pipeline.
- Timings stay in this process with every thread, as with :class:`~.executors.InProcess`: the
  cost model and the finalists are timed while the workers wait, idle, for work.
- Results come back in submission order, so a search is the same whichever worker is faster: the
  study sees the same sequence of trials as on any other run with the same seed and worker count.
- A worker that dies (out of memory, killed) breaks the pool: the search stops with an error, and
  rerunning the command resumes the stored study.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .executors import InProcess, Outcome

_EVALUATOR = None  # in a worker: its Evaluator


def _start(spec, prompts, seed, metric, batch, prefix_bytes, threads, device, images) -> None:
    import torch

    from ..evaluate import References
    from ..models import load
    from .evaluator import Evaluator

    global _EVALUATOR
    torch.set_num_threads(threads)
    pipe, spec = load(spec, device=device, progress=False)
    _EVALUATOR = Evaluator(pipe, spec, prompts, seed, metric, batch, prefix_bytes=prefix_bytes)
    _EVALUATOR.refs = References(images, len(images), 0, 0.0)


def _score(decoded: dict, bar) -> Outcome:
    from .executors import score
    from .space import Decoded

    return score(_EVALUATOR, Decoded.from_wire(decoded), bar, f"{os.uname().nodename}:{os.getpid()}")


class ProcessPool:
    """An executor (see executors.py) over ``workers`` local processes of ``threads`` threads."""

    render = None  # references are computed in this process, before the workers start

    def __init__(self, evaluator, spec, workers: int, threads: int, device: str = "cpu", prefix_bytes: int | None = None):
        if str(device).startswith("cuda"):
            raise ValueError(f"--executor processes: device {device!r}: worker processes share the CPU cores; "
                             "on a GPU use --executor local (one pipeline) or ray (one GPU per worker)")
        self.local = InProcess(evaluator, device=device)
        self.spec, self.workers, self.threads, self.device, self.prefix_bytes = spec, workers, threads, device, prefix_bytes
        self.slots = workers
        self.pool: ProcessPoolExecutor | None = None
        self._ids = itertools.count()
        self._futures: OrderedDict = OrderedDict()  # handle -> future, in submission order

    @property
    def devices(self) -> dict[str, int]:
        return self.local.devices

    def fit_costs(self, steps: int, runs: int, factors=()):
        return self.local.fit_costs(steps, runs, factors)

    def time_schedule(self, schedule, runs: int, device: str | None = None) -> tuple[float, float]:
        return self.local.time_schedule(schedule, runs)

    def set_references(self, images) -> None:
        ev = self.local.evaluator
        self.close()
        self.pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start,
            initargs=(self.spec, ev.prompts, ev.seed, ev.metric, ev.batch, self.prefix_bytes, self.threads, self.device,
                      images.cpu()))

    def submit(self, decoded, bar) -> int:
        if self.pool is None:
            raise RuntimeError("ProcessPool.submit before set_references: the workers need the references")
        handle = next(self._ids)
        self._futures[handle] = self.pool.submit(_score, decoded.wire(), bar)
        return handle

    def next(self) -> tuple[int, Outcome]:
        """The oldest submitted job (handle, outcome); blocks until it is done."""
        handle, future = self._futures.popitem(last=False)
        try:
            return handle, future.result()
        except BrokenProcessPool as e:
            raise RuntimeError(f"a search worker process died ({e}); the finished trials are stored: rerun the "
                               "command to resume the study, with fewer --workers if memory ran out") from None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
