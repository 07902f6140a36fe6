"""Regenerates docs/tiny-flux/report.md and docs/tiny-flux/grid.png (README.md links them). A couple
of minutes on 2 cores (an estimate: 32 prompts per split at 0.27 s per image, a few schedules).

Measure the embedded model tiny-flux: speed, prompt following, and how much skipping costs.

Writes docs/tiny-flux/report.md (figures with the command that produced them) and
docs/tiny-flux/grid.png (held-out prompts: full steps above, the ZEUS-rule schedule below).

    python experiments/tiny_flux_report.py [--prompts 32]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from zeustune.quality import metrics
from zeustune.models import registry as models
from zeustune import runtime
from zeustune.quality.evaluate import _u8, sample
from zeustune.schedule.plans import from_mask, growing_gaps
from zeustune.models.prompts import load_prompts
from zeustune.schedule.format import Schedule
from zeustune.models.tinyflux import scenes

ROOT = Path(__file__).resolve().parent.parent


def run_all(pipe, spec, prompts, schedule=None):
    if schedule is not None:
        runtime.enable(pipe, schedule)
    try:
        return torch.stack([sample(pipe, spec, p, seed=i) for i, p in enumerate(prompts)])
    finally:
        runtime.disable(pipe)


def accuracy(images, prompts) -> tuple[float, float]:
    color, shape = [], []
    for image, prompt in zip(images, prompts):
        r = scenes.check(_u8(image), scenes.parse_caption(prompt))
        color.append(r["color_accuracy"])
        shape.append(r["shape_accuracy"])
    return statistics.mean(color), statistics.mean(shape)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=32, help="prompts per split (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "tiny-flux")
    args = ap.parse_args(argv)
    pipe, spec = models.load("tiny-flux", progress=False)
    pipe.set_progress_bar_config(disable=True)
    lines = ["# tiny-flux: measured figures\n", f"Command: `python experiments/tiny_flux_report.py --prompts {args.prompts}`; "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU.\n"]

    # speed: 28 steps with true CFG (56 transformer calls), text encoding and decoding included
    prompt = load_prompts("tiny-flux", "heldout")[0]
    sample(pipe, spec, prompt, 0)  # warm-up
    times = []
    for i in range(5):
        t0 = time.perf_counter()
        sample(pipe, spec, prompt, i)
        times.append(time.perf_counter() - t0)
    lines.append(f"- Latency, {spec.steps} steps at {spec.width}x{spec.height}, true CFG {spec.guidance['scale']}: "
                 f"median {statistics.median(times):.3f} s per image (5 runs, min {min(times):.3f}, max {max(times):.3f}).")

    # prompt following on held-out (never-trained colour/shape/position triples) and calibration prompts
    results = {}
    for split in ("heldout", "calib"):
        prompts = load_prompts("tiny-flux", split)[: args.prompts]
        results[split] = (prompts, run_all(pipe, spec, prompts))
        c, s = accuracy(results[split][1], prompts)
        lines.append(f"- Prompt following, {split} prompts ({len(prompts)}): colour at the stated position "
                     f"{100 * c:.1f}%, shape {100 * s:.1f}% (chance: 11% colour, 25% shape).")

    # how much skipping costs: calibration prompts, PSNR / SSIM / the weight-free metric vs full steps
    prompts, refs = results["calib"]
    zeus = Schedule.from_preset("tiny-flux/zeus-28")
    n = spec.steps
    plans = {
        "zeus-28 (ZEUS default rule scaled)": zeus,
        "uniform-2": Schedule.from_preset("tiny-flux/uniform-2"),
        "uniform-3": Schedule.from_preset("tiny-flux/uniform-3"),
        "spread-13 (13 fresh, evenly)": zeus.with_plan(from_mask([k in {round(i * (n - 1) / 12) for i in range(13)}
                                                                  for k in range(n)])),
        "growing-gaps (Spectrum placement)": zeus.with_plan(growing_gaps(n, warmup=4, alpha=0.5, tail=2)),
    }
    metric = metrics.resolve("auto")
    lines += ["", f"Quality against the same-seed full-step image ({len(prompts)} calibration prompts):", "",
              f"| plan | NFE | PSNR dB mean | PSNR worst | SSIM mean | {metric} mean |", "|---|---|---|---|---|---|"]
    grids = {}
    for name, schedule in plans.items():
        images = run_all(pipe, spec, prompts, schedule)
        v = metrics.score_all(images, refs, [metric, "psnr", "ssim"])
        lines.append(f"| {name} `{schedule.plan}` | {schedule.nfe} | {v['psnr'].mean():.2f} | {v['psnr'].min():.2f} | "
                     f"{v['ssim'].mean():.4f} | {v[metric].mean():.4f} |")
        grids[name] = images

    args.out.mkdir(parents=True, exist_ok=True)
    k = 8
    top = torch.cat(list(refs[:k]), dim=2)
    bottom = torch.cat(list(grids["zeus-28 (ZEUS default rule scaled)"][:k]), dim=2)
    grid = torch.nn.functional.interpolate(torch.cat([top, bottom], dim=1)[None], scale_factor=2, mode="nearest")[0]
    Image.fromarray(_u8(grid)).save(args.out / "grid.png")
    lines += ["", "grid.png: the first 8 calibration prompts at 2x zoom; top full steps, bottom zeus-28.", "",
              "Prompts of the grid, left to right:", ""] + [f"{i + 1}. {p}" for i, p in enumerate(prompts[:k])]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
