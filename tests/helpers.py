"""Helpers the test modules share (tests/ is on pytest's pythonpath: ``from helpers import ...``).
Test modules import from here, never from each other; shared fixtures live in conftest.py.

- the runtime on tiny pipelines: CASES, N, schedule_for, run_scheduled, per_branch, ...;
- the step actions on hand-made tensors: SIGMAS, context;
- the search: RandomTrial (a stand-in Optuna trial), FakeEvaluator and COST (a search without
  rendering), two_drivers and assert_each_plan_scored_once (two processes on one study);
- the repository's tools and experiments as modules: load_script.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import torch

import zeustune
from zeustune.runtime.actions import BranchState, StepContext
from zeustune.runtime.families import by_name
from zeustune.schedule.format import Model, Predictor, Sampler, Schedule
from zeustune.schedule.plans import Plan
from zeustune.search.cost import CostModel
from zeustune.search.evaluator import NonFiniteOutput, as_bar

#: The repository's root (scripts/: maintained tools; experiments/: one docs page each).
ROOT = Path(__file__).resolve().parent.parent


def load_script(folder: str, name: str):
    """``folder/name.py`` of the repository (scripts/ or experiments/: not packages), imported as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# -- the runtime on tiny pipelines ------------------------------------------------------------------

N = 20
# A plan with every letter: two-step warm-up, E/R/S runs and an L tail.
PLAN = "FFFEFERFSSFFLLFLLFFF"

# (family, scheduler, prediction_type, cfg); the leaf module each denoiser runs exactly once per call.
CASES = {
    "flux-true-cfg": ("flux", None, None, True),
    "flux": ("flux", None, None, False),
    "sd3": ("sd3", None, None, True),
    "sdxl-euler": ("sdxl", "euler", None, True),
    "sdxl-dpm++": ("sdxl", "dpm++", None, True),
    "sd-vpred-euler": ("sd", "euler", "v_prediction", True),
    "sd-ddim": ("sd", "ddim", None, True),
    "wan": ("wan", None, None, True),
}
ENTRY = {"flux": "x_embedder", "sd3": "pos_embed", "sdxl": "conv_in", "sd": "conv_in", "wan": "patch_embedding"}


def schedule_for(tp, plan=PLAN, **predictor) -> Schedule:
    return Schedule(
        tag="test",
        model=Model(tp.family),
        sampler=Sampler(type(tp.pipe.scheduler).__name__, len(plan)),
        plan=Plan(plan),
        predictor=Predictor(**{"lagrange_term": 3, "lagrange_int": 3, **predictor}),
    )


def denoiser(tp):
    return getattr(tp.pipe, "transformer", None) or tp.pipe.unet


class Recorder:
    """Records every denoiser output the pipeline receives (fresh or predicted), with its inputs,
    and counts the real forward passes (the entry layer runs only when the model really runs)."""

    def __init__(self, tp):
        model = denoiser(tp)
        self.outputs, self.inputs, self.real_calls = [], [], 0
        self.handles = [
            model.register_forward_hook(self._out, with_kwargs=True),
            model.get_submodule(ENTRY[tp.family]).register_forward_pre_hook(self._real),
        ]

    def _out(self, module, args, kwargs, output):
        self.outputs.append(output[0].clone())
        self.inputs.append(kwargs.get("sample", args[0] if args else None))

    def _real(self, module, args):
        self.real_calls += 1

    def close(self):
        for h in self.handles:
            h.remove()


@contextlib.contextmanager
def scheduled(tp, schedule, **kwargs):
    """The pipeline with a schedule enabled, disabled again on the way out."""
    zeustune.enable(tp.pipe, schedule, **kwargs)
    try:
        yield
    finally:
        zeustune.disable(tp.pipe)


def run_scheduled(tp, schedule, steps=N, **kwargs):
    """One recorded run under a schedule: (output, Recorder, RunSummary)."""
    with scheduled(tp, schedule, **kwargs):
        out, rec = run_recorded(tp, steps)
        return out, rec, zeustune.summary(tp.pipe)


def run_recorded(tp, steps=N):
    rec = Recorder(tp)
    try:
        out = tp(steps)
    finally:
        rec.close()
    return out, rec


def per_branch(outputs, calls_per_step):
    """Recorded outputs split by CFG branch: the pipelines call cond first, then uncond."""
    return [outputs[b::calls_per_step] for b in range(calls_per_step)]



# -- the step actions on hand-made tensors ----------------------------------------------------------

SIGMAS = [14.6 / (1 + k) for k in range(12)]  # decreasing, one per step, as a Euler run's


def context(k, fresh, *, anchors=(), ptype="epsilon", flow=False, gamma=1.0, time="step", x=None, **predictor):
    """A StepContext as the hook makes it, on a branch holding the given ``(k, psi)`` fresh outputs."""
    pred = Predictor(gamma=gamma, time=time, **{"lagrange_term": 3, "lagrange_int": 3, **predictor})
    branch = BranchState.new(pred)
    tof = (lambda j: float(j)) if time == "step" else (lambda j: SIGMAS[j])
    branch.fresh.extend((j, tof(j), psi) for j, psi in fresh)
    branch.anchors.extend(anchors)
    sched = SimpleNamespace(config=SimpleNamespace(prediction_type=ptype))
    x = torch.randn(2, 3) if x is None else x
    return StepContext(branch, "cond", k, tof(k), pred, (x,), {}, by_name("flux" if flow else "sd"), sched,
                       SIGMAS, Plan("F" * len(SIGMAS)))



# -- the search ------------------------------------------------------------------------------------

class RandomTrial:
    """Stands in for an Optuna trial: uniform random draws, recorded."""

    def __init__(self, rng):
        self.rng, self.params = rng, {}

    def suggest_categorical(self, name, choices):
        self.params[name] = self.rng.choice(list(choices))
        return self.params[name]

    def suggest_int(self, name, lo, hi):
        assert lo <= hi, (name, lo, hi)
        self.params[name] = self.rng.randint(lo, hi)
        return self.params[name]

    def suggest_float(self, name, lo, hi, log=False):
        self.params[name] = self.rng.uniform(lo, hi)
        return self.params[name]



#: The step count of the search tests' plans (tiny-flux's).
STEPS = 28


class FakeEvaluator:
    """Loss grows with each skipped step, more for long runs and for S with large gamma: a
    smooth, plan-dependent landscape. Plans with 'RRRRRRR' give non-finite output."""

    def __init__(self, prompts=8, batch=4):
        self.prompts, self.batch, self.calls, self.bars = prompts, batch, [], []

    def value(self, d):
        loss, run = 0.0, 0
        for k, c in enumerate(d.plan.steps):
            run = 0 if c == "F" else run + 1
            if c != "F":
                loss += 0.002 * run * run * (1.5 if k < 6 else 1.0) * (1 + abs(d.gamma - 0.6) if c == "S" else 1.0)
        return loss

    def losses(self, d, bar=None):
        self.calls.append(d.key)
        if "RRRRRRR" in d.plan.steps:
            raise NonFiniteOutput(f"plan {d.plan}: non-finite output")
        v = self.value(d)
        per = torch.full((self.prompts,), v, dtype=torch.float64) + torch.linspace(0, 1e-4, self.prompts, dtype=torch.float64)
        self.bars.append(bar)
        for done in range(self.batch, self.prompts, self.batch):
            if as_bar(bar) is not None:
                as_bar(bar).check(per[:done].tolist(), rung=True)
        return per


COST = CostModel(fixed=0.024, call=0.0095, skip=0.0002, steps=STEPS, device="test")


DRIVER = """
import json, sys, time
import torch
sys.path.insert(0, sys.argv[4])
from helpers import COST, FakeEvaluator
from zeustune.search import space as SP
from zeustune.search.study import Search, make_sampler, open_study

url, name, start = sys.argv[1], sys.argv[2], float(sys.argv[3])


class Renders(FakeEvaluator):
    def losses(self, d, bar=None):
        time.sleep(0.02)  # a render takes time: the drivers overlap rather than take turns
        if "RRRRRRR" in d.plan.steps:  # a poor plan, not a failed one: a failed trial is no result for
            self.calls.append(d.key)   # the other driver, and once its driver exits it is tried again
            return torch.ones(self.prompts, dtype=torch.float64)
        return super().losses(d, bar)


study, _ = open_study(name, url, make_sampler("tpe", 0), {"space": "tiny-flux", "space_sha256": "x"})
s = Search(study, Renders(), SP.load("tiny-flux"), COST, 3.0, seed=0)
time.sleep(max(0.0, start - time.time()))
s.seed_trials()
s.run_tpe(40)
s.refine(10)
print(json.dumps(s.evaluator.calls))
"""


def two_drivers(url: str, name: str) -> tuple[list[list[str]], list]:
    """Two search processes on one study, started together on a fresh storage (both create it),
    with the same sampler seed (so they draw the same plans): what each scored, the stored trials."""
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", DRIVER, url, name, str(start), str(Path(__file__).parent)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    scored = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        scored.append(json.loads(out.strip().splitlines()[-1]))
    return scored, optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def assert_each_plan_scored_once(scored: list[list[str]], stored: list) -> None:
    every = [key for calls in scored for key in calls]
    assert len(every) == len(set(every))  # no plan rendered by both drivers
    # rendered: not a duplicate, nor pruned by the cost model alone (each driver tells those at once)
    originals = [t.user_attrs["key"] for t in stored if t.state.is_finished() and "duplicate_of" not in t.user_attrs
                 and not t.user_attrs.get("pruned", "").startswith("over budget")]
    assert len(originals) == len(set(originals)) and set(originals) == set(every)
    for t in stored:  # a draw of a plan the other driver scored points at that driver's trial
        if "duplicate_of" in t.user_attrs:
            assert stored[t.user_attrs["duplicate_of"]].user_attrs["key"] == t.user_attrs["key"]
