"""Trials on a Ray cluster: one actor per worker, each holding one loaded pipeline.

The study stays in the driver (ask and tell against the SQLAlchemy storage, exactly as a local
run); actors only score plans. Why actors and not Ray Tune trials: measured on a trivial
objective, Tune with OptunaSearch costs 2.4 s per trial per slot against 0.05 s for an actor
call driven by ask/tell (docs/search/tune-overhead.md), more than a whole tiny-flux trial; and
our loop already owns what Tune would add (dedup, over-budget pruning, refinement, resume).

- Each actor loads its pipeline once and keeps it, with the reference images for the
  calibration prompts. References missing from the driver's on-disk cache are rendered once
  across the cluster (each worker a share), cached, and shared through the object store.
- Timings come from the workers too: one cost model per device type, each fitted on a worker of
  that type; the budget uses one type (the most common), and finalists are re-timed there.
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

from .cost import CostModel
from .executors import Outcome


class _Worker:
    """Ray actor body: a pipeline and an evaluator on the calibration prompts. References arrive
    after start-up (``set_refs``), so the workers can render the missing ones first; a restarted
    actor has none until the executor sends them again (its trials come back "unready")."""

    def __init__(self, model, prompts: list[str], seed: int, metric: str, batch: int, threads: int, device: str):
        # model: a ModelSpec (the user's settings and LoRAs travel with it; LoRA paths must exist on the worker)
        import torch

        from ..models.loading import load
        from .cost import device_name
        from .evaluator import Evaluator

        torch.set_num_threads(threads)
        pipe, spec = load(model, device=device, progress=False)
        self.evaluator = Evaluator(pipe, spec, prompts, seed, metric, batch)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.device_name = device_name(device)

    def info(self) -> dict:
        return {"name": self.name, "pid": os.getpid(), "device": self.device_name, "ready": self.evaluator.refs is not None}

    def set_refs(self, images) -> dict:
        from ..quality.evaluate import References

        self.evaluator.refs = References(images, len(images), 0, 0.0)
        return self.info()

    def full_images(self, prompts: list[str], seeds: list[int]):
        return self.evaluator.full_images(prompts, seeds)

    def fit_cost(self, steps: int, runs: int, factors=(), probe: bool = False) -> dict:
        from .cost import fit

        return fit(self.evaluator.time_run, steps, runs=runs, device=self.device_name, factors=factors, probe=probe).to_dict()

    def set_probe_share(self, share: float) -> None:
        self.evaluator.probe_share = share

    def time_schedule(self, schedule: dict, runs: int) -> tuple[float, float]:
        from ..schedule.format import Schedule

        return self.evaluator.time_schedule(Schedule.from_dict(schedule), runs)

    def score(self, decoded: dict, bar):
        from .executors import score
        from .space import Decoded

        if self.evaluator.refs is None:
            return Outcome("unready", reason="restarted worker without references", worker=self.name)
        return score(self.evaluator, Decoded.from_wire(decoded), bar, self.name)


class RayExecutor:
    """An executor (see executors.py) over ``workers`` Ray actors."""

    def __init__(self, model, prompts: list[str], seed: int, metric: str, batch: int, *, workers: int = 2,
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
        self.actors = [actor.remote(model, prompts, seed, metric, batch, threads, "cuda" if "num_gpus" in resources else device)
                       for _ in range(workers)]
        self.infos = ray.get([a.info.remote() for a in self.actors])  # waits until every pipeline is loaded
        self._refs = None  # ObjectRef of the reference images, shared by every actor
        self.slots = workers
        self._ids = itertools.count()
        self._free = deque(self.actors)
        self._queue: deque = deque()  # jobs waiting for a free actor
        self._running: dict = {}  # ObjectRef -> (handle, job, actor, started, attempt)
        self._probes: dict = {}  # ObjectRef of info() on a restarting actor -> actor
        self.retried = 0

    @property
    def devices(self) -> dict[str, int]:
        """Device type -> number of workers with it."""
        out: dict[str, int] = {}
        for i in self.infos:
            out[i["device"]] = out.get(i["device"], 0) + 1
        return out

    def _on(self, device: str):
        return next(a for a, i in zip(self.actors, self.infos) if i["device"] == device)

    def render(self, prompts: list[str], seeds: list[int]):
        """Full-step images, the prompts split evenly over the workers (references are computed
        once across the cluster, each worker a share)."""
        import torch

        k = -(-len(prompts) // len(self.actors))
        parts = [a.full_images.remote(prompts[i:i + k], seeds[i:i + k]) for a, i in zip(self.actors, range(0, len(prompts), k))]
        return torch.cat(self.ray.get(parts))

    def set_references(self, images) -> None:
        self._refs = self.ray.put(images)
        self.infos = self.ray.get([a.set_refs.remote(self._refs) for a in self.actors])

    def fit_costs(self, steps: int, runs: int, factors=(), probe: bool = False) -> dict[str, CostModel]:
        """One cost model per device type, each fitted on one worker of that type, one type at
        a time (nothing else runs meanwhile: a shared host would spoil the timings)."""
        return {dev: CostModel(**self.ray.get(self._on(dev).fit_cost.remote(steps, runs, tuple(factors), probe)))
                for dev in self.devices}

    def set_probe_share(self, share: float) -> None:
        """Every worker counts a predicted probe step at this share of a call (the budget's model)."""
        self.ray.get([a.set_probe_share.remote(share) for a in self.actors])

    def time_schedule(self, schedule, runs: int, device: str | None = None) -> tuple[float, float]:
        """(full, scheduled) median seconds on a worker of ``device`` (default: the most common type)."""
        device = device or max(self.devices, key=self.devices.get)
        return tuple(self.ray.get(self._on(device).time_schedule.remote(schedule.to_dict(), runs)))

    def submit(self, decoded, bar) -> int:
        handle = next(self._ids)
        job = (decoded.wire(), bar)
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
                        self._probe(actor)
                    self._dispatch()
                    continue
                handle, job, actor, _, attempt = self._running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except lost as e:
                    # The actor died (or was killed as hung): Ray restarts it; probe before reuse,
                    # and send the trial to another worker, once.
                    self._probe(actor)
                    if attempt >= 1:
                        self._dispatch()
                        return handle, Outcome("fail", reason=f"worker lost twice: {type(e).__name__}")
                    self.retried += 1
                    self._queue.appendleft((handle, job, attempt + 1))
                    self._dispatch()
                    continue
                if outcome.kind == "unready":  # restarted unnoticed: give it the references, send the trial again
                    self._probe(actor)
                    self._queue.appendleft((handle, job, attempt))
                    self._dispatch()
                    continue
                self._free.append(actor)
                self._dispatch()
                return handle, outcome
            now = time.monotonic()
            for handle, job, actor, started, attempt in list(self._running.values()):
                if now - started > self.timeout:  # hung: kill the actor (Ray restarts it), retry once
                    ray.kill(actor, no_restart=False)

    def _probe(self, actor) -> None:
        """A (re)started actor rejoins the free pool once it answers, with the references."""
        call = actor.set_refs.remote(self._refs) if self._refs is not None else actor.info.remote()
        self._probes[call] = actor

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
