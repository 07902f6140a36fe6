"""The study storage under concurrency, against a real PostgreSQL server (.ci/run starts one on
loopback and sets ZEUSTUNE_TEST_POSTGRES): several processes asking and telling at once lose
and duplicate no trial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import optuna
import pytest

URL = os.environ.get("ZEUSTUNE_TEST_POSTGRES")
pytestmark = pytest.mark.skipif(
    not URL, reason="no PostgreSQL server: .ci/run starts one on loopback and sets ZEUSTUNE_TEST_POSTGRES (see .ci/postgres.sh)")

WORKERS, EACH = 4, 15


WORKER = """
import json, sys
import optuna
from zeustune.search.study import make_sampler
url, name, wid, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
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
print(json.dumps(told))
"""


def test_concurrent_workers_lose_and_duplicate_no_trial():
    name = f"concurrency-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=URL, directions=["minimize", "minimize"])
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, URL, name, str(w), str(EACH)], stdout=subprocess.PIPE, text=True)
             for w in range(WORKERS)]  # separate processes writing at once
    results = {}
    for w, p in enumerate(procs):
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        results[w] = json.loads(out.strip().splitlines()[-1])
    trials = optuna.load_study(study_name=name, storage=URL).get_trials(deepcopy=False)
    assert len(trials) == WORKERS * EACH
    assert sorted(t.number for t in trials) == list(range(WORKERS * EACH))  # no gap, no duplicate
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.user_attrs["who"] for t in trials) == sorted(f"{w}:{i}" for w in range(WORKERS) for i in range(EACH))
    told = sorted(n for numbers in results.values() for n in numbers)
    assert told == list(range(WORKERS * EACH))  # each worker's numbers are the trials stored
