"""Regenerates docs/tiny-flux/resolutions.md and resolutions.json. A few minutes on 2 cores (an
estimate: 24 held-out captions at each of 4 sizes for each model folder given).

How well a tiny-flux folder draws its scenes at several resolutions: each held-out caption is
sampled at each side (same seed), resized to 64 px, and checked by ``scenes.check`` (does each
object have its named colour and shape in its place?). Writes a markdown table and JSON.

    python experiments/tiny_flux_resolutions.py --model models/tiny-flux --sizes 32,48,64,96 --out docs/tiny-flux/resolutions
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from zeustune.quality.evaluate import sample
from zeustune.models.registry import MODELS, load
from zeustune.models.prompts import load_prompts
from zeustune.models.tinyflux import scenes


def accuracy(pipe, spec, prompts: list[str], size: int, seed: int) -> dict:
    at = replace(spec, height=size, width=size)
    colour, shape = [], []
    for i, p in enumerate(tqdm(prompts, desc=f"{size}px", leave=False)):
        img = sample(pipe, at, p, seed + i)[None].float()
        img = torch.nn.functional.interpolate(img, size=(64, 64), mode="bilinear", antialias=True)[0]
        arr = (img.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        r = scenes.check(arr, scenes.parse_caption(p))
        colour.append(r["color_accuracy"])
        shape.append(r["shape_accuracy"])
    return {"colour": float(np.mean(colour)), "shape": float(np.mean(shape))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="a tiny-flux folder (repeat to compare)")
    ap.add_argument("--sizes", default="32,48,64,96")
    ap.add_argument("--prompts", type=int, default=24, help="held-out captions (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=10000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    torch.set_num_threads(2)
    result = {}
    for model in args.model:
        # tiny-flux's own sampling settings (true CFG, prompt set) with this folder's weights
        pipe, spec = load(replace(MODELS["tiny-flux"], source=str(model)), progress=False)
        prompts = load_prompts(spec, "heldout")[: args.prompts]
        result[model] = {s: accuracy(pipe, spec, prompts, s, args.seed) for s in sizes}
    lines = ["| model | " + " | ".join(f"{s} px colour / shape" for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
    lines += [f"| {m} | " + " | ".join(f"{r[s]['colour']:.2f} / {r[s]['shape']:.2f}" for s in sizes) + " |" for m, r in result.items()]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "resolutions.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / "resolutions.md").write_text(
            f"# tiny-flux at several resolutions\n\n`python experiments/tiny_flux_resolutions.py {' '.join(argv or [])}`\n\n"
            f"{args.prompts} held-out captions (seeds {args.seed}..{args.seed + args.prompts - 1}), 28 steps, each image "
            "resized to 64 px and checked by `scenes.check` (share of objects with the right colour / shape).\n\n"
            + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
