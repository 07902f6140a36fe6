"""Regenerates docs/search/tune-overhead.md (quoted in docs/search/cluster.md). About a minute on
2 cores (40 trivial trials under Ray Tune took 47.5 s, under actors 1 s, plus Ray start-up).

Per-trial overhead of Ray Tune (OptunaSearch over an SQL-backed Optuna study) against a Ray
actor call driven by Optuna ask/tell, on a trivial objective: what each adds to every trial.

    python experiments/bench_tune_overhead.py --trials 40 --out docs/search/tune-overhead.md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def objective(config):  # Tune function trainable: trivial work, one reported result
    return {"loss": (config["x"] - 0.3) ** 2}


class Actor:
    def score(self, x):
        return (x - 0.3) ** 2


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    import optuna
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="zt-tune-"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []

    # Ray Tune: one trial per sample, 2 at a time, searcher = Optuna TPE on an SQLite study.
    search = OptunaSearch(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="loss", mode="min",
                          sampler=optuna.samplers.TPESampler(seed=0), storage=optuna.storages.RDBStorage(f"sqlite:///{work / 'tune.db'}"),
                          study_name="tune")
    tuner = tune.Tuner(objective, tune_config=tune.TuneConfig(search_alg=search, num_samples=args.trials, max_concurrent_trials=2),
                       run_config=tune.RunConfig(storage_path=str(work / "tune"), verbose=0))
    t0 = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - t0
    assert len(results) == args.trials and not results.errors
    rows.append(("Ray Tune + OptunaSearch (SQLite), 2 concurrent", wall, wall / args.trials * 2))

    # Actor + ask/tell: the same sampler and storage kind, one actor call per trial, 2 actors.
    study = optuna.create_study(storage=f"sqlite:///{work / 'actor.db'}", sampler=optuna.samplers.TPESampler(seed=0))
    actors = [ray.remote(num_cpus=1)(Actor).remote() for _ in range(2)]
    ray.get([a.score.remote(0.0) for a in actors])
    t0 = time.perf_counter()
    for i in range(0, args.trials, 2):
        trials = [study.ask() for _ in actors]
        refs = [a.score.remote(t.suggest_float("x", 0, 1)) for a, t in zip(actors, trials)]
        for t, v in zip(trials, ray.get(refs)):
            study.tell(t, v)
    wall2 = time.perf_counter() - t0
    rows.append(("actors + Optuna ask/tell (SQLite), 2 concurrent", wall2, wall2 / args.trials * 2))
    a = actors[0]
    rtt = []
    for _ in range(200):
        t0 = time.perf_counter()
        ray.get(a.score.remote(0.5))
        rtt.append(time.perf_counter() - t0)
    ray.shutdown()
    lines = [f"Trivial objective, {args.trials} trials, ray {ray.__version__}, optuna {optuna.__version__}, 2 CPUs.", "",
             "| driver | wall (s) | per trial per slot (s) |", "|---|---|---|"]
    lines += [f"| {name} | {w:.1f} | {p:.3f} |" for name, w, p in rows]
    lines += ["", f"One actor call round trip: median {1000 * statistics.median(rtt):.2f} ms over {len(rtt)} calls."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
