"""Regenerates docs/benchmarks/skip-cost.md and skip-cost.json (the shares `zeustune bench` projects
with, shipped as zeustune/bench/figures). Tens of minutes on 2 cores: a full call of the FLUX-width
model takes 33 s there, and each peer runs a few full calls before the skipped ones it times.

What a *skipped* denoiser step costs each peer cache, as a share of one FLUX.1-dev full call.

A peer cache (``zeustune.bench.peers``) still calls the denoiser on a step it skips: it saves the
transformer blocks, or some of their work, but the call's embeddings, output projection and the
cache's own bookkeeping still run (and FirstBlockCache runs the whole first block, TaylorSeer in
diffusers' default mode every block's non-attention work). This script times that work on a
FluxTransformer2DModel of FLUX's width (hidden 3072 = 24 heads x 128, 4096 image tokens x 64
channels + 512 text tokens, float32 on CPU) with 2 double + 2 single blocks, so that the first
block can be told apart from the others, and projects it onto FLUX.1-dev's 19 double + 38 single
blocks.

Every call's blocks are timed one by one (torch forward pre/post hooks on each block module; they
wrap the block's whole ``__call__``, so a cache hook's own work on that block is counted in it);
the rest of the call is its non-block time. One FLUX.1-dev call is projected from those pieces as

    nonblock + t(double block 0) + 18 * mean(t(double blocks 1..)) + 38 * mean(t(single blocks))

A full call (no cache) projected so is the yardstick; each peer's skipped call is projected the
same way, and its share is the ratio of the two.

Each peer is set to skip every call it can: fbcache threshold 1e9; taylorseer (lite) and
taylorseer-attn with a cache interval of 10**6 and diffusers' default ``disable_cache_before_step``
(3), so that its rule gives full calls at steps 0-2, a predicted one at 3, a full one at 4 and
predicted ones after (5 warm-up calls); magcache with unit ratios, threshold 1e9, no limit on skips
in a row and no retained steps; seacache threshold 1e9, no limit on cached calls in a row, one
retained step, no full steps at the end (it reads the image grid from ``img_ids``, so they are set
on a real grid). fbcache, magcache and seacache skip from the second call. The transformer is
called as the pipeline calls it (``torch.no_grad()``, ``transformer.cache_context("cond")``, the
scheduler's step index set to the call's step, the latent moving a little each step); every timed
call is checked to be skipped: the tail block's attention (``peers._probe``) must not run.

cache-dit (DBCache with Fn_compute_blocks=1, Bn_compute_blocks=0 and a static
``steps_computation_mask`` = 1 then 0s, policy "static": only the first block runs on a masked
step) is measured the same way on a second model of the same configuration, built after the
diffusers peers are done (cache-dit patches the transformer for good). It is enabled on the
transformer (``cache_dit.enable_cache(transformer, ...)``, its transformer-only mode): enabled on
the pipeline, cache-dit opens its cache context only inside ``pipe(...)``, and the direct
transformer calls here would then run every block; the transformer-only mode keeps a persistent
context, with the same cached blocks. ``--no-cache-dit`` leaves it out; without the package it is
left out with a note.

    python experiments/bench_skip_cost.py                   # FLUX width, 2 double + 2 single blocks
    python experiments/bench_skip_cost.py --quick --json x  # small width, for a smoke test
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time

import diffusers
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

from zeustune.bench import peers

FLUX_DOUBLE, FLUX_SINGLE = 19, 38  # FLUX.1-dev's blocks
STEPS = 200  # the scheduler's step count: every call is the next step, far from its end
NEVER = 10**6  # TaylorSeer's cache interval: no refresh within a run here

# Per peer: (knob, options) that skip every call once the cache has what it needs.
SKIP_SETTINGS = {
    "fbcache": (1e9, {}),
    "taylorseer": (NEVER, {}),
    "taylorseer-attn": (NEVER, {}),
    "magcache": (1e9, {"mag_ratios": torch.ones(10**4), "max_skip_steps": 10**6, "retention_ratio": 0.0}),
    "seacache": (1e9, {"max_consecutive_cached": 0, "retention_steps": 1, "cache_end_steps": 0}),
}


def grid(tokens: int) -> tuple[int, int]:
    """The image token grid (h, w), as square as the count allows (1024x1024: 64 x 64)."""
    h = int(math.isqrt(tokens))
    while tokens % h:
        h -= 1
    return h, tokens // h


def build(args):
    """A FLUX-width transformer (same weights for the same arguments) and a bare FluxPipeline on it."""
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=args.double, num_single_layers=args.single,
        attention_head_dim=128, num_attention_heads=args.heads, joint_attention_dim=4096,
        pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
    ).eval()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=transformer)
    return transformer, pipe


class Caller:
    """Calls the transformer as FluxPipeline's loop does at a given step, timing every block."""

    def __init__(self, transformer, pipe, args):
        self.transformer, self.pipe = transformer, pipe
        gen = torch.Generator().manual_seed(1)
        h, w = grid(args.tokens)
        img_ids = torch.zeros(h, w, 3)
        img_ids[..., 1] = torch.arange(h)[:, None]
        img_ids[..., 2] = torch.arange(w)[None, :]
        self.latent = torch.randn(1, args.tokens, 64, generator=gen)
        self.drift = torch.randn(1, args.tokens, 64, generator=gen)
        self.inputs = dict(
            encoder_hidden_states=torch.randn(1, args.text_tokens, 4096, generator=gen),
            pooled_projections=torch.randn(1, 768, generator=gen),
            guidance=torch.tensor([3.5]),
            img_ids=img_ids.reshape(-1, 3),  # SeaCache's FLUX adapter reads the grid from these
            txt_ids=torch.zeros(args.text_tokens, 3),
            return_dict=False,
        )
        self.blocks = [("double", i, b) for i, b in enumerate(transformer.transformer_blocks)]
        self.blocks += [("single", i, b) for i, b in enumerate(transformer.single_transformer_blocks)]
        self.started: dict[tuple[str, int], float] = {}
        self.spent: dict[tuple[str, int], float] = {}
        self.probe_calls = 0
        self.handles = []
        for kind, i, block in self.blocks:
            self.handles.append(block.register_forward_pre_hook(self._pre(kind, i)))
            self.handles.append(block.register_forward_hook(self._post(kind, i)))
        self.handles.append(peers._probe(transformer).register_forward_hook(self._probed))

    def _pre(self, kind, i):
        def hook(module, args):
            self.started[kind, i] = time.perf_counter()
        return hook

    def _post(self, kind, i):
        def hook(module, args, output):
            self.spent[kind, i] = self.spent.get((kind, i), 0.0) + time.perf_counter() - self.started.pop((kind, i))
        return hook

    def _probed(self, module, args, output):
        self.probe_calls += 1

    def start(self):
        """A new run: the scheduler set for STEPS steps (SeaCache reads its step count and sigmas)."""
        self.pipe.scheduler.set_timesteps(STEPS)

    def __call__(self, step: int) -> dict:
        sched, model = self.pipe.scheduler, self.transformer
        sched._step_index = step  # where the pipeline's loop would be
        inputs = dict(self.inputs, hidden_states=self.latent + 0.01 * step * self.drift,
                      timestep=(sched.timesteps[step] / 1000).reshape(1))
        self.spent, self.started, self.probe_calls = {}, {}, 0
        with torch.no_grad(), model.cache_context("cond"):  # looked up now: SeaCache's step context replaces it
            t0 = time.perf_counter()
            out = model(**inputs)
            call = time.perf_counter() - t0
        assert out[0].shape == self.latent.shape, out[0].shape
        double = [self.spent.get(("double", i), 0.0) for i in range(len(model.transformer_blocks))]
        single = [self.spent.get(("single", i), 0.0) for i in range(len(model.single_transformer_blocks))]
        return {"call_s": call, "nonblock_s": call - sum(double) - sum(single), "double_s": double,
                "single_s": single, "computed": self.probe_calls > 0}

    def close(self):
        for h in self.handles:
            h.remove()


def project(nonblock: float, double: list[float], single: list[float]) -> float:
    """One FLUX.1-dev call (19 double + 38 single blocks) from one call's pieces."""
    return (nonblock + double[0] + (FLUX_DOUBLE - 1) * statistics.fmean(double[1:])
            + FLUX_SINGLE * statistics.fmean(single))


def summarize(calls: list[dict]) -> dict:
    """Medians over the calls, piece by piece, and the FLUX.1-dev projection of those medians."""
    med = statistics.median
    out = {
        "call_s": med(c["call_s"] for c in calls),
        "nonblock_s": med(c["nonblock_s"] for c in calls),
        "double_s": [med(c["double_s"][i] for c in calls) for i in range(len(calls[0]["double_s"]))],
        "single_s": [med(c["single_s"][i] for c in calls) for i in range(len(calls[0]["single_s"]))],
    }
    out["flux_dev_s"] = project(out["nonblock_s"], out["double_s"], out["single_s"])
    return out


def taylorseer_warmup(config, repeats: int) -> int:
    """Calls before ``repeats`` predicted calls in a row, by diffusers' TaylorSeer rule: full before
    disable_cache_before_step, then full every cache_interval steps from one step after it."""
    d, k, after = config.disable_cache_before_step, config.cache_interval, config.disable_cache_after_step

    def full(step):
        return step < d or (step - d - 1) % k == 0 or (after is not None and step >= after)

    start = 0
    while any(full(s) for s in range(start, start + repeats)):
        start += 1
    return start


def warmup_calls(name: str, config, repeats: int) -> int:
    if name in ("taylorseer", "taylorseer-attn"):
        return taylorseer_warmup(config, repeats)
    return 1  # fbcache, magcache, seacache: one full call gives the residual they reuse


def time_skipped(name: str, call: Caller, warm: int, repeats: int) -> list[dict]:
    call.start()
    if warm + repeats > STEPS:
        raise RuntimeError(f"{name}: {warm} warm-up + {repeats} timed calls do not fit in {STEPS} steps")
    for step in range(warm):
        call(step)
    timed = []
    for step in range(warm, warm + repeats):
        record = call(step)
        if record["computed"]:
            raise RuntimeError(f"{name}: the timed call at step {step} (after {warm} warm-up calls) computed the "
                               "tail block's attention: the cache did not skip it")
        timed.append(record)
    return timed


def measure_peer(name: str, pipe, call: Caller, repeats: int) -> dict:
    if name not in SKIP_SETTINGS:
        raise RuntimeError(f"peer {name}: no settings that make it skip (add it to SKIP_SETTINGS)")
    knob, options = SKIP_SETTINGS[name]
    config = peers.enable(pipe, name, knob, **options)
    try:
        warm = warmup_calls(name, config, repeats)
        result = summarize(time_skipped(name, call, warm, repeats))
    finally:
        peers.disable(pipe)
    result["warmup_calls"] = warm
    return result


def measure_probe_step(pipe, call: Caller, repeats: int, probe: str = "residual") -> dict:
    """zeustune's G step predicted after its probe (tail output, gate R: FirstBlockCache's form),
    through the runtime hook: its work beyond the first block is the decision and the addition."""
    import zeustune
    from zeustune.schedule.format import Model, Predictor, Sampler, Schedule
    from zeustune.schedule.plans import Plan

    warm = 2  # a G step predicts once its branch has two full calls
    sched = Schedule(tag="probe", model=Model("flux"), sampler=Sampler("FlowMatchEulerDiscreteScheduler", STEPS),
                     plan=Plan("F" * warm + "G" * (STEPS - warm)),
                     predictor=Predictor(probe=probe, probe_thresholds=(float("inf"),), probe_output="tail", gates="R",
                                         max_run=STEPS))
    zeustune.enable(pipe, sched)
    try:
        result = summarize(time_skipped(f"zeustune G ({probe})", call, warm, repeats))
    finally:
        zeustune.disable(pipe)
    result["warmup_calls"] = warm
    return result


def measure_cache_dit(args) -> tuple[dict | None, str]:
    """cache-dit's DBCache F1B0 with a static mask, on a model of its own; (result, note)."""
    os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "warning")
    try:
        import cache_dit
    except ImportError as e:
        return None, f"cache-dit left out: {e}"
    transformer, pipe = build(args)
    config = cache_dit.DBCacheConfig(
        Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=1e9, max_warmup_steps=0,
        max_cached_steps=-1, max_continuous_cached_steps=-1, enable_separate_cfg=False, num_inference_steps=STEPS,
        steps_computation_mask=[1] + [0] * (STEPS - 1), steps_computation_policy="static",
    )
    cache_dit.enable_cache(transformer, cache_config=config)
    call = Caller(transformer, pipe, args)
    try:
        result = summarize(time_skipped("cache-dit", call, 1, args.skip_repeats))
    finally:
        call.close()
    result["warmup_calls"] = 1
    return result, f"cache-dit {cache_dit.__version__}: DBCache F1B0, static mask 1,0,0,... (transformer-only mode)"


def device_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"cpu: {cpu}, {torch.get_num_threads()} threads, float32"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", type=int, default=24, help="attention heads (x128 = hidden size; FLUX: 24)")
    ap.add_argument("--double", type=int, default=2, help="double-stream blocks, at least 2 (FLUX: 19)")
    ap.add_argument("--single", type=int, default=2, help="single-stream blocks, at least 1 (FLUX: 38)")
    ap.add_argument("--tokens", type=int, default=4096, help="image tokens (1024x1024: 4096)")
    ap.add_argument("--text-tokens", type=int, default=512)
    ap.add_argument("--full-repeats", type=int, default=2, help="timed full calls (after one untimed)")
    ap.add_argument("--skip-repeats", type=int, default=3, help="timed skipped calls per method")
    ap.add_argument("--no-cache-dit", action="store_true", help="leave cache-dit out")
    ap.add_argument("--only", help="comma-separated rows to measure (peers' names, cache-dit, zeustune-g, "
                                   "zeustune-g-modulated; default: all)")
    ap.add_argument("--quick", action="store_true", help="small width and token count, for tests")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.quick:
        args.heads, args.tokens, args.text_tokens, args.full_repeats, args.skip_repeats = 2, 256, 32, 1, 2
    if args.double < 2 or args.single < 1:
        ap.error("--double must be at least 2 and --single at least 1: the first double block is projected apart")
    if min(args.full_repeats, args.skip_repeats) < 1:
        ap.error("--full-repeats and --skip-repeats must be at least 1")

    hidden = args.heads * 128
    transformer, pipe = build(args)
    params = sum(p.numel() for p in transformer.parameters()) / 1e6
    call = Caller(transformer, pipe, args)
    call.start()
    say = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    say(f"{params:.0f}M-parameter FLUX-width model built; {1 + args.full_repeats} full calls")
    call(0)  # untimed: first-call allocations
    full_calls = [call(step) for step in range(1, 1 + args.full_repeats)]
    if not all(c["computed"] for c in full_calls):
        raise RuntimeError("a full call did not reach the tail block's attention: the probe is wrong")
    full = summarize(full_calls)
    flux_dev = full.pop("flux_dev_s")

    only = set(args.only.split(",")) if args.only else None
    results = {}
    for name in peers.PEERS:  # each a few full calls to warm up, then the skipped ones: minutes at FLUX width
        if only is None or name in only:
            say(f"{name}: warm-up and {args.skip_repeats} skipped calls")
            results[name] = measure_peer(name, pipe, call, args.skip_repeats)
    for name, probe in (("zeustune-g", "residual"), ("zeustune-g-modulated", "modulated")):
        if only is None or name in only:
            say(f"{name}: warm-up and {args.skip_repeats} predicted G steps")
            results[name] = measure_probe_step(pipe, call, args.skip_repeats, probe)
    call.close()
    del call, pipe, transformer
    gc.collect()  # the first model's weights go before cache-dit's copy is built
    notes = []
    if not args.no_cache_dit and (only is None or "cache-dit" in only):
        say("cache-dit: its own copy of the model, warm-up and skipped calls")
        result, note = measure_cache_dit(args)
        notes.append(note)
        if result is not None:
            results["cache-dit"] = result
    for r in results.values():
        r["share"] = r["flux_dev_s"] / flux_dev

    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, {device_name()}")
    print(f"transformer: hidden {hidden}, {args.double} double + {args.single} single blocks ({params:.0f}M "
          f"params), {args.tokens} image + {args.text_tokens} text tokens")
    print(f"full call (median of {args.full_repeats}): {1000 * full['call_s']:.1f} ms, non-block "
          f"{1000 * full['nonblock_s']:.1f} ms, double blocks "
          f"{', '.join(f'{1000 * t:.1f}' for t in full['double_s'])} ms, single blocks "
          f"{', '.join(f'{1000 * t:.1f}' for t in full['single_s'])} ms")
    print(f"FLUX.1-dev call projected ({FLUX_DOUBLE} double + {FLUX_SINGLE} single blocks): {1000 * flux_dev:.1f} ms")
    for note in notes:
        print(note)
    print(f"{'skipped call':<18}{'raw ms':>10}{'FLUX.1-dev ms':>15}{'share':>10}   (median of {args.skip_repeats})")
    for name, r in results.items():
        print(f"{name:<18}{1000 * r['call_s']:>10.2f}{1000 * r['flux_dev_s']:>15.2f}{100 * r['share']:>9.3f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_name(), "torch": torch.__version__, "diffusers": diffusers.__version__,
                       "hidden": hidden, "tokens": [args.tokens, args.text_tokens],
                       "blocks": [args.double, args.single],
                       "full": full, "flux_dev_call_s": flux_dev, "peers": results, "notes": notes,
                       "repeats": {"full": args.full_repeats, "skip": args.skip_repeats}}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
