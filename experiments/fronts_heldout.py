"""Regenerates docs/search/reduced/fronts/ (fronts.md, fronts.json, fronts.png; shown in
docs/search/reduced/README.md) from the studies of that page's searches. Minutes on 2 cores (an
estimate: each front trial is rendered on the held-out prompts).

Held-out fronts of several searches, at equal modelled cost: each study's Pareto front (every
complete trial, calibration loss against the cost model's latency) is scored on held-out prompts
and drawn as loss against modelled speedup, one line per label. Used to compare search spaces
(e.g. with and without reduced-resolution steps) that share one cost model.

    python experiments/fronts_heldout.py --study "without D=sqlite:///a.db" --study "with D=sqlite:///b.db" \
        --out docs/search/reduced/fronts

A label may name several storages joined by "+" (the 2x, 3x and 4x studies of one space): their
trials are pooled before the front is taken.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna
import torch
from tqdm import tqdm

from zeustune.quality import metrics as M
from zeustune.bench import compute
from zeustune.bench.methods import Method
from zeustune.models.registry import load
from zeustune.models.prompts import load_prompts
from zeustune.quality.references import ReferenceCache
from zeustune.search.evaluator import Evaluator, schedule_of
from zeustune.search.export import decoded_of
from zeustune.search.study import front


def pooled(storages: list[str]) -> list[optuna.trial.FrozenTrial]:
    out = []
    for storage in storages:
        for name in optuna.get_all_study_names(storage):
            study = optuna.load_study(study_name=name, storage=storage)
            out += [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                    if "duplicate_of" not in t.user_attrs]
    return out


def at(points: list[tuple[float, float]], speedup: float) -> float | None:
    """A front's loss at ``speedup`` (linear between its points; None outside their range)."""
    pts = sorted(points)
    for (s0, l0), (s1, l1) in zip(pts, pts[1:]):
        if s0 <= speedup <= s1:
            return l0 + (l1 - l0) * (speedup - s0) / (s1 - s0) if s1 > s0 else min(l0, l1)
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", action="append", required=True, help="LABEL=STORAGE[+STORAGE...]")
    ap.add_argument("--model", default="tiny-flux")
    ap.add_argument("--prompts", type=int, default=32, help="held-out prompts (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=10000)
    ap.add_argument("--speedups", default="2,2.5,3,3.5,4", help="where the table compares the fronts")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    pipe, spec = load(args.model, progress=False)
    metric = M.resolve("auto")
    ev = Evaluator(pipe, spec, load_prompts(spec, "heldout")[: args.prompts], args.seed, metric)
    ev.prepare(ReferenceCache(), progress=False)
    shares = compute.load_shares()["shares"]
    result = {}
    for item in args.study:
        label, _, storages = item.partition("=")
        if not storages:
            ap.error(f"--study: got {item!r}, expected LABEL=STORAGE")
        trials = front(pooled(storages.split("+")))
        rows = []
        for t in tqdm(trials, desc=label):
            d = decoded_of(t)
            losses = ev.losses(d)
            # the same plan's cost on FLUX.1-dev (a D step at its FLOPs share), as the bench projects it
            m = Method(str(t.number), label, work="zeustune", schedule=schedule_of(ev.base, d, "x"), steps=spec.steps,
                       calls=d.static_nfe if not d.adaptive else sum(ev.last_calls) / len(ev.last_calls))
            rows.append({"trial": t.number, "plan": t.user_attrs["plan"], "knobs": t.user_attrs.get("knobs") or {},
                         "speedup_model": t.user_attrs["speedup_model"], "calib": t.values[0],
                         "heldout": float(losses.mean()),
                         "projected_flux": compute.projected_speedup(compute.cost(m, shares), spec.steps)})
        # the held-out front: a point stays only if no faster point is better on held-out too
        rows.sort(key=lambda r: -r["speedup_model"])
        best, kept = float("inf"), []
        for r in rows:
            if r["heldout"] < best:
                kept.append(r)
                best = r["heldout"]
        result[label] = {"storages": storages.split("+"), "front": rows, "heldout_front": kept[::-1]}
    speedups = [float(s) for s in args.speedups.split(",")]
    labels = list(result)
    lines = [f"Held-out {metric} ({args.prompts} prompts, seeds {args.seed}..{args.seed + args.prompts - 1}) of each "
             "search's calibration front, at the cost model's speedup (linear between front points; - outside a front).", "",
             "| speedup | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for s in speedups:
        vals = [at([(r["speedup_model"], r["heldout"]) for r in result[lab]["heldout_front"]], s) for lab in labels]
        lines.append(f"| {s:g}x | " + " | ".join("-" if v is None else f"{v:.4f}" for v in vals) + " |")
    # the same fronts, each point at its plan's projected FLUX.1-dev speedup (D at its FLOPs share)
    lines += ["", "The same front points at their projected FLUX.1-dev speedup (the bench's projection: a D step "
              "costs its FLOPs share of a call, 29% at 0.5 and 56% at 0.75):", "",
              "| projected speedup | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for s in speedups:
        vals = []
        for lab in labels:
            pts, best = [], float("inf")
            for r in sorted(result[lab]["front"], key=lambda r: -r["projected_flux"]):
                if r["heldout"] < best:
                    pts.append((r["projected_flux"], r["heldout"]))
                    best = r["heldout"]
            vals.append(at(pts, s))
        lines.append(f"| {s:g}x | " + " | ".join("-" if v is None else f"{v:.4f}" for v in vals) + " |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fronts.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "fronts.md").write_text(table + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.4), dpi=120)
    for lab in labels:
        pts = result[lab]["heldout_front"]
        ax.plot([r["speedup_model"] for r in pts], [r["heldout"] for r in pts], "o-", ms=4, label=lab)
    ax.set_yscale("log")
    ax.set_xlabel("speedup (cost model, end to end; D steps at their measured cost)")
    ax.set_ylabel(f"held-out {metric} (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "fronts.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
