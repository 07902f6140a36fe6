"""The `zeustune` command line: thin; it parses, calls the library and prints."""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

from .schedule.plans import ACTIONS, FRESH
from .schedule.format import (MAX_STEPS, TAG_RULE, PresetSkippedWarning, Schedule, ScheduleError, is_tag, list_presets, load,
                              user_schedules)
from .schedule.messages import shown
from .schedule.outputs import check_dir, check_file
from .schedule.pack import Pack, is_pack, speed_label
from .models.settings import add_arguments as add_settings


# -- checks every command runs at its start, before a model loads or a reference renders -------


def _count(value, flag: str, minimum: int = 1) -> None:
    """A count flag: negative or zero counts were read as slices (``--calib -1`` took 63 prompts)."""
    if value is not None and value < minimum:
        raise ValueError(f"{flag}: got {value}, expected an integer >= {minimum}")


def _device(value: str) -> None:
    """A device torch knows and this machine has (else the first tensor moved there fails)."""
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device: got {shown(value)}, expected cpu, cuda, cuda:N or mps")
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"--device: got {value!r}, expected cpu: torch finds no CUDA device on this machine")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"--device: got {value!r}, expected cuda or cuda:0 to cuda:{n - 1} ({n} CUDA devices here)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device: got {value!r}, expected cpu: torch finds no MPS device on this machine")


def _name(value: str, flag: str, longest: int = 64) -> None:
    """A tag or study name that becomes a file or folder name: the schedule tag rule keeps it
    inside its folder (``../../x`` wrote outside it) and readable back (``Bad_TAG`` was written,
    then refused on loading)."""
    if not is_tag(value, longest):
        raise ValueError(f"{flag}: got {shown(value)}, expected {TAG_RULE.replace('64', str(longest))}")


def _home(path: Path) -> Path:
    """A folder under zeustune's user folder, checked under the name the user set it by."""
    name = "$ZEUSTUNE_HOME" if os.environ.get("ZEUSTUNE_HOME") else "the user folder (~/.local/share/zeustune)"
    return check_dir(path, name)


def _cache(path: Path | None) -> None:
    from .quality.references import default_root

    if path is not None:
        check_dir(path, "--cache")
    else:
        check_dir(default_root(), "$ZEUSTUNE_CACHE" if os.environ.get("ZEUSTUNE_CACHE") else "the reference cache")


def _storage(url: str, existing: bool) -> None:
    """A study storage URL; an SQLite file must exist to be read (Optuna would create an empty
    one) and its folder must be writable to be written."""
    if "://" not in url:
        raise ValueError(f"--storage: got {shown(url)}, expected an SQLAlchemy URL such as sqlite:///studies.db or "
                         "postgresql://user@host/db")
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):].split("?")[0])
        if existing and not path.is_file():
            raise ValueError(f"--storage: got {url!r}, expected an existing study database ({path} is not a file)")
        if not existing:
            check_file(path, "--storage", value=url)
    else:
        _reachable(url)


def _reachable(url: str) -> None:
    """A server storage answers before the model loads (mid-search outages are waited out:
    --storage-patience), within 10 s."""
    import sqlalchemy

    from .search.export import _redact

    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 10} if url.startswith(("postgres", "mysql")) else {})
    except Exception as e:  # an unknown dialect or a driver that is not installed
        raise ValueError(f"--storage: got {_redact(url)!r}, expected a URL SQLAlchemy can open ({str(e).splitlines()[0][:160]})")
    try:
        with engine.connect():
            pass
    except Exception as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:160]
        raise ValueError(f"--storage: got {_redact(url)!r}, expected a database that answers: {reason}")
    finally:
        engine.dispose()


def _check_steps(schedule: Schedule, steps: int, resample: bool) -> None:
    """A schedule at other steps, refused before any work with the flag to pass (the runtime
    refuses it too, but at the first denoiser call, after the references)."""
    if schedule.steps != steps and not resample:
        raise ValueError(f"--steps: got {steps}, expected {schedule.steps}, the steps schedule {schedule.tag} was tuned "
                         "at (or pass --resample to map its plan)")


def _ruler(n: int) -> str:
    return "".join(f"{k:<10}" for k in range(0, n, 10))[:n + 2]


def render(schedule: Schedule) -> str:
    """A schedule for a person: identity, the plan as a strip of step letters, NFE, settings."""
    s, p = schedule.sampler, schedule.plan
    size = "x".join(str(v) for v in (s.width, s.height) if v) or "any size"
    if s.frames:
        size += f", {s.frames} frames"
    guidance = s.guidance.mode + (f" {s.guidance.scale:g}" if s.guidance.scale is not None else "")
    lines = [
        f"{schedule.tag}" + (f": {schedule.description}" if schedule.description else ""),
        f"  model      {schedule.model.family}"
        + "".join(f" / {v}" for v in (schedule.model.id, schedule.model.pipeline) if v),
        f"  sampler    {s.scheduler}, {s.steps} steps, {size}, guidance {guidance}" + (f", {s.dtype}" if s.dtype else ""),
        *(["  call       " + ", ".join(f"{k}={v!r}" for k, v in s.call.items())] if s.call else []),
        *(["  loras      " + ", ".join(f"{x.name} (sha256 {x.sha256[:12]}, scale {x.scale:g})" for x in schedule.model.loras)]
          if schedule.model.loras else []),
        "",
        f"  step       {_ruler(len(p))}",
        f"  plan       {p}",
        f"  fresh      {''.join('|' if c == FRESH else ' ' for c in p.steps)}",
        *[f"  {name:<10} {bp}" for name, bp in schedule.branch_plans.items()],
        "",
        (f"  NFE        {p.nfe} of {len(p)} per CFG branch (call-count bound on speedup: {p.speedup_bound:.2f}x),"
         if not p.adaptive else
         f"  NFE        {p.nfe} to {p.max_nfe} of {len(p)} per CFG branch, decided per run by the A steps,")
        + f" longest skip run {p.max_run}",
        "  letters    " + ", ".join(f"{c} {ACTIONS[c]} x{p.steps.count(c)}" for c in ACTIONS if c in p.steps),
        "  predictor  " + ", ".join(f"{k}={v}" for k, v in vars(schedule.predictor).items()),
        f"  cfg        branches={schedule.cfg.branches}",
    ]
    for title, block in (("metrics", schedule.metrics), ("provenance", schedule.provenance)):
        if block:
            lines.append(f"  {title:<10} " + ", ".join(f"{k}: {v}" for k, v in block.items()))
    return "\n".join(lines)


def render_pack(pack: Pack) -> str:
    """A pack for a person: its model, then a table of its settings by speeds, each entry's measured
    speedup and held-out loss (and its file)."""
    m = pack.model
    head = [f"pack {pack.source}" + (f": {pack.description}" if pack.description else ""),
            f"  model      {m.family}" + "".join(f" / {v}" for v in (m.id, m.pipeline) if v),
            f"  entries    {len(pack.entries)}, speeds {', '.join(map(speed_label, pack.speeds))}"
            + (f", default {speed_label(pack.default_speed)}" if pack.default_speed is not None else "")]
    cells: dict[tuple[str, float], str] = {}
    metrics = set()
    for e in pack.entries:
        sp, q = e.schedule.metrics.get("speedup", {}), e.schedule.metrics.get("quality", {})
        held = q.get("heldout", {}).get("mean")
        if held is not None:
            metrics.add(f"{q.get('metric', '?')} on {q['heldout'].get('prompts', '?')} prompts")
        figures = ", ".join(f for f in (f"{sp['measured']:.2f}x" if "measured" in sp else "",
                                        f"{held:.4g}" if held is not None else "") if f)
        cells[str(e.setting), e.speed] = f"{figures or 'no metrics'} ({e.file})"
    rows = list(dict.fromkeys(str(e.setting) for e in sorted(pack.entries, key=lambda e: (e.setting.steps, str(e.setting)))))
    table = ["| setting | " + " | ".join(map(speed_label, pack.speeds)) + " |", "|---" * (len(pack.speeds) + 1) + "|"]
    table += [f"| {r} | " + " | ".join(cells.get((r, s), "-") for s in pack.speeds) + " |" for r in rows]
    note = f"  each cell: measured speedup, held-out loss ({'; '.join(sorted(metrics)) or 'not recorded'}), file"
    return "\n".join([*head, note, "", *table])


def cmd_show(args) -> int:
    if args.list:
        mine = user_schedules()
        for name, path in list_presets().items():
            try:
                sched = Schedule.load(path)
            except ScheduleError as e:  # one bad file must not hide the others
                print(f"zeustune: warning: {e}; skipped", file=sys.stderr)
                continue
            where = " (yours)" if mine in path.parents else ""
            print(f"{name:<28} {sched.plan.nfe:>3}/{len(sched.plan):<3} NFE  {sched.description}{where}")
        return 0
    print(render_pack(Pack.load(args.schedule)) if is_pack(args.schedule) else render(load(args.schedule)))
    return 0


def cmd_run(args) -> int:
    """Run a schedule on a tiny random pipeline: output error against full steps, timing, summary."""
    import torch

    from . import runtime
    from .models import tiny

    if not args.model.startswith("tiny-random-") or args.model[len("tiny-random-"):] not in tiny.FAMILIES:
        names = ", ".join(f"tiny-random-{f}" for f in tiny.FAMILIES)
        raise ValueError(f"--model: got {shown(args.model)}, expected one of {names}")
    _count(args.repeats, "--repeats")
    if args.steps is not None and not 1 <= args.steps <= MAX_STEPS:
        raise ValueError(f"--steps: got {args.steps}, expected an integer in [1, {MAX_STEPS}]")
    family = args.model[len("tiny-random-"):]
    schedule = load(args.schedule)
    steps = args.steps or schedule.steps
    _check_steps(schedule, steps, args.resample)
    tp = tiny.build(family, seed=args.seed)
    runtime.enable(tp.pipe, schedule, resample=args.resample)

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out

    full_times, fast_times = [], []
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both alike
        runtime.disable(tp.pipe)
        t, ref = timed(lambda: tp(steps, seed=args.seed))
        full_times.append(t)
        runtime.enable(tp.pipe, schedule, resample=args.resample)
        t, out = timed(lambda: tp(steps, seed=args.seed))
        fast_times.append(t)
    summ = runtime.summary(tp.pipe)
    plan_nfe = summ.plan.count(FRESH)
    rel = (torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref)).item()
    speedup = statistics.median(full_times) / statistics.median(fast_times)
    print(summ)
    print(f"model {args.model} (random weights), {steps} steps, seed {args.seed}")
    print(f"NFE {plan_nfe}/{steps} per branch" + (f", call-count bound {steps / plan_nfe:.2f}x" if plan_nfe else ""))
    print(
        f"latency median of {args.repeats} interleaved runs: full {1000 * statistics.median(full_times):.1f} ms, "
        f"scheduled {1000 * statistics.median(fast_times):.1f} ms, speedup {speedup:.2f}x"
    )
    print(f"relative L2 error of the output latents against full steps: {rel:.4f}")
    return 0


def _load_model(args, spec=None):
    """The pipeline at the flags' settings (and LoRAs, or ``spec`` when already resolved), and its spec."""
    from .models.loading import load
    from .models.settings import spec_from_args

    pipe, spec = load(spec or spec_from_args(args), device=args.device, progress=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe, spec


def _check_settings(schedule: Schedule, spec, resample: bool) -> None:
    """Refuse a schedule tuned at other settings (size, guidance, dtype, LoRAs...) with the
    reasons; with --resample, apply it anyway and say what differs."""
    from .runtime import ScheduleMismatchError
    from .models.settings import mismatches

    if schedule.model.family != spec.family:  # known before the model loads
        raise ScheduleMismatchError(f"schedule {schedule.tag}", "model.family", schedule.model.family,
                                    f"{spec.family}, the family of --model {spec.name}")
    _check_steps(schedule, spec.steps, resample)
    diff = mismatches(schedule, spec)
    if not diff:
        return
    if not resample:
        raise ScheduleMismatchError(f"schedule {schedule.tag}", "settings", "; ".join(diff),
                                    "the settings it was tuned at (retune there, or pass --resample to apply it anyway)")
    print(f"note: schedule {schedule.tag} was tuned at other settings: {'; '.join(diff)}", file=sys.stderr)


def _check_scheduler(pipe, schedule: Schedule, resample: bool) -> None:
    """The scheduler, known once the model loaded: refused before any sampling, naming the flag
    (the runtime's own refusal says ``resample=True`` and comes after the references)."""
    from .runtime import ScheduleMismatchError

    name = type(pipe.scheduler).__name__
    if name != schedule.sampler.scheduler and not resample:
        raise ScheduleMismatchError(f"schedule {schedule.tag}", "sampler.scheduler", schedule.sampler.scheduler,
                                    f"{name}, the model's scheduler (or pass --resample to apply it anyway)")


def cmd_generate(args) -> int:
    """Generate images (optionally with a schedule) and save them as PNGs named by the schedule."""
    from PIL import Image

    from . import runtime
    from .models.settings import spec_from_args
    from .quality.evaluate import _u8, sample, slug

    _device(args.device)
    check_dir(args.out, "--out")
    spec = spec_from_args(args)
    schedule = load(args.schedule) if args.schedule else None
    if schedule is not None:
        _check_settings(schedule, spec, args.resample)
    pipe, spec = _load_model(args, spec)
    if schedule is not None:
        _check_scheduler(pipe, schedule, args.resample)
        runtime.enable(pipe, schedule, resample=args.resample)
    tag = schedule.tag if schedule is not None else "full"
    args.out.mkdir(parents=True, exist_ok=True)
    for prompt in args.prompt:
        t0 = time.perf_counter()
        image = sample(pipe, spec, prompt, args.seed)
        seconds = time.perf_counter() - t0
        path = args.out / f"{slug(prompt)}-seed{args.seed}-{tag}.png"
        Image.fromarray(_u8(image)).save(path)
        print(f"{path}  ({seconds:.2f} s)")
        if schedule is not None:
            print(runtime.summary(pipe))
    return 0


def cmd_eval(args) -> int:
    """Score schedules against full-step references on a prompt set; print and save a table."""
    import warnings

    from .quality import metrics
    from .quality.evaluate import evaluate_schedule, references, save_side_by_side, table, time_interleaved, write_report
    from .models.prompts import load_prompts, prompts_sha256
    from .models.settings import spec_from_args
    from .quality.references import ReferenceCache

    _count(args.limit, "--limit")
    _count(args.timing_runs, "--timing-runs", 0)
    _device(args.device)
    if args.out is not None:
        check_dir(args.out, "--out")
    _cache(args.cache)
    spec = spec_from_args(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", metrics.MetricFallbackWarning)
        metric = metrics.require(args.metric, video=spec.frames is not None)
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    names = list(dict.fromkeys([metric, "psnr", "ssim"]))
    schedules = [load(s) for s in args.schedule]
    for schedule in schedules:
        _check_settings(schedule, spec, args.resample)
    prompts = load_prompts(spec, args.prompts)[: args.limit]
    pipe, spec = _load_model(args, spec)
    for schedule in schedules:
        _check_scheduler(pipe, schedule, args.resample)
    cache = ReferenceCache(args.cache)
    refs = references(pipe, spec, prompts, args.seed, cache)
    print(
        f"references: {len(prompts)} prompts, {refs.hits} from the cache, {refs.computed} computed "
        f"({refs.seconds:.1f} s), cache {cache.root}"
    )
    rows = []
    for schedule in schedules:
        row = evaluate_schedule(pipe, spec, schedule, prompts, args.seed, refs.images, names, resample=args.resample)
        if args.timing_runs:
            k = 8 if len(set(row.calls or [])) > 1 else 1  # calls vary per prompt: time over several
            row.latency_full, row.latency = time_interleaved(
                pipe, spec, schedule, prompts[:k], [args.seed + i for i in range(min(k, len(prompts)))], args.timing_runs,
                resample=args.resample,
            )
            row.speedup = row.latency_full / row.latency
        rows.append(row)
    print(f"model {spec.name}, {len(prompts)} prompts ({args.prompts}), seeds {args.seed}..{args.seed + len(prompts) - 1}, "
          f"metric {metric}" + (f", speedup: median of {args.timing_runs} interleaved runs" if args.timing_runs else ""))
    print(table(rows, names))
    if args.out:
        for row in rows:
            save_side_by_side(args.out, row, refs.images, prompts)
        write_report(args.out, rows, names, {
            "model": spec.name, "prompts": args.prompts, "prompts_sha256": prompts_sha256(prompts),
            "seed": args.seed, "metric": metric, "timing_runs": args.timing_runs,
            "references": {"hits": refs.hits, "computed": refs.computed, "seconds": refs.seconds},
        })
        print(f"images and report in {args.out}")
    return 0


def _effort_of(spec) -> dict[str, int]:
    """The search's counts for ``spec``: SearchConfig's defaults, with the model's own on top."""
    from .search.driver import SearchConfig
    from .models.spec import SEARCH_EFFORT

    base = SearchConfig(model="")
    return {name: getattr(base, name) for name in SEARCH_EFFORT} | dict(spec.search)


def _effort(name: str) -> str:
    """A search count's default for --help: the general one, then the models that set their own."""
    from .models.known import MODELS
    from .search.driver import SearchConfig

    own = [f"{m} {dict(s.search)[name]}" for m, s in MODELS.items() if name in dict(s.search)]
    return f"{getattr(SearchConfig(model=''), name)}" + (f"; {', '.join(own)}" if own else "")


def _check_search(args):
    """Every flag and file of a search, before the model loads: a refusal found after the search
    (an output folder, the held-out prompts) lost the whole run. The spec, and the held-out count."""
    from .models.prompts import load_prompts
    from .models.settings import spec_from_args
    from .quality import metrics
    from .search import space as SP
    from .search.cost import parse_budgets, read
    from .search.driver import default_cost_model, default_space

    for flag, value, least in (("--trials", args.trials, 1), ("--refine", args.refine, 0), ("--probe-trials", args.probe_trials, 0), ("--calib", args.calib, 1),
                               ("--validation", args.validation, 0), ("--heldout", args.heldout, 1), ("--batch", args.batch, 1),
                               ("--timing-runs", args.timing_runs, 1), ("--workers", args.workers, 1)):
        _count(value, flag, least)
    budgets = parse_budgets(args.budget)
    _device(args.device)
    if args.study_name is not None:
        _name(args.study_name, "--study-name", longest=128)
    spec = spec_from_args(args)
    for name, count in _effort_of(spec).items():  # flags not given: the model's effort, else the search's
        if getattr(args, name) is None and name != "heldout":  # heldout: below, capped by the set's length
            setattr(args, name, count)
    with warnings.catch_warnings(record=True) as caught:  # announced once per process: here, not by the search
        warnings.simplefilter("always", metrics.MetricFallbackWarning)
        metrics.require(args.metric, video=spec.frames is not None)
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    space = SP.load(args.space or default_space(spec.name, spec.family))
    if space.family != spec.family:
        raise ValueError(f"--space {space.source}: family {space.family!r} does not match model {spec.name!r} (family {spec.family})")
    counts = {}
    for split, flag, wanted in (("calib", "--calib", args.calib), ("heldout", "--heldout", args.heldout)):
        have = len(load_prompts(spec, split))
        if wanted is not None and wanted > have:
            where = getattr(spec, f"{split}_prompts") or f"the {'calibration' if split == 'calib' else 'held-out'} set of {spec.name}"
            raise ValueError(f"{flag}: got {wanted}, but {where} has {have} prompts: pass {flag} {have} or a longer prompts file")
        counts[split] = have
    if args.validation and args.calib + args.validation > counts["calib"]:
        where = spec.calib_prompts or f"the calibration set of {spec.name}"
        raise ValueError(f"--validation: got {args.validation}, but {where} has {counts['calib']} prompts, {args.calib} of them "
                         f"for --calib: pass --validation {counts['calib'] - args.calib} at most, or 0 to turn it off")
    several = getattr(args, "several_settings", False)  # a pack: each setting's study fits its own
    if args.cost_model is None and not several and (shipped := default_cost_model(spec.name, spec.steps)) is not None:
        args.cost_model = shipped
        print(f"note: budget priced by {shipped.name}, shipped with {spec.name}'s space ({read(shipped, spec.steps).device}); "
              "--cost-model fit times this device instead", file=sys.stderr)
    elif str(args.cost_model) == "fit":
        args.cost_model = None
    if args.cost_model is not None:
        model = read(args.cost_model, spec.steps, probe="probe" in space.generators)
        for budget in budgets:
            model.check(budget)
    out = args.out if args.out is not None else Path("out") / "search"
    check_dir(out, "--out")
    if args.export_dir is not None:
        check_dir(args.export_dir, "--export-dir")
    else:
        _home(user_schedules())
    _cache(args.cache)
    _storage(args.storage, existing=False)
    # the default: 64, or every held-out prompt of a shorter set (the general set has 48)
    return spec, args.heldout if args.heldout is not None else min(_effort_of(spec)["heldout"], counts["heldout"])


def cmd_search(args) -> int:
    """Search the best schedule for a model within a speed budget; export it and a report."""
    from .search.driver import SearchConfig, run

    if not 0 <= args.prefix_mib < math.inf:  # inf reached int() as an OverflowError
        raise ValueError(f"--prefix-mib: got {args.prefix_mib!r}, expected a number of MiB >= 0")
    if not 0 < args.multi_fidelity_z < math.inf:
        raise ValueError(f"--multi-fidelity-z: got {args.multi_fidelity_z!r}, expected a number of standard errors > 0")
    if not args.storage_patience >= 0:
        raise ValueError(f"--storage-patience: got {args.storage_patience!r}, expected a number of seconds >= 0")
    settings = _pack_settings(args)  # sets args.steps, height, width to the first setting
    args.several_settings = len(settings) > 1
    spec, heldout = _check_search(args)
    cfg = SearchConfig(
        model=spec, budget=args.budget, space=args.space, trials=args.trials, refine=args.refine, probe_trials=args.probe_trials, calib=args.calib,
        validation=args.validation, heldout=heldout, seed=args.seed, metric=args.metric, storage=args.storage, storage_patience=args.storage_patience,
        study=args.study_name,
        sampler=args.sampler, batch=args.batch, timing_runs=args.timing_runs, cache=args.cache, out=args.out,
        export_dir=args.export_dir, device=args.device, progress=not args.no_progress, executor=args.executor,
        workers=args.workers, ray_address=args.ray_address, cost_model=args.cost_model,
        prefix_bytes=0 if args.no_prefix_reuse else int(args.prefix_mib * 2**20),
        rung_z=None if args.no_multi_fidelity else args.multi_fidelity_z,
    )
    if len(settings) > 1 or args.pack is not None:
        return _search_pack(cfg, spec, settings, args.pack)
    result = run(cfg)
    print(f"study {result['study']} ({'resumed' if result['resumed'] else 'new'}), {result['trials']} trials, "
          f"{result['seconds']:.0f} s")
    for r in result.get("ladder", [result]):
        print(f"exported {r['path']}: measured {r['measured']:.2f}x")
    print(result["report"].read_text())
    return 0


def _pack_settings(args) -> list:
    """The settings of a search (steps x sizes); each is checked now, naming its flag."""
    from .models.settings import apply
    from .search.packs import Setting

    if args.size and (args.height is not None or args.width is not None):
        raise ValueError(f"--size: got {','.join(f'{h}x{w}' for h, w in args.size)}, expected no --height or --width with it")
    steps, sizes = args.steps or [None], args.size or [(args.height, args.width)]
    args.steps, (args.height, args.width), args.size = steps[0], sizes[0], None  # the first setting's spec is checked
    settings = [Setting(n, h, w) for n in steps for h, w in sizes]
    if len(settings) > 1:
        if args.study_name is not None:
            raise ValueError(f"--study-name: got {args.study_name!r}, expected none with several settings (a study each)")
        if args.cost_model is not None and len(steps) > 1:
            raise ValueError(f"--cost-model: got {args.cost_model}, expected none with several --steps (a cost model "
                             "prices one step count; each setting's study fits its own)")
        from .models.settings import spec_from_args

        base = spec_from_args(args)
        for s in settings[1:]:
            apply(base, steps=s.steps, height=s.height, width=s.width)
    if args.pack is not None:
        check_dir(args.pack, "--pack")
    return settings


def _search_pack(cfg, spec, settings, folder) -> int:
    from dataclasses import replace

    from .search.packs import default_folder, search_pack

    if folder is None:
        _home(default_folder(spec).parent)
    result = search_pack(replace(cfg, model=spec), settings, folder)
    for s in result["settings"]:
        if s["skipped"]:
            print(f"{s['setting']}: in the pack already")
            continue
        print(f"{s['setting']}: study {s['study']} ({'resumed' if s['resumed'] else 'new'}), {s['trials']} trials, "
              f"{s['seconds']:.0f} s")
    print(render_pack(result["pack"]))
    return 0


def cmd_export(args) -> int:
    """Re-export a schedule from a stored study (the exported trial, or --trial N)."""
    import optuna

    from .search import export as X

    _count(args.trial, "--trial", 0)
    if args.tag is not None:
        _name(args.tag, "--tag")
    if args.out is not None:
        check_file(args.out, "--out")
    elif args.to == "zeustune":
        _home(user_schedules())
    else:
        check_dir(Path.cwd(), "--out")
    _storage(args.storage, existing=True)  # the check search makes, and an SQLite file must be there to export from
    try:
        study = optuna.load_study(study_name=args.study, storage=args.storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(args.storage, include_best_trial=False)]
        raise ValueError(f"--study: got {shown(args.study)}, expected one of the studies in {args.storage}: {names}") from None
    except Exception as e:  # unreachable database, unknown driver, not a database
        from .search.storage import reason

        raise ValueError(f"--storage: got {args.storage!r}, expected a study storage that opens ({reason(e)})") from None
    info = study.user_attrs.get("export", {})
    number = args.trial if args.trial is not None else info.get("trial")
    if number is None:
        raise ValueError(f"--trial: study {args.study!r} has no exported trial yet; give --trial N")
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials or trials[number].values is None or "plan" not in trials[number].user_attrs:
        raise ValueError(f"--trial: got {number}, expected a complete trial of study {args.study!r}")
    trial = trials[number]
    tag = args.tag or X.tag_for(study.user_attrs["budget"])
    metrics = info.get("metrics", {}) if number == info.get("trial") else {"nfe": trial.user_attrs["nfe"]}
    schedule = X.build(study.user_attrs["template"], trial, tag, metrics, X.provenance(study, trial, args.storage))
    if args.to == "cache-dit":
        path = X.write_cache_dit(schedule, args.out or Path(f"{tag}.cache-dit.yaml"))
    else:
        path = schedule.save(args.out or user_schedules() / Path(study.user_attrs["model"]).name / f"{tag}.yaml")
    print(f"{path}: trial {number}, plan {schedule.plan} ({schedule.nfe}/{schedule.steps} fresh)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zeustune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    show = sub.add_parser("show", help="print a schedule (file or preset) or a pack for a person")
    show.add_argument("schedule", nargs="?", help="a schedule YAML file, a preset name, or a pack folder (or a model "
                      "folder carrying one)")
    show.add_argument("--list", action="store_true", help="list the presets")
    show.set_defaults(func=cmd_show)

    run = sub.add_parser("run", help="apply a schedule to a tiny random pipeline and report what it did")
    run.add_argument("--model", default="tiny-random-flux", help="tiny-random-<family> (default: %(default)s)")
    run.add_argument("--schedule", default="zeus-flux-demo", help="a schedule file or preset (default: %(default)s)")
    run.add_argument("--steps", type=int, help="sampling steps (default: the schedule's)")
    run.add_argument("--resample", action="store_true", help="map the plan to --steps and another scheduler")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--repeats", type=int, default=5, help="timed runs of each variant (default: %(default)s)")
    run.set_defaults(func=cmd_run)

    gen = sub.add_parser("generate", help="generate images with a model, optionally under a schedule")
    gen.add_argument("--model", required=True, help="a short name (tiny-flux, flux, ...), hub id or local path")
    gen.add_argument("--schedule", help="a schedule file or preset (default: full steps)")
    gen.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for several)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--resample", action="store_true", help="apply a schedule tuned at other settings (steps mapped)")
    gen.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: %(default)s)")
    gen.add_argument("--device", default="cpu")
    add_settings(gen, prompt_files=False)
    gen.set_defaults(func=cmd_generate)

    ev = sub.add_parser("eval", help="score schedules against full-step references")
    ev.add_argument("schedule", nargs="+", help="schedule files or presets")
    ev.add_argument("--model", required=True)
    ev.add_argument("--prompts", default="heldout", help="calib, heldout or a text file (default: %(default)s)")
    ev.add_argument("--limit", type=int, help="use the first N prompts")
    ev.add_argument("--metric", default="auto", help="auto (lpips, else st-lpips, else gmsd; video models: st-lpips-video), lpips, st-lpips, st-lpips-video, gmsd, psnr or ssim (default: %(default)s)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the first prompt; prompt i uses seed+i")
    ev.add_argument("--timing-runs", type=int, default=3, help="interleaved timed runs per schedule (0: none)")
    ev.add_argument("--resample", action="store_true")
    ev.add_argument("--cache", type=Path, help="reference cache folder (default: $ZEUSTUNE_CACHE or ~/.cache/zeustune)")
    ev.add_argument("--out", type=Path, help="save side-by-side images and report.md/json here")
    ev.add_argument("--device", default="cpu")
    add_settings(ev, prompt_files=False)
    ev.set_defaults(func=cmd_eval)

    se = sub.add_parser("search", help="search the best schedule within a speed budget and export it")
    se.add_argument("--model", required=True, help="a short name (tiny-flux, flux, ...), hub id or local path")
    se.add_argument("--budget", default="3x", help="end-to-end speedup to reach, e.g. 3x (default: %(default)s); "
                    "several, e.g. 2x,3x,4x: one study, a schedule exported per budget")
    se.add_argument("--space", help="search space file or name (default: search_spaces/<model or family>.yaml)")
    se.add_argument("--trials", type=int, help=f"trials of the TPE stage, seeds included (default: {_effort('trials')})")
    se.add_argument("--refine", type=int, help=f"refinement moves at fixed NFE (default: {_effort('refine')})")
    se.add_argument("--probe-trials", type=int,
                    help=f"trials of the probe stage (G steps), when the space lists the probe generator (default: {_effort('probe_trials')})")
    se.add_argument("--calib", type=int, help=f"calibration prompts (default: {_effort('calib')})")
    se.add_argument("--validation", type=int,
                    help="further calibration prompts the finalists are re-scored on before export; 0: off "
                         "(default: as many as --calib, or what the calibration set has left)")
    se.add_argument("--heldout", type=int, help=f"held-out prompts for the report (default: {_effort('heldout')}, or all of a shorter set)")
    se.add_argument("--metric", default="auto", help="auto (lpips, else st-lpips, else gmsd; video models: st-lpips-video), lpips, st-lpips, st-lpips-video, gmsd, psnr or ssim (default: %(default)s)")
    se.add_argument("--storage", default="sqlite:///zeustune-studies.db",
                    help="SQLAlchemy URL of the study database (default: %(default)s)")
    se.add_argument("--storage-patience", type=float, default=600, metavar="SECONDS",
                    help="when the storage goes away mid-search, wait this long for it (retrying with backoff, finished "
                         "trials kept in memory and written when it is back) before giving up (default: %(default)s)")
    se.add_argument("--study-name", help="study name (default: from model, steps, size, budget, metric, prompts)")
    se.add_argument("--sampler", default="tpe", choices=["tpe", "nsga2", "random"], help="Optuna sampler (default: %(default)s)")
    se.add_argument("--batch", type=int, default=8, help="prompts per pipeline call (default: %(default)s)")
    se.add_argument("--timing-runs", type=int, default=11, help="interleaved timed runs per finalist (default: %(default)s)")
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--cache", type=Path, help="reference cache folder (default: $ZEUSTUNE_CACHE or ~/.cache/zeustune)")
    se.add_argument("--out", type=Path, help="report folder (default: out/search/<study>)")
    se.add_argument("--export-dir", type=Path, help="where the schedule goes (default: <ZEUSTUNE_HOME>/schedules/<model>, "
                    "which preset lookup searches first; see README)")
    se.add_argument("--device", default="cpu")
    se.add_argument("--no-progress", action="store_true", help="no progress bars")
    se.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="local: trials in this process (default); ray: on Ray actors, one pipeline each")
    se.add_argument("--workers", type=int, default=2, help="Ray workers (default: %(default)s)")
    se.add_argument("--no-prefix-reuse", action="store_true",
                    help="run every denoiser and text-encoder call (default: replay the calls of prefixes a candidate "
                         "shares with an earlier run, and encode each batch's prompts once; exact, the losses are "
                         "bit-identical)")
    se.add_argument("--no-multi-fidelity", action="store_true",
                    help="score every candidate on all calibration prompts unless its running mean is hopeless (default: "
                         "at each third of the prompts, stop one that is worse than the best trial at least as fast)")
    se.add_argument("--multi-fidelity-z", type=float, default=1.5,
                    help="confidence of that paired test, in standard errors (default: %(default)s)")
    se.add_argument("--prefix-mib", type=float, default=1024,
                    help="memory for recorded runs whose prefixes are replayed (default: %(default)s MiB)")
    se.add_argument("--cost-model", type=Path, help="budget with this cost model (JSON, as stored with a study) instead "
                    "of fitting one: several searches then share one budget line; 'fit' times this device even where the "
                    "model's space ships one (tiny-wan: priced on Wan2.1-14B)")
    se.add_argument("--ray-address", help="Ray cluster address: auto or ray://host:10001 (default: start a local one)")
    se.add_argument("--pack", type=Path, help="write a pack here (default with several --steps or --size: "
                    "<ZEUSTUNE_HOME>/packs/<model>); e.g. MODEL_DIR/zeustune, which enable(pipe) then finds")
    add_settings(se, several=True)
    se.set_defaults(func=cmd_search)

    xp = sub.add_parser("export", help="re-export a schedule from a stored study")
    xp.add_argument("--study", required=True, help="study name (printed by zeustune search)")
    xp.add_argument("--storage", default="sqlite:///zeustune-studies.db", help="SQLAlchemy URL (default: %(default)s)")
    xp.add_argument("--trial", type=int, help="trial number (default: the trial the search exported)")
    xp.add_argument("--tag", help="schedule tag (default: tuned-<budget>x)")
    xp.add_argument("--to", choices=["zeustune", "cache-dit"], default="zeustune", help="file format (default: %(default)s)")
    xp.add_argument("--out", type=Path, help="output file")
    xp.set_defaults(func=cmd_export)

    # its own parser (zeustune/bench/run.py, shared with scripts/bench_peers.py); listed here for --help
    sub.add_parser("bench", help="compare tuned schedules with the peers users would pick instead (zeustune bench --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] != ["bench"]:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command == "show" and not args.list and not args.schedule:
            parser.error("show: give a schedule file or preset name, or --list")
    from .search.driver import SearchFailed
    from .search.storage import StorageUnavailable

    with warnings.catch_warnings():
        shown_before = warnings.showwarning

        def show(message, category, *rest, **kw):  # a skipped preset file: one line naming it
            if issubclass(category, PresetSkippedWarning):
                print(f"zeustune: warning: {message}", file=sys.stderr)
            else:
                shown_before(message, category, *rest, **kw)

        warnings.showwarning = show
        try:
            if argv[:1] == ["bench"]:  # its own parser (bench/run.py); its errors end here too
                from .bench.run import main as bench_main

                return bench_main(argv[1:])
            return args.func(args)
        except (ScheduleError, FileNotFoundError, ValueError, SearchFailed, StorageUnavailable) as e:
            print(f"zeustune: {e}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
