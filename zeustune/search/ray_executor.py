"""Trials on a Ray cluster: one actor per worker, each holding one loaded pipeline.

The study stays in the driver (ask and tell against the SQLAlchemy storage, exactly as a local
run); actors only score plans. Why actors and not Ray Tune trials: a tiny-flux trial takes
0.2-1 s, and Tune's per-trial bookkeeping costs about as much again (FACTS.md §4, ~1.5 s for
trivial trials here); an actor call costs about a millisecond, and our loop already owns the
parts Tune would add (dedup, over-budget pruning, refinement, resume from storage).

- Each actor loads its pipeline once and keeps it, with the reference images for the
  calibration prompts, which are computed once (by the driver, through the on-disk cache) and
  shared through the object store, not recomputed per worker.
- A timed trial needs a whole device: actors ask Ray for one GPU each on CUDA, or ``threads``
  CPUs on a CPU cluster (Ray resources are logical; oversubscribing spoils timings).
- Faults: an actor that dies mid-trial is restarted by Ray (``max_restarts``) and the trial is
  sent again, to whichever actor is free; a trial running past ``timeout`` seconds has its actor
  killed (and restarted) and is retried once, then failed.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections import deque

from .executors import Outcome


class _Worker:
    """Ray actor body: a pipeline, an evaluator on the calibration prompts, and their references."""

    def __init__(self, model: str, prompts: list[str], seed: int, metric: str, batch: int, refs, threads: int,
                 device: str):
        import torch

        from ..evaluate import References
        from ..models import load
        from .evaluator import Evaluator

        torch.set_num_threads(threads)
        pipe, spec = load(model, device=device, progress=False)
        self.evaluator = Evaluator(pipe, spec, prompts, seed, metric, batch)
        self.evaluator.refs = References(refs, len(prompts), 0, 0.0)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.device_name = _device_name(device)

    def score(self, plan: str, gamma: float, lagrange_term: int, lagrange_int: int, bar):
        from ..plans import Plan
        from .executors import score
        from .space import Decoded

        return score(self.evaluator, Decoded(Plan(plan), gamma, lagrange_term, lagrange_int), bar, self.name)

    def info(self) -> dict:
        return {"name": self.name, "pid": os.getpid(), "device": self.device_name}


def _device_name(device: str) -> str:
    from .cost import device_name

    return device_name(device)


class RayExecutor:
    """An executor (see executors.py) over ``workers`` Ray actors."""

    def __init__(self, model: str, prompts: list[str], seed: int, metric: str, batch: int, refs, *, workers: int = 2,
                 address: str | None = None, threads: int = 1, device: str = "cpu", timeout: float = 600.0,
                 max_restarts: int = 4):
        import ray

        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": False}
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = max(workers * threads, os.cpu_count() or 1)
            ray.init(**kwargs)
        self.ray, self.timeout = ray, timeout
        resources = {"num_gpus": 1, "num_cpus": threads} if str(device).startswith("cuda") else {"num_cpus": threads}
        actor = ray.remote(max_restarts=max_restarts, max_task_retries=0, **resources)(_Worker)
        refs_ref = ray.put(refs)
        self.actors = [actor.remote(model, prompts, seed, metric, batch, refs_ref, threads,
                                    "cuda" if "num_gpus" in resources else device) for _ in range(workers)]
        self.infos = ray.get([a.info.remote() for a in self.actors])  # waits until every pipeline is loaded
        self.slots = workers
        self._ids = itertools.count()
        self._free = deque(self.actors)
        self._queue: deque = deque()  # jobs waiting for a free actor
        self._running: dict = {}  # ObjectRef -> (handle, job, actor, started, attempt)
        self._probes: dict = {}  # ObjectRef of info() on a restarting actor -> actor
        self.retried = 0

    @property
    def devices(self) -> set[str]:
        return {i["device"] for i in self.infos}

    def submit(self, decoded, bar) -> int:
        handle = next(self._ids)
        job = (decoded.plan.steps, decoded.gamma, decoded.lagrange_term, decoded.lagrange_int, bar)
        self._queue.append((handle, job, 0))
        self._dispatch()
        return handle

    def _dispatch(self) -> None:
        while self._queue and self._free:
            handle, job, attempt = self._queue.popleft()
            actor = self._free.popleft()
            ref = actor.score.remote(*job)
            self._running[ref] = (handle, job, actor, time.monotonic(), attempt)

    def next(self) -> tuple[int, Outcome]:
        ray = self.ray
        lost = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.TaskCancelledError)
        while True:
            waiting = list(self._running) + list(self._probes)
            if not waiting:
                raise RuntimeError("no Ray worker left: all actors died past their restarts")
            ready, _ = ray.wait(waiting, num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in self._probes:  # a restarted actor answering again joins the free pool
                    actor = self._probes.pop(ref)
                    try:
                        ray.get(ref)
                        self._free.append(actor)
                    except ray.exceptions.ActorDiedError:  # restarts exhausted: drop it
                        self.slots = max(self.slots - 1, 1)
                    except lost:
                        time.sleep(0.2)
                        self._probes[actor.info.remote()] = actor
                    self._dispatch()
                    continue
                handle, job, actor, _, attempt = self._running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except lost as e:
                    # The actor died (or was killed as hung): Ray restarts it; probe before reuse,
                    # and send the trial to another worker, once.
                    self._probes[actor.info.remote()] = actor
                    if attempt >= 1:
                        self._dispatch()
                        return handle, Outcome("fail", reason=f"worker lost twice: {type(e).__name__}")
                    self.retried += 1
                    self._queue.appendleft((handle, job, attempt + 1))
                    self._dispatch()
                    continue
                self._free.append(actor)
                self._dispatch()
                return handle, outcome
            now = time.monotonic()
            for handle, job, actor, started, attempt in list(self._running.values()):
                if now - started > self.timeout:  # hung: kill the actor (Ray restarts it), retry once
                    ray.kill(actor, no_restart=False)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
