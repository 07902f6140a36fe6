"""Write the shipped presets under schedules/: the published ZEUS configurations, and the
hand-made baselines for the embedded model tiny-flux (ZEUS's default rule scaled to 28 steps and
uniform every-other / every-third masks).

The plans come from zeustune.schedule.plans with the exact published arguments (FACTS.md §1), so the
presets are reproducible: rerun this script and `git diff schedules/` stays empty.

    python scripts/make_presets.py [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zeustune.schedule.plans import from_mask, zeus
from zeustune.schedule.format import Cfg, Guidance, Model, Predictor, Sampler, Schedule

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


#: ZEUS's default ("r=3, 20/70/10": acc (10,45), Lagrange step 24 of 50), positions scaled to N steps.
ZEUS_DEFAULT = dict(acc_start=10, acc_end=45, denominator=3, modular=(0, 1), lagrange_term=3, lagrange_step=24,
                    lagrange_int=6, max_interval=6)


def zeus_scaled(steps: int, base: int = 50, **knobs):
    """ZEUS's rule with its step positions (acc_start, acc_end, lagrange_step) scaled from ``base`` steps."""
    scaled = {k: round(v * steps / base) if k in ("acc_start", "acc_end", "lagrange_step") else v for k, v in knobs.items()}
    return zeus(steps, **scaled), scaled


def tiny_flux_presets() -> list[Schedule]:
    from zeustune.models.registry import TINY_FLUX_CALL_KWARGS, TINY_FLUX_SIZE, TINY_FLUX_STEPS

    n = TINY_FLUX_STEPS
    model = Model("flux", "tiny-flux", "FluxPipeline")
    sampler = Sampler("FlowMatchEulerDiscreteScheduler", n, TINY_FLUX_SIZE, TINY_FLUX_SIZE,
                      guidance=Guidance("true_cfg", TINY_FLUX_CALL_KWARGS["true_cfg_scale"]))
    plan, knobs = zeus_scaled(n, **ZEUS_DEFAULT)
    out = [Schedule(
        tag="zeus-28", model=model, sampler=sampler, plan=plan,
        predictor=Predictor(caching="reuse_interp", lagrange_term=3, lagrange_int=6),
        description="ZEUS default rule (r=3, 20/70/10) with its positions scaled from 50 to 28 steps",
        provenance={"generator": "zeustune.schedule.plans.zeus", "arguments": {k: list(v) if isinstance(v, tuple) else v
                                                                     for k, v in knobs.items()}},
    )]
    for every in (2, 3):
        out.append(Schedule(
            tag=f"uniform-{every}", model=model, sampler=sampler,
            plan=from_mask([k % every == 0 for k in range(n)]),
            description=f"uniform: every {'other' if every == 2 else 'third'} step fresh, skips E/R interleaved",
            provenance={"generator": "zeustune.schedule.plans.from_mask", "fresh": f"k % {every} == 0"},
        ))
    return out


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
            provenance={"source": "ZEUS (arXiv 2604.01552) published configuration", "generator": "zeustune.schedule.plans.zeus",
                        "arguments": {k: list(v) if isinstance(v, tuple) else v for k, v in knobs.items()}},
        )
        path = schedule.save(out / model.family / f"{tag}.yaml")
        print(f"{path}: {plan} (NFE {plan.nfe})")
    for schedule in tiny_flux_presets():
        path = schedule.save(out / "tiny-flux" / f"{schedule.tag}.yaml")
        print(f"{path}: {schedule.plan} (NFE {schedule.plan.nfe})")


if __name__ == "__main__":
    main()
