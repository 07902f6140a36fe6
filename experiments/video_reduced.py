"""Regenerates docs/video/reduced.md and reduced.json: D steps on video, on the side, the latent
frames or both, at a fixed plan. A few minutes on 2 cores.

Starts from a tuned tiny-wan schedule (default: the shipped 3x preset) and turns its first k fresh
calls (k = 1..3; the last call always stays full) into D steps of each kind (side, frames, both at
0.5 and 0.75), scoring each on the held-out prompts with the video metric against the full-step
clips. Speeds are the Wan2.1-14B projection the search budgets with (search_spaces/tiny-wan-cost-50.json:
a D step costs its reduced call's FLOPs share plus resampling). The k = 0 row is the schedule itself.

    python experiments/video_reduced.py [--schedule FILE] [--prompts 32] [--out docs/video]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from zeustune.models.prompts import load_prompts
from zeustune.models.registry import load
from zeustune.quality import metrics as M
from zeustune.quality.references import ReferenceCache
from zeustune.schedule.format import REDUCED_AXES, REDUCED_FACTORS, Schedule, find_preset, reduced_key
from zeustune.schedule.plans import Plan
from zeustune.search.cost import read
from zeustune.search.space import Decoded, reduce_first

ROOT = Path(__file__).resolve().parents[1]


def decoded_of(s: Schedule, plan: str, knobs: dict) -> Decoded:
    p = s.predictor
    return Decoded(Plan(plan), p.gamma, p.lagrange_term, p.lagrange_int, tuple(sorted(knobs.items())),
                   s.branch_plans.get("uncond"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schedule", default=None, help="schedule file (default: the shipped tiny-wan tuned-3x)")
    ap.add_argument("--prompts", type=int, default=32, help="held-out prompts (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=10000)
    ap.add_argument("--calls", type=int, default=3, help="most D calls tried (default: %(default)s)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    base = Schedule.load(args.schedule or find_preset("tiny-wan/tuned-3x"))
    if base.branch_plans:
        raise SystemExit(f"--schedule: got {args.schedule} with branch plans, expected one plan (D is placed on it)")
    pipe, spec = load("tiny-wan", progress=False)
    cost = read(ROOT / "search_spaces" / f"tiny-wan-cost-{spec.steps}.json", spec.steps)
    metric = M.resolve("auto", video=True)
    from zeustune.search.evaluator import Evaluator

    ev = Evaluator(pipe, spec, load_prompts(spec, "heldout")[: args.prompts], args.seed, metric)
    ev.prepare(ReferenceCache(), progress=False)
    rows = []
    t0 = time.perf_counter()
    configs = [(0, None, None)] + [(k, f, a) for k in range(1, args.calls + 1) for a in REDUCED_AXES for f in REDUCED_FACTORS]
    for i, (k, factor, axes) in enumerate(configs):
        knobs = {} if not k else {"reduced": factor, **({"reduced_axes": axes} if axes != "side" else {})}
        d = decoded_of(base, reduce_first(str(base.plan), k) if k else str(base.plan), knobs)
        loss = float(ev.losses(d).mean())
        row = {"d_calls": d.plan.reduced, "kind": reduced_key(factor, axes) if k else "-", "full_calls": d.plan.nfe,
               "calls_equiv": round(d.calls(cost), 3), "speedup_model": round(cost.speedup(d.calls(cost)), 3),
               "heldout": round(loss, 5), "plan": d.plan.steps}
        rows.append(row)
        print(f"[{i + 1}/{len(configs)}, {time.perf_counter() - t0:.0f} s] {json.dumps(row)}", flush=True)
    lines = [f"D steps on a fixed plan (`{base.tag}`, {base.nfe}/{base.steps} fresh): its first k calls turned into D "
             f"steps. Loss: {metric} on {args.prompts} held-out prompts (seeds {args.seed}..{args.seed + args.prompts - 1}) "
             f"against the 50-step clip; speed: the Wan2.1-14B projection (tiny-wan-cost-{spec.steps}.json).", "",
             "| D calls | kind | full calls | call equivalents | modelled speedup | held-out |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['d_calls']} | {r['kind']} | {r['full_calls']} | {r['calls_equiv']:.2f} | {r['speedup_model']:.2f}x "
                     f"| {r['heldout']:.4f} |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reduced.json").write_text(json.dumps({"schedule": base.tag, "metric": metric, "prompts": args.prompts,
                                                        "rows": rows}, indent=1) + "\n")
    (args.out / "reduced.md").write_text(table + "\n")
    plot(rows, base.tag, metric, args.out / "reduced.png")
    return 0


def plot(rows: list[dict], tag: str, metric: str, path: Path) -> None:
    """Held-out loss against modelled speedup: one line per kind of D step, k = 0..3 calls along it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    start = next(r for r in rows if r["d_calls"] == 0)
    for kind in dict.fromkeys(r["kind"] for r in rows if r["d_calls"]):
        line = [start] + [r for r in rows if r["kind"] == kind]
        ax.plot([r["speedup_model"] for r in line], [r["heldout"] for r in line], marker="o", ms=3, label=kind)
    ax.scatter([start["speedup_model"]], [start["heldout"]], color="black", zorder=3, label=f"{tag} (no D)")
    ax.set_xlabel("modelled speedup on Wan2.1-14B")
    ax.set_ylabel(f"held-out loss ({metric})")
    ax.set_title("D steps on tiny-wan: the first 1-3 calls reduced")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
