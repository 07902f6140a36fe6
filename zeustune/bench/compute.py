"""Equal compute: what a bench row would cost on FLUX.1-dev, in full denoiser calls.

On tiny-flux a method's per-step bookkeeping is a large share of a call (its first block is a
third of the model), so measured CPU speedups flatter nobody equally. A row's cost here is

    cost = calls + sum over skipped steps of share(method's skipped-step work)

per CFG branch, in FLUX.1-dev full calls (19 double + 38 single blocks, 1024x1024: 4096 image +
512 text tokens). ``share`` comes from ``experiments/bench_skip_cost.py``: the method's skipped call
timed on a FLUX-width transformer, its block times projected to FLUX.1-dev's 57 blocks, over the
projected time of a full call on the same machine (a first block for FirstBlockCache and
cache-dit, every block's MLP for TaylorSeer-attn, a few tensor ops for the rest). Where no
measurement exists, the first-block share comes from FLUX.1-dev's FLOPs (:func:`flux_dev_flops`).

The projected end-to-end speedup adds the text encoders and VAE: about 3% of a 50-step
1024x1024 FLUX.1-dev run (FACTS §3), a fixed time, so at N steps their share is
``f_N = 0.03 / (0.03 + 0.97 N / 50)`` and ``speedup = 1 / (f_N + (1 - f_N) cost / N)``; it never
exceeds the call bound N / cost.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..schedule.shipped import shipped

#: The skipped-step shares measured by experiments/bench_skip_cost.py (peers) and
#: experiments/bench_overhead.py (zeustune's letters), shipped with the project's benchmarks.
BENCHMARKS = shipped("zeustune.bench", "figures")
FIXED_SHARE_50 = 0.03  # text encoders + VAE in a 50-step 1024x1024 FLUX.1-dev run


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


def load_shares(path: Path | None = None) -> dict:
    """Skipped-step shares of a FLUX.1-dev call by work key, with where each came from."""
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
    reduced = BENCHMARKS / "reduced.json"
    if reduced.is_file():  # a D step: the reduced call's FLOPs share plus its measured resampling
        for factor, r in json.loads(reduced.read_text())["factors"].items():
            shares[f"D{factor}"] = r["call_flops_fraction"] + r["share"]
            source[f"D{factor}"] = "FLOPs of the reduced call + measured resampling (reduced.json)"
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
    return {"shares": shares, "source": source}


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
        out[f"D{sched.predictor.reduced:g}"] = reduced
    return out


def cost(m, shares: dict[str, float]) -> float:
    """FLUX.1-dev full-call equivalents of one image, per branch."""
    extra = 0.0
    for key, n in skipped_letters(m).items():
        if key not in shares:
            raise KeyError(f"no skipped-step share for {key!r} (row {m.name}): run experiments/bench_skip_cost.py")
        extra += n * shares[key]
    return (m.calls or 0) + extra


def fixed_share(steps: int, share_50: float = FIXED_SHARE_50) -> float:
    return share_50 / (share_50 + (1 - share_50) * steps / 50)


def projected_speedup(cost_calls: float, steps: int, full_steps: int | None = None) -> float:
    """End-to-end speedup on FLUX.1-dev over ``full_steps`` (default: ``steps``) full calls."""
    n = full_steps or steps
    f = fixed_share(n)
    return 1.0 / (f + (1 - f) * cost_calls / n)
