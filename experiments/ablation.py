#!/usr/bin/env python3
"""Regenerates docs/search/ablation/README.md (its tables, ablation-28.png and ablation-50.png). The page
does not record the run time: roughly 40 minutes at 28 steps and 30 at 50 steps on 2 cores (an estimate:
15 and 10 tiny-flux searches of 200 and 120 trials, at the 1.5-3 minutes the preset searches take).

Ablation of the search's components (issue 12): today's space, + the forecaster (C gate),
+ adaptive steps (A), + per-branch plans, and all together, on one model at equal denoiser calls.

    python experiments/ablation.py [--steps 28] [--budgets 2x 3x 4x] [--targets 5 7 10 12] [--out DIR]

1. For every variant (a space file in docs/search/ablation/spaces) and budget, one
   ``zeustune search`` with the same trial counts, calibration prompts, seed and cost model (fitted
   once, 15 interleaved rounds, ``OUT/cost-model.json``: each search fitting its own let the budget
   lines of the variants differ by timing noise), each variant in its own SQLite storage under
   ``OUT/studies`` (resumable: a finished search is not run again).
2. For each target call count k and variant, the trial with the lowest calibration loss among
   every complete trial of that variant's searches whose calls per CFG branch (measured mean for
   adaptive plans) are at most k; it is scored on the held-out prompts (the bench's: the first
   ``--heldout`` of the held-out set, seeds 10000 + i), with its measured calls (mean, p90).
3. With ``--bench results.json`` (the bench at these settings), the best other method at no
   more calls per branch, and the ratio. Writes ``OUT/results.json``, ``OUT/README.md``'s table
   (between markers) and ``OUT/ablation.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPACES = ROOT / "docs" / "search" / "ablation" / "spaces"
VARIANTS = ("today", "forecast", "adaptive", "branches", "all")
LABELS = {"today": "today's space", "forecast": "+ forecaster (C)", "adaptive": "+ adaptive steps (A)",
          "branches": "+ per-branch plans", "all": "all together"}
PEER_FAMILIES_EXCLUDED = ("full steps", "zeustune tuned")


def shared_cost_model(args) -> Path:
    """One cost model for every search of the ablation, fitted here once (kept for a rerun)."""
    path = args.out / "cost-model.json"
    if path.is_file():
        return path
    import torch

    from zeustune.models.registry import load
    from zeustune.models.prompts import load_prompts
    from zeustune.search.cost import device_name, fit
    from zeustune.search.evaluator import Evaluator

    torch.set_num_threads(2)
    pipe, spec = load(args.model, progress=False)
    spec = _at_steps(spec, args.steps)
    ev = Evaluator(pipe, spec, load_prompts(spec, "calib")[:1], 0, "gmsd")
    cost = fit(ev.time_run, spec.steps, runs=15, device=device_name())
    print(f"shared cost model: {cost.describe()}", flush=True)
    path.write_text(json.dumps(cost.to_dict()))
    return path


def _at_steps(spec, steps: int):
    from dataclasses import replace

    return spec if spec.steps == steps else replace(spec, steps=steps)


def searches(args) -> None:
    cost = shared_cost_model(args)
    for v in args.variants:
        for b in args.budgets:
            run_dir = args.out / "runs" / f"{v}-{b}"
            done = run_dir / "done.json"
            if done.is_file():
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            cmd = ["zeustune", "search", "--model", args.model, "--budget", b, "--steps", str(args.steps),
                   "--space", str(SPACES / f"{v}.yaml"), "--storage", f"sqlite:///{args.out / 'studies' / f'{v}.db'}",
                   "--trials", str(args.trials), "--refine", str(args.refine), "--calib", str(args.calib),
                   "--heldout", str(args.heldout), "--out", str(run_dir / "report"),
                   "--export-dir", str(run_dir / "export"), "--no-progress", "--cost-model", str(cost)]
            (args.out / "studies").mkdir(parents=True, exist_ok=True)
            print(f"[{time.strftime('%H:%M:%S')}] {v} {b}: {' '.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            with open(run_dir / "search.log", "w") as log:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
            seconds = time.perf_counter() - t0
            done.write_text(json.dumps({"rc": rc, "seconds": round(seconds, 1), "command": cmd}))
            print(f"  rc {rc}, {seconds:.0f} s", flush=True)


def candidates(storage: Path) -> list:
    """Every complete trial of every study in a storage, with its calls per branch."""
    import optuna

    url = f"sqlite:///{storage}"
    out = []
    for summary in optuna.get_all_study_summaries(url):
        study = optuna.load_study(study_name=summary.study_name, storage=url)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if "duplicate_of" not in t.user_attrs:
                out.append((float(t.user_attrs["nfe"]), t.values[0], summary.study_name, t))
    return out


def collect(args) -> dict:
    import torch

    from zeustune.quality import metrics as M
    from zeustune.models.registry import load
    from zeustune.models.prompts import load_prompts
    from zeustune.quality.references import ReferenceCache
    from zeustune.search.evaluator import Evaluator
    from zeustune.search.export import decoded_of

    torch.set_num_threads(2)
    pipe, spec = load(args.model, progress=False)
    spec = _at_steps(spec, args.steps)
    metric = M.resolve("auto")
    heldout = load_prompts(spec, "heldout")[: args.heldout]
    ev = Evaluator(pipe, spec, heldout, 10_000, metric, batch=8)
    ev.prepare(ReferenceCache(None), progress=False)
    results = {"model": args.model, "steps": args.steps, "metric": metric, "heldout": len(heldout),
               "seeds": f"10000..{10_000 + len(heldout) - 1}", "targets": args.targets, "variants": {}}
    for v in args.variants:
        pool = candidates(args.out / "studies" / f"{v}.db")
        rows = {}
        for k in args.targets:
            within = [c for c in pool if c[0] <= k + 1e-9]
            if not within:
                continue
            nfe, calib, study, t = min(within, key=lambda c: c[1])
            h = ev.losses(decoded_of(t))
            calls = sorted(ev.last_calls)
            rows[str(k)] = {"trial": t.number, "study": study, "plan": t.user_attrs["plan"],
                            "uncond": t.user_attrs.get("uncond"), "knobs": t.user_attrs.get("knobs") or {},
                            "calib": calib, "heldout": float(h.mean()), "calls_calib": nfe,
                            "calls_heldout": sum(calls) / len(calls), "calls_heldout_p90": calls[min(len(calls) - 1, int(0.9 * len(calls)))]}
            print(f"{v:>9} <= {k:>2} calls: held-out {rows[str(k)]['heldout']:.4f} at {rows[str(k)]['calls_heldout']:.2f} calls "
                  f"(calib {calib:.4f}, trial {t.number} of {study})", flush=True)
        results["variants"][v] = {"label": LABELS[v], "trials": len(pool), "rows": rows}
    if args.bench:
        bench = json.loads(Path(args.bench).read_text())
        peers = [r for r in bench["rows"] if r["family"] not in PEER_FAMILIES_EXCLUDED]
        results["peers"] = {}
        for k in args.targets:
            within = [r for r in peers if r["calls"] <= k + 1e-9]
            if within:
                best = min(within, key=lambda r: r["loss"])
                results["peers"][str(k)] = {"name": best["name"], "family": best["family"], "calls": best["calls"],
                                            "heldout": best["loss"]}
    return results


def table(results: dict) -> str:
    ks = [str(k) for k in results["targets"]]
    head = "| calls per branch (at most) | " + " | ".join(ks) + " |\n|---|" + "---|" * len(ks) + "\n"
    lines = []
    for v, d in results["variants"].items():
        cells = []
        for k in ks:
            r = d["rows"].get(k)
            cells.append("-" if r is None else f"{r['heldout']:.4f} ({r['calls_heldout']:.1f})")
        lines.append(f"| {d['label']} | " + " | ".join(cells) + " |")
    peers = results.get("peers")
    if peers:
        lines.append("| best other method (bench) | " + " | ".join(
            f"{peers[k]['heldout']:.4f} ({peers[k]['name']}, {peers[k]['calls']:.1f})" if k in peers else "-" for k in ks) + " |")
        allin = results["variants"].get("all", {}).get("rows", {})
        lines.append("| all together / best other | " + " | ".join(
            f"{allin[k]['heldout'] / peers[k]['heldout']:.2f}" if k in allin and k in peers else "-" for k in ks) + " |")
    return head + "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v, d in results["variants"].items():
        pts = sorted((r["calls_heldout"], r["heldout"]) for r in d["rows"].values())
        if pts:
            ax.plot(*zip(*pts), marker="o", label=d["label"], lw=2.5 if v == "all" else 1.2)
    peers = results.get("peers") or {}
    if peers:
        pts = sorted((p["calls"], p["heldout"]) for p in peers.values())
        ax.plot(*zip(*pts), "k--", marker="x", label="best other method (bench)")
    ax.set_yscale("log")
    ax.set_xlabel("denoiser calls per CFG branch (held-out mean)")
    ax.set_ylabel(f"{results['metric']} vs full steps (held-out, lower is better)")
    ax.set_title(f"{results['model']}, {results['steps']} steps: search components at equal calls")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-flux")
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--budgets", nargs="+", default=["2x", "3x", "4x"])
    ap.add_argument("--targets", nargs="+", type=int, default=[5, 7, 10, 12])
    ap.add_argument("--trials", type=int, default=160)
    ap.add_argument("--refine", type=int, default=40)
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--heldout", type=int, default=32)
    ap.add_argument("--bench", help="the bench's results.json at these settings (peer rows)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "ablation")
    ap.add_argument("--collect-only", action="store_true", help="skip the searches, score what the storages hold")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.collect_only:
        searches(args)
    results = collect(args)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / "ablation.png")
    text = table(results)
    print(text)
    readme = args.out / "README.md"
    start, end = "<!-- table -->", "<!-- /table -->"
    body = readme.read_text() if readme.is_file() else f"# Ablation\n\n{start}\n{end}\n"
    if start in body and end in body:
        body = body[: body.index(start) + len(start)] + "\n" + text + body[body.index(end):]
        readme.write_text(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
