"""Write the published ZEUS configurations as presets under schedules/.

The plans come from zeustune.plans.zeus with the exact published arguments (FACTS.md §1), so the
presets are reproducible: rerun this script and `git diff schedules/` stays empty.

    python scripts/make_zeus_presets.py [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zeustune.plans import zeus
from zeustune.schedule import Cfg, Guidance, Model, Predictor, Sampler, Schedule

ROOT = Path(__file__).resolve().parent.parent / "schedules"
HEAD = dict(acc_start=10, acc_end=45, denominator=3, modular=(0, 1), lagrange_step=24)

PRESETS = [
    (
        "zeus-flux-demo",
        "ZEUS flux_demo: acc (10,45), d=3 (0,1), Lagrange 3/24/6, max_interval 4, reuse_interp",
        Model("flux", "black-forest-labs/FLUX.1-dev", "FluxPipeline"),
        Sampler("FlowMatchEulerDiscreteScheduler", 50, 1024, 1024, guidance=Guidance("distilled", 3.5)),
        dict(HEAD, lagrange_term=3, lagrange_int=6, max_interval=4),
        "reuse_interp",
    ),
    (
        "zeus-flux-default",
        "ZEUS generate_dit default: acc (7,47), d=4 (0,1,2), Lagrange 3/24/6, max_interval 8, reuse_all",
        Model("flux", "black-forest-labs/FLUX.1-dev", "FluxPipeline"),
        Sampler("FlowMatchEulerDiscreteScheduler", 50, 1024, 1024, guidance=Guidance("distilled", 3.5)),
        dict(acc_start=7, acc_end=47, denominator=4, modular=(0, 1, 2), lagrange_step=24,
             lagrange_term=3, lagrange_int=6, max_interval=8),
        "reuse_all",
    ),
    (
        "zeus-xl-demo",
        "ZEUS xl_demo: acc (10,45), d=3 (0,1), Lagrange 4/24/4, max_interval 4, reuse_interp",
        Model("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "StableDiffusionXLPipeline"),
        Sampler("EulerDiscreteScheduler", 50, 1024, 1024, guidance=Guidance("cfg", 5.0)),
        dict(HEAD, lagrange_term=4, lagrange_int=4, max_interval=4),
        "reuse_interp",
    ),
    (
        "zeus-sd-demo",
        "ZEUS sd_demo: acc (10,45), d=3 (0,1), Lagrange 4/24/4, max_interval 6, reuse_interp",
        Model("sd", "stabilityai/stable-diffusion-2-1", "StableDiffusionPipeline"),
        Sampler("DDIMScheduler", 50, 768, 768, guidance=Guidance("cfg", 7.5)),
        dict(HEAD, lagrange_term=4, lagrange_int=4, max_interval=6),
        "reuse_interp",
    ),
    (
        "zeus-wan2-demo",
        "ZEUS wan2_demo: acc (8,47), d=3 (0,1), Lagrange 4/24/4, max_interval 6, reuse_interp",
        Model("wan", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "WanPipeline"),
        Sampler("UniPCMultistepScheduler", 50, 480, 832, frames=81, guidance=Guidance("true_cfg", 5.0)),
        dict(acc_start=8, acc_end=47, denominator=3, modular=(0, 1), lagrange_step=24,
             lagrange_term=4, lagrange_int=4, max_interval=6),
        "reuse_interp",
    ),
]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT, help="schedules directory (default: %(default)s)")
    out = ap.parse_args(argv).out
    for tag, description, model, sampler, knobs, caching in PRESETS:
        plan = zeus(sampler.steps, caching_mode=caching, **knobs)
        schedule = Schedule(
            tag=tag,
            model=model,
            sampler=sampler,
            plan=plan,
            predictor=Predictor(caching=caching, lagrange_term=knobs["lagrange_term"], lagrange_int=knobs["lagrange_int"]),
            cfg=Cfg("separate"),
            description=description,
            provenance={"source": "ZEUS (arXiv 2604.01552) published configuration", "generator": "zeustune.plans.zeus",
                        "arguments": {k: list(v) if isinstance(v, tuple) else v for k, v in knobs.items()}},
        )
        path = schedule.save(out / model.family / f"{tag}.yaml")
        print(f"{path}: {plan} (NFE {plan.nfe})")


if __name__ == "__main__":
    main()
