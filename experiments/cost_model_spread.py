"""Regenerates docs/search/cost-model/README.md (about 6 minutes on 2 cores): ten fits of one
model's cost model, a pause apart, each from the same timings by the least-squares fit on four
run totals that searches used before issue 22 and by the per-step fit (``search.cost.fit``); the
spread of each part and of the fresh steps each budget allows.

    python experiments/cost_model_spread.py --model tiny-flux --fits 10 --pause 20 --out docs/search/cost-model
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from zeustune.models.prompts import load_prompts
from zeustune.models.registry import load
from zeustune.search.cost import CostModel, _miss, _parts, device_name
from zeustune.search.evaluator import Evaluator

BUDGETS = (2, 3, 4)


def least_squares(samples: dict, n: int) -> CostModel:
    """The fit before issue 22: fixed, call and skip solved from the medians of four run totals."""
    design = [(n, n), (max(n // 2, 2), max(n // 2, 2)), (n, max(n // 4, 3)), (n, 2)]
    rows = [(1.0, f, s - f) for s, f in design]
    ys = [statistics.median(t.total for t in samples[d]) for d in design]
    (fixed, call, skip), *_ = np.linalg.lstsq(np.array(rows), np.array(ys), rcond=None)
    return CostModel(fixed=max(float(fixed), 0.0), call=float(call), skip=max(float(skip), 0.0), steps=n)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-flux")
    ap.add_argument("--fits", type=int, default=10)
    ap.add_argument("--runs", type=int, default=11, help="rounds per fit (the search's default, --timing-runs)")
    ap.add_argument("--pause", type=float, default=20.0, help="seconds between fits")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    pipe, spec = load(args.model, progress=False)
    ev = Evaluator(pipe, spec, load_prompts(spec, "calib")[:1], 0, "gmsd")
    n = spec.steps
    points = [(n, n), (n, 2), (n // 2, n // 2), (n, n // 2), (n, max(n // 4, 3))]
    fits = []
    for i in range(args.fits):
        if i:
            time.sleep(args.pause)
        for p in points:
            ev.time_run(*p)  # warm-up
        samples = {p: [] for p in points}
        for _ in range(args.runs):
            for p in points:
                samples[p].append(ev.time_run(*p))
        old = least_squares(samples, n)
        new = _parts(samples, [(n, n), (n, 2)], n, device_name(), args.runs)
        new_miss = _miss(new, samples, [(n // 2, n // 2), (n, n // 2)])
        old_miss = _miss(old, samples, [(n, n // 2)])  # (N/2, N/2) is in its design
        fits.append({"before": {**old.to_dict(), "miss": old_miss, "allowed": [old.max_fresh(b) for b in BUDGETS]},
                     "after": {**new.to_dict(), "miss": new_miss, "allowed": [new.max_fresh(b) for b in BUDGETS]}})
        print(f"fit {i + 1}: before {fits[-1]['before']['allowed']}, after {fits[-1]['after']['allowed']}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fits.json").write_text(json.dumps(fits, indent=1) + "\n")
    (args.out / "README.md").write_text(report(fits, args, spec, device_name()))
    return 0


def report(fits, args, spec, device) -> str:
    def spread(key, which, scale=1e3):
        v = [f[which][key] * scale for f in fits]
        return f"{min(v):.2f} .. {max(v):.2f} (median {statistics.median(v):.2f})"

    lines = [f"# Cost-model fits of {spec.name}: before and after issue 22", "",
             f"`python experiments/cost_model_spread.py --model {spec.name} --fits {args.fits} --runs {args.runs} "
             f"--pause {args.pause:g} --out {args.out}`: {args.fits} fits {args.pause:g} s apart on {device}, "
             f"{spec.steps} steps, {args.runs} interleaved rounds each (the search's default). Each fit's timings serve "
             "both methods: **before**, least squares on the medians of four run totals (N and N/2 steps in full, "
             "N/4 and 2 of N fresh); **after**, `search.cost.fit`: a fresh step's and a predicted step's seconds as "
             "medians over the steps of a full run and of a run with 2 fresh steps, the fixed part as what a run "
             "spends outside its steps. Miss: the largest relative error of the model's speedup over full steps on "
             "held-back runs, against the median ratio of the same rounds' totals (N with N/2 fresh; after also "
             "N/2 steps in full).", "",
             "| part | before | after |", "|---|---|---|"]
    for key, label in (("fixed", "fixed (ms)"), ("call", "fresh step (ms)"), ("skip", "predicted step (ms)")):
        lines.append(f"| {label} | {spread(key, 'before')} | {spread(key, 'after')} |")
    lines.append(f"| miss on held-back runs (%) | {spread('miss', 'before', 100)} | {spread('miss', 'after', 100)} |")
    for i, b in enumerate(BUDGETS):
        counts = {w: sorted({f[w]["allowed"][i] for f in fits}) for w in ("before", "after")}
        lines.append(f"| fresh steps allowed at {b}x | {counts['before']} | {counts['after']} |")
    lines += ["", "Per fit (fresh steps allowed at " + ", ".join(f"{b}x" for b in BUDGETS) + "):", "",
              "| fit | before | after |", "|---|---|---|"]
    lines += [f"| {i + 1} | {f['before']['allowed']} | {f['after']['allowed']} |" for i, f in enumerate(fits)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
