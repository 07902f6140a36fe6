"""The Optuna study: names, storage, seeding, the TPE stage and the refinement stage.

Objectives: (quality loss on the calibration prompts, modelled latency), both minimised; the
budget is a hard constraint ``budget - modelled speedup <= 0`` (``trial.set_constraint``).
Plans over budget are not rendered at all (told as pruned: the cost model already decides
them), except the seeds, which are always scored so the front shows what users have today.

Every trial is written to the storage as soon as it is scored, in one transaction, so a killed
search loses at most the trials it was running; rerunning the same command resumes the same
study (its name encodes model, steps, resolution, budget, metric and the prompt set's hash).

The sampler works on an in-memory mirror of the study (``Search.live``), not on the SQL storage:
with constant liar, TPE reads every running trial at each draw, and through SQLAlchemy that cost
~0.5 s per trial with 64 trials in flight (docs/search/executors.md); in memory it is ~15 ms. The
storage holds every finished trial (this driver's and any other's, pulled in before each ask), so
results, resume and the dashboard stay one thing; trials still running live only in the driver.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import secrets
import socket
import statistics
import time
import warnings
import weakref
from dataclasses import dataclass, field, replace

import optuna
from optuna.trial import TrialState, create_trial

from ..schedule.plans import DECIDED
from . import space as SP
from .cost import CostModel
from .evaluator import Bar, Evaluator
from .executors import InProcess, Outcome
from .storage import DEFAULT_PATIENCE, Patience, PatientStorage, claim

optuna.logging.set_verbosity(optuna.logging.WARNING)

SAMPLERS = ("tpe", "nsga2", "random")
DEFAULT_STORAGE = "sqlite:///zeustune-studies.db"


def study_name(model: str, steps: int, height: int, width: int, budget: float, metric: str, prompts_sha: str,
               settings: str = "", loras: tuple = ()) -> str:
    """Readable parts, then hashes: ``settings`` digests guidance, dtype and call arguments
    (zeustune.settings.settings_digest); each LoRA adds its content hash and scale."""
    lora = "".join(f"-lora{x.sha256[:8]}x{x.scale:g}" for x in loras)
    tail = f"-s{settings}" if settings else ""
    return f"{model}-{steps}steps-{height}x{width}-{budget:g}x-{metric}-p{prompts_sha[:10]}{lora}{tail}"


def make_sampler(name: str, seed: int | None):
    if name == "tpe":
        with warnings.catch_warnings():  # group decomposition is marked experimental; it is what we need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _tpe(seed)
        # group=True: the space is conditional (each generator has its own knobs); constant_liar
        # keeps parallel workers from drawing the same point while others are still running.
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=24)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"--sampler: got {name!r}, expected one of {', '.join(SAMPLERS)}")


def stored_study_attrs(storage: str, name: str) -> dict | None:
    """The user attributes of a stored study, or None when there is no such study (yet)."""
    _check_url(storage)
    try:
        return _creating(lambda: optuna.load_study(study_name=name, storage=storage)).user_attrs
    except KeyError:
        return None
    except Exception as e:  # unreachable database, bad URL
        raise ValueError(f"--storage: cannot open {storage!r}: {e}") from None


def _check_url(storage: str) -> None:
    if "://" not in storage:
        raise ValueError(f"--storage: got {storage!r}, expected an SQLAlchemy URL such as sqlite:///studies.db or "
                         "postgresql://user@host/db")


def _creating(open_it, tries: int = 10):
    """``open_it()``, tried again while another driver creates the same new database: two drivers
    started together on a fresh SQLite file race to write optuna's schema version, and the later
    one's schema write fails: a table that "already exists", the schema version's unique key, a
    locked file (all seen with two ``zeustune search`` started at once). Other errors (a wrong URL,
    a server that does not answer) are raised at once."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(tries):
        try:
            return open_it()
        except (IntegrityError, OperationalError) as e:
            racing = isinstance(e, IntegrityError) or any(m in str(e) for m in ("already exists", "database is locked"))
            if not racing or attempt == tries - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def _tpe(seed):
    return optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, seed=seed, n_startup_trials=16)


def open_study(name: str, storage: str, sampler, meta: dict, patience: float = DEFAULT_PATIENCE,
               log=None) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists (then ``meta`` must match what it was made
    with: resuming with another search space or cost model would mix incomparable trials).

    A storage that cannot be opened is an error at once (a wrong URL should not wait); once open,
    every call of the study waits up to ``patience`` seconds for the storage through an outage
    (:mod:`.storage`), saying so on ``log`` (default: stderr)."""
    _check_url(storage)
    try:
        existing = {s.study_name for s in _creating(lambda: optuna.get_all_study_summaries(storage, include_best_trial=False))}
    except Exception as e:  # unreachable database, bad URL
        raise ValueError(f"--storage: cannot open {storage!r}: {e}") from None
    resumed = name in existing
    patient = PatientStorage(optuna.storages.get_storage(storage), Patience(patience, where=storage, log=log))
    study = optuna.create_study(study_name=name, storage=patient, sampler=sampler, load_if_exists=True,
                                directions=["minimize", "minimize"])
    if resumed:
        for key in ("space_sha256", "space"):
            old = study.user_attrs.get(key)
            if old is not None and old != meta.get(key):
                raise ValueError(f"study {name!r} in {storage} was made with {key} {old!r}, this search has "
                                 f"{meta.get(key)!r}: pass --study-name to start another study, or the same {key}")
    else:
        for k, v in meta.items():
            study.set_user_attr(k, v)
        with warnings.catch_warnings():  # experimental in optuna, shown by the dashboard
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["loss", "latency_s"])
    return study, resumed


@dataclass
class Search:
    """One search: a study, the evaluator on calibration prompts, the space, the cost model."""

    study: optuna.Study
    evaluator: Evaluator
    space: SP.Space
    cost: CostModel
    budget: float
    prune_ratio: float = 1.5
    rung_z: float | None = 1.5  # the paired multi-fidelity test's confidence (None: off); see evaluator.Bar
    seed: int = 0
    known: dict = field(default_factory=dict)  # effective plan key -> (state, values, trial number, reason attrs)
    live: optuna.Study = field(init=False)  # in-memory mirror the sampler draws from
    _mirrored: set = field(init=False, default_factory=set)  # stored trial numbers already in ``live``
    holder: str = field(init=False)  # this driver in the claims it writes: host:pid:token

    def __post_init__(self) -> None:
        self.live = optuna.create_study(directions=self.study.directions, sampler=self.study.sampler)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        _HOLDERS.add(self.holder)
        weakref.finalize(self, _HOLDERS.discard, self.holder)

    @property
    def steps(self) -> int:
        return self.cost.steps

    @property
    def max_fresh(self) -> int:
        return self.cost.max_fresh(self.budget)

    # -- bookkeeping ---------------------------------------------------------------------------
    def load_known(self) -> None:
        self.sync()

    def sync(self) -> None:
        """Pull finished trials from the storage that the mirror lacks (all of them at start, then
        those other drivers on the same study have written) and learn their plans."""
        for t in self.study.get_trials(deepcopy=False):
            if t.number in self._mirrored or not t.state.is_finished():
                continue
            self._mirrored.add(t.number)
            self.live.add_trial(t)
            key = t.user_attrs.get("key")
            if key and t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "duplicate_of" not in t.user_attrs:
                reason = {k: t.user_attrs[k] for k in _CARRIED if k in t.user_attrs}
                self.known.setdefault(key, (t.state, t.values, t.number, reason))

    def claimed_elsewhere(self, key: str) -> bool:
        """Claim the plan ``key`` before scoring it; True when another driver on this study claimed
        it first (it scores the plan, and its result reaches this driver with :meth:`sync`). So
        drivers sharing a study (docs/search/cluster.md) score each plan once. A claim left by a
        driver of this host that is gone (or a search of this process that is gone) is taken over."""
        name = "claim:" + hashlib.sha1(key.encode()).hexdigest()[:24]
        storage, study_id = self.study._storage, self.study._study_id  # noqa: SLF001 - the claim is a study attr
        holder = claim(storage, study_id, name, self.holder)
        if holder == self.holder:
            return False
        host, _, rest = holder.partition(":")
        pid = rest.partition(":")[0]
        gone = holder not in _HOLDERS if pid == str(os.getpid()) else pid.isdigit() and not _alive(int(pid))
        if host == socket.gethostname() and gone:
            storage.set_study_system_attr(study_id, name, self.holder)
            return False
        return True

    def _store(self, frozen: optuna.trial.FrozenTrial) -> int:
        """Write a finished trial to the storage in one transaction; its number there."""
        storage = self.study._storage  # noqa: SLF001 - create_new_trial(template) is the one-transaction write
        number = storage.get_trial_number_from_id(storage.create_new_trial(self.study._study_id, template_trial=frozen))
        self._mirrored.add(number)
        return number

    def recover(self) -> int:
        """Trials left RUNNING in the storage by a killed search on this host (other tools, or
        zeustune before the in-memory mirror) are failed and their parameters enqueued again, so
        they are retried first. Returns how many."""
        host, n = socket.gethostname(), 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker", "")
            w_host, _, pid = worker.rpartition(":")
            if w_host == host and pid.isdigit() and _alive(int(pid)):
                continue  # another live search on this machine
            self.study.tell(t.number, state=TrialState.FAIL)
            if t.params:
                self.live.enqueue_trial(t.params, user_attrs={k: v for k, v in t.user_attrs.items() if k == "seed"})
            n += 1
        return n

    def counts(self, stage: str) -> int:
        return sum(1 for t in self.study.get_trials(deepcopy=False)
                   if t.user_attrs.get("stage") == stage and t.state.is_finished())

    def best(self, nfe: int | None = None, static: bool = False, at_least: float | None = None) -> optuna.trial.FrozenTrial | None:
        """The feasible complete trial with the lowest loss (at ``nfe`` fresh steps if given; with
        ``static``, one plan for every branch and no adaptive steps; with ``at_least``, modelled
        at or above that speedup: a faster budget of a ladder)."""
        cands = [t for t in feasible(self.study) if (nfe is None or t.user_attrs.get("nfe") == nfe)
                 and not (static and (t.user_attrs.get("uncond") or _adaptive(t.user_attrs)))
                 and (at_least is None or speed(t) >= at_least)]
        return min(cands, key=lambda t: t.values[0], default=None)

    def _bar(self, latency: float) -> Bar | None:
        """Early-abort rule: a trial can only join the front if its loss beats every trial at
        least as fast. Abort when its running loss exceeds prune_ratio x the best such loss, or
        (with ``rung_z``) when at a rung it is worse than that trial on the same prompts with
        confidence (:class:`~.evaluator.Bar`)."""
        # duplicates are left out: each has its original, with the same values and the per-prompt losses
        best = min((t for t in feasible(self.study) if t.values[1] <= latency * (1 + 1e-9) and "duplicate_of" not in t.user_attrs),
                   key=lambda t: t.values[0], default=None)
        if best is None:
            return None
        rival = best.user_attrs.get("losses")  # the study's prompt set is fixed (its name holds its digest)
        paired = self.rung_z is not None and rival is not None
        return Bar(mean=self.prune_ratio * best.values[0], rival=tuple(rival) if paired else None,
                   z=self.rung_z if paired else None, rival_trial=best.number)

    def _attrs(self, decoded: SP.Decoded, stage: str) -> dict:
        nfe = decoded.static_nfe
        reduced = {"reduced": decoded.reduced_calls, "calls_equiv": round(decoded.calls(self.cost), 4)} if decoded.reduced_calls else {}
        return {**decoded.wire(), "key": decoded.key, "nfe": nfe, **reduced,
                "speedup_model": round(self.cost.speedup(decoded.calls(self.cost)), 4), "stage": stage}

    def _result(self, outcome: Outcome, decoded: SP.Decoded | None = None) -> tuple[TrialState, list[float] | None, dict]:
        """(state, values, extra user attrs) of a scored plan. Values are (loss, latency); the
        latency is the cost model's at the plan's calls per branch, measured for adaptive plans
        (their mean over the prompts; ``calls_p90`` and ``calls_min`` are kept too)."""
        extra = {"scored_by": outcome.worker} if outcome.worker else {}
        if outcome.kind == "pruned":
            scored = {"prompts_scored": outcome.prompts} if outcome.prompts else {}
            return TrialState.PRUNED, None, {**extra, **scored, "pruned": outcome.reason}
        if outcome.kind == "fail":
            return TrialState.FAIL, None, {**extra, "error": outcome.reason}
        q = sorted(outcome.losses)
        extra.update({"loss_p90": p90(q), "loss_worst": q[-1], "losses": [round(v, 6) for v in outcome.losses]})
        nfe = None if decoded is None else decoded.calls(self.cost)
        if decoded is not None and decoded.adaptive and outcome.calls:
            c = sorted(outcome.calls)
            nfe = round(sum(c) / len(c), 3)
            extra.update({"nfe": nfe, "calls_p90": p90(c), "calls_min": c[0],
                          "calls_se": round(statistics.stdev(c) / math.sqrt(len(c)), 4) if len(c) > 1 else 0.0,
                          "speedup_model": round(self.cost.speedup(nfe), 4)})
        return TrialState.COMPLETE, [sum(q) / len(q), None if nfe is None else self.cost.latency(nfe)], extra

    # -- stage 1: seeds + TPE ------------------------------------------------------------------
    def seed_trials(self, budgets=()) -> list[str]:
        """Enqueue the published ZEUS configurations mapped to this step count, and uniform plans,
        TaylorSeer's form and published lists around the budget and each of ``budgets`` (a ladder's
        faster ones); seeds already scored (a resumed study) are not enqueued again. Seeds outside
        the space are reported and skipped."""
        self.sync()
        scored = {t.user_attrs.get("seed") for t in self.live.get_trials(deepcopy=False)}
        n, skipped = self.steps, []
        seeds = {name: SP.zeus_seed(name, n) for name in SP.ZEUS_PUBLISHED}
        for budget in sorted({self.budget, *budgets}):
            every = [e for e in range(2, n) if self.cost.speedup(math.ceil(n / e)) >= budget]
            e0 = every[0] if every else n - 1
            for e in sorted({max(e0 - 1, 2), e0}):
                seeds[f"uniform-{e}"] = SP.uniform_seed(self.space, n, e)
            seeds.update(self._taylor_seeds(budget))
            seeds.update(self._listed_seeds(budget))
        for name, params in seeds.items():
            if self.space.uncond_drop:  # what users have today: one plan for both branches
                params["uncond_drop"] = 0
            if self.space.reduced:  # and every call at full resolution
                params["reduced_calls"] = 0
            why = SP.fits(params, self.space, n, self.max_fresh)
            if why:
                skipped.append(f"{name} ({why})")
                continue
            if name not in scored:
                self.live.enqueue_trial(params, user_attrs={"seed": name}, skip_if_exists=True)
        return skipped

    def _taylor_seeds(self, budget: float | None = None) -> dict[str, dict]:
        """TaylorSeer lite's form at its shortest interval within the budget, after 2 and 3 fresh
        steps: at 50 steps it beat the searched 3x plan on held-out prompts
        (docs/benchmarks/tiny-flux-50), so the front must cover it."""
        out, n = {}, self.steps
        for warmup in (2, 3):
            for every in range(2, n):
                p = SP.taylor_seed(self.space, n, every, warmup)
                if p is None:
                    return out
                if self.cost.speedup(SP.decode(p, self.space, n).static_nfe) >= (budget or self.budget):
                    out[f"taylorseer-{warmup}-{every}"] = p
                    break
        return out

    def _listed_seeds(self, budget: float | None = None) -> dict[str, dict]:
        """The space's published lists that reach the budget, the two with the most fresh steps
        (as the uniform seeds: the nearest to the budget line); none where the space has no
        ``listed`` generator. LeMiCa's lists beat every other generator at 4x on tiny-wan."""
        if "listed" not in self.space.generators:
            return {}
        reach = []
        for name in self.space.listed["lists"]:
            p = SP.listed_seed(name)
            nfe = SP.decode(p, self.space, self.steps).static_nfe
            if self.cost.speedup(nfe) >= (budget or self.budget):
                reach.append((-nfe, name, p))
        return {name: p for _, name, p in sorted(reach)[:2]}

    def run_probe(self, trials: int, progress=None, executor=None) -> None:
        """Stage 2, probe-gated plans (G): ``trials`` TPE trials with the generator fixed to
        ``probe``, so the static stage's many generators do not starve its thresholds. Starts from
        FirstBlockCache-like configurations (:func:`space.probe_seeds`) that fit the space."""
        if "probe" not in self.space.generators or trials <= 0:
            return
        self.sync()
        tried = {t.user_attrs.get("probe_seed") for t in self.live.get_trials(deepcopy=False)}
        for name, params in SP.probe_seeds(self.space).items():
            if name not in tried and SP.fits(params, self.space, self.steps, self.max_fresh) is None:
                self.live.enqueue_trial(params, user_attrs={"probe_seed": name}, skip_if_exists=True)
        self.run_tpe(trials, progress, executor, stage="probe", fixed={"generator": "probe"})
        self.fill_budget(progress, executor)

    def fill_budget(self, progress=None, executor=None, parents: int = 2, steps: int = 4, target: float | None = None) -> None:
        """Spend the calls a probe plan leaves under the budget. TPE leaves the best G plans a
        few tenths of a call short of the line (their calls are known only once scored), and
        with G a call more is worth more than any threshold: at 3x on tiny-flux, 7.85 calls gave
        0.0044 and 8.36 calls 0.0033. For each of the ``parents`` best feasible G plans, bisect a
        factor on all its thresholds (lower thresholds: more calls) for ``steps`` scorings, each
        a trial of stage "fill"; the search's usual choice among the feasible then sees them.
        ``target``: the speedup to fill up to (default: the budget; a ladder's faster ones)."""
        target = target or self.budget
        if any(t.user_attrs.get("fill_target", self.budget) == target for t in self.study.get_trials(deepcopy=False)
               if "fill_of" in t.user_attrs):
            return  # a resumed study: done before
        probes = [t for t in feasible(self.study) if t.params.get("generator") == "probe"
                  and speed(t) >= target]
        s = self.space.probe
        distinct = {}  # one parent per plan: a seed TPE draws again scores the same plan twice
        for t in sorted(probes, key=lambda t: t.values[0]):
            distinct.setdefault(t.user_attrs.get("key", t.number), t)
        for parent in list(distinct.values())[:parents]:
            lo, hi = 0.5, 1.0  # half the thresholds (taken as over the budget) .. the parent (within it)
            for _ in range(steps):
                f = (lo + hi) / 2
                params = dict(parent.params)
                for k in params:
                    if k.startswith("probe_threshold_"):
                        params[k] = min(max(parent.params[k] * f, s["threshold"].low), s["threshold"].high)
                self.live.enqueue_trial(params, user_attrs={"fill_of": parent.number, "fill_factor": round(f, 4),
                                                            "fill_target": target})
                self.run_tpe(self.counts("fill") + 1, progress, executor, stage="fill")
                self.sync()
                last = max((t for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get("fill_of") == parent.number
                            and t.state.is_finished()), key=lambda t: t.number, default=None)
                if last is None:  # another driver on this study claimed the step and scores it
                    break
                if last.state == TrialState.COMPLETE and speed(last) >= target:
                    hi = f
                else:
                    lo = f

    def run_tpe(self, trials: int, progress=None, executor=None, stage: str = "tpe", fixed: dict | None = None) -> None:
        """Ask, decode, score and tell until ``trials`` trials of ``stage`` are finished. With an
        executor of several slots, that many trials run at once (constant liar keeps the sampler
        from proposing the running ones again); each is told as soon as it comes back. ``fixed``:
        parameters every trial of the stage takes (the rest are sampled)."""
        executor = executor or InProcess(self.evaluator)
        worker = f"{socket.gethostname()}:{os.getpid()}"
        done = self.counts(stage)
        running: dict[int, tuple] = {}  # executor handle -> (trial, decoded)
        waiting: dict[str, list] = {}  # plan key being scored -> trials with the same plan
        n_waiting = 0
        while done + len(running) + n_waiting < trials or running:
            while len(running) < executor.slots and done + len(running) + n_waiting < trials:
                self.sync()
                if fixed and not self.live.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                    self.live.enqueue_trial(fixed)  # partial: TPE samples the other parameters
                trial = self.live.ask()
                trial.set_user_attr("worker", worker)
                params = SP.suggest(trial, self.space, self.steps, self.max_fresh)
                decoded = SP.decode(params, self.space, self.steps)
                for k, v in self._attrs(decoded, stage).items():
                    trial.set_user_attr(k, v)
                speedup = self.cost.speedup(decoded.calls(self.cost))
                if not decoded.adaptive:  # adaptive plans: set when told, at their measured calls
                    trial.set_constraint("budget", self.budget - speedup)
                # seeds and fill steps are scored in full: their calls are what is being asked
                whole = trial.user_attrs.get("seed") or ("fill_of" in trial.user_attrs)
                prior = self.known.get(decoded.key)
                if prior is not None:  # same effective plan: the same images, so the same result
                    self._tell(trial, prior[0], prior[1], {"duplicate_of": prior[2], **prior[3]}, progress)
                    done += 1
                elif decoded.key in waiting:  # the same plan is being scored right now
                    waiting[decoded.key].append(trial)
                    n_waiting += 1
                elif speedup < self.budget and not whole:  # for adaptive plans, a bound: F calls only
                    reason = f"over budget: modelled speedup {speedup:.2f}x < {self.budget:g}x"
                    self._tell(trial, TrialState.PRUNED, None, {"pruned": reason}, progress)
                    done += 1
                elif self.claimed_elsewhere(decoded.key):  # another driver scores it: its trial is stored
                    trial.set_user_attr("claimed_elsewhere", True)
                    self.live.tell(trial, None, state=TrialState.PRUNED)  # the mirror only; counted as drawn
                    done += 1
                else:
                    bar = None if whole else self._bar(self.cost.latency(decoded.calls(self.cost)))
                    running[executor.submit(decoded, bar)] = (trial, decoded)
                    waiting[decoded.key] = []
            if not running:
                continue
            handle, outcome = executor.next()
            trial, decoded = running.pop(handle)
            state, values, extra = self._result(outcome, decoded)
            reason = {k: v for k, v in extra.items() if k in _CARRIED}
            number = self._tell(trial, state, values, extra, progress)
            self.known[decoded.key] = (state, values, number, reason)
            done += 1
            for twin in waiting.pop(decoded.key, []):
                self._tell(twin, state, values, {"duplicate_of": number, **reason}, progress)
                done += 1
                n_waiting -= 1

    def _tell(self, trial, state, values, attrs: dict, progress) -> int:
        """Tell the mirror, write the finished trial to the storage; its number there."""
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        if _adaptive(trial.user_attrs):  # its budget holds at the calls it made, known only now
            if "fill_of" in trial.user_attrs:  # pushed to the line: held to it with a margin (_within)
                trial.set_user_attr("speedup_floor", round(self.cost.speedup(
                    trial.user_attrs["nfe"] + 2 * trial.user_attrs.get("calls_se", 0.0)), 4))
            trial.set_constraint("budget", self.budget - speed(trial))
        number = self._store(self.live.tell(trial, values if state == TrialState.COMPLETE else None, state=state))
        if progress:
            progress("tpe", number, state, values, self.best())
        return number

    # -- stage 2: refinement at fixed NFE ------------------------------------------------------
    def refine(self, moves: int, progress=None, executor=None, start=None, stage: str = "refine") -> None:
        """Simulated annealing on the best feasible plan: move one fresh step to a skipped
        position (NFE, so latency, unchanged), keep the gates; accept worse plans with
        probability exp(-relative loss increase / T), T falling from 5% to 0.5%. Each scored
        candidate is added to the study (stage "refine"), so the front and the dashboard show it.

        With an executor of k slots, each round scores k distinct neighbours of the current plan
        at once and the best of them faces the acceptance test (k = 1 is plain annealing).
        ``start``: the trial to start from (default: the best feasible static plan); ``stage``:
        the stage its moves are stored and counted under (``moves`` counts them)."""
        executor = executor or InProcess(self.evaluator)
        done = self.counts(stage)
        start = start or self.best(static=True)  # moves of fresh steps: plans with fixed calls, one for all branches
        if start is None or done >= moves:
            return
        rng = random.Random(f"{self.seed}-{done}")
        cur_plan, cur_loss = start.user_attrs["plan"], start.values[0]
        cur_losses, cur_number = start.user_attrs.get("losses"), start.number  # the paired test's rival
        gates, gamma, lagrange, knobs = _predictor_of(start)
        parent = start.number
        attempts = 0
        while done < moves and attempts < 20 * moves:
            batch: dict[str, SP.Decoded] = {}
            while len(batch) < min(executor.slots, moves - done) and attempts < 20 * moves:
                attempts += 1
                cand = _swap(cur_plan, rng, self.space.max_run)
                if cand is None:
                    break
                decoded = SP.Decoded(_relabel(cand, gates), gamma, *lagrange, knobs=knobs)
                if decoded.key not in self.known and decoded.key not in batch and not self.claimed_elsewhere(decoded.key):
                    batch[decoded.key] = decoded
            if not batch:
                break
            latency = self.cost.latency(next(iter(batch.values())).calls(self.cost))  # the same calls for every candidate
            bar = self._bar(latency)
            temp = 0.05 * (0.1 ** (done / moves))
            if bar is not None and bar.rival is not None:
                # Annealing may accept a worse neighbour, so the paired test compares with the current
                # plan raised by 3 temperatures: a neighbour stopped by it would have been accepted with
                # probability under e^-3 (5%).
                rival = None if cur_losses is None else tuple(v * (1 + 3 * temp) for v in cur_losses)
                bar = replace(bar, rival=rival, z=bar.z if rival else None, rival_trial=cur_number if rival else None)
            handles = {executor.submit(d, bar): d for d in batch.values()}
            outcomes = dict(executor.next() for _ in handles)
            scored = []
            for handle, decoded in handles.items():  # in proposal order: the study reads the same every run
                number, state, values = self._store_free(decoded, outcomes[handle], stage, {"parent": parent, "gates": gates})
                done += 1
                if state == TrialState.COMPLETE:
                    scored.append((values[0], decoded.plan.steps, outcomes[handle].losses, number))
                if progress:
                    progress(stage, done, state, values, self.best())
            temp = 0.05 * (0.1 ** (done / moves))
            if scored:
                loss, plan, losses, number = min(scored)
                delta = (loss - cur_loss) / max(cur_loss, 1e-12)
                if delta < 0 or rng.random() < math.exp(-delta / temp):
                    cur_plan, cur_loss, cur_losses, cur_number = plan, loss, losses, number


    def _store_free(self, decoded: SP.Decoded, outcome, stage: str, attrs: dict) -> tuple[int, TrialState, list | None]:
        """Store a scored plan that no parameter of the structured space makes (a free mask:
        refinement, the closed loop); its number, state and values."""
        state, values, extra = self._result(outcome)
        latency = self.cost.latency(decoded.calls(self.cost))
        values = None if values is None else [values[0], latency]
        number = self._store(create_trial(
            state=state, values=values if state == TrialState.COMPLETE else None, params={}, distributions={},
            user_attrs={**self._attrs(decoded, stage), **extra, **attrs},
            constraints={"budget": self.budget - self.cost.speedup(decoded.calls(self.cost))},
        ))
        self.known[decoded.key] = (state, values, number, {})
        return number, state, values

    # -- the closed loop: plans at the fresh steps the device affords --------------------------
    def retarget(self, parents: list, nfe: int, progress=None, executor=None, limit: int = 8) -> list[int]:
        """Score the static ``parents``' neighbours at ``nfe`` fresh steps, stage "loop": each
        fresh step but the first dropped from a parent with one more (the least useful one is
        found by scoring them all), or one added at up to ``limit`` evenly spaced skipped steps of
        a parent with one fewer. Their gates and predictor are the parent's. The numbers of the
        stored trials."""
        executor = executor or InProcess(self.evaluator)
        batch: dict[str, tuple] = {}
        for t in parents:
            gates, gamma, lagrange, knobs = _predictor_of(t)
            for mask in _retargeted(t.user_attrs["plan"], nfe, limit, self.space.max_run):
                decoded = SP.Decoded(_relabel(mask, gates), gamma, *lagrange, knobs=knobs)
                if decoded.key not in self.known and decoded.key not in batch and not self.claimed_elsewhere(decoded.key):
                    batch[decoded.key] = (decoded, {"parent": t.number, "gates": gates})
        items, numbers = list(batch.values()), []
        for i in range(0, len(items), executor.slots):
            handles = {executor.submit(d, None): (d, attrs) for d, attrs in items[i:i + executor.slots]}
            outcomes = dict(executor.next() for _ in handles)
            for handle, (decoded, attrs) in handles.items():
                number, state, values = self._store_free(decoded, outcomes[handle], "loop", attrs)
                numbers.append(number)
                if progress:
                    progress("loop", number, state, values, self.best())
        return numbers


def _predictor_of(trial) -> tuple[list[str], float, tuple[int, int], tuple]:
    """(gates, gamma, Lagrange settings, extra knobs) of a stored static plan, for its neighbours."""
    gates = [trial.params.get(f"gate_{j}") for j in range(1, SP.GATE_POSITIONS + 1)]
    gates = gates if all(gates) else trial.user_attrs.get("gates") or _gates_of(trial.user_attrs["plan"])
    knobs = tuple(sorted((trial.user_attrs.get("knobs") or {}).items()))  # the C gate's, if any
    lagrange = (trial.user_attrs.get("lagrange_term", 3), trial.user_attrs.get("lagrange_int", 6))
    return gates, trial.user_attrs.get("gamma", 1.0), lagrange, knobs


def _retargeted(plan: str, nfe: int, limit: int, max_run: int) -> list[str]:
    """Masks (F, D, "." skipped) of ``plan`` with one fresh step dropped or added to reach ``nfe``
    fresh steps; none when it is further off. Runs of skips stay within ``max_run``."""
    calls = [c if c in "FD" else "." for c in plan]
    fresh = [k for k, c in enumerate(calls) if c == "F"]
    if len(fresh) == nfe + 1:
        masks = [calls[:k] + ["."] + calls[k + 1:] for k in fresh if k > 0]
    elif len(fresh) == nfe - 1:
        skipped = [k for k, c in enumerate(calls) if c == "."]
        at = dict.fromkeys(skipped[round(i * (len(skipped) - 1) / max(limit - 1, 1))] for i in range(min(limit, len(skipped))))
        masks = [calls[:k] + ["F"] + calls[k + 1:] for k in at]
    else:
        return []
    return ["".join(m) for m in masks if max(map(len, "".join(m).replace("D", "F").split("F"))) <= max_run]


#: Attributes of a scored plan that its duplicates carry too: why it failed, its measured calls.
_CARRIED = ("error", "pruned", "nfe", "speedup_model", "calls_p90", "calls_min")


def speed(trial) -> float:
    """The modelled speedup a trial is held to: a fill step's at its calls' mean plus two
    standard errors over the calibration prompts (it is pushed to the line, where other prompts
    call a little more or less: the first 3x fill landed 0.04% under the line on 32 held-out
    prompts), any other's at its mean calls."""
    return trial.user_attrs.get("speedup_floor", trial.user_attrs["speedup_model"])


def _adaptive(attrs: dict) -> bool:
    """Whether a stored plan's calls are decided at run time (A, G): its budget is known when told."""
    letters = attrs.get("plan", "") + (attrs.get("uncond") or "")
    return any(c in DECIDED for c in letters)


def p90(q: list[float]) -> float:
    """The 90th percentile of sorted values (nearest rank)."""
    return q[min(len(q) - 1, math.ceil(0.9 * len(q)) - 1)]


def feasible(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if all(v <= 0 for v in t.constraints.values())]


def front(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Pareto-optimal trials (loss, latency both minimised), by latency; duplicates dropped."""
    out, best = [], math.inf
    for t in sorted(trials, key=lambda t: (t.values[1], t.values[0])):
        if t.values[0] < best and "duplicate_of" not in t.user_attrs:
            out.append(t)
            best = t.values[0]
    return out


#: The claim holders of this process's live searches (a claim of another is left to it).
_HOLDERS: set[str] = set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _gates_of(plan: str) -> list[str]:
    """The gate per run position a plan uses (for relabelling refined masks alike)."""
    gates: dict[int, str] = {}
    j = 0
    for c in plan:
        j = 0 if c in "FD" else j + 1
        if j and c in "ERS" and j <= SP.GATE_POSITIONS:
            gates.setdefault(j, c)
    return [gates.get(j, "E" if j % 2 else "R") for j in range(1, SP.GATE_POSITIONS + 1)]


def _relabel(mask_plan: str, gates: list[str]):
    """Letters for a refined mask ("F", "D" calls, anything else skipped): gates by run position,
    D kept where the mask has it."""
    from ..schedule.plans import Plan

    letters = SP.gate_letters([c in "FD" for c in mask_plan], gates)
    return Plan("".join("D" if m == "D" else c for c, m in zip(letters, mask_plan)))


def _swap(plan: str, rng: random.Random, max_run: int) -> str | None:
    """A neighbour at the same cost: move one fresh step (not the first) to a skipped position,
    keeping runs <= max_run; or, half the time when the plan has D steps, swap a D and an F step
    (which calls run at reduced resolution). Returns a mask of F, D and "." (skipped)."""
    calls = [c if c in "FD" else "." for c in plan]
    fresh = [k for k, c in enumerate(calls) if c == "F" and k > 0]
    reduced = [k for k, c in enumerate(calls) if c == "D"]
    skipped = [k for k, c in enumerate(calls) if c == "."]
    every_f = [k for k, c in enumerate(calls) if c == "F"]
    if reduced and every_f and rng.random() < 0.5:
        a, b = rng.choice(reduced), rng.choice(every_f)
        out = list(calls)
        out[a], out[b] = "F", "D"
        return "".join(out)
    if not fresh or not skipped:
        return None
    for _ in range(50):
        a, b = rng.choice(fresh), rng.choice(skipped)
        out = list(calls)
        out[a], out[b] = ".", "F"
        mask = [c != "." for c in out]
        if SP.cap_runs(mask, max_run) == mask:
            return "".join(out)
    return None
