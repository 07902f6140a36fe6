"""Measure the embedded video model tiny-wan: speed, and how well its clips follow their prompts.

Samples every prompt at full steps with classifier-free guidance, reads each clip with the
detector of zeustune.models.tinywan.scenes (colour, shape, motion, background) and writes
docs/tiny-wan/README.md (figures with the command that produced them) and docs/tiny-wan/strip.png
(held-out prompts, one clip a row, every frame left to right). As ceilings it also reads rendered
training-style clips and their VAE round trips.

    python scripts/tiny_wan_report.py [--model models/tiny-wan] [--prompts 32] [--out docs/tiny-wan]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zeustune.models.prompts import load_prompts
from zeustune.models.tinywan import scenes
from zeustune.models.tinywan.model import call_kwargs

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ("color_ok", "shape_ok", "motion_ok", "background_ok")


def sample(pipe, prompt: str, seed: int, **kwargs) -> np.ndarray:
    """One clip, uint8 frames x H x W x 3."""
    out = pipe(prompt, generator=torch.Generator().manual_seed(seed), output_type="np", **{**call_kwargs(), **kwargs})
    return (np.clip(out.frames[0], 0, 1) * 255).round().astype(np.uint8)


def read(videos, prompts) -> list[dict]:
    return [scenes.check(v, scenes.parse_caption(p)) for v, p in zip(videos, prompts)]


def rates(results: list[dict]) -> dict:
    return {k: statistics.mean(float(r[k]) for r in results) for k in CHECKS}


def row(name: str, n: int, r: dict) -> str:
    return f"| {name} | {n} | " + " | ".join(f"{100 * r[k]:.0f}%" for k in CHECKS) + " |"


def strip(videos: list[np.ndarray], zoom: int = 3) -> Image.Image:
    """Clips as rows of frames, a 1 px white line between clips."""
    rows = [np.concatenate(list(v), axis=1) for v in videos]
    gap = np.full((1, rows[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([x for r in rows for x in (r, gap)][:-1])
    return Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "tiny-wan", help="a tiny-wan folder (default: %(default)s)")
    ap.add_argument("--prompts", type=int, default=32, help="prompts per split (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=5.0, help="CFG scale (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "tiny-wan")
    args = ap.parse_args(argv)
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(args.model, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=args.steps, guidance_scale=args.guidance)
    cmd = " ".join(["python scripts/tiny_wan_report.py", *(argv if argv is not None else sys.argv[1:])])
    lines = ["# tiny-wan: measured figures\n", f"Command: `{cmd}`; torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, CPU. Model: `{args.model.name}`.\n"]
    record = args.model / "training.json"
    if record.exists():
        t = json.loads(record.read_text())
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in t.get("stage_seconds", {}).items())
        lines.append(f"- Training (training.json): {t['seconds']:.0f} s ({stages}) on {t.get('threads', '?')} threads; "
                     f"VAE loss {t['vae_loss_last100']:.4f}, flow loss {t['flow_loss_last500']:.4f}.")

    # speed: a full run, text encoding and decoding included
    prompt = load_prompts("tiny-wan", "heldout")[0]
    sample(pipe, prompt, 0, **kw)  # warm-up
    times = []
    for i in range(5):
        t0 = time.perf_counter()
        sample(pipe, prompt, i, **kw)
        times.append(time.perf_counter() - t0)
    lines.append(f"- Latency, {args.steps} steps, {scenes.FRAMES} frames of {scenes.SIZE}x{scenes.SIZE}, CFG {args.guidance} "
                 f"(two transformer calls a step): median {statistics.median(times):.3f} s per clip "
                 f"(5 runs, min {min(times):.3f}, max {max(times):.3f}).")

    # prompt following, and the ceilings: the data itself and its VAE round trip
    table = ["", "Prompt following, read by `scenes.check` (chance: 11% colour, 25% shape, ~12% motion):", "",
             "| clips | n | colour | shape | motion | background |", "|---|---|---|---|---|---|"]
    samples = {}
    for split in ("heldout", "calib"):
        prompts = load_prompts("tiny-wan", split)[: args.prompts]
        samples[split] = (prompts, [sample(pipe, p, i, **kw) for i, p in enumerate(prompts)])
        results = read(samples[split][1], prompts)
        table.append(row(f"tiny-wan, {split} prompts", len(prompts), rates(results)))
        if split == "heldout":
            by_motion = {}
            for p, r in zip(prompts, results):
                by_motion.setdefault(scenes.parse_caption(p).motion, []).append(r)
    rendered, captions = scenes.dataset(args.prompts, seed=123)
    table.append(row("rendered training clips (the data)", len(captions), rates(read(rendered, captions))))
    with torch.no_grad():
        x = torch.from_numpy(rendered).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
        rec = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mean).sample
    rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
    psnr = 10 * np.log10(255**2 / ((rec.astype(np.float64) - rendered) ** 2).mean())
    table.append(row(f"their VAE round trip (PSNR {psnr:.1f} dB)", len(captions), rates(read(rec, captions))))
    table += ["", "Held-out prompts by motion:", "", "| motion | n | colour | shape | motion | background |",
              "|---|---|---|---|---|---|"]
    table += [row(m, len(rs), rates(rs)) for m, rs in sorted(by_motion.items())]
    lines += table

    args.out.mkdir(parents=True, exist_ok=True)
    k = 8
    prompts, videos = samples["heldout"]
    strip(videos[:k]).save(args.out / "strip.png")
    lines += ["", f"strip.png: the first {min(k, len(prompts))} held-out prompts, one clip a row, frames 0-{scenes.FRAMES - 1} "
              "left to right, 3x zoom. What the detector read is in brackets.", ""]
    for i, (p, r) in enumerate(zip(prompts[:k], read(videos[:k], prompts[:k]))):
        found = f"{r['color']} {r['shape']} {r['motion']}" + (f" to {r['end_color']}" if r["motion"] == "turning" else "")
        lines.append(f"{i + 1}. {p} [{found} on {r['background']}]")
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
