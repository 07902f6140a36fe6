"""Regenerates the batch table of docs/search/probe/README.md (with ``--json``, docs/search/probe/batch.json);
about a minute per schedule on 2 cores.

Batched deployment of probe-gated (G) and other per-prompt schedules: calls and loss when 8
prompts share one pipeline call (decisions per batch: means over every sample) against one prompt
per call. Regenerates the batch table of docs/search/probe/README.md; about a minute per schedule
on 2 cores (tiny-flux, 32 held-out prompts).

    python experiments/probe_batch.py SCHEDULE.yaml [...] [--heldout 32] [--fbcache 0.25]

Calls are full denoiser calls per CFG branch (the tail block's attention ran), counted; loss is
st-lpips against the same-seed full-step image, which does not depend on the batch.
"""

from __future__ import annotations

import argparse
import json

import torch

from zeustune.bench import peers
from zeustune.bench.methods import schedule_row
from zeustune.models.prompts import load_prompts
from zeustune.models.registry import load
from zeustune.quality import metrics as M
from zeustune.quality.evaluate import references, sample_batch
from zeustune.quality.references import ReferenceCache
from zeustune.schedule.format import Schedule


def run(pipe, spec, prompts, seed, batch, setup, full_calls: int) -> tuple[torch.Tensor, list[float]]:
    """Images and, per prompt, full calls per CFG branch (``full_calls``: a full-step run's count)."""
    images, calls = [], []
    with setup():
        for i in range(0, len(prompts), batch):
            idx = list(range(i, min(i + batch, len(prompts))))
            out = []
            n = peers.count_full_calls(pipe, lambda: out.append(
                sample_batch(pipe, spec, [prompts[j] for j in idx], [seed + j for j in idx]).cpu()))
            images.append(out[0])
            calls += [spec.steps * n / full_calls] * len(idx)  # a batch's calls serve each of its images
    return torch.cat(images), calls


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("schedules", nargs="*")
    ap.add_argument("--heldout", type=int, default=32)
    ap.add_argument("--fbcache", type=float, action="append", default=[], help="also diffusers FirstBlockCache at this threshold")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    pipe, spec = load("tiny-flux", progress=False)
    prompts, seed = load_prompts(spec, "heldout")[: args.heldout], 10_000
    refs = references(pipe, spec, prompts, seed, ReferenceCache(None), progress=False, batch=8).images
    metric = M.resolve("auto")
    full_calls = peers.count_full_calls(pipe, lambda: sample_batch(pipe, spec, prompts[:1], [seed]))
    rows = []
    setups = [(s.tag, schedule_row(pipe, s, "zeustune").setup) for s in map(Schedule.load, args.schedules)]
    setups += [(f"fbcache {t:g}", (lambda t=t: peers.apply(pipe, "fbcache", t))) for t in args.fbcache]
    for name, setup in setups:
        row = {"schedule": name}
        for batch in (1, 8):
            images, calls = run(pipe, spec, prompts, seed, batch, setup, full_calls)
            row[f"batch{batch}"] = {"calls": sum(calls) / len(calls), "loss": float(M.score(metric, images, refs).mean())}
        rows.append(row)
        print(f"| {name} | {row['batch1']['calls']:.2f} | {row['batch1']['loss']:.4f} | {row['batch8']['calls']:.2f} | "
              f"{row['batch8']['loss']:.4f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"metric": metric, "heldout": len(prompts), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
