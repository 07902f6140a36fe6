"""GPU latency at full size: the FLUX.1-dev transformer and VAE architectures with random weights
(latency does not depend on the weights), bf16, 1024x1024, 28 and 50 steps. Prompt embeddings are
random tensors of T5-XXL/CLIP shape, so the text encoders (not needed to time the denoiser) are
left out of the fixed cost.

Measured per step count: the cost model (fixed cost, per-call time, predicted-step overhead,
fitted as the search fits it) and each schedule's end-to-end speedup against full steps (median
of interleaved runs) next to its N/NFE bound. ``size="small"`` runs the same code on a scaled-down
architecture, so the path is tested without a GPU.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..schedule import plans as P
from .. import runtime
from ..schedule.format import Guidance, Model, Predictor, Sampler, Schedule
from ..quality.evaluate import timed, timed_steps

FLUX_DEV = dict(transformer=dict(in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                                 num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                                 guidance_embeds=True, axes_dims_rope=(16, 56, 56)),
                vae=dict(block_out_channels=(128, 256, 512, 512), latent_channels=16, layers_per_block=2,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159),
                text=(512, 4096), pooled=768, size=1024)
# Big enough that a denoiser call (~50 ms on 2 CPU cores) stands well above a shared host's timing noise,
# so the fitted per-call cost is positive; a 1-block, 32-wide model at 32 px (2 ms a call) was not.
SMALL = dict(transformer=dict(in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=32, num_attention_heads=4,
                              joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(8, 12, 12)),
             vae=dict(block_out_channels=(8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=4,
                      down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                      use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159),
             text=(16, 32), pooled=32, size=128)


def build(size: str, device: str, dtype: torch.dtype):
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )

    from ..models.tiny import FLUX_SCHEDULER_CONFIG

    arch = FLUX_DEV if size == "full" else SMALL
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in bf16 on the device: 12B parameters never exist in fp32
    try:
        with torch.device(device):
            transformer = FluxTransformer2DModel(**arch["transformer"]).eval()
            vae = AutoencoderKL(**arch["vae"]).eval()
    finally:
        torch.set_default_dtype(default)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG), vae=vae, text_encoder=None,
                        tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator("cpu").manual_seed(0)
    embeds = {"prompt_embeds": torch.randn((1, *arch["text"]), generator=g).to(device, dtype),
              "pooled_prompt_embeds": torch.randn((1, arch["pooled"]), generator=g).to(device, dtype)}
    return pipe, embeds, arch["size"]


def base_schedule(steps: int, size: int) -> Schedule:
    return Schedule(tag="full", model=Model("flux", "flux-dev-architecture", "FluxPipeline"),
                    sampler=Sampler("FlowMatchEulerDiscreteScheduler", steps, size, size, guidance=Guidance("distilled", 3.5)),
                    plan=P.Plan("F" * steps), predictor=Predictor(caching="reuse_interp"))


def _call(pipe, embeds, size, steps) -> None:
    pipe(**embeds, num_inference_steps=steps, height=size, width=size, guidance_scale=3.5, output_type="pt",
         generator=torch.Generator("cpu").manual_seed(0))


def _run(pipe, embeds, size, steps, device) -> float:
    return timed(pipe, lambda: _call(pipe, embeds, size, steps))


def _run_steps(pipe, embeds, size, steps, device) -> tuple[float, list[float]]:
    return timed_steps(pipe, lambda: _call(pipe, embeds, size, steps))


def measure(schedules: dict[str, Schedule], steps_list=(28, 50), runs: int = 5, size: str = "full", device: str = "cuda",
            dtype=torch.bfloat16) -> dict:
    """{steps: {"cost": CostModel dict, "rows": [{name, nfe, bound, speedup, full_s, latency_s}]}}."""
    import statistics

    from ..search.cost import Timing, fit
    from ..search.space import gate_letters, spaced_mask

    pipe, embeds, px = build(size, device, dtype)
    out = {}
    for steps in steps_list:
        base = base_schedule(steps, px)

        def time_run(s, fresh):
            if fresh >= s:
                plan = P.Plan("F" * s)
                runtime.disable(pipe)
            else:
                plan = P.Plan(gate_letters(spaced_mask(s, fresh, 2, 0, 1.0), ["E", "R", "E"]))
                runtime.enable(pipe, base_schedule(s, px).with_plan(plan))
            try:
                total, per_step = _run_steps(pipe, embeds, px, s, device)
                return Timing(total, tuple(per_step), plan.steps)
            finally:
                runtime.disable(pipe)

        cost = fit(time_run, steps, runs=runs, device=torch.cuda.get_device_name() if device.startswith("cuda") else "cpu")
        rows = []
        for name, sched in schedules.items():
            if sched.steps != steps:
                continue
            sched = base.with_plan(sched.plan, tag=name, predictor=sched.predictor)
            full, fast = [], []
            for _ in range(runs + 1):  # interleaved; the first round warms up
                runtime.disable(pipe)
                full.append(_run(pipe, embeds, px, steps, device))
                runtime.enable(pipe, sched)
                fast.append(_run(pipe, embeds, px, steps, device))
            runtime.disable(pipe)
            f, s = statistics.median(full[1:]), statistics.median(fast[1:])
            rows.append({"name": name, "nfe": sched.nfe, "bound": steps / sched.nfe, "speedup": f / s, "full_s": f, "latency_s": s})
        out[steps] = {"cost": cost.to_dict(), "rows": rows}
    return out


def markdown(result: dict, device: str) -> str:
    lines = [f"# GPU latency: FLUX.1-dev architecture, random weights, bf16, 1024x1024 ({device})", ""]
    for steps, r in result.items():
        c = r["cost"]
        lines += [f"## {steps} steps", "",
                  f"Cost model: fixed {c['fixed'] * 1e3:.1f} ms, {c['call'] * 1e3:.1f} ms per denoiser call, "
                  f"{c['skip'] * 1e3:.2f} ms per predicted step.", "",
                  "| schedule | NFE | N/NFE bound | measured speedup | full (s) | scheduled (s) |", "|---|---|---|---|---|---|"]
        lines += [f"| {x['name']} | {x['nfe']}/{steps} | {x['bound']:.2f}x | {x['speedup']:.2f}x | {x['full_s']:.3f} | "
                  f"{x['latency_s']:.3f} |" for x in r["rows"]] + [""]
    return "\n".join(lines)


def run_if_gpu(schedules: dict[str, Schedule], out: Path, runs: int = 5) -> str:
    """Measure on the GPU and write ``out/gpu-latency.md``; without CUDA, say so and skip."""
    if not torch.cuda.is_available():
        return ("no CUDA device: the GPU latency part (FLUX.1-dev architecture, bf16, 1024x1024, 28 and 50 steps) "
                "is skipped; run `zeustune bench` on a machine with a CUDA GPU")
    result = measure(schedules, runs=runs)
    text = markdown(result, torch.cuda.get_device_name())
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-latency.md").write_text(text)
    return text
