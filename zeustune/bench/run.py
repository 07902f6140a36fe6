"""``zeustune bench``: zeustune's tuned schedules against the methods users would pick instead,
on one model, the same held-out prompts and seeds, in one run.

Every row is produced here by running the method: quality is the loss of its images against the
same-seed full-step references (the search's metric). "calls" are the full denoiser calls that
ran while those images were made, per CFG branch (N for full steps), counted, not assumed. Rows
are compared at equal compute: each row's cost in full calls of the model the family's users
deploy (FLUX.1-dev; Wan2.1-14B for Wan: calls plus its skipped steps' work, see ``compute``)
gives a projected end-to-end speedup there, and the verdicts hold at equal projected cost.
Latency here is one image end to end, timed in rotation with every other method and full steps
(median of ``--timing-runs``), so drift on a shared machine hits all alike; it is a column and a
second plot.

Methods (``methods``): full steps; fewer steps; ZEUS's published configurations; SADA; Spectrum;
LeMiCa's step lists; an EasyCache-style criterion; cache-dit's step masks (in our runtime and as
the package); diffusers' FirstBlockCache, TaylorSeer, MagCache and SeaCache at knobs that land
nearest each budget's call count; the tuned schedules (presets, and ``--schedule`` files).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from ..quality import metrics as M
from ..quality.evaluate import references, sample, sample_batch, timed
from ..models.loading import load as load_model
from ..models.prompts import load_prompts
from ..quality.references import ReferenceCache
from ..schedule.format import Schedule, preset_dirs
from ..models.settings import add_arguments as add_settings
from ..models.settings import model_slug, spec_from_args
from . import compute, peers
from . import methods as MT
from .methods import Method
from .report import RANKED, markdown, plot


def build_rows(pipe, spec, budgets, tuned: dict[float, Schedule], extra: list[Schedule], prompt: str, seed: int,
               calib_run, progress: bool = True) -> list[Method]:
    from ..search.evaluator import template

    base = template(pipe, spec)
    n = spec.steps
    tuned = {b: s for b, s in tuned.items() if s.steps == n}  # tuned at other settings: not this bench's
    # the call counts the peers are matched to: the tuned schedules', else each budget's N/b
    targets = {b: s.nfe for b, s in tuned.items()} or {b: max(2, round(n / b)) for b in budgets}
    rows = [Method("full steps", "full steps", steps=n)]
    rows += [MT.schedule_row(pipe, s, "zeustune tuned", budget=b) for b, s in tuned.items()]
    rows += [MT.schedule_row(pipe, s, "zeustune tuned") for s in extra]
    for build in (MT.fewer_steps, MT.zeus_published, MT.sada, MT.spectrum, MT.lemica, MT.postdiff, MT.cache_dit_in_runtime,
                  MT.cache_dit_package):
        rows += build(pipe, spec, base, targets)
    rows += MT.easycache(pipe, spec, base, targets, prompt, seed, progress)
    rows += MT.diffusers_caches(pipe, spec, base, targets, prompt, seed, calib_run, progress)
    for m in rows:
        m.steps = m.steps or n
    names = [m.name for m in rows]
    dup = {x for x in names if names.count(x) > 1}
    if dup:
        raise ValueError(f"bench rows: names {sorted(dup)} appear twice (a --schedule tag like a preset's?)")
    return rows


def run(model, budgets: list[float], heldout: int, timing_runs: int, seed: int = 10_000, batch: int = 8,
        metric: str = "auto", progress: bool = True, cache=None, schedules: list[Path] = (),
        skip_cost: Path | None = None) -> tuple[list[Method], dict]:
    pipe, spec = load_model(model, progress=False)
    metric = M.resolve(metric, video=spec.frames is not None)
    prompts = load_prompts(spec, "heldout")[:heldout]
    refs = references(pipe, spec, prompts, seed, ReferenceCache(cache), progress=progress, batch=batch).images
    extra = [Schedule.load(p) for p in schedules]
    for p, s in zip(schedules, extra):
        if s.steps != spec.steps:
            raise ValueError(f"--schedule {p}: steps: got {s.steps}, expected {spec.steps} (the bench's --steps)")
    calib = load_prompts(spec, "calib")[0]
    rows = build_rows(pipe, spec, budgets, _tuned(model_slug(spec), budgets), extra, prompts[0], seed,
                      lambda: sample(pipe, spec, calib, 0), progress)
    full_calls = MT.count_calls(pipe, spec, rows[0], prompts[0], seed)  # all branches of one full-step image

    for m in tqdm(rows, desc="quality", disable=not progress, leave=False):
        images, calls = [], []
        p = m.pipe or pipe
        step = 1 if m.per_prompt else batch
        with m.setup():
            for i in range(0, len(prompts), step):
                idx = list(range(i, min(i + step, len(prompts))))
                out = []
                c = peers.count_full_calls(p, lambda: out.append(sample_batch(
                    p, spec, [prompts[j] for j in idx], [seed + j for j in idx], **m.call).cpu()))
                images.append(out[0])
                calls += [spec.steps * c / full_calls] * len(idx)  # per branch; a batch's calls serve each image
        images = torch.cat(images)
        q = sorted(calls)
        m.calls, m.calls_p90 = sum(calls) / len(calls), q[int(0.9 * (len(q) - 1))]
        for name in dict.fromkeys([metric, *RANKED]):
            if name == "lpips" and name != metric:
                continue  # needs weights that are rarely here; ranked only when it is the metric
            vals = M.score(name, images, refs).double()
            m.scores[name] = float(vals[torch.isfinite(vals)].mean()) if torch.isfinite(vals).any() else float("inf")
            if name == metric:
                q = sorted(vals.tolist())
                m.loss, m.loss_p90 = float(vals.mean()), q[int(0.9 * (len(q) - 1))]

    target = compute.target_for(spec.family)
    shares = compute.load_shares(skip_cost, target)
    for m in rows:
        m.cost = compute.cost(m, shares["shares"])
        m.projected = compute.projected_speedup(m.cost, spec.steps, target=target)

    times: dict[str, list[float]] = {m.name: [] for m in rows}
    for r in tqdm(range(timing_runs + 1), desc="timing", disable=not progress, leave=False):
        # all methods in rotation, in a new order each round: a fixed order gave the row after the
        # cache-dit package's pipeline (full steps) a ~20% slower run at 50 steps, every round
        order = list(rows)
        random.Random(r).shuffle(order)
        for m in order:  # the first round is a warm-up
            with m.setup():
                p = m.pipe or pipe
                times[m.name].append(timed(p, lambda: sample(p, spec, prompts[0], seed, **m.call)))
    for m in rows:
        m.latency = statistics.median(times[m.name][1:])
        m.speedup = rows[0].latency / m.latency
    import diffusers

    used = sorted({k for m in rows for k in compute.skipped_letters(m)})
    info = {"model": model_slug(spec), "steps": spec.steps, "resolution": f"{spec.height}x{spec.width}", "metric": metric,
            "held-out prompts": len(prompts), "seeds": f"{seed}..{seed + len(prompts) - 1}", "timing runs": timing_runs,
            "prompts per call": f"{batch}; 1 for rows that decide at run time (peer caches, A and G steps), "
                                "whose decisions are per batch: as the search scores them and a one-image request runs",
            "device": f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads",
            "versions": f"torch {torch.__version__}, diffusers {diffusers.__version__}, python {platform.python_version()}",
            "cache-dit": "installed" if MT.cache_dit_masks(spec.steps) else "not installed: its masks skipped",
            "target": target.name, "first block's share of the blocks' parameters": _first_block_share(pipe),
            "projection": f"{target.name} at {target.setting}, fixed share "
                          f"{compute.fixed_share(spec.steps, target.fixed_share_50):.3g} at {spec.steps} steps "
                          f"({target.fixed_share_50:.3g} at 50)",
            f"skipped-step shares of a {target.name} call": "; ".join(
                f"{k} {shares['shares'][k]:.2e} ({shares['source'][k]})" for k in used)}
    return rows, info


def _first_block_share(pipe) -> float | None:
    """The first transformer block's share of all blocks' parameters (the report sets it against
    the target's first block: FLUX's double blocks are larger than its single ones); None for a UNet."""
    from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS

    model = getattr(pipe, "transformer", None)
    blocks = [b for name, c in model.named_children() if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
              and isinstance(c, torch.nn.ModuleList) for b in c] if model is not None else []
    if not blocks:
        return None
    size = [sum(p.numel() for p in b.parameters()) for b in blocks]
    return round(size[0] / sum(size), 3)


def _tuned(model: str, budgets: list[float]) -> dict[float, Schedule]:
    out = {}
    for b in budgets:
        for d in preset_dirs():
            p = d / model / f"tuned-{b:g}x.yaml"
            if p.is_file():
                out[b] = Schedule.load(p)
                break
    return out


FIELDS = ("name", "family", "budget", "steps", "reduced", "calls", "calls_p90", "cost", "projected", "latency", "speedup", "loss",
          "loss_p90", "scores")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="zeustune bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a short name, hub id or local diffusers folder")
    ap.add_argument("--budgets", default="2,3,4", help="comma-separated speedups to match (default: %(default)s)")
    ap.add_argument("--heldout", type=int, default=32, help="held-out prompts (default: %(default)s)")
    ap.add_argument("--timing-runs", type=int, default=7)
    ap.add_argument("--schedule", type=Path, action="append", default=[], metavar="FILE",
                    help="a schedule file to bench as a tuned row besides the presets (repeatable)")
    ap.add_argument("--skip-cost", type=Path, metavar="FILE",
                    help="skipped-step shares from experiments/bench_skip_cost.py (default: the shipped docs/benchmarks/skip-cost.json)")
    ap.add_argument("--out", type=Path, help="default: out/bench/<model>")
    ap.add_argument("--metric", default="auto", help="auto (video models: st-lpips-video), lpips, st-lpips, st-lpips-video, gmsd, psnr or ssim (default: %(default)s)")
    ap.add_argument("--no-progress", action="store_true")
    add_settings(ap, prompt_files=False)
    ap.add_argument("--heldout-prompts", dest="heldout_prompts_file", metavar="FILE", help="held-out prompts, one per line")
    args = ap.parse_args(argv)
    from ..schedule.outputs import check_dir
    from ..search.cost import parse_budget

    def fail(message: str):  # one line, exit status 2 (as zeustune's other errors), not the whole usage
        ap.exit(2, f"zeustune bench: {message}\n")

    try:
        budgets = [parse_budget(b) for b in args.budgets.split(",")]
    except ValueError:  # 0 or 1 (no speedup) reached the peers' knob search as a division by zero
        fail(f"--budgets: got {args.budgets!r}, expected comma-separated speedups above 1x like 2,3,4")
    for flag, value in (("--heldout", args.heldout), ("--timing-runs", args.timing_runs)):
        if value < 1:
            fail(f"{flag}: got {value}, expected an integer >= 1")
    for p in args.schedule:
        if not p.is_file():
            fail(f"--schedule: got {str(p)!r}, expected an existing schedule file")
    if args.skip_cost and not args.skip_cost.is_file():
        fail(f"--skip-cost: got {str(args.skip_cost)!r}, expected the JSON file experiments/bench_skip_cost.py writes")
    spec = spec_from_args(args)
    # everything a bench reads or writes, before the model loads and the references render
    M.require(args.metric, video=spec.frames is not None)
    check_dir(args.out or Path("out/bench") / model_slug(spec), "--out")
    have = len(load_prompts(spec, "heldout"))
    if args.heldout > have:
        where = spec.heldout_prompts or f"the held-out set of {spec.name}"
        fail(f"--heldout: got {args.heldout}, but {where} has {have} prompts: pass --heldout {have} or a longer prompts file")
    for p in args.schedule:
        if (steps := Schedule.load(p).steps) != spec.steps:
            fail(f"--schedule {p}: steps: got {steps}, expected {spec.steps} (the bench's --steps)")
    rows, info = run(spec, budgets, args.heldout, args.timing_runs, metric=args.metric, progress=not args.no_progress,
                     schedules=args.schedule, skip_cost=args.skip_cost)
    out = args.out or Path("out/bench") / model_slug(spec)
    command = "zeustune bench " + " ".join(argv if argv is not None else sys.argv[1:])
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(markdown(rows, info, command, budgets))
    (out / "results.json").write_text(json.dumps({"info": info, "rows": [{k: getattr(m, k) for k in FIELDS} for m in rows]},
                                                 indent=1))
    title = f"{info['model']}, {info['steps']} steps, {info['held-out prompts']} held-out prompts"
    plot(rows, out / "pareto.png", info["metric"], "projected", title + f": equal compute ({info['target']} projection)",
         target=info["target"])
    plot(rows, out / "pareto-cpu.png", info["metric"], "speedup", title + ": measured wall time on this CPU")
    print(markdown(rows, info, command, budgets))
    if spec.family != "flux":  # gpu.measure builds FLUX.1-dev's architecture: a video plan timed there says nothing
        print(f"the GPU latency part times FLUX.1-dev's architecture; skipped for {spec.name} (family {spec.family})",
              file=sys.stderr)
        return 0
    from . import gpu

    # the exported schedules on the full-size architecture: tuned plans at 28 steps, ZEUS's FLUX presets at 50
    gpu_scheds = {f"{s.tag} (plan)": s for s in _tuned(model_slug(spec), budgets).values()}
    for name in ("zeus-flux-demo", "zeus-flux-default"):
        gpu_scheds[name] = Schedule.from_preset(name)
    print(gpu.run_if_gpu(gpu_scheds, out, runs=args.timing_runs), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
