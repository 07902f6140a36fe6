"""The study storage against a real PostgreSQL server (.ci/run starts one on loopback and sets
ZEUSTUNE_TEST_POSTGRES): several processes asking and telling at once lose and duplicate no trial,
and a search whose server is stopped and started again mid-search waits for it and loses none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

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


# --------------------------------------------------------------------------- a storage outage mid-search
ROOT = Path(__file__).resolve().parents[1]


def server_dir() -> Path:
    """The folder .ci/postgres.sh started the test server in (its data folder's parent); the test
    skips where the server is not one this machine can stop and start again."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(URL)
    try:
        with engine.connect() as con:
            data = Path(con.execute(sqlalchemy.text("SHOW data_directory")).scalar())
    finally:
        engine.dispose()
    if not (data / "PG_VERSION").is_file():
        pytest.skip(f"the test server's data folder {data} is not on this machine: it cannot be stopped from here")
    return data.parent


def postgres(verb: str, folder: Path) -> subprocess.CompletedProcess:
    from sqlalchemy.engine import make_url

    env = {**os.environ, "ZEUSTUNE_PG_PORT": str(make_url(URL).port)}  # resume on the port the tests were given
    return subprocess.run(["bash", str(ROOT / ".ci" / "postgres.sh"), verb, str(folder)], env=env,
                          capture_output=True, text=True, timeout=60)


class Outages:
    """Stops the test server now and starts it again, with its data, ``seconds`` later."""

    def __init__(self, folder: Path):
        self.folder, self.resumed, self.threads = folder, [], []

    def __call__(self, seconds: float) -> None:
        assert postgres("stop", self.folder).returncode == 0
        thread = threading.Thread(target=lambda: (time.sleep(seconds), self.resumed.append(postgres("resume", self.folder))))
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join()  # the server back for the other tests, whatever happened
        assert all(r.returncode == 0 for r in self.resumed), [r.stderr for r in self.resumed]


def test_a_search_waits_out_two_server_restarts_and_loses_no_trial():
    """The server goes away twice: for 3 s right after a trial is stored (the reads before the
    next ask meet it), and for 9 s from the moment a plan is being scored: longer than Optuna's
    own retries of a trial write (5 tries, under 2 s apart), so that finished trial waits in
    memory and is written when the server is back. About 25 s."""
    from helpers import COST, FakeEvaluator

    from zeustune.search import space as SP
    from zeustune.search.study import Search, make_sampler, open_study

    outage, trials, moves = Outages(server_dir()), 24, 4

    class StopsTheServer(FakeEvaluator):
        def losses(self, d, bar=None):
            if len(self.calls) == 4:  # the 5th plan scored: a seed (seeds are scored first, whatever the budget)
                outage(9.0)
            return super().losses(d, bar)

    def progress(stage, number, *_):
        if stage == "tpe" and number == 2:
            outage(3.0)

    lines: list[str] = []
    name = f"outage-{uuid.uuid4().hex[:8]}"
    study, _ = open_study(name, URL, make_sampler("tpe", 0), {"space": "tiny-flux", "space_sha256": "x"}, patience=60,
                          log=lines.append)
    search = Search(study, StopsTheServer(), SP.load("tiny-flux"), COST, 3.0, seed=0)
    try:
        search.seed_trials()
        search.run_tpe(trials, progress)
        search.refine(moves)
    finally:
        outage.join()
    assert len(outage.resumed) == 2

    # one line when each outage began and one when it ended
    assert ["unreachable" in line for line in lines] == [True, False, True, False], lines
    assert ["back after" in line for line in lines] == [False, True, False, True], lines
    assert "--storage-patience" in lines[0] and "kept in memory" in lines[0]

    stored = optuna.load_study(study_name=name, storage=URL).get_trials(deepcopy=False)
    assert sorted(t.number for t in stored) == list(range(trials + moves))  # every one, no gap, no duplicate
    assert all(t.state.is_finished() for t in stored)
    assert sum(t.user_attrs["stage"] == "tpe" for t in stored) == trials
    assert sum(t.user_attrs["stage"] == "refine" for t in stored) == moves
    # the TPE trials stored are those of the search's in-memory mirror, each once
    told = [t for t in search.live.get_trials(deepcopy=False) if t.state.is_finished()]
    assert sorted((t.datetime_start, t.user_attrs["key"]) for t in stored if t.user_attrs["stage"] == "tpe") == \
        sorted((t.datetime_start, t.user_attrs["key"]) for t in told)


def test_two_drivers_on_one_postgres_study_score_each_plan_once():
    from helpers import assert_each_plan_scored_once, two_drivers

    scored, stored = two_drivers(URL, f"two-{uuid.uuid4().hex[:8]}")
    assert_each_plan_scored_once(scored, stored)
