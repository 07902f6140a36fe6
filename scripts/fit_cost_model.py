"""Fit one latency cost model and write it as JSON, for searches that must share one budget line
(``zeustune search --cost-model FILE``): comparisons of spaces, before/after timings.

    python scripts/fit_cost_model.py --model tiny-flux --steps 28 --factors 0.5,0.75 --out cost.json

With ``--factors``, each reduced-resolution factor's D step is timed too (search spaces with a
``reduced:`` section need it); with ``--probe``, a predicted probe step (G: the first block runs;
spaces with the probe generator need it). Run it on an otherwise idle machine: the fit times real runs.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from zeustune.models.registry import load
from zeustune.models.prompts import load_prompts
from zeustune.schedule.format import REDUCED_KEYS, parse_reduced_key, reduced_key
from zeustune.search.cost import device_name, fit
from zeustune.search.evaluator import Evaluator


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-flux")
    ap.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    ap.add_argument("--size", type=int, help="image side in pixels (default: the model's)")
    ap.add_argument("--factors", default="", help="reduced-resolution steps to time, comma-separated: side factors (0.5,0.75) "
                    "or, on video, axes:factor (frames:0.5, both:0.75)")
    ap.add_argument("--probe", action="store_true", help="time predicted probe steps (G) too")
    ap.add_argument("--runs", type=int, default=15, help="interleaved rounds (default: %(default)s)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    factors = tuple(f for f in args.factors.split(",") if f)
    try:
        factors = tuple(reduced_key(*parse_reduced_key(f)) for f in factors)
    except ValueError:
        ap.error(f"--factors: got {args.factors!r}, expected comma-separated factors like 0.5,0.75 or frames:0.5")
    if bad := [f for f in factors if f not in REDUCED_KEYS]:
        ap.error(f"--factors: got {', '.join(bad)}, expected among {', '.join(REDUCED_KEYS)}")
    torch.set_num_threads(2)
    pipe, spec = load(args.model, progress=False)
    spec = replace(spec, **({"steps": args.steps} if args.steps else {}),
                   **({"height": args.size, "width": args.size} if args.size else {}))
    ev = Evaluator(pipe, spec, load_prompts(spec, "calib")[:1], 0, "gmsd")
    cost = fit(ev.time_run, spec.steps, runs=args.runs, device=device_name(), factors=factors, probe=args.probe)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(cost.to_dict(), indent=1) + "\n")
    print(f"{args.out}: {cost.describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
