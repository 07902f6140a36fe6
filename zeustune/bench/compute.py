"""Equal compute: what a bench row would cost on the model its users deploy, in full denoiser calls.

On tiny-flux a method's per-step bookkeeping is a large share of a call (its first block is a
third of the model), so measured CPU speedups flatter nobody equally. A row's cost here is

    cost = calls + sum over skipped steps of share(method's skipped-step work)

per CFG branch, in full calls of the projection :class:`Target`: FLUX.1-dev for the image families
(19 double + 38 single blocks, 1024x1024: 4096 image + 512 text tokens), Wan2.1-T2V-14B for
``wan`` (40 blocks, 81 frames of 832x480: 32760 video + 512 text tokens; :func:`target_for`).
``share`` comes from ``experiments/bench_skip_cost.py``: the method's skipped call timed on a
FLUX-width transformer, its block times projected to FLUX.1-dev's 57 blocks, over the projected
time of a full call on the same machine (a first block for FirstBlockCache and cache-dit, every
block's MLP for TaylorSeer-attn, a few tensor ops for the rest). Where no measurement exists, the
first-block share comes from FLUX.1-dev's FLOPs (:func:`flux_dev_flops`). Wan2.1-14B's shares are
FLUX.1-dev's, carried over by FLOPs (:func:`load_shares`): nothing was timed at its size.

The projected end-to-end speedup adds the text encoders and VAE: about 3% of a 50-step
1024x1024 FLUX.1-dev run (FACTS §3), 0.17% of a 50-step Wan2.1-14B one (FLOPs,
``experiments/wan_fixed_share.py``), a fixed time, so at N steps their share is
``f_N = s / (s + (1 - s) N / 50)`` (s the share at 50) and ``speedup = 1 / (f_N + (1 - f_N) cost / N)``;
it never exceeds the call bound N / cost.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from ..runtime.actions.reduced import FACTORS, small_shape
from ..schedule.format import REDUCED_AXES, parse_reduced_key, reduced_key
from ..schedule.shipped import shipped

#: The skipped-step shares measured by experiments/bench_skip_cost.py (peers) and
#: experiments/bench_overhead.py (zeustune's letters), shipped with the project's benchmarks.
BENCHMARKS = shipped("zeustune.bench", "figures")
FIXED_SHARE_50 = 0.03  # text encoders + VAE in a 50-step 1024x1024 FLUX.1-dev run
#: experiments/wan_fixed_share.py's output (VAE decode + 2 UMT5-XXL prompts against 100 transformer
#: calls), used where its JSON is missing.
WAN_FIXED_SHARE_50 = 0.0016955


@dataclass(frozen=True)
class Arch:
    double: int = 19
    single: int = 38
    hidden: int = 3072
    mlp_ratio: int = 4
    image_tokens: int = 4096
    text_tokens: int = 512


FLUX_DEV = Arch()


def flux_dev_flops(a: Arch = FLUX_DEV) -> dict[str, float]:
    """Multiply-accumulates x2 of one call's blocks. A double block runs the image and text
    streams' own projections (qkv, out, MLP: (4 + 2 m) d^2 per token) and joint attention over all
    tokens; a single block runs one fused stream (qkv + MLP in, attention + MLP out:
    (3 + m + 1 + m) d^2 per token) and the same attention. Modulation and norms are left out
    (under 1%)."""
    d, t = a.hidden, a.image_tokens + a.text_tokens
    attention = 2 * 2 * t * t * d  # QK^T and AV
    double = 2 * t * (4 + 2 * a.mlp_ratio) * d * d + attention
    single = 2 * t * (3 + a.mlp_ratio + 1 + a.mlp_ratio) * d * d + attention
    total = a.double * double + a.single * single
    return {"double": double, "single": single, "total": total, "first_block": double / total}


@dataclass(frozen=True)
class WanArch:
    """Wan2.1-T2V-14B (40 heads x 128) at 480p: 81 frames through its VAE (4x temporal, 8x spatial)
    are a latent of 16 x 21 x 60 x 104, patches of 1 x 2 x 2 make 21 x 30 x 52 tokens."""

    blocks: int = 40
    hidden: int = 5120
    ffn: int = 13824
    latent: tuple[int, int, int, int] = (16, 21, 60, 104)  # channels, frames, height, width
    patch: tuple[int, int, int] = (1, 2, 2)
    text_tokens: int = 512  # UMT5 prompts are padded to 512

    @property
    def tokens(self) -> int:
        _, f, h, w = self.latent
        return (f // self.patch[0]) * (h // self.patch[1]) * (w // self.patch[2])


WAN_14B = WanArch()


def wan_flops(a: WanArch = WAN_14B) -> dict[str, float]:
    """Multiply-accumulates x2 of one call's blocks. A block runs self-attention over the video
    tokens (q, k, v, o: 4 d^2 per token; QK^T and AV), cross-attention to the text (q, o on the
    video tokens, k, v on the text tokens, scores), and the FFN (2 d ffn per token). The patch
    embedding, time and text embedders, modulation, norms and output head are left out (about
    5e-5 of a call at 14B; tests/test_bench_compute.py counts them)."""
    d, t, n = a.hidden, a.tokens, a.text_tokens
    ffn = 2 * t * 2 * d * a.ffn
    block = (2 * t * 4 * d * d + 2 * 2 * t * t * d  # self-attention
             + 2 * t * 2 * d * d + 2 * n * 2 * d * d + 2 * 2 * t * n * d  # cross-attention
             + ffn)
    total = a.blocks * block
    return {"block": block, "ffn": ffn, "total": total, "first_block": block / total}


@dataclass(frozen=True)
class Target:
    """The model a bench row's cost is projected onto: its call's FLOPs and what a skipped step's
    work scales with there."""

    name: str
    setting: str  # the resolution (and frames) its users deploy, which the FLOPs are at
    blocks: str  # its transformer blocks, for the report
    call_flops: float
    first_block: float  # FLOPs share of a call: FirstBlockCache's and cache-dit's skipped step
    hidden_elements: int  # hidden states of a call (tokens x width): the peers' tensor ops
    output_elements: int  # the denoiser's output (the latent): zeustune's ops on a skipped step
    fixed_share_50: float  # text encoders + VAE at 50 steps
    mlp_share: float | None = None  # the blocks' MLP FLOPs share (TaylorSeer's default); None: measured
    #: (D step name as schedule.format.reduced_key, FLOPs fraction of a full call) of a reduced call;
    #: (): reduced.json's (FLUX.1-dev)
    reduced: tuple[tuple[str, float], ...] = ()


def _wan_fixed_share() -> float:
    path = BENCHMARKS / "wan-projection.json"
    return json.loads(path.read_text())["fixed_share_50"] if path.is_file() else WAN_FIXED_SHARE_50


def _wan_reduced(factor: float, axes: str = "side", a: WanArch = WAN_14B) -> float:
    """The FLOPs fraction of a D or P call at ``factor`` on ``axes``: the latent's frames and sides
    as the runtime shrinks them (runtime.actions.reduced), the 512 text tokens kept."""
    c, f, h, w = a.latent
    small = small_shape((1, c, f, h, w), factor, axes, a.patch[1])
    return wan_flops(replace(a, latent=(c, *small)))["total"] / wan_flops(a)["total"]


FLUX_TARGET = Target("FLUX.1-dev", "1024x1024", "19 double + 38 single blocks", flux_dev_flops()["total"],
                     flux_dev_flops()["first_block"], (FLUX_DEV.image_tokens + FLUX_DEV.text_tokens) * FLUX_DEV.hidden,
                     FLUX_DEV.image_tokens * 64, FIXED_SHARE_50)  # 64: 16 latent channels x a 2x2 patch
WAN_TARGET = Target("Wan2.1-14B", "81 frames of 832x480", f"{WAN_14B.blocks} blocks", wan_flops()["total"],
                    wan_flops()["first_block"], WAN_14B.tokens * WAN_14B.hidden,
                    WAN_14B.latent[0] * WAN_14B.latent[1] * WAN_14B.latent[2] * WAN_14B.latent[3], _wan_fixed_share(),
                    mlp_share=wan_flops()["ffn"] / wan_flops()["block"],
                    reduced=tuple((reduced_key(f, x), _wan_reduced(f, x)) for x in REDUCED_AXES for f in FACTORS))
TARGETS = {t.name: t for t in (FLUX_TARGET, WAN_TARGET)}


def target_for(family: str) -> Target:
    """Where a family's users deploy: Wan2.1-14B for Wan, FLUX.1-dev for the image families."""
    return WAN_TARGET if family == "wan" else FLUX_TARGET


def load_shares(path: Path | None = None, target: Target = FLUX_TARGET) -> dict:
    """Skipped-step shares of a ``target`` call by work key, with where each came from."""
    shares, source = {}, {}
    peers_file = path or BENCHMARKS / "skip-cost.json"
    if peers_file.is_file():
        data = json.loads(peers_file.read_text())
        for name, p in data["peers"].items():
            shares[name], source[name] = p["share"], f"measured ({peers_file.name})"
    ours = BENCHMARKS / "overhead.json"
    if ours.is_file():
        data = json.loads(ours.read_text())
        # the hook's work on a skipped step against one call of the 2-block FLUX-width model,
        # rescaled to FLUX.1-dev's 57 blocks by its FLOPs ratio to that model
        blocks = data.get("blocks", [1, 1])
        f = flux_dev_flops()
        small = blocks[0] * f["double"] + blocks[1] * f["single"]
        for letter, seconds in data["predicted_s"].items():
            shares[letter] = seconds / data["fresh_s"] * small / f["total"]
            source[letter] = "measured (overhead.json)"
    resampling = {}
    reduced = BENCHMARKS / "reduced.json"
    if reduced.is_file():  # a D step: the reduced call's FLOPs share plus its measured resampling
        for factor, r in json.loads(reduced.read_text())["factors"].items():
            shares[f"D{factor}"] = r["call_flops_fraction"] + r["share"]
            source[f"D{factor}"] = "FLOPs of the reduced call + measured resampling (reduced.json)"
            resampling[f"D{factor}"] = r["share"]
    first = flux_dev_flops()["first_block"]
    for name in ("fbcache", "cache-dit"):
        if name not in shares:
            shares[name], source[name] = first, "FLOPs (first double block)"
    for kind in ("residual", "modulated"):  # zeustune's G steps: the first block runs (the modulated
        # probe stops inside it, at its norm1: priced as the whole block, an upper bound)
        shares[f"probe-{kind}"], source[f"probe-{kind}"] = shares["fbcache"], f"as fbcache (first block), {source['fbcache']}"
    if "cache-dit" not in source or source["cache-dit"].startswith("FLOPs"):
        if "fbcache" in shares and source.get("fbcache", "").startswith("measured"):
            # the same work: the first block, a residual difference and add
            shares["cache-dit"], source["cache-dit"] = shares["fbcache"], "as fbcache (same work: first block + residual)"
    if target.name != FLUX_TARGET.name:
        shares, source = _projected(shares, source, resampling, target)
    return {"shares": shares, "source": source}


#: The peers whose skipped step is a few tensor ops on the hidden states (a residual added, a
#: Taylor series): their work scales with the hidden states, not with the blocks.
HIDDEN_OPS = ("magcache", "seacache", "taylorseer")
FIRST_BLOCK = ("fbcache", "cache-dit", "probe-residual", "probe-modulated")


def _projected(shares: dict, source: dict, resampling: dict, target: Target) -> tuple[dict, dict]:
    """FLUX.1-dev's shares carried over to ``target`` by what each skipped step's work scales with.
    A share is work over a call, so ops on a tensor scale by its elements per call FLOP; a first
    block by the first block's FLOPs share (keeping the measured-to-FLOPs ratio of FLUX.1-dev's);
    a key of no known kind is left out (costing it then fails by name)."""
    flux, to = FLUX_TARGET, f"projected to {target.name}"
    hidden = (target.hidden_elements / target.call_flops) / (flux.hidden_elements / flux.call_flops)
    output = (target.output_elements / target.call_flops) / (flux.output_elements / flux.call_flops)
    block = target.first_block / flux.first_block
    out, why = {}, {}
    for key, share in shares.items():
        if key in FIRST_BLOCK:
            out[key] = share * block  # 1/57 unmeasured: the target's FLOPs share
            why[key] = (f"{source[key]}; {to}: its first block's FLOPs share 1/{round(1 / target.first_block)} x the "
                        f"measured/FLOPs ratio on FLUX.1-dev ({share / flux.first_block:.3f})" if "measured" in source[key]
                        else f"FLOPs (the first of {target.blocks}), {to}")
        elif key in HIDDEN_OPS:
            out[key] = share * hidden
            why[key] = f"{source[key]}; {to}: x hidden-state elements per call FLOP against FLUX.1-dev's ({hidden:.3f})"
        elif key == "taylorseer-attn" and target.mlp_share is not None:  # every block's FFN runs
            out[key], why[key] = target.mlp_share, f"FLOPs: the FFN's share of a block, {to}"
        elif key.startswith("D") and key in resampling:
            continue  # below, per reduced call the target has
        elif len(key) == 1 or key.startswith("A-"):  # zeustune's letters: ops on the denoiser's output
            out[key] = share * output
            why[key] = f"{source[key]}; {to}: x output elements per call FLOP against FLUX.1-dev's ({output:.3f})"
    for name, fraction in target.reduced:
        # the resampling pools and upsamples the whole latent once each way, whichever axes shrink:
        # the side factor's measured share stands for it
        side = f"D{parse_reduced_key(name)[0]:g}"
        if side in resampling:
            out[f"D{name}"] = fraction + resampling[side] * output
            why[f"D{name}"] = (f"FLOPs of the reduced call on {target.name} + measured resampling (reduced.json, {side}), "
                               f"{to}: x output elements per call FLOP against FLUX.1-dev's ({output:.3f})")
    return out, why


def skipped_letters(m) -> Counter:
    """The work keys of a row's skipped steps per branch, counted: the plan's letters for zeustune
    rows (A steps that did not call, as 'A-<criterion>'), the peer's name for the rest."""
    skipped = max(0.0, (m.steps or 0) - (m.calls or 0))
    if m.work is None or skipped == 0:
        return Counter()
    if m.work != "zeustune":
        return Counter({m.work: skipped})
    sched = m.schedule
    plan = str(sched.plan)
    out = Counter(c for c in plan if c not in "FAG")
    static = sum(out.values())
    if "A" in plan:
        out[f"A-{sched.predictor.criterion}"] = max(0.0, skipped - static)
    if "G" in plan:  # predicted probe steps ran the first block
        out[f"probe-{sched.predictor.probe}"] = max(0.0, skipped - static)
    if "L" in out:  # a tail skip on a flow model is an E or R: costed as the dearer of the two
        out["E"] += out.pop("L")
    reduced = out.pop("D", 0) + out.pop("P", 0)  # not skipped: calls at reduced resolution, costed per factor
    if reduced:
        out[f"D{reduced_key(sched.predictor.reduced, sched.predictor.reduced_axes)}"] = reduced
    return out


def cost(m, shares: dict[str, float]) -> float:
    """Full-call equivalents of one image on the target ``shares`` are of (load_shares), per branch."""
    extra = 0.0
    for key, n in skipped_letters(m).items():
        if key not in shares:
            raise KeyError(f"no skipped-step share for {key!r} (row {m.name}): run experiments/bench_skip_cost.py")
        extra += n * shares[key]
    return (m.calls or 0) + extra


def fixed_share(steps: int, share_50: float = FIXED_SHARE_50) -> float:
    return share_50 / (share_50 + (1 - share_50) * steps / 50)


def projected_speedup(cost_calls: float, steps: int, full_steps: int | None = None,
                      target: Target = FLUX_TARGET) -> float:
    """End-to-end speedup on ``target`` over ``full_steps`` (default: ``steps``) full calls."""
    n = full_steps or steps
    f = fixed_share(n, target.fixed_share_50)
    return 1.0 / (f + (1 - f) * cost_calls / n)
