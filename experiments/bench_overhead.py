"""Regenerates docs/benchmarks/overhead.md and overhead.json (README.md and the benches quote them).
A few minutes on 2 cores: a fresh call of the FLUX-width model takes 12-18 s there, timed 3 times,
plus the predicted steps (an estimate; the page records the call times, not the run's).

Overhead of a predicted step against one fresh denoiser call, at FLUX size.

A predicted step is the hook's whole work on a skipped step: reading the step from the
scheduler, choosing the branch, computing the prediction and wrapping it as the model's output.
It is timed on a FLUX-sized latent (1024x1024 image: 4096 tokens x 64 channels) through the real
hook on a real FluxTransformer2DModel of FLUX's width (hidden 3072 = 24 heads x 128, 4096 image
tokens + 512 text tokens) with as few blocks as fit the machine. One fresh call of that model is
the yardstick; the real model has 19 double + 38 single blocks, so the share there is far smaller.

    python experiments/bench_overhead.py                 # FLUX width, 1 double + 1 single block
    python experiments/bench_overhead.py --quick         # small width, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

import zeustune
from zeustune.schedule.plans import Plan
from zeustune.schedule.format import Model, Predictor, Sampler, Schedule


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", type=int, default=24, help="attention heads (x128 = hidden size; FLUX: 24)")
    ap.add_argument("--double", type=int, default=1, help="double-stream blocks (FLUX: 19)")
    ap.add_argument("--single", type=int, default=1, help="single-stream blocks (FLUX: 38)")
    ap.add_argument("--tokens", type=int, default=4096, help="image tokens (1024x1024: 4096)")
    ap.add_argument("--text-tokens", type=int, default=512)
    ap.add_argument("--fresh-repeats", type=int, default=3)
    ap.add_argument("--predict-repeats", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="small width and token count, for tests")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.quick:
        args.heads, args.tokens, args.text_tokens, args.fresh_repeats, args.predict_repeats = 2, 256, 32, 2, 10

    torch.manual_seed(0)
    hidden = args.heads * 128
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=args.double, num_single_layers=args.single,
        attention_head_dim=128, num_attention_heads=args.heads, joint_attention_dim=4096,
        pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
    ).eval()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=transformer)
    n = 28
    pipe.scheduler.set_timesteps(n)
    inputs = dict(
        hidden_states=torch.randn(1, args.tokens, 64),
        encoder_hidden_states=torch.randn(1, args.text_tokens, 4096),
        pooled_projections=torch.randn(1, 768),
        timestep=torch.tensor([1.0]),
        guidance=torch.tensor([3.5]),
        img_ids=torch.zeros(args.tokens, 3),
        txt_ids=torch.zeros(args.text_tokens, 3),
        return_dict=False,
    )

    latent, drift = inputs["hidden_states"], torch.randn(1, args.tokens, 64)

    def call_at(step: int, name: str = "cond"):
        pipe.scheduler._step_index = step  # where the pipeline's loop would be
        inputs["hidden_states"] = latent + 0.01 * step * drift  # the latent moves, as in sampling
        with torch.no_grad(), transformer.cache_context(name):
            return transformer(**inputs)

    with torch.no_grad():
        fresh = median_time(lambda: transformer(**inputs), args.fresh_repeats)

    # Each case: (plan letter, predictor settings). A runs with a threshold that always predicts,
    # so what is timed is the criterion's work plus the prediction (E, its first gate).
    cases = {
        "E": ("E", {}), "R": ("R", {}), "S": ("S", {"gamma": 0.8}),
        "C": ("C", {"degree": 4, "ridge": 0.1, "blend": 0.5}),
        "A-sada": ("A", {"criterion": "sada", "threshold": 1e9, "max_run": 10**6}),
        "A-change": ("A", {"criterion": "change", "threshold": 1e9, "max_run": 10**6}),
    }
    results = {}
    warm = 5  # fresh steps before the predicted one: the forecast has a history, SADA three outputs
    for name, (letter, knobs) in cases.items():
        plan = "F" * warm + letter + "F" * (n - warm - 1)
        sched = Schedule(tag="bench", model=Model("flux"), sampler=Sampler("FlowMatchEulerDiscreteScheduler", n),
                         plan=Plan(plan), predictor=Predictor(**knobs))
        zeustune.enable(pipe, sched)
        for k in range(warm):
            call_at(k)
        out = call_at(warm)
        assert out[0].shape == (1, args.tokens, 64), out[0].shape
        assert zeustune.summary(pipe).denoiser_calls == warm, f"{name}: the timed step called the denoiser"
        results[name] = median_time(lambda: call_at(warm), args.predict_repeats)
        zeustune.disable(pipe)
    # C's and A's work on a fresh step (the fit's running sums; the criterion's bookkeeping)
    from zeustune.runtime.actions.forecast import ForecastState

    state, psi = ForecastState(4), torch.randn(1, args.tokens, 64)
    fresh_work = {"C fit update (per fresh step)": median_time(lambda: state.add(0.1, psi), args.predict_repeats)}

    params = sum(p.numel() for p in transformer.parameters()) / 1e6
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 on CPU")
    print(f"transformer: hidden {hidden}, {args.double} double + {args.single} single blocks, {params:.0f}M params, "
          f"{args.tokens} image + {args.text_tokens} text tokens")
    print(f"fresh call (median of {args.fresh_repeats}): {1000 * fresh:.1f} ms")
    print(f"{'predicted step':<28}{'median ms':>10}{'share of fresh call':>22}")
    names = {"E": "E (2*last - prev)", "R": "R (reuse)", "S": "S (scaled, gamma)", "C": "C (Chebyshev d=4 + S)",
             "A-sada": "A (SADA criterion, then E)", "A-change": "A (change crit., then E)"}
    for letter, t in results.items():
        print(f"{names[letter]:<28}{1000 * t:>10.3f}{100 * t / fresh:>21.5f}%")
    for what, t in fresh_work.items():
        print(f"{what:<28}{1000 * t:>10.3f}{100 * t / fresh:>21.5f}%")
    worst = max(results.values()) / fresh
    print(f"worst predicted step: {100 * worst:.5f}% of one fresh call of this {args.double + args.single}-block "
          f"model (the 57-block FLUX.1-dev call is ~{(args.double + args.single) / 57:.2f}x that share or less)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"fresh_s": fresh, "predicted_s": results, "fresh_step_work_s": fresh_work, "worst_share": worst, "hidden": hidden,
                       "tokens": args.tokens, "blocks": [args.double, args.single]}, f, indent=2)
    return 0 if args.quick or worst < 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
