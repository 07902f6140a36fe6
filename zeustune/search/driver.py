"""``zeustune search``: the whole flow, from a model name and a budget to an exported schedule.

model -> calibration prompts + cached references -> cost model (fitted here, stored with the
study) -> budget check -> study (seeds, TPE, refinement) -> finalists re-timed for real ->
held-out scores -> schedules/<model>/tuned-<budget>x.yaml + report (table, Pareto plot).
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from optuna.trial import TrialState
from tqdm import tqdm

from ..quality import metrics as M
from ..models.loading import load as load_model
from ..models.prompts import load_prompts, prompts_sha256
from ..quality.references import ReferenceCache
from ..quality.repeats import collapse_repeats
from ..schedule.format import user_schedules
from ..models.settings import model_slug, settings_digest
from . import export as X
from . import report as R
from . import space as SP
from .cost import CostModel, parse_budgets
from .evaluator import Evaluator, schedule_of, template
from .executors import InProcess
from .storage import DEFAULT_PATIENCE
from .study import (DEFAULT_STORAGE, Search, feasible, front, make_sampler, open_study, p90, speed, stored_study_attrs,
                    study_name)


class SearchFailed(RuntimeError):
    """A search that ran but has nothing to export (no trial or finalist met the budget)."""


@dataclass
class SearchConfig:
    model: str
    budget: str | float = "3x"
    space: str | None = None  # default: search_spaces/<model>.yaml, else <family>.yaml
    trials: int = 240
    refine: int = 80
    #: Trials of the probe stage (G steps, after the static TPE stage), when the space lists the
    #: probe generator.
    probe_trials: int = 60
    calib: int = 24  # chosen by measurement: docs/search/calib-size.md
    heldout: int = 64
    seed: int = 0
    metric: str = "auto"
    storage: str = DEFAULT_STORAGE
    #: Seconds to wait for the storage when it goes away mid-search before giving up (.storage).
    storage_patience: float = DEFAULT_PATIENCE
    study: str | None = None
    sampler: str = "tpe"
    batch: int = 8
    prune_ratio: float = 1.5
    timing_runs: int = 11
    finalists: int = 6
    #: Finalists are re-scored on this many further calibration prompts (the set's prompts after
    #: ``calib``) and exported by their mean over both: the best calibration loss of hundreds of
    #: trials is partly luck on those prompts. None: as many as ``calib``, up to what the set has
    #: left; 0: off.
    validation: int | None = None
    cache: Path | None = None
    out: Path | None = None  # report folder; default out/search/<study>
    export_dir: Path | None = None  # default schedules/<model>
    device: str = "cpu"
    progress: bool = True
    executor: str = "local"  # "local": in this process; "ray": actors on a Ray cluster
    workers: int = 2
    ray_address: str | None = None
    #: A cost model to budget with instead of fitting one (a JSON file of CostModel fields): so
    #: that several searches (an ablation, a comparison) share one budget line.
    cost_model: Path | None = None
    #: Replay the denoiser calls of prefixes a candidate shares with an earlier run (exact: the
    #: losses are bit-identical), within this many bytes of recorded outputs; 0 turns it off.
    prefix_bytes: int = 1 << 30
    #: Multi-fidelity scoring: at each third of the calibration prompts, stop a candidate that is
    #: worse than the best trial at least as fast on the same prompts, with this confidence (in
    #: standard errors of the paired difference); None scores every candidate until the mean bar.
    rung_z: float | None = 1.5


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_space(model: str, family: str) -> str:
    for name in (model, family, {"sd3": "sd3", "sd": "sd2"}.get(family, family)):
        if (SP.BUILTIN_SPACES / f"{name}.yaml").is_file():
            return name
    raise FileNotFoundError(f"no search space for model {model!r} (family {family}) in {SP.BUILTIN_SPACES}; pass --space FILE")


def default_cost_model(model: str, steps: int) -> Path | None:
    """The cost model shipped beside a model's space (``search_spaces/<model>-cost-<steps>.json``),
    for a model whose CPU wall clock misprices the one it stands for (tiny-wan: its VAE decode is
    23% of a CPU run, Wan2.1-14B's 0.17%, so a 3x CPU budget left 3.5 fresh steps of 50); None if
    there is none, and the search times this device."""
    path = SP.BUILTIN_SPACES / f"{model}-cost-{steps}.json"
    return path if path.is_file() else None


def run(cfg: SearchConfig, pipe=None) -> dict:
    """One search (one study); ``pipe``: the model already loaded as ``cfg.model`` (a ModelSpec)
    samples it, at any steps and size (a pack's search loads it once for all its settings)."""
    t_start = time.perf_counter()
    budgets = parse_budgets(cfg.budget)
    budget = budgets[0]
    pipe, spec = load_model(cfg.model, device=cfg.device, progress=False) if pipe is None else (pipe, cfg.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", M.MetricFallbackWarning)
        metric = M.resolve(cfg.metric, video=spec.frames is not None)
    for w in caught:
        log(f"note: {w.message}")
    space = SP.load(cfg.space or default_space(spec.name, spec.family))
    if space.family != spec.family:
        raise ValueError(f"--space {space.source}: family {space.family!r} does not match model {spec.name!r} (family {spec.family})")
    calib = load_prompts(spec, "calib")[: cfg.calib]
    if len(calib) < cfg.calib:
        where = spec.calib_prompts or f"the calibration set of {spec.name}"
        raise ValueError(f"--calib: got {cfg.calib}, but {where} has {len(calib)} prompts: "
                         f"pass --calib {len(calib)} or a longer prompts file")
    sha = prompts_sha256(calib)
    name = cfg.study or study_name(model_slug(spec), spec.steps, spec.height, spec.width, budget, metric, sha,
                                   settings_digest(spec), spec.loras)
    if len(budgets) > 1 and not cfg.study:  # a ladder's study: its own, not the loosest budget's single one
        name += "-ladder" + "".join(f"-{b:g}x" for b in budgets[1:])
    cache = ReferenceCache(cfg.cache)

    ev = Evaluator(pipe, spec, calib, cfg.seed, metric, batch=cfg.batch, prefix_bytes=cfg.prefix_bytes or None)
    base = template(pipe, spec)
    meta = {"model": model_slug(spec), "source": spec.source, "steps": spec.steps, "height": spec.height, "width": spec.width, "budget": budget,
            **({"ladder": budgets} if len(budgets) > 1 else {}),
            "metric": metric, "space": space.name, "space_sha256": space.sha256, "prompts": f"{spec.calib_prompts or spec.prompts + '/calib'}[:{len(calib)}]",
            "prompts_sha256": sha, "seed": cfg.seed, "template": base.to_dict(),
            "settings": {"guidance": spec.guidance, "dtype": spec.dtype, "call": base.sampler.call,
                         "loras": [{"path": x.path, "sha256": x.sha256, "scale": x.scale} for x in spec.loras]}}
    executor = make_executor(cfg, ev, spec, calib, metric)
    try:
        with collapse_repeats("search", log):  # library warnings of every sampled image: once, counted at the end
            return _search(cfg, t_start, budgets, metric, pipe, spec, space, calib, name, cache, ev, base, meta, executor)
    finally:
        executor.close()


def make_executor(cfg: SearchConfig, ev: Evaluator, spec, calib: list[str], metric: str):
    if cfg.executor == "local":
        return InProcess(ev, device=cfg.device)
    if cfg.executor != "ray":
        raise ValueError(f"--executor: got {cfg.executor!r}, expected local or ray")
    from .ray_executor import RayExecutor

    t0 = time.perf_counter()
    threads = max(1, (os.cpu_count() or 1) // cfg.workers) if not str(cfg.device).startswith("cuda") else 1
    ex = RayExecutor(spec, calib, cfg.seed, metric, cfg.batch, workers=cfg.workers, address=cfg.ray_address,
                     threads=threads, device=cfg.device)
    log(f"ray: {cfg.workers} workers ready in {time.perf_counter() - t0:.1f} s: "
        + ", ".join(f"{n} x {d}" for d, n in ex.devices.items()))
    return ex


def budget_cost(executor, steps: int, runs: int, stored: dict | None, given: Path | None = None, factors=(),
                probe: bool = False) -> tuple[CostModel, dict[str, dict], list[str]]:
    """The cost model the budget is checked against, every device type's model, and notes.

    Timings from one device type only: a model fitted on an H100 says nothing about an A10. A
    new study fits one model per device type among the workers (on a worker of that type) and
    budgets with the most common type; a resumed study keeps the model stored with it."""
    devices = executor.devices
    if stored and "cost_model" in stored:
        cost = CostModel(**stored["cost_model"])
        notes = [f"cost model (stored with the study): {cost.describe()}"]
        if cost.device not in devices:
            notes.append(f"note: the study's budget was timed on {cost.device}, this run's workers are "
                         f"{', '.join(devices)}: finalists are re-timed on those, so the budget check uses them")
        return cost, stored.get("cost_models", {cost.device: cost.to_dict()}), notes
    if given is not None:
        cost = load_cost_model(given, steps, probe)
        if missing := [k for k in factors if k not in cost.reduced]:
            raise ValueError(f"--cost-model: {given} has no cost for D steps at {', '.join(missing)} (field 'reduced'), which "
                             "the space's reduced-resolution steps need: fit a model with them (omit --cost-model)")
        return cost, {cost.device: cost.to_dict()}, [f"cost model (from {given}): {cost.describe()}"]
    t0 = time.perf_counter()
    extra = {**({"factors": factors} if factors else {}), **({"probe": True} if probe else {})}
    costs = executor.fit_costs(steps, runs, **extra)
    main = max(devices, key=lambda d: (devices[d], d))
    cost = costs[main]
    notes = [f"cost model fitted in {time.perf_counter() - t0:.1f} s: {cost.describe()}"]
    if len(costs) > 1:
        notes.append(f"note: the workers mix device types ({', '.join(f'{n} x {d}' for d, n in devices.items())}); the "
                     f"budget uses timings from {main} only, and finalists are re-timed there. Other types: "
                     + "; ".join(f"{d}: {c.describe()}" for d, c in costs.items() if d != main))
    return cost, {d: c.to_dict() for d, c in costs.items()}, notes


def load_cost_model(path: Path, steps: int, probe: bool = False) -> CostModel:
    """A CostModel from a JSON file (``CostModel.to_dict``), typed, plausible and at the search's steps."""
    from .cost import read

    return read(path, steps, probe)


def _search(cfg, t_start, budgets, metric, pipe, spec, space, calib, name, cache, ev, base, meta, executor) -> dict:
    budget = budgets[0]  # the study's constraint: the loosest; a ladder's faster budgets select within it
    # The cost model is fitted once per study and stored with it (a resumed study keeps its
    # budget line); a new study checks the budget before anything is stored or rendered.
    cost, costs, notes = budget_cost(executor, spec.steps, max(cfg.timing_runs, 3), stored_study_attrs(cfg.storage, name),
                                     cfg.cost_model, factors=space.reduced_keys, probe="probe" in space.generators)
    for n in notes:
        log(n)
    executor.set_probe_share(cost.probe_share)
    for b in budgets:
        max_fresh = cost.check(b)
        log(f"budget {b:g}x: at most {max_fresh} of {spec.steps} steps fresh (modelled {cost.speedup(max_fresh):.2f}x)")

    t0 = time.perf_counter()
    ev.prepare(cache, progress=cfg.progress, render=executor.render)
    executor.set_references(ev.refs.images)
    log(f"references: {len(calib)} calibration prompts, {ev.refs.hits} cached, {ev.refs.computed} computed "
        f"({time.perf_counter() - t0:.1f} s)")
    study, resumed = open_study(name, cfg.storage, make_sampler(cfg.sampler, cfg.seed), meta, cfg.storage_patience, log)
    if "cost_model" not in study.user_attrs:
        study.set_user_attr("cost_model", cost.to_dict())
        study.set_user_attr("cost_models", costs)

    search = Search(study, ev, space, cost, budget, prune_ratio=cfg.prune_ratio, rung_z=cfg.rung_z, seed=cfg.seed)
    n_before = len([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()])
    if resumed:
        recovered = search.recover()
        log(f"resumed study {name!r} in {X._redact(cfg.storage)}: {n_before} finished trials kept"
            + (f", {recovered} interrupted trial(s) failed and queued again" if recovered else ""))
    skipped = search.seed_trials(budgets[1:])  # a resumed study only gets the seeds it has not scored yet
    if not resumed:
        log(f"new study {name!r} in {X._redact(cfg.storage)}"
            + (f"; seeds outside the space skipped: {', '.join(skipped)}" if skipped else ""))

    n_probe = cfg.probe_trials if "probe" in space.generators else 0
    refines = {b: "refine" if len(budgets) == 1 else f"refine {b:g}x" for b in budgets}  # a ladder refines per budget
    bar = tqdm(total=cfg.trials + n_probe + cfg.refine * len(budgets), desc="search", disable=not cfg.progress, unit="trial")
    bar.update(min(search.counts("tpe"), cfg.trials) + min(search.counts("probe"), n_probe)
               + sum(min(search.counts(r), cfg.refine) for r in refines.values()))

    def progress(stage, number, state, values, best):
        bar.update(1)
        bar.set_postfix_str(f"{stage}, best within {budget:g}x: "
                            + (f"{best.values[0]:.4f} ({best.user_attrs['nfe']} fresh)" if best else "-"))

    px = ev.prefix if cfg.executor == "local" else None  # Ray workers keep their own (not summed here)
    counts = [(px.served, px.run)] if px else []
    t0 = time.perf_counter()
    search.run_tpe(cfg.trials, progress, executor)
    t_tpe = time.perf_counter() - t0
    counts += [(px.served, px.run)] if px else []
    t0 = time.perf_counter()
    for b, stage in refines.items():
        search.refine(cfg.refine, progress, executor, start=search.best(static=True, at_least=b), stage=stage)
    t_refine = time.perf_counter() - t0
    t0 = time.perf_counter()  # after refinement, so the prefix report's two stages stay TPE and refinement
    search.run_probe(n_probe, progress, executor)
    for b in budgets[1:] if n_probe else ():
        search.fill_budget(progress, executor, target=b)
    t_probe = time.perf_counter() - t0
    counts += [(px.served, px.run)] if px else []
    bar.close()
    reuse = prefix_report(counts, px)
    if reuse:
        log(f"prefix reuse: {reuse}")
    fidelity = fidelity_report(study, len(calib), cfg.rung_z)
    log(f"multi-fidelity: {fidelity}")

    ctx = dict(cfg=cfg, t_start=t_start, metric=metric, pipe=pipe, spec=spec, space=space, calib=calib, name=name,
               cache=cache, base=base, executor=executor, search=search, study=study, cost=cost, resumed=resumed,
               stages=f"TPE {t_tpe:.0f} s, refinement {t_refine:.0f} s, " + (f"probe stage {t_probe:.0f} s, " if n_probe else ""),
               reuse=reuse, fidelity=fidelity, ladder=len(budgets) > 1)
    results = [_finish(budget, **ctx) for budget in budgets]
    if len(budgets) == 1:
        return results[0]
    out = cfg.out or Path("out") / "search" / name
    report = R.ladder(out, name, results, study, metric)
    log(f"ladder: {', '.join(r['tag'] for r in results)} exported in {time.perf_counter() - t_start:.0f} s; report {report}")
    return {"study": name, "resumed": resumed, "ladder": results, "report": report, "seconds": time.perf_counter() - t_start,
            "trials": results[-1]["trials"]}


def _finish(budget, cfg, t_start, metric, pipe, spec, space, calib, name, cache, base, executor, search, study, cost,
            resumed, stages, reuse, fidelity, ladder) -> dict:
    """Finalists at one budget, re-timed for real (with the closed loop), held-out scores, the
    export and its report (in a ladder, a folder per budget)."""
    max_fresh = cost.max_fresh(budget)
    # Finalists: the front within this budget by calibration loss, re-timed for real against full steps.
    within = [t for t in feasible(study) if speed(t) >= budget]
    cands = sorted(front(within), key=lambda t: t.values[0])[: cfg.finalists]
    if not cands:
        raise SearchFailed(f"no trial reached {budget:g}x: widen the space ({space.source}) or lower the budget")
    cands, validation = validated(cands, within, cfg, pipe, spec, metric, cache, cost, len(calib))
    tag = X.tag_for(budget)
    t_final = time.perf_counter()
    device = cost.device if cost.device in executor.devices else None
    # A model that was not timed here (runs 0: e.g. docs/search/probe/cost-model-flux-28.json, the
    # FLUX.1-dev projection) is the budget itself: this device's timing is reported, not enforced.
    projected = cost.runs == 0
    if projected:
        log(f"cost model not timed on this device ({cost.device}): the best finalist is exported at its modelled "
            "speedup; its timing here is reported only")
    log(f"timing finalists: up to {len(cands)} plans of the front, best calibration loss first, each interleaved "
        f"with full steps ({cfg.timing_runs} runs)")
    chosen, timings = time_finalists(executor, cands, base, tag, spec.steps, cfg, device, budget, projected)
    missed = None
    if not projected:
        chosen, more, missed = closed_loop(search, executor, cost, budget, max_fresh, chosen, timings, base, tag, spec.steps,
                                           cfg, device)
        timings += more
    if chosen is None:
        raise SearchFailed(f"no finalist's measured speedup reached {budget:g}x ({[round(x['measured'], 2) for x in timings]}): "
                           "the cost model is optimistic on this device; nothing exported" + (f". {missed}" if missed else ""))
    trial, full_s, fast_s, measured, runs, noisy = chosen
    t_final = time.perf_counter() - t_final
    t_held = time.perf_counter()

    # Held-out scores for the exported schedule and the baselines users have today.
    heldout = load_prompts(spec, "heldout")[: cfg.heldout]
    hev = Evaluator(pipe, spec, heldout, cfg.seed + 10_000, metric, batch=cfg.batch)
    hev.probe_share = cost.probe_share  # held-out calls priced as the budget prices them
    hev.prepare(cache, progress=cfg.progress)
    rows, from_cache = [], 0
    compare = [(tag, trial)] + _baselines(study, trial)
    for label, t in tqdm(compare, desc="held-out scores", disable=not cfg.progress, unit="plan"):
        h, hit = hev.scored(X.decoded_of(t), cache)
        from_cache += hit
        q, c = sorted(h.tolist()), sorted(hev.last_calls)
        rows.append({"name": label, "trial": t.number, "nfe": t.user_attrs["nfe"], "steps": spec.steps,
                     "calls_heldout": {"mean": round(sum(c) / len(c), 3), "p90": p90(c)},
                     "speedup_model": t.user_attrs["speedup_model"], "measured": measured if t is trial else None,
                     "calib": t.values[0], "heldout": float(h.mean()), "heldout_p90": q[int(0.9 * (len(q) - 1))],
                     "plan": t.user_attrs["plan"]})
    row = rows[0]
    t_held = time.perf_counter() - t_held
    log(f"held-out scores: {len(compare)} plans on {len(heldout)} prompts, {from_cache} from the score cache ({t_held:.1f} s)")
    calib_calls = {"mean": trial.user_attrs["nfe"], "p90": trial.user_attrs.get("calls_p90", trial.user_attrs["nfe"])}
    metrics = {
        "nfe": row["nfe"],
        "calls": {"per": "CFG branch", "calib": calib_calls, "heldout": row["calls_heldout"]},
        "speedup": {"model": row["speedup_model"], "measured": round(measured, 3), "bound": round(spec.steps / row["nfe"], 3),
                    "device": cost.device, "runs": runs, "full_s": round(full_s, 4), "latency_s": round(fast_s, 4),
                    **({"noise": noisy} if noisy else {})},
        "quality": {"metric": metric, "calib": {"mean": round(row["calib"], 6), "prompts": len(calib)},
                    **({"validation": {"mean": round(validation["scores"][trial.number], 6), "prompts": validation["prompts"]}}
                       if trial.number in validation.get("scores", {}) else {}),
                    "heldout": {"mean": round(row["heldout"], 6), "p90": round(row["heldout_p90"], 6), "prompts": len(heldout)}},
    }
    prov = X.provenance(study, trial, cfg.storage)
    schedule = X.build(base.to_dict(), trial, tag, metrics, prov)
    export_dir = cfg.export_dir or user_schedules() / model_slug(spec)
    path = export_dir / f"{tag}.yaml"
    kept = better_export(path, name, metrics["quality"])
    if kept:  # another driver on this study (a cluster) exported a better plan there first
        log(f"kept {path}: {kept}")
    else:
        schedule.save(path)
    record = {"tag": tag, "trial": trial.number, "metrics": metrics, "path": str(path), "finalists": timings, "rows": rows}
    for key in ([] if kept else ["export"] + ([f"export {tag}"] if ladder else [])):  # the kept one's record stays
        study.set_user_attr(key, record)

    out = (cfg.out or Path("out") / "search" / name) / (f"{budget:g}x" if ladder else "")
    exported = {"tag": tag, "loss": trial.values[0], "speedup_model": trial.user_attrs["speedup_model"]}
    R.pareto_plot(study, budget, out / "pareto.png", exported, metric)
    n_trials = len([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()])
    info = {"study": name, "storage": X._redact(cfg.storage), "model": spec.name, "budget": f"{budget:g}x", "metric": metric,
            "calibration prompts": len(calib), "held-out prompts": len(heldout), "space": space.source,
            "cost model": cost.describe(), "trials": n_trials,
            "time": stages + f"finalists timed {t_final:.0f} s, held-out scores "
                    f"{t_held:.0f} s ({from_cache} of {len(compare)} plans cached), total {time.perf_counter() - t_start:.0f} s",
            "denoiser calls (prefix reuse)": reuse or ("off" if not cfg.prefix_bytes else "on the workers (not summed)"),
            "prompts scored (multi-fidelity)": fidelity,
            **({"finalists (validation)": validation["summary"]} if validation else {}),
            "exported": str(path) + (f" (kept: {kept})" if kept else ""), **({"missed": missed} if missed else {})}
    report = R.write(out, info, rows)
    log(f"exported {path} (trial {trial.number}, {row['nfe']}/{spec.steps} fresh, measured {measured:.2f}x, "
        f"calib {row['calib']:.4f}, held-out {row['heldout']:.4f}); report {report}")
    return {"study": name, "resumed": resumed, "path": path, "report": report, "rows": rows, "measured": measured,
            "trials": n_trials, "seconds": time.perf_counter() - t_start, "tag": tag, "budget": budget, "trial": trial}


def better_export(path: Path, study: str, quality: dict) -> str | None:
    """Why the schedule at ``path`` must stay: exported from the same ``study`` (its calibration
    prompts, so losses compare) with a loss not above this run's, by the loss finalists are ranked
    by (the mean over calibration and validation prompts where both were validated on as many,
    else the calibration loss); None otherwise. ``quality``: this run's metrics["quality"]."""
    from ..schedule.format import Schedule, ScheduleError

    try:
        old = Schedule.load(path)
    except (OSError, ScheduleError):
        return None
    theirs = (old.metrics or {}).get("quality") or {}
    if (old.provenance or {}).get("study") != study or not isinstance(theirs.get("calib", {}).get("mean"), (int, float)):
        return None

    def ranked_by(q: dict) -> tuple[str, float]:
        c, v = q["calib"], q.get("validation")
        if v is None:
            return "calibration loss", c["mean"]
        return f"mean loss over {c['prompts']} calibration and {v['prompts']} validation prompts", \
            pooled(c["mean"], c["prompts"], v["mean"], v["prompts"])

    (what, mine), (what_old, old_loss) = ranked_by(quality), ranked_by(theirs)
    if what != what_old or old_loss > mine:  # not comparable (one was not validated), or this run's is better
        return None
    return (f"exported from the same study with {what} {old_loss:.4f}, not above this run's {mine:.4f} "
            f"(trial {old.provenance.get('trial')})")


def fidelity_report(study, prompts: int, z: float | None) -> str:
    """How many candidates were stopped early, where, and the share of prompt renders that saved."""
    import collections

    from optuna.trial import TrialState

    stopped: collections.Counter = collections.Counter()
    paired = scored = full = 0
    for t in study.get_trials(deepcopy=False):
        if "duplicate_of" in t.user_attrs or t.user_attrs.get("stage") not in ("tpe", "refine", "probe"):
            continue
        if t.state == TrialState.COMPLETE:
            scored, full = scored + prompts, full + prompts
        elif t.state == TrialState.PRUNED and t.user_attrs.get("prompts_scored"):
            k = t.user_attrs["prompts_scored"]
            stopped[k] += 1
            paired += "on the same prompts" in t.user_attrs.get("pruned", "")
            scored, full = scored + k, full + prompts
    if not full:
        return "no candidate scored"
    where = ", ".join(f"{n} after {k}" for k, n in sorted(stopped.items())) or "none"
    rule = f"paired test at z {z:g} ({paired} stopped by it) and the mean bar" if z is not None else "mean bar only"
    return (f"{sum(stopped.values())} candidates stopped early ({where} of {prompts} prompts; {rule}); "
            f"{scored} of {full} prompt renders ({100 * (1 - scored / full):.0f}% saved)")


def prefix_report(counts: list[tuple[int, int]], px) -> str:
    """Denoiser calls replayed and run in the TPE and refinement stages, from (served, run) snapshots."""
    if len(counts) != 3:
        return ""
    parts = []
    for stage, (a, b) in zip(("TPE", "refinement"), zip(counts, counts[1:])):
        served, run = b[0] - a[0], b[1] - a[1]
        total = served + run
        parts.append(f"{stage} {served} of {total} replayed ({100 * served / total:.0f}%)" if total else f"{stage} none")
    return "; ".join(parts) + f"; {len(px.entries)} recordings, {px.nbytes / 2**20:.0f} MiB"


def validation_prompts(spec, cfg) -> list[str]:
    """The calibration set's prompts after the first ``cfg.calib``: ``cfg.validation`` of them,
    or by default as many as ``cfg.calib`` where the set has them."""
    rest = load_prompts(spec, "calib")[cfg.calib:]
    n = min(len(rest), cfg.calib) if cfg.validation is None else cfg.validation
    return rest[:n]


def pooled(calib: float, n_calib: int, val: float, n_val: int) -> float:
    """The mean loss over calibration and validation prompts together."""
    return (calib * n_calib + val * n_val) / (n_calib + n_val)


#: The best seeds within a budget (by calibration loss) that join the finalists' validation.
SEEDS_VALIDATED = 3
#: A seed (a published rule) within the budget is exported in place of the pooled-best plan unless
#: that plan beats it by this paired z over the calibration and validation prompts.
SEED_TIE_Z = 2.0


def paired_z(a: torch.Tensor, b: torch.Tensor) -> float:
    """z of the mean per-prompt difference ``a - b`` (negative: ``a`` lower); 0 when they never differ."""
    d = (a - b).double()
    sd = float(d.std()) if len(d) > 1 else 0.0
    return 0.0 if sd == 0.0 else float(d.mean()) / (sd / math.sqrt(len(d)))


def prefer_seed(ranked: list, losses: dict) -> tuple[list, str]:
    """``ranked`` with a tied seed first: the winner of hundreds of trials is partly chosen for
    luck on these prompts (its score is biased low), a published rule was not fitted to them. Of
    the seeds the pooled-best plan does not beat by :data:`SEED_TIE_Z` (paired over ``losses``,
    trial number -> per-prompt losses), the one with the fewest calls, then the lowest mean, goes
    first (a tie in quality is settled by speed). Returns (ranked, a note; "" when unchanged).

    tiny-wan at 2x: the pooled-best plan (0.00079) against ZEUS's wan2_demo (0.00092) at z -1.66;
    held-out, 0.00148 against 0.00094."""
    best = ranked[0]
    if best.user_attrs.get("seed") or best.number not in losses:
        return ranked, ""
    ties = [(t, z) for t in ranked[1:] if t.user_attrs.get("seed") and t.number in losses
            and len(losses[t.number]) == len(losses[best.number])
            and (z := paired_z(losses[best.number], losses[t.number])) > -SEED_TIE_Z]
    if not ties:
        return ranked, ""
    seed, z = min(ties, key=lambda p: (p[0].user_attrs.get("calls_equiv", p[0].user_attrs["nfe"]),
                                       float(losses[p[0].number].mean())))
    note = (f"the seed {seed.user_attrs['seed']} (trial {seed.number}) ties trial {best.number} (paired z {z:+.2f}, "
            f"needs < -{SEED_TIE_Z:g} to be beaten): it goes first")
    return [seed, *(t for t in ranked if t is not seed)], note


def validated(cands, within, cfg, pipe, spec, metric, cache, cost, n_calib) -> tuple[list, dict]:
    """The finalists re-ranked by their mean over the calibration and validation prompts. The pool
    is the front's finalists, the best seeds within the budget and the ``cfg.finalists`` best plans
    within it by calibration loss (one per plan), so a plan a little behind on the calibration
    prompts, and not on the front, can still win. (ranked finalists, {"scores": trial -> validation loss, "prompts", "summary"}),
    or the finalists as they were and {} when there are no validation prompts."""
    prompts = validation_prompts(spec, cfg)
    if not prompts:
        return cands, {}
    pool, keys = [], set()
    # the seeds within the budget too: refinement makes many near copies of the best plan that edge
    # a published rule out of the top by calibration loss on noise alone (tiny-wan at 2x: ZEUS's
    # wan2_demo, at the same calls, was better on held-out prompts than the plan exported without it)
    seeds = sorted((t for t in within if t.user_attrs.get("seed")), key=lambda t: t.values[0])[:SEEDS_VALIDATED]
    for t in [*cands, *seeds, *sorted(within, key=lambda t: t.values[0])]:
        if t.user_attrs["key"] not in keys and (t in cands or t in seeds or len(pool) < len(cands) + len(seeds) + cfg.finalists):
            pool.append(t)
            keys.add(t.user_attrs["key"])
    # seeds continue the calibration prompts' (prompt i, seed + i): their references are a longer --calib's
    vev = Evaluator(pipe, spec, prompts, cfg.seed + cfg.calib, metric, batch=cfg.batch)
    vev.probe_share = cost.probe_share
    vev.prepare(cache, progress=cfg.progress)
    scores, losses = {}, {}
    for t in tqdm(pool, desc="validation scores", disable=not cfg.progress, unit="plan"):
        val = vev.scored(X.decoded_of(t), cache)[0].double()
        scores[t.number] = float(val.mean())
        if len(t.user_attrs.get("losses") or ()) == n_calib:  # per prompt, for the paired test
            losses[t.number] = torch.cat([torch.tensor(t.user_attrs["losses"], dtype=torch.float64), val])
    ranked = sorted(pool, key=lambda t: pooled(t.values[0], n_calib, scores[t.number], len(prompts)))
    ranked, tie = prefer_seed(ranked, losses)
    best_calib = min(pool, key=lambda t: t.values[0])
    summary = (f"{len(pool)} plans re-scored on {len(prompts)} more calibration prompts; first: trial {ranked[0].number} "
               f"(calib {ranked[0].values[0]:.4f}, validation {scores[ranked[0].number]:.4f})"
               + ("" if ranked[0] is best_calib else f"; the best on calibration alone, trial {best_calib.number} "
                  f"(calib {best_calib.values[0]:.4f}), scored {scores[best_calib.number]:.4f} there")
               + (f"; {tie}" if tie else ""))
    log(f"validation: {summary}")
    return ranked, {"scores": scores, "prompts": len(prompts), "summary": summary}


def time_finalists(executor, cands, base, tag, steps, cfg, device, budget, projected, stage="finalist"):
    """Time ``cands`` (best calibration loss first) against full steps until one reaches the
    budget (with a projected cost model: the first one). (chosen or None, every timing), chosen
    as (trial, full_s, fast_s, measured, runs, noise note)."""
    timings = []
    for t in tqdm(cands, desc=f"{stage}s (timed)", disable=not cfg.progress, unit="plan"):
        sched = schedule_of(base, X.decoded_of(t), tag)
        # N/NFE; an adaptive plan's timed prompts may call less than its mean: its fewest calls
        bound = steps / t.user_attrs.get("calls_min", t.user_attrs["nfe"])
        full_s, fast_s, measured, runs, samples = time_finalist(executor, sched, t, bound, cfg.timing_runs, device,
                                                                0.0 if projected else budget)
        noisy = noise_note(samples)
        timings.append({"trial": t.number, "nfe": t.user_attrs["nfe"], "loss": t.values[0], "measured": measured,
                        "modelled": t.user_attrs["speedup_model"], "stage": stage, "full_s": full_s, "latency_s": fast_s,
                        "bound": bound, "runs": runs, "samples": [round(x, 3) for x in samples]})
        log(f"{stage} trial {t.number}: {t.user_attrs['nfe']} fresh, calib loss {t.values[0]:.4f}, modelled "
            f"{t.user_attrs['speedup_model']:.2f}x, measured {measured:.2f}x (median of {runs} interleaved)")
        if noisy:
            log(f"noisy machine: {noisy}")
        if measured > bound:
            log(f"{stage} trial {t.number}: still above the bound after {runs} runs; not trusted")
            continue
        if measured >= budget or projected:
            return (t, full_s, fast_s, measured, runs, noisy), timings
    return None, timings


#: Plans of the closed loop timed before export (best calibration loss first), and its moves.
LOOP_FINALISTS, LOOP_MOVES = 3, 8


def closed_loop(search, executor, cost, budget, max_fresh, chosen, timings, base, tag, steps, cfg, device):
    """The finalists' timings against the cost model: when they disagree, the measurement wins.

    The model's speedups scaled by the finalists' median measured/modelled ratio give the fresh
    steps the device affords. Where that differs from the budget's ``max_fresh`` and the timings
    cost the search its best plan (a better finalist missed the budget, or none reached it), or
    the device affords more than the model allowed, the best static plans one fresh step away
    are re-targeted (``Search.retarget``: their least useful fresh step dropped, or one added),
    refined there by moves of fresh steps, and the best are timed; the best that measures at or
    above the budget and beats the chosen finalist is exported. (chosen, more timings, a
    sentence naming the budget that would export the best plan that missed, or None.)"""
    # timings that can correct the model: within the call bound, and agreeing when repeated
    trusted = [x for x in timings if x["measured"] <= x["bound"] and not noise_note(x["samples"])]
    ratios = sorted(x["measured"] / x["modelled"] for x in trusted)
    shaky = [x for x in timings if noise_note(x["samples"])]
    if shaky or (len(ratios) >= 2 and ratios[-1] / ratios[0] - 1 > DISAGREEMENT):
        # Timings that contradict each other reject nothing either: the best finalist the model
        # puts within the budget is exported, its timing flagged (metrics.speedup.noise).
        best = min(timings, key=lambda x: x["loss"])
        why = (f"trial {shaky[0]['trial']} measured {', '.join(f'{v:.2f}x' for v in shaky[0]['samples'])} in successive "
               "timings" if shaky else f"the finalists' measured/modelled ratios ({', '.join(f'{r:.2f}' for r in ratios)}) "
               f"disagree by more than {DISAGREEMENT:.0%}")
        note = f"{why}: the machine is too noisy to time by; exported by the cost model, its timing unverified"
        log(f"closed loop: {note}")
        if chosen is None or best["loss"] < chosen[0].values[0]:
            trial = search.study.trials[best["trial"]]
            chosen = (trial, best["full_s"], best["latency_s"], best["measured"], best["runs"], note)
        return chosen, [], None
    if not ratios:
        return chosen, [], None
    ratio = ratios[(len(ratios) - 1) // 2]  # the lower median: the budget is a floor
    afford = max((k for k in range(2, steps + 1) if cost.speedup(k) * ratio >= budget), default=0)
    best = chosen[0].values[0] if chosen else float("inf")
    lost = [x for x in trusted if x["measured"] < budget and x["loss"] < best]
    if afford < 2 or afford == max_fresh or not (lost or chosen is None or afford > max_fresh):
        return chosen, [], _missed(lost, budget)
    log(f"closed loop: the finalists measured {ratio:.2f}x the modelled speedups, so this device affords {afford} fresh "
        f"steps at {budget:g}x where the model allowed {max_fresh}: re-targeting the best plans to {afford}")
    def static(nfe):  # complete plans with fixed calls at nfe fresh steps, best first
        return sorted((t for t in search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                       if t.user_attrs.get("nfe") == nfe and not t.user_attrs.get("uncond")
                       and not any(c in "AG" for c in t.user_attrs.get("plan", ""))), key=lambda t: t.values[0])

    search.retarget(static(afford + 1 if afford < max_fresh else afford - 1)[:2], afford, None, executor, limit=6)
    if static(afford):
        search.refine(search.counts("loop") + LOOP_MOVES, None, executor, start=static(afford)[0], stage="loop")
    timed = {x["trial"] for x in timings}
    cands = [t for t in static(afford) if t.values[0] < best and t.number not in timed][:LOOP_FINALISTS]
    found, more = time_finalists(executor, cands, base, tag, steps, cfg, device, budget, False, stage="closed-loop plan")
    if found is not None:
        log(f"closed loop: trial {found[0].number} ({afford} fresh, calib {found[0].values[0]:.4f}) measured "
            f"{found[3]:.2f}x: exported instead of " + (f"trial {chosen[0].number} ({chosen[0].values[0]:.4f})" if chosen else "nothing"))
        chosen = found
    best = chosen[0].values[0] if chosen else float("inf")
    return chosen, more, _missed([x for x in trusted + more if x["measured"] < budget and x["loss"] < best], budget)


def _missed(lost: list[dict], budget: float) -> str | None:
    """A sentence on the best plan that measured under the budget, and the flag that exports it."""
    if not lost:
        return None
    x = min(lost, key=lambda x: x["loss"])
    flag = math.floor(x["measured"] * 100) / 100
    return (f"the best plan timed, trial {x['trial']} ({x['nfe']} fresh, calib loss {x['loss']:.4f}), measured "
            f"{x['measured']:.2f}x, {1 - x['measured'] / budget:.1%} under {budget:g}x: --budget {flag:g}x would export it")


#: Two timings of one plan agree when they differ by at most this share.
DISAGREEMENT = 0.15


def time_finalist(executor, sched, trial, bound: float, runs: int, device, budget: float = 0.0, attempts: int = 2):
    """(full_s, fast_s, measured, runs, every measured speedup) of a finalist, interleaved with
    full steps. A measurement above the call-count bound N/NFE, or one that would reject the plan,
    is taken again with twice the runs, until two in a row agree within DISAGREEMENT (at most
    ``attempts`` times; the last, longest one counts): one busy moment on a shared machine should
    not reject the best plan, nor pass an impossible speed."""
    modelled, samples = trial.user_attrs["speedup_model"], []
    for attempt in range(attempts + 1):
        full_s, fast_s = executor.time_schedule(sched, runs, device)
        measured = full_s / fast_s
        samples.append(measured)
        off = measured / modelled - 1
        # A plan is rejected on two timings that agree, never on one: a busy moment on a shared
        # machine (a CPU-bound job beside the search) moved single timings by 30-40% both ways.
        doubtful = measured > bound or measured < budget
        if attempt == attempts or not doubtful or (attempt and not noise_note(samples[-2:])):
            break
        why = (f"above the bound {bound:.2f}x" if measured > bound else f"{1 - measured / budget:.1%} under {budget:g}x, "
               f"{off:+.0%} off the modelled {modelled:.2f}x")
        log(f"finalist trial {trial.number}: measured {measured:.2f}x is {why}: re-timing with {2 * runs} interleaved runs")
        runs *= 2
    return full_s, fast_s, measured, runs, samples


def noise_note(samples: list[float]) -> str:
    """A sentence when repeated measurements of one plan disagree by more than DISAGREEMENT."""
    if len(samples) < 2 or (max(samples) - min(samples)) / min(samples) <= DISAGREEMENT:
        return ""
    load = f", load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores" if hasattr(os, "getloadavg") else ""
    return (f"the same plan measured {', '.join(f'{x:.2f}x' for x in samples)} in successive interleaved timings{load}; "
            "speedups on this machine are unreliable now (the longest timing counts)")


def _baselines(study, chosen) -> list[tuple[str, object]]:
    """Seeded trials (ZEUS published configs mapped, uniform plans), and the best ZEUS-rule trial
    of the study that meets the budget with at least the chosen trial's fresh steps."""
    out, seen = [], {chosen.user_attrs["key"]}
    for t in study.get_trials(deepcopy=False):
        name = t.user_attrs.get("seed")
        if name and t.values and t.user_attrs["key"] not in seen:
            out.append((name, t))
            seen.add(t.user_attrs["key"])
    zeus = [t for t in feasible(study) if t.params.get("generator") == "zeus" and t.user_attrs["nfe"] >= chosen.user_attrs["nfe"]]
    best = min(zeus, key=lambda t: t.values[0], default=None)
    if best is not None and best.user_attrs["key"] not in seen:
        out.append((f"best ZEUS rule (trial {best.number})", best))
    return out


def replace_cfg(cfg: SearchConfig, **kw) -> SearchConfig:
    return replace(cfg, **kw)
