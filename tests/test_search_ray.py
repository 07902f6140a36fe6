"""Trials on a local Ray cluster (2 CPUs, CPU actors, tiny-flux): every trial is told into the
same study as a local run, and a worker killed mid-trial costs only a retry of that trial."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

ray = pytest.importorskip("ray", reason="ray is in the test extra")

from zeustune.models import TINY_FLUX_DIR, load  # noqa: E402
from zeustune.prompts import load_prompts  # noqa: E402
from zeustune.references import ReferenceCache  # noqa: E402
from zeustune.search import space as SP  # noqa: E402
from zeustune.search.cost import CostModel  # noqa: E402
from zeustune.search.evaluator import Evaluator  # noqa: E402
from zeustune.search.study import Search, make_sampler, open_study  # noqa: E402

pytestmark = pytest.mark.skipif(not (TINY_FLUX_DIR / "model_index.json").is_file(), reason="tiny-flux weights not built")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from zeustune.search.ray_executor import RayExecutor

    pipe, spec = load("tiny-flux", progress=False)
    prompts = load_prompts(spec, "calib")[:4]
    ev = Evaluator(pipe, spec, prompts, 0, "gmsd", batch=4)
    ev.prepare(ReferenceCache(tmp_path_factory.mktemp("cache")), progress=False)
    ex = RayExecutor("tiny-flux", prompts, 0, "gmsd", 4, workers=2, threads=1)
    ex.set_references(ev.refs.images)
    yield ev, ex
    ex.close()
    ray.shutdown()


def test_actors_score_like_the_local_evaluator(cluster):
    ev, ex = cluster
    assert len({i["pid"] for i in ex.infos}) == 2
    d = SP.decode(SP.uniform_seed(SP.load("tiny-flux"), 28, 3), SP.load("tiny-flux"), 28)
    h = ex.submit(d, None)
    handle, outcome = ex.next()
    assert handle == h and outcome.kind == "complete"
    local = ev.losses(d)
    # same weights, prompts, seeds, references; 1 vs 2 intra-op threads may round differently
    assert outcome.losses == pytest.approx(local.tolist(), rel=1e-3, abs=1e-6)


def test_a_killed_worker_costs_only_a_retry_and_no_finished_trial(cluster, tmp_path):
    ev, ex = cluster
    study, _ = open_study("ray", f"sqlite:///{tmp_path / 'st.db'}", make_sampler("tpe", 0), {"space": "tiny-flux"})
    cost = CostModel(fixed=0.02, call=0.01, skip=0.0002, steps=28)
    search = Search(study, ev, SP.load("tiny-flux"), cost, 2.0)
    search.seed_trials()
    victim = ex.infos[0]["pid"]
    retried0 = ex.retried

    def kill_soon():
        time.sleep(4.0)
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    search.run_tpe(24, executor=ex)
    killer.join()
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 24 == search.counts("tpe")
    assert not [t for t in study.trials if not t.state.is_finished()]
    scored = [t for t in finished if "scored_by" in t.user_attrs]
    assert len({t.user_attrs["scored_by"] for t in scored}) >= 2  # both workers did work
    assert ex.retried > retried0  # the trial on the killed worker was sent again
    assert not [t for t in finished if "worker lost" in t.user_attrs.get("error", "")]
