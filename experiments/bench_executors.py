"""Regenerates docs/search/executors.md (quoted in docs/search/cluster.md). About 5 minutes on 2 cores
for the real trials (4 executors x 2 rounds of 60 trials, 20-40 s each, plus Ray start-up) and a few
minutes per simulated run (640 trials, 64 workers sleeping 2-5 s each).

Trials per minute of the search's TPE stage under each executor, and the driver's overhead.

Real trials (tiny-flux, 24 calibration prompts, budget 3x, a fixed cost model so every run has the
same budget line): in-process, and Ray with 1 and 2 workers; each on a fresh study, timed from the
first ask to the last tell (actor start-up reported apart). "rendered" counts trials a worker
scored (duplicates and over-budget plans are told without rendering), so rendered/min is the
throughput that scales with workers; on this 2-core machine a worker is one core (1 thread).

Simulated (``--simulate 64``): that many lightweight Ray workers (concurrent calls on one threaded
actor) that sleep ``--delay`` seconds per trial instead of rendering. The driver's overhead per
trial is its busy time (ask, sample, decode, tell, storage: everything but waiting for results)
divided by trials, measured directly, and the wall time against the ideal trials x delay / workers.

    python experiments/bench_executors.py --trials 60 --out docs/search/executors.md
    python experiments/bench_executors.py --simulate 64 --delay 2 --trials 640 --out docs/search/executors-sim.md
    python experiments/bench_executors.py --simulate 64 --delay 2 --trials 640 --storage postgresql+psycopg2://...
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from zeustune.models.registry import load
from zeustune.models.prompts import load_prompts
from zeustune.quality.references import ReferenceCache
from zeustune.search import space as SP
from zeustune.search.cost import CostModel
from zeustune.search.evaluator import Evaluator
from zeustune.search.executors import InProcess, Outcome
from zeustune.search.study import Search, make_sampler, open_study

COST = CostModel(fixed=0.016, call=0.0098, skip=0.0002, steps=28, device="fixed for the benchmark")


def run(label, ev, executor, trials, storage, seed=0) -> dict:
    study, _ = open_study(f"{label}-{time.time_ns()}", storage, make_sampler("tpe", seed), {"space": "tiny-flux"})
    search = Search(study, ev, SP.load("tiny-flux"), COST, 3.0)
    search.seed_trials()
    t0 = time.perf_counter()
    search.run_tpe(trials, executor=executor)
    wall = time.perf_counter() - t0
    rendered = sum(1 for t in study.trials if "duplicate_of" not in t.user_attrs
                   and not str(t.user_attrs.get("pruned", "")).startswith("over budget"))
    return {"label": label, "trials": trials, "rendered": rendered, "wall": wall, "per_min": 60 * trials / wall,
            "rendered_per_min": 60 * rendered / wall}


class _Sleeper:
    """A Ray actor body whose concurrent calls stand for lightweight workers."""

    def score(self, plan, gamma, lt, li, bar, delay):
        time.sleep(delay)
        n = plan.count("F")
        return Outcome("complete", tuple(0.01 * (28 - n) + 0.001 * i for i in range(4)), worker="sim")


class Simulated:
    """An executor over ``workers`` concurrent sleeping calls on one threaded Ray actor; it keeps
    the time the driver spends blocked waiting for results."""

    def __init__(self, workers: int, delay: float):
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        self.ray, self.delay, self.slots = ray, delay, workers
        self.actor = ray.remote(max_concurrency=workers, num_cpus=0)(_Sleeper).remote()
        ray.get(self.actor.score.remote("F", 1.0, 3, 6, None, 0.0))
        self.running, self.n, self.blocked = {}, 0, 0.0

    def submit(self, decoded, bar):
        self.n += 1
        ref = self.actor.score.remote(decoded.plan.steps, decoded.gamma, 3, 6, bar, self.delay)
        self.running[ref] = self.n
        return self.n

    def next(self):
        t0 = time.perf_counter()
        ready, _ = self.ray.wait(list(self.running), num_returns=1)
        out = self.running.pop(ready[0]), self.ray.get(ready[0])
        self.blocked += time.perf_counter() - t0
        return out

    def close(self):
        self.ray.shutdown()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=1, help="real runs: rounds of every executor, interleaved")
    ap.add_argument("--simulate", type=int, default=0, help="simulate this many workers instead of real trials")
    ap.add_argument("--delay", type=float, default=2.0)
    ap.add_argument("--storage", help="SQLAlchemy URL (default: a fresh SQLite file)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    import ray
    import torch

    work = Path(tempfile.mkdtemp(prefix="zt-bench-"))
    storage = args.storage or f"sqlite:///{work / 'bench.db'}"
    kind = storage.split(":", 1)[0]
    pipe, spec = load("tiny-flux", progress=False)
    prompts = load_prompts(spec, "calib")[:24]
    ev = Evaluator(pipe, spec, prompts, 0, "gmsd", batch=8)
    ev.prepare(ReferenceCache(), progress=False)
    rows = []
    if args.simulate:
        ex = Simulated(args.simulate, args.delay)
        r = run(f"simulated {args.simulate} workers", ev, ex, args.trials, storage)
        ex.close()
        ideal = args.trials * args.delay / args.simulate
        r.update(storage=kind, ideal=ideal, busy_ms=1000 * (r["wall"] - ex.blocked) / args.trials,
                 excess_ms=1000 * (r["wall"] - ideal) / args.trials)
        rows.append(r)
        lines = [f"Simulated: {args.simulate} workers sleeping {args.delay} s per trial, TPE sampler, {kind} storage.", "",
                 "| run | trials | wall (s) | ideal wall (s) | trials/min | driver busy ms/trial | wall over ideal ms/trial |",
                 "|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['label']} | {r['trials']} | {r['wall']:.1f} | {r['ideal']:.1f} | {r['per_min']:.0f} | "
                         f"{r['busy_ms']:.1f} | {r['excess_ms']:.1f} |")
    else:
        from zeustune.search.ray_executor import RayExecutor

        configs = [("in-process (2 threads)", None, None), ("ray, 1 worker x 1 thread", 1, 1),
                   ("ray, 2 workers x 1 thread", 2, 1), ("ray, 1 worker x 2 threads", 1, 2)]
        for rep in range(args.repeats):
            for label, workers, threads in configs:
                if workers is None:
                    r = run(label, ev, InProcess(ev), args.trials, storage, seed=rep)
                    r["startup"] = 0.0
                else:
                    t0 = time.perf_counter()
                    ex = RayExecutor("tiny-flux", prompts, 0, "gmsd", 8, workers=workers, threads=threads)
                    ex.set_references(ev.refs.images)
                    start = time.perf_counter() - t0
                    r = run(label, ev, ex, args.trials, storage, seed=rep)
                    r["startup"] = start
                    ex.close()
                    ray.shutdown()
                    time.sleep(3)  # let the cluster's processes exit before the next timed run
                rows.append(r)
                print(r, flush=True)
        lines = [f"Real trials: tiny-flux, 24 calibration prompts, batch 8, budget 3x, {args.trials} TPE trials per run, "
                 f"{args.repeats} interleaved round(s), torch {torch.__version__}, ray {ray.__version__}, {kind} storage.", "",
                 "| executor | round | trials | rendered | wall (s) | trials/min | rendered/min | start-up (s) |",
                 "|---|---|---|---|---|---|---|---|"]
        for i, r in enumerate(rows):
            lines.append(f"| {r['label']} | {i // len(configs) + 1} | {r['trials']} | {r['rendered']} | {r['wall']:.1f} | "
                         f"{r['per_min']:.1f} | {r['rendered_per_min']:.1f} | {r['startup']:.1f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
