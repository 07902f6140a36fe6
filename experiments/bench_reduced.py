"""Regenerates docs/benchmarks/reduced.md and reduced.json. About a minute on 2 cores (an estimate:
50 repeats of one D step's resampling on a 1024x1024 FLUX latent; no denoiser call).

What a reduced-resolution step (plan letter D) costs at FLUX size, besides its smaller call.

Times the resampling work of one D step on a 1024x1024 FLUX latent (4096 tokens x 64 channels):
unpacking the tokens, splitting the latent with the last output, area-downsampling with the noise
rescaled, packing the small latent, then unpacking the small output, upsampling its clean estimate
and turning it back into a full-resolution velocity. The share is against one FLUX.1-dev call as
projected on this machine (docs/benchmarks/skip-cost.json), and the reduced call's own cost is
given as a FLOPs fraction of a full call (zeustune.bench.compute.flux_dev_flops).

    python experiments/bench_reduced.py [--repeats 50] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from zeustune.bench.compute import BENCHMARKS, FLUX_DEV, flux_dev_flops
from zeustune.runtime import latents
from zeustune.runtime.actions.reduced import full_velocity, reduced_latent, reduced_size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--grid", type=int, default=64, help="token grid side (1024x1024 FLUX: 64)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    h = w = args.grid
    tokens, v_last = torch.randn(1, h * w, 64), torch.randn(1, h * w, 64)
    ids = latents.ids(h, w, torch.zeros(h * w, 3))
    full_call = json.loads((BENCHMARKS / "skip-cost.json").read_text())["flux_dev_call_s"]
    out = {"grid": [h, w], "flux_dev_call_s": full_call, "factors": {}}
    print(f"FLUX latent {h}x{w} tokens x 64, float32, {torch.get_num_threads()} threads; one FLUX.1-dev call "
          f"projected here: {full_call:.1f} s")
    print(f"{'factor':<8}{'resampling ms':>15}{'share of a call':>17}{'reduced call (FLOPs)':>22}")
    for factor in (0.5, 0.75):
        hs, ws = reduced_size(h, w, factor)

        def work():
            x_t = latents.unpack(tokens, h, w)
            small = reduced_latent(x_t, latents.unpack(v_last, h, w), 0.6, (2 * hs, 2 * ws))
            latents.pack(small), latents.ids(hs, ws, ids)
            v_small = latents.unpack(torch.randn(1, hs * ws, 64), hs, ws)  # stands for the model's output
            return latents.pack(full_velocity(x_t, small, v_small, 0.6))

        times = []
        for _ in range(args.repeats + 1):
            t0 = time.perf_counter()
            work()
            times.append(time.perf_counter() - t0)
        t = statistics.median(times[1:])  # the first run allocates
        flops = flux_dev_flops(replace(FLUX_DEV, image_tokens=hs * ws))["total"] / flux_dev_flops()["total"]
        out["factors"][str(factor)] = {"resampling_s": t, "share": t / full_call, "call_flops_fraction": flops}
        print(f"{factor:<8}{1000 * t:>15.2f}{100 * t / full_call:>16.4f}%{100 * flops:>21.1f}%")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
