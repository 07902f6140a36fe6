"""The study storage under concurrency, against a real PostgreSQL server (.ci/run starts one on
loopback and sets ZEUSTUNE_TEST_POSTGRES): several processes asking and telling at once lose
and duplicate no trial."""

from __future__ import annotations

import multiprocessing as mp
import os
import uuid

import optuna
import pytest

URL = os.environ.get("ZEUSTUNE_TEST_POSTGRES")
pytestmark = pytest.mark.skipif(
    not URL, reason="no PostgreSQL server: .ci/run starts one on loopback and sets ZEUSTUNE_TEST_POSTGRES (see .ci/postgres.sh)")

WORKERS, EACH = 4, 15


def _worker(url: str, name: str, wid: int, n: int, out) -> None:
    from zeustune.search.study import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=url, sampler=make_sampler("tpe", wid))
    told = []
    for i in range(n):
        t = study.ask()
        x = t.suggest_float("x", 0.0, 1.0)
        g = t.suggest_categorical("generator", ["a", "b"])
        t.set_user_attr("who", f"{wid}:{i}")
        study.tell(t, [x, 1.0 - x + (g == "b")])
        told.append(t.number)
    out.put((wid, told))


def test_concurrent_workers_lose_and_duplicate_no_trial():
    name = f"concurrency-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=URL, directions=["minimize", "minimize"])
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(URL, name, w, EACH, out)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    trials = optuna.load_study(study_name=name, storage=URL).get_trials(deepcopy=False)
    assert len(trials) == WORKERS * EACH
    assert sorted(t.number for t in trials) == list(range(WORKERS * EACH))  # no gap, no duplicate
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.user_attrs["who"] for t in trials) == sorted(f"{w}:{i}" for w in range(WORKERS) for i in range(EACH))
    told = sorted(n for numbers in results.values() for n in numbers)
    assert told == list(range(WORKERS * EACH))  # each worker's numbers are the trials stored
