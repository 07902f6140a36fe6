"""Regenerates docs/video/fronts.md and fronts.json: what the video searches chose. Minutes on 2
cores (each group's best plan is rendered on the held-out prompts).

For each study (one per budget, from `zeustune search --model tiny-wan --budget B`), among its
complete trials that reach the budget by the study's cost model:
- the best calibration loss with the unconditional branch on the conditional branch's plan
  (uncond_drop 0) and on a plan of its own (uncond_drop m: it drops every m-th fresh step), and
  the same for plans with and without reduced-resolution calls (D);
- those groups' best plans re-scored on held-out prompts (a TPE study samples the groups
  unevenly, so the calibration figure alone could favour the group sampled more);
- the same for D steps on the side, on the latent frames and on both (`reduced_axes`);
- the letters and gates (the letter at each position of a run of predicted steps) of the ten best
  trials reaching the budget, and, to compare with images, of the shipped tuned presets of
  tiny-flux and tiny-wan.

    python experiments/video_fronts.py --study 2x=sqlite:///a.db --study 3x=sqlite:///b.db --out docs/video
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import optuna
import torch

from zeustune.models.prompts import load_prompts
from zeustune.models.registry import load
from zeustune.quality import metrics as M
from zeustune.quality.references import ReferenceCache
from zeustune.search.cost import parse_budget
from zeustune.search.evaluator import Evaluator
from zeustune.search.export import decoded_of
from zeustune.search.study import feasible, speed

TOP = 10


def reaching(storage: str, budget: float) -> list[optuna.trial.FrozenTrial]:
    out = []
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        # the search's own rule: feasible trials at their held-to speed (study.speed)
        out += [t for t in feasible(study) if "duplicate_of" not in t.user_attrs and speed(t) >= budget]
    return sorted(out, key=lambda t: t.values[0])


def best(trials, keep) -> optuna.trial.FrozenTrial | None:
    return next((t for t in trials if keep(t)), None)


def own_uncond(t) -> bool:
    return t.user_attrs.get("uncond") not in (None, t.user_attrs["plan"])


def axes(t) -> str | None:
    """What the trial's D steps shrink (None: no D steps)."""
    plans = t.user_attrs["plan"] + (t.user_attrs.get("uncond") or "")
    return (t.user_attrs.get("knobs") or {}).get("reduced_axes", "side") if "D" in plans else None


def gates(plans) -> dict[str, dict[str, float]]:
    """Share of each letter at positions 1, 2 and 3+ of the plans' runs of predicted steps."""
    by = {"1": Counter(), "2": Counter(), "3+": Counter()}
    for plan in plans:
        run = 0
        for ch in plan:
            run = 0 if ch in "FD" else run + 1
            if run:
                by[str(run) if run < 3 else "3+"][ch] += 1
    return {k: {x: round(n / (sum(c.values()) or 1), 2) for x, n in sorted(c.items())} for k, c in by.items()}


def shipped_presets() -> dict[str, list[str]]:
    """The plans of each embedded model's shipped tuned presets (images against video)."""
    from zeustune.schedule.format import Schedule

    root = Path(__file__).resolve().parents[1] / "schedules"
    return {m: [str(Schedule.load(p).plan) for p in sorted((root / m).glob("tuned-*x.yaml"))] for m in ("tiny-flux", "tiny-wan")}


def letters(trials) -> dict[str, float]:
    """Share of each letter among the predicted and reduced steps of the trials' plans."""
    c = Counter(ch for t in trials for ch in t.user_attrs["plan"] if ch != "F")
    n = sum(c.values()) or 1
    return {k: round(v / n, 3) for k, v in sorted(c.items())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", action="append", required=True, help="BUDGET=STORAGE, e.g. 3x=sqlite:///s3.db")
    ap.add_argument("--model", default="tiny-wan")
    ap.add_argument("--prompts", type=int, default=16, help="held-out prompts (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=10000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    pipe, spec = load(args.model, progress=False)
    metric = M.resolve("auto", video=spec.frames is not None)
    ev = Evaluator(pipe, spec, load_prompts(spec, "heldout")[: args.prompts], args.seed, metric)
    ev.prepare(ReferenceCache(), progress=False)

    def row(t):
        if t is None:
            return None
        return {"trial": t.number, "plan": t.user_attrs["plan"], "uncond": t.user_attrs.get("uncond"),
                "uncond_fresh": (t.user_attrs.get("uncond") or t.user_attrs["plan"]).count("F"),
                "fresh": t.user_attrs["plan"].count("F"), "d_calls": t.user_attrs["plan"].count("D"), "d_axes": axes(t),
                "speedup_model": t.user_attrs["speedup_model"], "calib": t.values[0],
                "heldout": float(ev.losses(decoded_of(t)).mean())}

    result, lines = {}, []
    for item in args.study:
        label, _, storage = item.partition("=")
        budget = parse_budget(label)
        trials = reaching(storage, budget)
        # by the plans themselves: refinement moves change letters without the TPE parameters
        groups = {
            "uncond on the cond plan": best(trials, lambda t: not own_uncond(t)),
            "uncond on its own plan": best(trials, own_uncond),
            "no D calls": best(trials, lambda t: "D" not in t.user_attrs["plan"]),
            "with D calls": best(trials, lambda t: "D" in t.user_attrs["plan"]),
            "D on the side": best(trials, lambda t: axes(t) == "side"),
            "D on the frames": best(trials, lambda t: axes(t) == "frames"),
            "D on both": best(trials, lambda t: axes(t) == "both"),
        }
        top = trials[:TOP]
        result[label] = {
            "trials reaching": len(trials),
            "groups": {k: row(t) for k, t in groups.items()},
            "top": {"letters": letters(top), "generators": dict(Counter(t.params.get("generator") for t in top)),
                    "own uncond plan": dict(Counter(own_uncond(t) for t in top)),
                    "D calls": dict(Counter(t.user_attrs["plan"].count("D") for t in top)),
                    "D axes": dict(Counter(str(axes(t)) for t in top)),
                    "gates": gates(t.user_attrs["plan"] for t in top)},
        }
        print(label, json.dumps(result[label]))
    lines += [f"Held-out: {metric}, {args.prompts} held-out prompts (seeds {args.seed}..{args.seed + args.prompts - 1}); "
              "calibration: the study's own prompts. Groups: the best trial reaching the budget in each.", "",
              "| budget | group | trial | calib | held-out | modelled speedup | fresh (cond / uncond) | D calls (axes) | plan |",
              "|---|---|---|---|---|---|---|---|---|"]
    for label, r in result.items():
        for g, x in r["groups"].items():
            if x is None:
                lines.append(f"| {label} | {g} | none reached | | | | | | |")
                continue
            d = f"{x['d_calls']} ({x['d_axes']})" if x["d_axes"] else str(x["d_calls"])
            lines.append(f"| {label} | {g} | {x['trial']} | {x['calib']:.4f} | {x['heldout']:.4f} | {x['speedup_model']:.2f}x "
                         f"| {x['fresh']} / {x['uncond_fresh']} | {d} | `{x['plan']}` |")
    lines += ["", f"The {TOP} best trials reaching each budget (by calibration loss): letters among their non-fresh steps, "
              "generators (None: a refinement move), own uncond plan and D calls (counts).", "",
              "| budget | trials reaching | letters | generators | own uncond plan | D calls | D axes |", "|---|---|---|---|---|---|---|"]
    fmt = lambda d: ", ".join(f"{k} {v}" for k, v in d.items())  # noqa: E731
    for label, r in result.items():
        t = r["top"]
        lines.append(f"| {label} | {r['trials reaching']} | {fmt(t['letters'])} | {fmt(t['generators'])} "
                     f"| {fmt(t['own uncond plan'])} | {fmt(t['D calls'])} | {fmt(t['D axes'])} |")
    presets = shipped_presets()
    result["shipped presets"] = {m: {"plans": p, "gates": gates(p)} for m, p in presets.items()}
    lines += ["", "Gates: the letter at positions 1, 2 and 3+ of each run of predicted steps (shares), in the ten best "
              "trials above and in the shipped tuned presets (images: tiny-flux; video: tiny-wan).", "",
              "| plans | position 1 | position 2 | position 3+ |", "|---|---|---|---|"]
    rows = [(f"{label}, top {TOP}", r["top"]["gates"]) for label, r in result.items() if "top" in r]
    rows += [(f"{m} presets ({len(p)})", gates(p)) for m, p in presets.items()]
    for name, g in rows:
        lines.append(f"| {name} | {fmt(g['1'])} | {fmt(g['2'])} | {fmt(g['3+'])} |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fronts.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "fronts.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
