"""Trials per minute of the search's TPE stage under each executor, and the driver's overhead.

Real trials (tiny-flux, 24 calibration prompts, budget 3x, a fixed cost model so every run
samples the same way): the in-process executor, Ray with 1 worker, Ray with 2 workers; each on
a fresh SQLite study, timed from the first ask to the last tell (start-up reported apart).

Simulated (``--simulate 64``): that many lightweight Ray workers (threads of one actor) that
sleep ``--delay`` seconds per trial instead of rendering, so the driver (ask, decode, tell,
storage) is the only real work: its overhead per trial is the wall time not explained by the
workers' sleeping.

    python scripts/bench_executors.py --trials 60 --out docs/benchmarks/executors.md
    python scripts/bench_executors.py --simulate 64 --delay 2 --trials 640
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from zeustune.models import load
from zeustune.prompts import load_prompts
from zeustune.references import ReferenceCache
from zeustune.search import space as SP
from zeustune.search.cost import CostModel
from zeustune.search.evaluator import Evaluator
from zeustune.search.executors import InProcess, Outcome
from zeustune.search.study import Search, make_sampler, open_study

COST = CostModel(fixed=0.016, call=0.0098, skip=0.0002, steps=28, device="fixed for the benchmark")


def run(label, ev, executor, trials, storage) -> dict:
    study, _ = open_study(label, storage, make_sampler("tpe", 0), {"space": "tiny-flux"})
    search = Search(study, ev, SP.load("tiny-flux"), COST, 3.0)
    search.seed_trials()
    t0 = time.perf_counter()
    search.run_tpe(trials, executor=executor)
    wall = time.perf_counter() - t0
    scored = sum(1 for t in study.trials if "scored_by" in t.user_attrs or t.user_attrs.get("loss_p90") is not None)
    return {"label": label, "trials": trials, "scored": scored, "wall": wall, "per_min": 60 * trials / wall}


class _Sleeper:
    """A Ray actor body whose threads stand for lightweight workers."""

    def score(self, plan, gamma, lt, li, bar, delay):
        time.sleep(delay)
        n = plan.count("F")
        return Outcome("complete", tuple(0.01 * (28 - n) + 0.001 * i for i in range(4)), worker="sim")


class Simulated:
    """An executor over ``workers`` concurrent sleeping calls on one threaded Ray actor."""

    def __init__(self, workers: int, delay: float):
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        self.ray, self.delay, self.slots = ray, delay, workers
        self.actor = ray.remote(max_concurrency=workers, num_cpus=0)(_Sleeper).remote()
        self.running, self.n = {}, 0

    def submit(self, decoded, bar):
        self.n += 1
        ref = self.actor.score.remote(decoded.plan.steps, decoded.gamma, 3, 6, bar, self.delay)
        self.running[ref] = self.n
        return self.n

    def next(self):
        ready, _ = self.ray.wait(list(self.running), num_returns=1)
        return self.running.pop(ready[0]), self.ray.get(ready[0])

    def close(self):
        self.ray.shutdown()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--simulate", type=int, default=0, help="simulate this many workers instead of real trials")
    ap.add_argument("--delay", type=float, default=2.0)
    ap.add_argument("--storage", help="SQLAlchemy URL (default: a fresh SQLite file)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="zt-bench-"))
    storage = args.storage or f"sqlite:///{work / 'bench.db'}"
    pipe, spec = load("tiny-flux", progress=False)
    prompts = load_prompts(spec, "calib")[:24]
    ev = Evaluator(pipe, spec, prompts, 0, "gmsd", batch=8)
    ev.prepare(ReferenceCache(), progress=False)
    rows = []
    if args.simulate:
        ex = Simulated(args.simulate, args.delay)
        r = run(f"simulated-{args.simulate}", ev, ex, args.trials, storage)
        ex.close()
        ideal = args.trials * args.delay / args.simulate
        r["driver_ms_per_trial"] = 1000 * (r["wall"] - ideal) / args.trials
        r["label"] += f" (delay {args.delay} s, ideal wall {ideal:.1f} s)"
        rows.append(r)
    else:
        from zeustune.search.ray_executor import RayExecutor

        rows.append(run("in-process", ev, InProcess(ev), args.trials, storage))
        print(rows[-1], flush=True)
        for workers in (1, 2):
            t0 = time.perf_counter()
            ex = RayExecutor("tiny-flux", prompts, 0, "gmsd", 8, workers=workers, threads=2 // workers)
            ex.set_references(ev.refs.images)
            start = time.perf_counter() - t0
            r = run(f"ray-{workers}", ev, ex, args.trials, storage)
            r["startup"] = start
            ex.close()
            import ray

            ray.shutdown()
            rows.append(r)
            print(rows[-1], flush=True)
    lines = ["| executor | trials | scored | wall (s) | trials/min | start-up (s) | driver ms/trial |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['trials']} | {r['scored']} | {r['wall']:.1f} | {r['per_min']:.1f} | "
                     f"{r.get('startup', 0):.1f} | {r.get('driver_ms_per_trial', float('nan')):.1f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
