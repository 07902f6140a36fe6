"""``zeustune bench``: zeustune's tuned schedules against the methods users would pick instead,
on one model, the same held-out prompts and seeds, in one run.

Every row is produced here by running the method: quality is the loss of its images against the
same-seed full-step references (the search's metric), latency is one image end to end, timed in
rotation with every other method and full steps (median of ``--timing-runs``), so drift on a
shared machine hits all alike. "calls" is how many denoiser calls actually ran, in full-step
units (N for full steps), counted, not assumed.

Methods: full steps; fewer steps with a tuned schedule's number of calls; the published ZEUS
configurations; cache-dit's hand-made step masks (slow/medium/fast/ultra) as masks in our
runtime; diffusers' FirstBlockCache, TaylorSeerCache and MagCache (calibrated on the model with
its own calibration mode), each at knobs that land nearest each budget's call count; a
Spectrum-style growing-gap schedule at each budget's call count; the tuned schedules.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from . import metrics as M
from . import peers, runtime
from . import plans as P
from .evaluate import references, sample, sample_batch, timed
from .models import load as load_model
from .prompts import load_prompts
from .references import ReferenceCache
from .schedule import Predictor, Schedule, preset_dirs
from .settings import add_arguments as add_settings
from .settings import model_slug, spec_from_args

# cache-dit's hand-made step masks as fresh counts at 28 steps (FACTS.md §4: fast = 11, ultra = 8);
# cache_dit.steps_mask() gives the positions where the package installs.
CACHE_DIT_POLICIES = ("slow", "medium", "fast", "ultra")
KNOBS = {  # candidate knobs per diffusers cache; the one nearest each budget's call count is used
    "fbcache": [0.06, 0.08, 0.1, 0.12, 0.15, 0.18, 0.2, 0.22, 0.25, 0.3, 0.4],
    "taylorseer": [2, 3, 4, 5, 6],
    "magcache": [0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5],
}


@dataclass
class Method:
    name: str
    family: str
    setup: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    call: dict = field(default_factory=dict)  # pipeline call overrides (num_inference_steps)
    budget: float | None = None  # the budget this row was matched to, if any
    pipe: object = None  # a pipeline of its own (default: the shared one)
    calls: float | None = None
    latency: float | None = None
    speedup: float | None = None
    loss: float | None = None
    loss_p90: float | None = None
    scores: dict = field(default_factory=dict)  # every metric's mean over the prompts (RANKED)


def _schedule_ctx(pipe, schedule: Schedule):
    @contextlib.contextmanager
    def ctx():
        runtime.enable(pipe, schedule)
        try:
            yield
        finally:
            runtime.disable(pipe)

    return ctx


def _count_calls(pipe, spec, m: Method, prompt: str, seed: int) -> float:
    """Full denoiser calls of one image, in steps (N for full steps)."""
    pipe = m.pipe or pipe
    with m.setup():
        n = peers.count_full_calls(pipe, lambda: sample(pipe, spec, prompt, seed, **m.call))
    return n


def methods(pipe, spec, budgets: list[float], tuned: dict[float, Schedule], calib_run) -> list[Method]:
    from .search import space as SP
    from .search.evaluator import schedule_of, template

    base = template(pipe, spec)
    n = spec.steps
    out = [Method("full steps", "full steps")]
    tuned = {b: s for b, s in tuned.items() if s.steps == n}  # tuned at other settings: not this bench's
    # the call counts the peers are matched to: the tuned schedules', else each budget's N/b
    targets = {b: s.nfe for b, s in tuned.items()} or {b: max(2, round(n / b)) for b in budgets}
    for b, sched in tuned.items():
        out.append(Method(sched.tag, "zeustune tuned", _schedule_ctx(pipe, sched), budget=b))
    for b, nfe in targets.items():
        # Spectrum-style growing gaps with the matched call count: the smallest alpha reaching it
        for alpha in [a / 20 for a in range(0, 200)]:
            plan = P.growing_gaps(n, warmup=max(2, min(5, nfe - 1)), alpha=alpha)
            if plan.nfe <= nfe:
                sp = base.with_plan(plan, tag=f"growing gaps a={alpha:g}", predictor=Predictor(caching="reuse_interp"))
                out.append(Method(sp.tag, "Spectrum-style growing gaps", _schedule_ctx(pipe, sp), budget=b))
                break
    # fewer steps over the whole range of matched call counts: its front, not just points
    match = {nfe: b for b, nfe in targets.items()}
    for k in range(min(targets.values()) - 1, max(targets.values()) + 2):
        out.append(Method(f"{k} steps", "fewer steps", call={"num_inference_steps": k}, budget=match.get(k)))
    space = SP.load(spec.name) if (SP.BUILTIN_SPACES / f"{spec.name}.yaml").is_file() else SP.load(spec.family)
    for name in SP.ZEUS_PUBLISHED:
        d = SP.decode(SP.zeus_seed(name, n), space, n)
        out.append(Method(name, "ZEUS published", _schedule_ctx(pipe, schedule_of(base, d, name))))
    for policy, mask in cache_dit_masks(n).items():
        sched = base.with_plan(P.from_mask(mask), tag=f"cache-dit {policy}", predictor=Predictor(caching="reuse_interp"))
        out.append(Method(sched.tag, "cache-dit masks (our runtime)", _schedule_ctx(pipe, sched)))
    if cache_dit_masks(n):
        # cache-dit patches the transformer's forward for good (disable_cache leaves the patch,
        # which then breaks diffusers' own caches): it gets a pipeline of its own, same weights.
        from .models import load as load_model

        own, _ = load_model(spec.name, progress=False)
        for policy, mask in cache_dit_masks(n).items():
            out.append(Method(f"cache-dit {policy} (package)", "cache-dit package", _cache_dit_ctx(own, mask), pipe=own))
    return out


def _cache_dit_ctx(pipe, mask: list[int]):
    """cache-dit itself: DBCache F1B0 (the first block always runs, as in its published configs),
    the mask applied statically, one cache per CFG branch (true CFG calls the model twice a step)."""

    @contextlib.contextmanager
    def ctx():
        import cache_dit

        cache_dit.enable_cache(pipe, cache_config=cache_dit.DBCacheConfig(
            Fn_compute_blocks=1, Bn_compute_blocks=0, steps_computation_mask=mask, steps_computation_policy="static",
            enable_separate_cfg=True, num_inference_steps=len(mask)))
        try:
            yield
        finally:
            cache_dit.disable_cache(pipe)

    return ctx


def cache_dit_masks(steps: int) -> dict[str, list[int]]:
    """cache-dit's step masks from the package itself; {} where it does not install."""
    try:
        import cache_dit
    except Exception:
        return {}
    out = {}
    for policy in CACHE_DIT_POLICIES:
        out[policy] = [int(bool(v)) for v in cache_dit.steps_mask(mask_policy=policy, total_steps=steps)]
    return out


def diffusers_cache_methods(pipe, spec, budgets, prompt, seed, calib_run, progress=True) -> list[Method]:
    """Each diffusers cache at the knobs whose counted calls land nearest each budget's N/B."""
    out = []
    full = _count_calls(pipe, spec, Method("full", "full"), prompt, seed)  # CFG: 2 calls per step
    ratios = peers.calibrate_magcache(pipe, calib_run)
    for name, knobs in KNOBS.items():
        # MagCache's defaults (max 3 skips in a row, 20% retention) cap it near 2.5x at 28 steps;
        # loosened so it can reach 3x and 4x too
        opts = {"mag_ratios": ratios, "max_skip_steps": 10, "retention_ratio": 0.1} if name == "magcache" else {}
        counted = []
        for k in tqdm(knobs, desc=f"{name} knobs", disable=not progress, leave=False):
            m = Method(f"{name} {k:g}", f"diffusers {name}", _peer_ctx(pipe, name, k, opts))
            counted.append((k, spec.steps * _count_calls(pipe, spec, m, prompt, seed) / full, m))
        for b in budgets:
            k, calls, m = min(counted, key=lambda c: abs(c[1] - spec.steps / b))
            if all(x.name != m.name for x in out):
                m.budget = b
                out.append(m)
    return out


def _peer_ctx(pipe, name, knob, opts):
    return lambda: peers.apply(pipe, name, knob, **{k: (v.clone() if torch.is_tensor(v) else v) for k, v in opts.items()})


def run(model, budgets: list[float], heldout: int, timing_runs: int, seed: int = 10_000, batch: int = 8,
        metric: str = "auto", progress: bool = True, cache=None) -> tuple[list[Method], dict]:
    metric = M.resolve(metric)
    pipe, spec = load_model(model, progress=False)
    prompts = load_prompts(spec, "heldout")[:heldout]
    refs = references(pipe, spec, prompts, seed, ReferenceCache(cache), progress=progress, batch=batch).images
    tuned = _tuned(model_slug(spec), budgets)
    calib = load_prompts(spec, "calib")[0]
    rows = methods(pipe, spec, budgets, tuned, None)
    rows += diffusers_cache_methods(pipe, spec, budgets, prompts[0], seed, lambda: sample(pipe, spec, calib, 0), progress)

    for m in tqdm(rows, desc="calls", disable=not progress, leave=False):
        m.calls = _count_calls(pipe, spec, m, prompts[0], seed)
    full_calls = rows[0].calls
    for m in rows:
        m.calls = spec.steps * m.calls / full_calls  # in steps: CFG's second branch counted once

    for m in tqdm(rows, desc="quality", disable=not progress, leave=False):
        images = []
        with m.setup():
            for i in range(0, len(prompts), batch):
                idx = list(range(i, min(i + batch, len(prompts))))
                images.append(sample_batch(m.pipe or pipe, spec, [prompts[j] for j in idx], [seed + j for j in idx], **m.call).cpu())
        images = torch.cat(images)
        for name in dict.fromkeys([metric, *RANKED]):
            if name == "lpips" and name != metric:
                continue  # needs weights that are rarely here; ranked only when it is the metric
            vals = M.METRICS[name].fn(images, refs).double()
            m.scores[name] = float(vals[torch.isfinite(vals)].mean()) if torch.isfinite(vals).any() else float("inf")
            if name == metric:
                q = sorted(vals.tolist())
                m.loss, m.loss_p90 = float(vals.mean()), q[int(0.9 * (len(q) - 1))]

    times: dict[str, list[float]] = {m.name: [] for m in rows}
    for _ in tqdm(range(timing_runs + 1), desc="timing", disable=not progress, leave=False):
        for m in rows:  # all methods in rotation; the first round is a warm-up
            with m.setup():
                p = m.pipe or pipe
                times[m.name].append(timed(p, lambda: sample(p, spec, prompts[0], seed, **m.call)))
    for m in rows:
        m.latency = statistics.median(times[m.name][1:])
    for m in rows:
        m.speedup = rows[0].latency / m.latency
    import diffusers

    info = {"model": model_slug(spec), "steps": spec.steps, "resolution": f"{spec.height}x{spec.width}", "metric": metric,
            "held-out prompts": len(prompts), "seeds": f"{seed}..{seed + len(prompts) - 1}", "timing runs": timing_runs,
            "device": f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads",
            "versions": f"torch {torch.__version__}, diffusers {diffusers.__version__}, python {platform.python_version()}",
            "cache-dit": "installed" if cache_dit_masks(spec.steps) else "not installed: its masks skipped"}
    return rows, info


def _tuned(model: str, budgets: list[float]) -> dict[float, Schedule]:
    out = {}
    for b in budgets:
        for d in preset_dirs():
            p = d / model / f"tuned-{b:g}x.yaml"
            if p.is_file():
                out[b] = Schedule.load(p)
                break
    return out


def markdown(rows: list[Method], info: dict, command: str) -> str:
    lines = [f"# Peers on {info['model']}", "", f"Reproduce: `{command}`", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()] + [""]
    lines += ["| method | family | matched to | calls (of N) | N/calls | measured speedup | loss mean | loss p90 |",
              "|---|---|---|---|---|---|---|---|"]
    for m in sorted(rows, key=lambda m: (m.budget or 0, -m.speedup)):
        lines.append(f"| {m.name} | {m.family} | {f'{m.budget:g}x' if m.budget else '-'} | {m.calls:.1f} | "
                     f"{rows[0].calls / m.calls:.2f}x | {m.speedup:.2f}x | {m.loss:.4f} | {m.loss_p90:.4f} |")
    lines += ["", "## Tuned against each peer's front", ""] + verdicts(rows)
    lines += ["", "## Do the metrics agree?", ""] + agreement(rows, info["metric"])
    return "\n".join(lines) + "\n"


#: Metrics every bench row is scored with, besides the chosen one, for the agreement table.
RANKED = ("st-lpips", "gmsd", "psnr", "ssim")


def agreement(rows: list[Method], metric: str) -> list[str]:
    """Spearman rank agreement of the bench's metric with the others, over the rows (not full steps,
    whose loss is 0 by construction). PSNR's mean is over the finite per-image values."""
    rows = [m for m in rows if m.family != "full steps"]
    names = [n for n in dict.fromkeys([metric, *RANKED]) if all(n in m.scores for m in rows)]
    if len(rows) < 3 or metric not in names:
        return ["(too few rows)"]
    rho = M.rank_agreement({n: [m.scores[n] for m in rows] for n in names}, against=metric)
    out = [f"Spearman rank correlation of {metric} with each metric over the {len(rows)} method rows above "
           "(losses; PSNR and SSIM negated, so 1 = the same order):", "",
           "| metric | " + " | ".join(rho) + " |", "|---|" + "---|" * len(rho),
           f"| {metric} | " + " | ".join(f"{v:.3f}" for v in rho.values()) + " |", "",
           "| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    out += [f"| {m.name} | " + " | ".join(f"{m.scores[n]:.4f}" for n in names) + " |" for m in rows]
    return out


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Pareto front of (speedup, loss) points: faster first, each kept only if no faster point
    has a lower or equal loss."""
    out: list[tuple[float, float]] = []
    for sp, loss in sorted(points, key=lambda p: (-p[0], p[1])):
        if not out or loss < out[-1][1]:
            out.append((sp, loss))
    return out


def loss_at(points: list[tuple[float, float]], speedup: float) -> float | None:
    """A method's front loss at ``speedup``, linear between its neighbouring front points;
    its best loss at any faster point if it reaches that speed; None if no point is as fast."""
    f = front(points)
    faster = [p for p in f if p[0] >= speedup]
    if not faster:
        return None
    hi = min(faster, key=lambda p: p[0])  # slowest of the faster points
    slower = [p for p in f if p[0] < speedup]
    if not slower or hi[0] == speedup:
        return hi[1]
    lo = max(slower, key=lambda p: p[0])
    w = (speedup - lo[0]) / (hi[0] - lo[0])
    return min(hi[1], lo[1] + w * (hi[1] - lo[1]))


def verdicts(rows: list[Method]) -> list[str]:
    """For each tuned row and each peer family: the family's front loss at the tuned row's
    measured speed (interpolated), and whether the tuned row is on or beyond it."""
    out = []
    for t in [m for m in rows if m.family == "zeustune tuned"]:
        out.append(f"- **{t.name}** ({t.speedup:.2f}x measured, loss {t.loss:.4f}):")
        for fam in sorted({m.family for m in rows} - {"zeustune tuned", "full steps"}):
            pts = [(m.speedup, m.loss) for m in rows if m.family == fam]
            v = loss_at(pts, t.speedup)
            if v is None:
                out.append(f"  - {fam}: no row reaches {t.speedup:.2f}x (fastest {max(p[0] for p in pts):.2f}x): beyond its front")
            else:
                word = "beyond its front" if t.loss < v else "on its front" if t.loss == v else "BEHIND its front"
                out.append(f"  - {fam}: front loss at {t.speedup:.2f}x is {v:.4f}: {word} ({t.loss / v:.2f}x its loss)"
                           if v > 0 else f"  - {fam}: front loss at {t.speedup:.2f}x is 0: behind")
    return out


def plot(rows: list[Method], path: Path, metric: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    markers = "o s ^ v D P X * h".split()
    for i, fam in enumerate(sorted({m.family for m in rows}, key=lambda f: (f != "zeustune tuned", f))):
        pts = sorted([(m.speedup, m.loss) for m in rows if m.family == fam])
        style = dict(marker=markers[i % len(markers)], label=fam, linestyle="-" if len(pts) > 1 else "none")
        if fam == "zeustune tuned":
            style.update(color="crimson", markersize=11, linewidth=2.5)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], **style)
    ax.set_xlabel("measured end-to-end speedup (x)")
    ax.set_ylabel(f"held-out loss vs full steps ({metric}, lower is better)")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="zeustune bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a short name, hub id or local diffusers folder")
    ap.add_argument("--budgets", default="2,3,4", help="comma-separated speedups to match (default: %(default)s)")
    ap.add_argument("--heldout", type=int, default=32, help="held-out prompts (default: %(default)s)")
    ap.add_argument("--timing-runs", type=int, default=7)
    ap.add_argument("--out", type=Path, help="default: out/bench/<model>")
    ap.add_argument("--metric", default="auto", help="auto, lpips, st-lpips, gmsd, psnr or ssim (default: %(default)s)")
    ap.add_argument("--no-progress", action="store_true")
    add_settings(ap, prompt_files=False)
    ap.add_argument("--heldout-prompts", dest="heldout_prompts_file", metavar="FILE", help="held-out prompts, one per line")
    args = ap.parse_args(argv)
    try:
        budgets = [float(b.rstrip("x")) for b in args.budgets.split(",")]
    except ValueError:
        ap.error(f"--budgets: got {args.budgets!r}, expected comma-separated speedups like 2,3,4")
    spec = spec_from_args(args)
    rows, info = run(spec, budgets, args.heldout, args.timing_runs, metric=args.metric, progress=not args.no_progress)
    out = args.out or Path("out/bench") / model_slug(spec)
    command = "zeustune bench " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "README.md").parent.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(markdown(rows, info, command))
    (out / "results.json").write_text(json.dumps({"info": info, "rows": [
        {k: getattr(m, k) for k in ("name", "family", "budget", "calls", "latency", "speedup", "loss", "loss_p90", "scores")}
        for m in rows]}, indent=1))
    plot(rows, out / "pareto.png", info["metric"])
    print(markdown(rows, info, command))
    from . import bench_gpu

    # the exported schedules on the full-size architecture: tuned plans at 28 steps, ZEUS's FLUX presets at 50
    gpu_scheds = {f"{s.tag} (plan)": s for s in _tuned(model_slug(spec), budgets).values()}
    for name in ("zeus-flux-demo", "zeus-flux-default"):
        gpu_scheds[name] = Schedule.from_preset(name)
    print(bench_gpu.run_if_gpu(gpu_scheds, out, runs=args.timing_runs), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
