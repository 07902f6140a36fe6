"""Part of the ablation (docs/search/ablation/README.md): exports its searched schedules for a bench
(``--out docs/benchmarks/tiny-flux-50/schedules``); no page is regenerated from it today (that
bench's schedules come from later searches). Seconds: it reads the studies and renders nothing.

Export the ablation's searched schedules for the bench: at each call target, the trial with the
lowest *calibration* loss at no more calls, over every space variant's study (held-out prompts
play no part in the choice), written as a schedule file the bench takes with ``--schedule``.

    python experiments/ablation_export.py --ablation out/ablation-50 --steps 50 --targets 9 12 18 21 \\
        --out docs/benchmarks/tiny-flux-50/schedules
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ablation import LABELS, candidates  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ablation", type=Path, required=True, help="the ablation's --out folder (with studies/*.db)")
    ap.add_argument("--model", default="tiny-flux")
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--targets", type=int, nargs="+", required=True, help="calls per branch, at most")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    from zeustune.models.registry import load
    from zeustune.search.evaluator import schedule_of, template
    from zeustune.search.export import decoded_of

    dbs = sorted((args.ablation / "studies").glob("*.db"))
    if not dbs:
        ap.error(f"--ablation: got {str(args.ablation)!r}, expected a folder with studies/<variant>.db")
    pipe, spec = load(args.model, progress=False)
    base = template(pipe, replace(spec, steps=args.steps))
    pool = [(c, db.stem) for db in dbs for c in candidates(db)]
    args.out.mkdir(parents=True, exist_ok=True)
    for k in args.targets:
        within = [(c, v) for c, v in pool if c[0] <= k + 1e-9]
        if not within:
            print(f"<= {k} calls: no trial", file=sys.stderr)
            continue
        (calls, calib, study, trial), variant = min(within, key=lambda cv: cv[0][1])
        tag = f"searched-{k}calls"
        sched = schedule_of(base, decoded_of(trial), tag)
        sched = replace(sched, description=f"the lowest-calibration-loss trial at <= {k} calls per branch over the "
                                           f"ablation's spaces: {LABELS[variant]} (trial {trial.number} of {study})",
                        metrics={"calls_calib": calls, "quality": {"calib": calib}})
        path = args.out / f"{tag}.yaml"
        sched.save(path)
        print(f"<= {k} calls: {variant} trial {trial.number}, calib {calib:.4f}, {calls:g} calls -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
