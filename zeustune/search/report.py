"""The report of a search: a markdown table and a Pareto plot with the seeded baselines marked."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .study import feasible, front


def pareto_plot(study: optuna.Study, budget: float, path: Path, exported: dict | None = None, metric: str = "loss",
                full_latency: float | None = None) -> Path:
    """Loss against modelled speedup: every scored trial, the feasible front, the seeds (ZEUS
    rule and uniform) labelled, the exported schedule starred, the budget as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "duplicate_of" not in t.user_attrs]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    sp = lambda t: t.user_attrs["speedup_model"]
    for stage, colour in (("tpe", "#9aa5b1"), ("refine", "#e0a040")):
        pts = [t for t in done if (t.user_attrs.get("stage") or "").startswith(stage) and "seed" not in t.user_attrs]
        ax.scatter([sp(t) for t in pts], [t.values[0] for t in pts], s=9, c=colour, alpha=0.6,
                   label=f"{'search' if stage == 'tpe' else 'refinement'} trials ({len(pts)})")
    fr = front(feasible(study))
    ax.plot([sp(t) for t in fr], [t.values[0] for t in fr], "-", c="#1f5fa8", lw=1.4, label="front (within budget)")
    for t in done:
        name = t.user_attrs.get("seed")
        if name:
            marker = "X" if name.startswith("zeus") else "^"
            ax.scatter([sp(t)], [t.values[0]], marker=marker, s=46, c="#c0392b" if marker == "X" else "#27ae60", zorder=3)
            ax.annotate(name, (sp(t), t.values[0]), fontsize=6.5, xytext=(3, 3), textcoords="offset points")
    if exported:
        ax.scatter([exported["speedup_model"]], [exported["loss"]], marker="*", s=180, c="gold", edgecolors="k",
                   zorder=4, label=f"exported {exported['tag']}")
    ax.axvline(budget, ls="--", c="k", lw=1, label=f"budget {budget:g}x")
    ax.scatter([], [], marker="X", c="#c0392b", label="ZEUS published configs (mapped)")
    ax.scatter([], [], marker="^", c="#27ae60", label="uniform plans")
    ax.set_xlabel("speedup (cost model, end to end)")
    ax.set_ylabel(f"{metric} vs full steps, calibration mean (lower is better)")
    ax.set_yscale("log")
    ax.set_title(study.study_name, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown(info: dict, rows: list[dict]) -> str:
    """The report: search settings, then one row per schedule with calibration and held-out loss."""
    lines = [f"# Search report: {info['study']}", ""]
    lines += [f"- {k}: {v}" for k, v in info.items() if k not in ("study", "rows")]
    lines += ["", "| schedule | NFE | modelled speedup | measured speedup | calib loss | held-out loss | held-out / calib | held-out p90 |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        meas = f"{r['measured']:.2f}x" if r.get("measured") else "-"
        ratio = r["heldout"] / r["calib"] if r.get("calib") else float("nan")
        lines.append(f"| {r['name']} | {r['nfe']}/{r['steps']} | {r['speedup_model']:.2f}x | {meas} | {r['calib']:.4f} | "
                     f"{r['heldout']:.4f} | {ratio:.2f} | {r['heldout_p90']:.4f} |")
    lines += ["", "Plans:", ""] + [f"- {r['name']}: `{r['plan']}`" for r in rows] + [""]
    return "\n".join(lines)


def write(out: Path, info: dict, rows: list[dict]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown(info, rows) + "\n![Pareto plot](pareto.png)\n")
    (out / "report.json").write_text(json.dumps({**info, "rows": rows}, indent=2) + "\n")
    return out / "report.md"


def ladder(out: Path, name: str, results: list[dict], study: optuna.Study, metric: str = "loss") -> Path:
    """One study's exported ladder: a table (budget, plan, calls, speedups, losses; each budget's
    own report beside it) and the study's front with the exported schedules starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Search ladder: {name}", "", "One study (the loosest budget's constraint); per budget, refinement "
             "from its best plan, finalists re-timed against full steps, the closed loop, held-out scores.", "",
             "| budget | schedule | NFE | modelled | measured | calib | held-out | plan | report |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        row = r["rows"][0]
        lines.append(f"| {r['budget']:g}x | {r['tag']} | {row['nfe']}/{row['steps']} | {row['speedup_model']:.2f}x | "
                     f"{r['measured']:.2f}x | {row['calib']:.4f} | {row['heldout']:.4f} | `{row['plan']}` | "
                     f"[{r['budget']:g}x]({r['budget']:g}x/report.md) |")
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "duplicate_of" not in t.user_attrs]
    ax.scatter([t.user_attrs["speedup_model"] for t in done], [t.values[0] for t in done], s=8, c="#9aa5b1", alpha=0.5,
               label=f"trials ({len(done)})")
    fr = front(feasible(study))
    ax.plot([t.user_attrs["speedup_model"] for t in fr], [t.values[0] for t in fr], "-", c="#1f5fa8", lw=1.4, label="front")
    for r in results:
        t = r["trial"]
        ax.scatter([t.user_attrs["speedup_model"]], [t.values[0]], marker="*", s=180, c="gold", edgecolors="k", zorder=4)
        ax.annotate(f"{r['tag']} (measured {r['measured']:.2f}x)", (t.user_attrs["speedup_model"], t.values[0]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
        ax.axvline(r["budget"], ls="--", c="k", lw=0.8)
    ax.set_xlabel("speedup (cost model, end to end)")
    ax.set_ylabel(f"{metric} vs full steps, calibration mean (lower is better)")
    ax.set_yscale("log")
    ax.set_title(name, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "ladder.png")
    plt.close(fig)
    lines += ["", "![The study's front and the exported ladder](ladder.png)", ""]
    path = out / "ladder.md"
    path.write_text("\n".join(lines))
    return path
