"""The bench's tables, verdicts and plots. Verdicts and the main plot are at equal projected
cost on the target model (FLUX.1-dev, or Wan2.1-14B for Wan: ``compute``); the measured CPU wall
time is a column and a second plot."""

from __future__ import annotations

from pathlib import Path

from ..quality import metrics as M
from . import compute
from .methods import Method

TUNED = "zeustune tuned"
#: Metrics every bench row is scored with, besides the chosen one, for the agreement table.
RANKED = ("st-lpips", "gmsd", "psnr", "ssim")
#: The two speed axes: projected on the target model (the verdicts) and measured here.
AXES = {"projected": "projected {target} end-to-end speedup (x), equal compute",
        "speedup": "measured end-to-end speedup on this machine (x)"}
#: The projection target of a results.json older than the field: all were FLUX.1-dev's.
OLD_TARGET = "FLUX.1-dev"


def _first_block_there(model: str, share: float | None) -> str:
    if not share:
        return f"far more on {model}"
    n = round(1 / share)
    return f"where on {model} it is " + {1: "all of it", 2: "a half", 3: "a third", 4: "a quarter"}.get(n, f"1/{n}")


def projection(info: dict) -> str:
    """How rows are compared, for the bench's model and its projection target (``info``)."""
    t = compute.TARGETS[info.get("target", OLD_TARGET)]
    model, flux = info.get("model", "the model"), t.name == compute.FLUX_TARGET.name
    # a results.json older than the field came from tiny-flux (its first block: 0.35 of the parameters)
    first = info.get("first block's share of the blocks' parameters", 0.35 if model == "tiny-flux" else None)
    s = t.fixed_share_50
    carried = "" if flux else (f", then carried over to {t.name} by FLOPs (the first block's share, elements per call "
                               "FLOP of the hidden states or the output, the FFNs' share; `docs/benchmarks/wan-projection.md`)")
    fixed = ("a fixed 3% of a 50-step FLUX.1-dev run" if flux else
             f"a fixed {100 * s:.2g}% of a 50-step {t.name} run (FLOPs, `experiments/wan_fixed_share.py`)")
    return f"""\
The images, losses and call counts are {model}'s, made here. Speed is compared at equal compute
on {t.name}, where users deploy: a row's **cost** is its full denoiser calls per branch plus, for
each skipped step, the work the method still does there, as a share of one {t.name} call ({t.blocks},
{t.setting}). FirstBlockCache and cache-dit's DBCache F1B0 run the first block (about
1/{round(1 / t.first_block)} of a call, {_first_block_there(model, first)}), TaylorSeer in diffusers' default mode
runs every block's MLP, the others a few tensor operations. Those shares were measured on a
FLUX-width transformer (`experiments/bench_skip_cost.py` for the peers, `experiments/bench_overhead.py`
for zeustune's hook) and projected to {"the" if flux else "FLUX.1-dev's"} 57 blocks{carried}; the values used are listed above. The
**projected** speedup adds the text encoder{"s" if flux else ""} and VAE, {fixed}:
`1 / (f + (1 - f) cost / N)` with `f = {s:.3g} / ({s:.3g} + {1 - s:.3g} N / 50)`, below the call bound N / cost.
The decisions of the adaptive methods are {model}'s; only their price is projected. **Measured**
is this machine's end-to-end wall time, where per-step bookkeeping is a large share of {model}'s
call: a column and a second plot (`pareto-cpu.png`), not the verdict."""


def fmt_loss(x: float) -> str:
    """Four decimals, or two significant digits below 0.001 (a 50-step 2x front is ~1e-5)."""
    return f"{x:.4f}" if x == 0 or abs(x) >= 1e-3 else f"{x:.1e}"


def markdown(rows: list[Method], info: dict, command: str, budgets=(2, 3, 4)) -> str:
    lines = [f"# Peers on {info['model']} at {info['steps']} steps", "", f"Reproduce: `{command}`", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()] + [""]
    target = info.get("target", OLD_TARGET)
    lines += ["## How rows are compared", "", projection(info), ""]
    lines += ["## Tuned front against the best other method at equal projected cost", "",
              "Each family's loss at a speedup is that of its best row reaching it (no interpolation between rows: "
              "what a user can deploy); tuned: the presets and the searched schedules.", ""] + ratios(rows, budgets)
    lines += ["", "## The same at equal full calls, without reduced-resolution steps", "",
              "Speed as the call bound N / full calls per branch (skipped steps' work not counted), rows with D or P "
              "steps (and PostDiff-style stages) left out on both sides: the view for users who will not use them. "
              "(Rows of a results.json older than this view cannot tell and are left out.)",
              ""] + ratios(rows, budgets, "calls")
    lines += ["", "## Every row", "",
              "Sorted by projected cost. calls: full denoiser calls per branch, mean over the held-out images "
              f"(counted); cost: {target} full-call equivalents (calls + skipped-step work); projected: "
              f"end-to-end speedup on {target} from the cost; measured: end-to-end here (median, in rotation).", "",
              "| method | family | matched to | calls (p90) | cost | projected | measured | loss mean | loss p90 |",
              "|---|---|---|---|---|---|---|---|---|"]
    over = []
    for m in sorted(rows, key=lambda m: (-m.projected, m.loss)):
        flag = ""
        if m.speedup > 1.02 * info["steps"] / m.calls:  # beyond the call bound: the timing is wrong
            flag = " (!)"
            over.append(m.name)
        lines.append(f"| {m.name} | {m.family} | {f'{m.budget:g}x' if m.budget else '-'} | {m.calls:.1f} ({m.calls_p90:.0f}) | "
                     f"{m.cost:.2f} | {m.projected:.2f}x | {m.speedup:.2f}x{flag} | {fmt_loss(m.loss)} | {fmt_loss(m.loss_p90)} |")
    if over:
        lines += ["", f"(!) measured beyond the call bound N / calls by more than 2%: {', '.join(over)}. A speedup cannot "
                      "exceed it; the wall-clock timing of these rows (or of full steps) was disturbed. Re-run with more "
                      "--timing-runs on an idle machine; the projected column does not depend on it."]
    lines += ["", "## Tuned against each peer's front, at equal projected cost", ""] + verdicts(rows, "projected")
    lines += ["", "## The same on this machine's wall clock", ""] + verdicts(rows, "speedup")
    lines += ["", "## Do the metrics agree?", ""] + agreement(rows, info["metric"])
    return "\n".join(lines) + "\n"


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
    """A method's loss at ``speedup``: its best row that reaches that speed, as a user would deploy
    it (no interpolation between rows: a point between two rows is no configuration); None if no
    row is as fast."""
    faster = [loss for sp, loss in points if sp >= speedup]
    return min(faster) if faster else None


def speed(m: Method, axis: str) -> float | None:
    """A row's speed on ``axis``: an attribute (projected, speedup), or ``calls``: the call bound
    N / full calls, for rows without reduced-resolution calls (D, P; None for the others)."""
    if axis != "calls":
        return getattr(m, axis)
    return None if m.reduced is not False or not m.calls or not m.steps else m.steps / m.calls


def _points(rows: list[Method], family: str, axis: str) -> list[tuple[float, float]]:
    return [(sp, m.loss) for m in rows if m.family == family and (sp := speed(m, axis)) is not None]


def verdicts(rows: list[Method], axis: str = "projected") -> list[str]:
    """For each tuned row and each peer family: the family's loss at the tuned row's speed on
    ``axis`` (its best row at least as fast), and whether the tuned row is on or beyond it."""
    out = []
    for t in [m for m in rows if m.family == TUNED and speed(m, axis) is not None]:
        sp = speed(t, axis)
        out.append(f"- **{t.name}** ({sp:.2f}x, loss {fmt_loss(t.loss)}):")
        for fam in sorted({m.family for m in rows} - {TUNED, "full steps"}):
            pts = _points(rows, fam, axis)
            v = loss_at(pts, sp)
            if v is None and pts:
                out.append(f"  - {fam}: no row reaches {sp:.2f}x (its fastest is {max(p[0] for p in pts):.2f}x): "
                           "faster than any of its rows")
            elif v is not None:
                word = "beyond its front" if t.loss < v else "on its front" if t.loss == v else "BEHIND its front"
                out.append(f"  - {fam}: front loss at {sp:.2f}x is {fmt_loss(v)}: {word} ({t.loss / v:.2f}x its loss)"
                           if v > 0 else f"  - {fam}: front loss at {sp:.2f}x is 0: behind")
    return out


def best_other(rows: list[Method], speedup: float, axis: str = "projected") -> tuple[float, str] | None:
    """The lowest front loss of any non-tuned family at ``speedup``, and the family."""
    found = [(v, fam) for fam in {m.family for m in rows} - {TUNED, "full steps"}
             if (v := loss_at(_points(rows, fam, axis), speedup)) is not None]
    return min(found) if found else None


def ratios(rows: list[Method], budgets=(2, 3, 4), axis: str = "projected") -> list[str]:
    """The tuned front's loss over the best other method's at each budget's speedup."""
    out = ["| speedup | tuned front loss | best other method | its loss | ratio |", "|---|---|---|---|---|"]
    tuned = _points(rows, TUNED, axis)
    for b in budgets:
        t = loss_at(tuned, b) if tuned else None
        o = best_other(rows, b, axis)
        ratio = f"{t / o[0]:.2f}" if t is not None and o and o[0] > 0 else "-"
        out.append(f"| {b:g}x | {'-' if t is None else fmt_loss(t)} | {o[1] if o else '- (none this fast)'} | "
                   f"{fmt_loss(o[0]) if o else '-'} | {ratio} |")
    return out


def rows_of(results: dict) -> list[Method]:
    """Rows back from a bench's results.json (to re-plot or re-tabulate without re-running)."""
    rows = [Method(**{k: v for k, v in r.items() if k in Method.__dataclass_fields__}) for r in results["rows"]]
    for m, r in zip(rows, results["rows"]):
        m.reduced = r.get("reduced")  # unknown (None) in a results.json older than the field
    return rows


def plot(rows: list[Method], path: Path, metric: str, axis: str = "projected", title: str | None = None,
         target: str = OLD_TARGET) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    markers = "o s ^ v D P X * h < > p d H 8".split()
    cmap = plt.get_cmap("tab20")
    for i, fam in enumerate(sorted({m.family for m in rows}, key=lambda f: (f != TUNED, f))):
        pts, best = _points(rows, fam, axis), sorted(front(_points(rows, fam, axis)))
        style = dict(marker=markers[i % len(markers)], color=cmap(i % 20), markersize=6)
        if fam == TUNED:
            style.update(color="crimson", markersize=11)
        # every row as a marker, the family's front as a line
        ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle="none", alpha=0.45, **style)
        ax.plot([p[0] for p in best], [p[1] for p in best], label=fam, linestyle="-" if len(best) > 1 else "none",
                linewidth=2.5 if fam == TUNED else 1.5, **style)
    ax.set_xlabel(AXES[axis].format(target=target))
    ax.set_ylabel(f"held-out loss vs full steps ({metric}, lower is better)")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
