"""Regenerates docs/search/zeus-rule-{2x,3x,4x}.md and .json (summarised in docs/search/README.md).
About 3-10 minutes per page on 2 cores (201, 549 and 573 s, as each page records).

The best ZEUS-rule schedule at a fresh-step count, found by brute force, against our schedules.

Enumerates ZEUS's skip rule over a wide knob grid (acc_start, acc_end, d/modular, max_interval,
tail phase lagrange_step/lagrange_int, all three caching modes), keeps the distinct plans with
NFE in [--nfe-min, --nfe-max], scores them all (or a seeded sample of --sample) on the
calibration prompts, then the --top best on the held-out prompts, and reports the best held-out
one next to the schedules given with --against (scored on the same held-out prompts). Picking
ZEUS's best on held-out prompts favours ZEUS: the comparison is conservative.

    python experiments/zeus_rule_sweep.py --nfe-min 7 --nfe-max 7 --against schedules/tiny-flux/tuned-3x.yaml
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from tqdm import tqdm

from zeustune.models.registry import load as load_model
from zeustune.schedule.plans import zeus
from zeustune.models.prompts import load_prompts
from zeustune.quality.references import ReferenceCache
from zeustune.schedule.format import load as load_schedule
from zeustune.search.evaluator import Evaluator
from zeustune.search.space import Decoded

PATTERNS = [(1, (0,)), (2, (0,)), (2, (1,)), (3, (0,)), (3, (1,)), (3, (0, 1)), (3, (1, 2)), (3, (0, 2)), (4, (0, 1)),
            (4, (0, 1, 2)), (4, (1, 2, 3)), (4, (0, 2, 3)), (5, (0, 1, 2, 3)), (6, (0, 1, 2, 3, 4))]
MODES = ("reuse_interp", "reuse_all", "interp_all")


def zeus_plans(steps: int, nfe_min: int, nfe_max: int) -> dict[str, dict]:
    """Distinct ZEUS-rule plans (as executed on a flow model) with NFE in range -> one knob set."""
    out: dict[str, dict] = {}
    for a in range(3, steps // 2 + 1):
        for e in range(a + 1, steps + 1):
            for d, m in PATTERNS:
                for mi in range(1, steps):  # ZEUS caps at 4-8; longer caps let the rule reach few NFE
                    tails = [None] + [(ls, li) for ls in range(a, e + 1) for li in range(2, 9)]
                    for tail in tails:
                        kw = dict(acc_start=a, acc_end=e, denominator=d, modular=m, max_interval=mi)
                        if tail:
                            kw.update(lagrange_term=3, lagrange_step=tail[0], lagrange_int=tail[1])
                        base = zeus(steps, **kw)
                        if not nfe_min <= base.nfe <= nfe_max:
                            continue
                        for mode in MODES:
                            plan = zeus(steps, caching_mode=mode, **kw).resolved(mode)
                            out.setdefault(plan.steps, {**kw, "modular": list(m), "caching_mode": mode})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-flux")
    ap.add_argument("--nfe-min", type=int, required=True)
    ap.add_argument("--nfe-max", type=int, required=True)
    ap.add_argument("--calib", type=int, default=24)
    ap.add_argument("--heldout", type=int, default=64)
    ap.add_argument("--sample", type=int, default=400, help="score at most this many plans on calibration prompts")
    ap.add_argument("--top", type=int, default=10, help="score the best N on held-out prompts")
    ap.add_argument("--against", nargs="*", default=[], help="schedules to compare on the same held-out prompts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    pipe, spec = load_model(args.model, progress=False)
    plans = zeus_plans(spec.steps, args.nfe_min, args.nfe_max)
    keys = sorted(plans)
    n_all = len(keys)
    if n_all > args.sample:
        keys = sorted(random.Random(args.seed).sample(keys, args.sample))
    print(f"{n_all} distinct ZEUS-rule plans with NFE {args.nfe_min}..{args.nfe_max}; scoring {len(keys)} on calibration prompts")
    if not keys:
        print(f"no ZEUS-rule plan has NFE {args.nfe_min}..{args.nfe_max} (the rule keeps steps 0-3 fresh)")
        return
    cache = ReferenceCache()
    cal = Evaluator(pipe, spec, load_prompts(spec, "calib")[: args.calib], args.seed, "gmsd")
    cal.prepare(cache)
    scored = [(float(cal.losses(Decoded(_plan(k), 1.0)).mean()), k) for k in tqdm(keys, desc="calib")]
    scored.sort()
    held = Evaluator(pipe, spec, load_prompts(spec, "heldout")[: args.heldout], args.seed + 10_000, "gmsd")
    held.prepare(cache)
    rows = []
    for c, k in tqdm(scored[: args.top], desc="held-out"):
        rows.append({"name": "ZEUS rule", "plan": k, "nfe": k.count("F"), "calib": c,
                     "heldout": float(held.losses(Decoded(_plan(k), 1.0)).mean()), "knobs": plans[k]})
    best = min(rows, key=lambda r: r["heldout"])
    ours = []
    for path in args.against:
        s = load_schedule(path)
        d = Decoded(s.plan, s.predictor.gamma, s.predictor.lagrange_term, s.predictor.lagrange_int)
        ours.append({"name": s.tag, "plan": s.plan.steps, "nfe": s.nfe, "calib": float(cal.losses(d).mean()),
                     "heldout": float(held.losses(d).mean())})
    lines = [f"# Best ZEUS-rule schedule with NFE {args.nfe_min}..{args.nfe_max} ({args.model})", "",
             f"{n_all} distinct ZEUS-rule plans, {len(keys)} scored on {args.calib} calibration prompts, the best {args.top} on "
             f"{args.heldout} held-out prompts (metric gmsd, lower is better); {time.perf_counter() - t0:.0f} s.", "",
             "| schedule | NFE | calib loss | held-out loss | held-out vs best ZEUS rule |", "|---|---|---|---|---|"]
    for r in ours + [best]:
        rel = r["heldout"] / best["heldout"]
        versus = "reference" if r is best else f"{rel:.2f}x ({(1 - rel) * 100:.0f}% lower)"
        lines.append(f"| {r['name']} | {r['nfe']} | {r['calib']:.4f} | {r['heldout']:.4f} | {versus} |")
    lines += ["", "Plans:", ""] + [f"- {r['name']}: `{r['plan']}`" for r in ours + [best]]
    lines += ["", f"Best ZEUS-rule knobs: `{json.dumps(best['knobs'])}`", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"ours": ours, "zeus_top": rows, "n_plans": n_all}, indent=2) + "\n")


def _plan(steps: str):
    from zeustune.schedule.plans import Plan

    return Plan(steps)


if __name__ == "__main__":
    main()
